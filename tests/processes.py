"""Process classes the tests start in child processes (kept light: each child imports this)."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import anyio
import anyio.lowlevel

import corral


class Counter(corral.Process):
    runs = 100

    def __init__(self) -> None:
        self.n = 0

    def run(self) -> None:
        self.n += 1

    def result(self) -> int:
        return self.n


class Flaky(corral.Process):
    """Fails on its second run() call."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        if self.calls == 2:
            raise KeyError("boom")

    def result(self) -> tuple[int, int]:
        return (self.calls, self.current_run)


class Forever(corral.Process):
    def __init__(self) -> None:
        self.n = 0

    async def run(self) -> None:
        self.n += 1
        if self.n == 3:
            self.tell("three runs done")
        await anyio.sleep(0.005)

    def on_finish(self) -> None:
        self.n *= 10

    def result(self) -> int:
        return self.n


class Hangs(corral.Process):
    runs = 1

    def run(self) -> None:
        self.tell("running")
        time.sleep(60)


class StopsAtFive(corral.Process):
    def run(self) -> None:
        if self.current_run == 5:
            self.stop()

    def result(self) -> int:
        return self.current_run


class Echo(corral.Process):
    runs = 1

    async def run(self) -> None:
        for _ in range(3):
            self.tell(await self.listen())


class SlowAsync(corral.Process):
    runs = 1
    timeouts = corral.Timeouts(run=0.3)

    async def run(self) -> None:
        await anyio.sleep(3)


class Sleeper(corral.Process):
    runs = 1

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def run(self) -> None:
        await anyio.sleep(self.seconds)

    def result(self) -> Any:
        return self.seconds


class HangsOnce(corral.Process):
    """Hangs (sync, in a sleep that will not stop) on its second run() call."""

    runs = 3
    lives = 2
    timeouts = corral.Timeouts(run=0.3)

    def __init__(self) -> None:
        self.pids: list[int] = []

    def run(self) -> None:
        self.pids.append(os.getpid())
        if len(self.pids) == 2:
            time.sleep(60)

    def result(self) -> tuple[list[int], int]:
        return (self.pids, self.current_run)


class HangsOnceUnpicklable(corral.Process):
    """Hangs on run 2 in its first child only, holding a lock (which will not pickle)."""

    runs = 3
    lives = 2
    timeouts = corral.Timeouts(run=0.3)

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls = 0
        self.lock: threading.Lock | None = None

    def run(self) -> None:
        self.calls += 1
        if self.current_run == 2 and not os.path.exists(self.marker):
            self.lock = threading.Lock()
            with open(self.marker, "w"):
                pass
            time.sleep(60)

    def result(self) -> tuple[int, int]:
        return (self.calls, self.current_run)


class CrashesOnce(corral.Process):
    """Its first child dies (os._exit) in run 2; a later one runs to the end."""

    runs = 3

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.calls = 0

    def run(self) -> None:
        self.calls += 1
        if self.current_run == 2 and not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            os._exit(3)

    def result(self) -> int:
        return self.calls


class FailsIn(corral.Process):
    """Runs every section (async ones too); ``section`` raises ValueError on run 2.

    ``on_error`` tells the host the error's type, then returns what
    ``handled`` says: None, a value, or another exception.
    """

    runs = 3

    def __init__(self, section: str, handled: str = "none") -> None:
        self.section = section
        self.handled = handled
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name == self.section and (self.current_run == 2 or name in ("on_finish", "result")):
            raise ValueError(f"{name} failed")

    async def prerun(self) -> None:
        self._call("prerun")

    def run(self) -> None:
        self._call("run")

    async def postrun(self) -> None:
        await anyio.lowlevel.checkpoint()
        self._call("postrun")

    def on_finish(self) -> None:
        self._call("on_finish")

    async def result(self) -> list[str]:
        self._call("result")
        return self.calls

    def on_error(self) -> Any:
        self.tell(type(self.error).__name__)
        if self.handled == "value":
            return ["recovered", *self.calls]
        if self.handled == "exception":
            return LookupError("replaced")
        return None


class Timed(corral.Process):
    """Runs until join_in ends it."""

    join_in = 0.3

    async def run(self) -> None:
        await anyio.sleep(0.01)

    def result(self) -> int:
        return self.current_run


class OddError(Exception):
    """Will not unpickle: its constructor needs two arguments, its args hold one."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(a)


class RaisesOdd(corral.Process):
    runs = 1

    def run(self) -> None:
        self.tell("before")
        raise OddError(1, 2)


class Dies(corral.Process):
    runs = 1

    def run(self) -> None:
        self.tell("last words")
        os._exit(7)
