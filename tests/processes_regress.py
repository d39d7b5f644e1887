"""Process classes for tests/test_regress_process.py (each child imports this module)."""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.lowlevel

import corral


def _first_time(marker: str) -> bool:
    """True the first time it is asked about ``marker`` (a file), in any process."""
    if os.path.exists(marker):
        return False
    with open(marker, "w"):
        pass
    return True


class Spins(corral.Process):
    """An empty sync run, with no end but stop()."""

    def run(self) -> None:
        pass

    def result(self) -> int:
        return self.current_run


class WaitsInRunTwo(corral.Process):
    """Run 1 returns at once; run 2 tells the host so, then waits for a word from it."""

    runs = 2

    async def run(self) -> None:
        if self.current_run == 2:
            self.tell("in run 2")
            await self.listen()


class Listens(corral.Process):
    """Each run waits a moment for the host (``listen(timeout=...)``), as the docs' Shout."""

    async def run(self) -> None:
        if self.current_run == 1:
            self.tell("listening")
        await self.listen(timeout=0.05)

    def result(self) -> str:
        return "finished"


class UnpicklableResult(corral.Process):
    runs = 1

    def run(self) -> None:
        pass

    def result(self) -> threading.Lock:
        return threading.Lock()


class TellsAroundARetry(corral.Process):
    """Runs 1 and 2 tell; run 2 then hangs (sync, past its limit) in its first child only."""

    runs = 3
    lives = 2
    timeouts = corral.Timeouts(run=0.3)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def run(self) -> None:
        if self.current_run == 1:
            self.tell("one")
        elif self.current_run == 2 and _first_time(self.marker):
            self.tell("two")
            time.sleep(60)
        elif self.current_run == 3:
            self.tell("three")


class HearsAfterARetry(corral.Process):
    """run() hangs in its first child (past its limit); postrun() listens for the host."""

    runs = 1
    lives = 2
    timeouts = corral.Timeouts(run=1.0)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def run(self) -> None:
        if _first_time(self.marker):
            self.tell("hanging")
            time.sleep(60)

    async def postrun(self) -> None:
        self.tell(("heard", await self.listen(timeout=2)))


class HangsOnceThenSpins(corral.Process):
    """runs=None; its first run() hangs (sync, past its limit), later ones return soon."""

    lives = 2
    timeouts = corral.Timeouts(run=0.5)

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def run(self) -> None:
        if _first_time(self.marker):
            self.tell("hanging")
            time.sleep(60)

    def result(self) -> int:
        return self.current_run


class AlwaysFails(corral.Process):
    """A run that fails at once, with lives to spare ("retry until it works")."""

    lives = 10**9

    def __init__(self) -> None:
        self.told = False

    def run(self) -> None:
        if not self.told:
            self.told = True
            self.tell("failing")
        raise ConnectionError("no connection")


class TellsFromItsThread(corral.Process):
    """A sync run with a limit (so it runs in a thread) tells a big value, then works on."""

    runs = 1
    timeouts = corral.Timeouts(run=30)

    def __init__(self, size: int, marker: str) -> None:
        self.size = size
        self.marker = marker

    def run(self) -> None:
        self.tell(b"x" * self.size)
        deadline = time.monotonic() + 10  # "work" until the host says it heard
        while not os.path.exists(self.marker) and time.monotonic() < deadline:
            time.sleep(0.01)


class OwnStop(corral.Process):
    """Has a stop() of its own (its motor's), and runs until stopped."""

    def __init__(self) -> None:
        self.motor_on = True

    def stop(self) -> None:
        self.motor_on = False

    async def run(self) -> None:
        if self.current_run == 1:
            self.tell("running")
        await anyio.sleep(0.001)

    def result(self) -> bool:
        return self.motor_on


def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A plain decorator (not coroutine-aware), as many are."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


class DecoratedAsyncRun(corral.Process):
    runs = 1

    def __init__(self) -> None:
        self.ran = False

    @logged
    async def run(self) -> None:
        await anyio.lowlevel.checkpoint()
        self.ran = True

    def result(self) -> bool:
        return self.ran


class HoldsALock(corral.Process):
    def __init__(self) -> None:
        self.lock = threading.Lock()

    def run(self) -> None:
        pass


class TellsItsPid(corral.Process):
    """Tells the host its pid, then ends once the host says so."""

    runs = 1

    async def run(self) -> None:
        self.tell(os.getpid())
        await self.listen()

    def result(self) -> str:
        return "done"
