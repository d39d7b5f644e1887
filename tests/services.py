"""Objects the tests spawn in child processes (kept light: each child imports this)."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio

import corral

logger = logging.getLogger("tests.services")


class Unpicklable(Exception):
    """An exception whose pickle fails to load on the other side."""

    def __reduce__(self) -> Any:
        return (_refuse, ())


def _refuse() -> Any:
    raise RuntimeError("this exception will not unpickle")


class Echo:
    """A service with one of each kind of member."""

    tag = "echo"

    def __init__(self, value: int = 0, closed_marker: str | None = None) -> None:
        self.value = value
        self.closed_marker = closed_marker
        self.calls: list[Any] = []
        self._hidden = "private"
        self.gate = threading.Event()
        self._meeting: anyio.Event | None = None

    @property
    def state(self) -> str:
        return f"value={self.value}"

    @property
    def settable(self) -> int:
        return self.value

    @settable.setter
    def settable(self, value: int) -> None:
        self.value = value

    def echo(self, value: Any) -> Any:
        return value

    def record(self, value: Any) -> None:
        self.calls.append(value)

    def recorded(self) -> list[Any]:
        return self.calls

    async def aecho(self, value: Any, delay: float = 0.0) -> Any:
        if delay:
            await anyio.sleep(delay)
        return value

    async def wait_forever(self) -> None:
        await anyio.sleep_forever()

    async def count(self, n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    def count_sync(self, n: int) -> Iterator[int]:
        yield from range(n)

    def boom(self, message: str = "boom") -> None:
        raise ValueError(message)

    def boom_unpicklable(self) -> None:
        raise Unpicklable("nope")

    def unpicklable_result(self) -> Any:
        return threading.Lock()

    def getpid(self) -> int:
        return os.getpid()

    def affinity(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    def log(self, message: str) -> None:
        logger.warning("child says %s", message)

    def publish(self, channel: str, values: list[Any]) -> None:
        for value in values:
            corral.messenger().send_nowait(value, channel=channel)

    def stderr_then_exit(self, line: str, code: int) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(code)

    def kill_self(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def garbage(self) -> None:
        # (this child's socket: sys.argv names it only in a spawned child, not a forked one)
        connection: Any = getattr(corral.messenger(), "_connection")  # noqa: B009
        os.write(connection._transport.get_extra_info("socket").fileno(), b"\xff" * 64)

    def block(self, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    @corral.threaded
    def wait_gate(self) -> str:
        self.gate.wait(10)
        return "opened"

    def open_gate(self) -> None:
        self.gate.set()

    async def meet(self) -> str:
        """Returns only once a second call has arrived: proves async calls overlap."""
        if self._meeting is None:
            self._meeting = anyio.Event()
            await self._meeting.wait()
            return "first"
        self._meeting.set()
        return "second"

    def say(self, text: str) -> None:
        print(text, flush=True)  # noqa: T201  (the test reads the child's stdout)
        print(text, file=sys.stderr, flush=True)  # noqa: T201

    def close(self) -> None:
        if self.closed_marker:
            Path(self.closed_marker).write_text("closed")


class Failing:
    def __init__(self, message: str) -> None:
        raise RuntimeError(message)


class SlowStart:
    def __init__(self, seconds: float) -> None:
        time.sleep(seconds)


async def doubler(messenger: corral.Messenger, factor: int = 2) -> None:
    """An open_worker function: answers each request with value * factor."""
    while True:
        request = await messenger.receive_request()
        request.reply(request.value * factor)


class Journal:
    """Appends "start NAME" when built and "stop NAME" when closed to a shared file."""

    def __init__(self, path: str, name: str) -> None:
        self.path, self.name = path, name
        self._write("start")

    def _write(self, what: str) -> None:
        with open(self.path, "a") as journal:
            journal.write(f"{what} {self.name}\n")

    def getpid(self) -> int:
        return os.getpid()

    def kill_self(self) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def exit_cleanly(self) -> None:
        os._exit(0)

    def close(self) -> None:
        self._write("stop")
