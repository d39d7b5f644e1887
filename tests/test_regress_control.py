"""Regression tests from a review of the control loop (each comment names the bug it caught).

The loops run in children import this module, so it stays light at import.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
import types
import warnings
from typing import Any

import anyio
import pytest

import corral

pytestmark = pytest.mark.anyio

CPU = max(os.sched_getaffinity(0))


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# -- loops (imported by the children) ---------------------------------------------------


class NeverRoom(corral.ControlLoop):
    """Every step takes longer than the period: with catch-up, no room is ever left."""

    def step(self) -> None:
        busy(0.0015)

    async def later(self, value: int) -> int:
        return value


class Worky(corral.ControlLoop):
    def step(self) -> None:
        pass

    def work(self) -> None:
        busy(0.0001)  # half the default budget


class DiesMidWrite(corral.ControlLoop):
    """Dies (as by SIGKILL, the OOM killer or rt.kill()) between the odd and even store."""

    outputs = {"x": 0.0}  # noqa: RUF012

    def setup(self) -> None:
        outputs: Any = self.outputs
        words, word = outputs._slots._words, outputs._slots.layout.specs["x"].word
        pid = os.getpid()

        def handler(signum: int, frame: types.FrameType | None) -> None:
            if self.tick >= 3 and words[word] & 1:  # no calls: cheap, never re-entered
                os.kill(pid, signal.SIGKILL)

        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, 5e-5, 5e-5)

    def step(self) -> None:
        for i in range(200):
            self.outputs["x"] = float(self.tick * 1000 + i)


class Ticking(corral.ControlLoop):
    outputs = {"count": 0}  # noqa: RUF012

    def step(self) -> None:
        self.outputs["count"] += 1


class NeedsTwoArguments(Exception):
    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


class RaisesUnloadable(corral.ControlLoop):
    outputs = {"count": 0}  # noqa: RUF012

    def step(self) -> None:
        if self.tick == 3:
            raise NeedsTwoArguments(1, 2)  # pickles, but will not unpickle (args is one str)


class OverrunRaises(corral.ControlLoop):
    outputs = {"count": 0}  # noqa: RUF012

    def step(self) -> None:
        if self.tick == 2:
            busy(0.003)

    def on_overrun(self, tick: int, late: float) -> None:
        raise RuntimeError(f"on_overrun failed on tick {tick}")


class Exits(corral.ControlLoop):
    outputs = {"torn_down": False}  # noqa: RUF012

    def step(self) -> None:
        if self.tick == 3:
            sys.exit(3)

    def teardown(self) -> None:
        self.outputs["torn_down"] = True


# -- in a child ----------------------------------------------------------------------------


# Regression: LoopSelector.select: a starved turn returns only if I/O is ready, so the event
# loop's ready callbacks (a task's next step) never run on a loop with no room: async host calls
# hang, and a close is killed after the grace without teardown()
async def test_a_loop_with_no_room_still_serves_async_calls() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(
            NeverRoom(), hz=1000, overrun="catch-up", shutdown_timeout=0.5
        ) as rt:
            await anyio.sleep(0.05)
            with anyio.fail_after(0.6):  # a starved turn comes every 100 ms
                assert await rt.later(7) == 7


# Regression: host calls arriving together run back to back in one turn: the budget only says
# when a turn may start, so 200 calls of 100 us each make a tick ~10 ms late
async def test_host_calls_within_the_budget_do_not_make_ticks_late() -> None:
    host_cores = os.sched_getaffinity(0) - {CPU}
    if not host_cores:
        pytest.skip("needs a core for the host besides the loop's")
    with anyio.fail_after(5):
        async with corral.control_loop(Worky(), hz=200, cpu=CPU, overrun="catch-up") as rt:
            await anyio.sleep(0.05)
            before = os.sched_getaffinity(0)
            os.sched_setaffinity(0, host_cores)  # as deployed: the loop has its core to itself
            try:
                async with anyio.create_task_group() as tasks:
                    for _ in range(200):
                        tasks.start_soon(rt.work)
            finally:
                os.sched_setaffinity(0, before)
            stats = await rt.statistics()
    assert stats.lateness.max < 0.001, str(stats)  # the budget is 200 us


# Regression: a writer killed mid-write leaves the slot's sequence odd; _loophost._read then
# spins forever (after close, and after a restart until that output changes)
async def test_get_returns_after_the_loop_died_mid_write() -> None:
    async with corral.control_loop(DiesMidWrite(), hz=1000, realtime=False) as rt:
        with anyio.fail_after(3):
            await rt.wait_closed()
    with anyio.fail_after(1):
        assert isinstance(await rt.get("x"), float)


# Regression: W.RUNNING is only cleared by the child: a killed loop's statistics say running
async def test_statistics_of_a_killed_loop_are_not_running() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(Ticking(), hz=1000) as rt:
            async for count in rt.watch("count"):
                if count > 3:
                    break
            pid = rt.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await rt.wait_closed()
            stats = await rt.statistics()
    assert stats.ticks > 3
    assert not stats.running


# Regression: _loopchild._portable checks that the error pickles, not that it unpickles: the host
# gets a RemoteError for the whole StepFailed, and loses its tick
async def test_a_step_error_that_will_not_unpickle_still_arrives_as_step_failed() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(RaisesUnloadable(), hz=1000) as rt:
            await rt.wait_closed()
            with pytest.raises(corral.StepFailed) as caught:
                async for _ in rt.watch("count"):
                    pass
    assert caught.value.tick == 3


# Regression: an exception from on_overrun() escapes the selector and crashes the child's event
# loop: WorkerCrashed with asyncio's traceback, not a StepFailed naming the tick
async def test_on_overrun_that_raises_fails_the_loop_like_a_step() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(OverrunRaises(), hz=1000) as rt:
            await rt.wait_closed()
            with pytest.raises(corral.StepFailed) as caught:
                async for _ in rt.watch("count"):
                    pass
    assert caught.value.tick == 2


# Regression: Ticker.tick catches Exception only: sys.exit() in step() escapes the selector and
# the child exits without running teardown()
async def test_teardown_runs_after_a_step_that_calls_sys_exit() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(Exits(), hz=1000) as rt:
            await rt.wait_closed()
        assert await rt.get("torn_down") is True


# -- in-process ----------------------------------------------------------------------------


class Idle(corral.ControlLoop):
    def step(self) -> None:
        pass


class NegativeZero(corral.ControlLoop):
    outputs = {"x": 0.0, "pair": (0.0, 1.0)}  # noqa: RUF012

    def step(self) -> None:
        self.outputs["x"] = -0.0
        self.outputs["pair"] = (-0.0, 1.0)


class WritesADict(corral.ControlLoop):
    outputs = {"pair": (0.0, 0.0)}  # noqa: RUF012

    def step(self) -> None:
        self.outputs["pair"] = {1.0: "a", 2.0: "b"}


class AsyncStep(corral.ControlLoop):
    async def step(self) -> None:  # type: ignore[override]
        pass


class TeardownRaises(corral.ControlLoop):
    def step(self) -> None:
        if self.tick == 2:
            raise KeyError("sensor 7")

    def teardown(self) -> None:
        raise OSError("device already gone")


# Regression: Region.ring() always leaves the newest entry out: history=1 gives no percentiles
def test_the_window_is_the_whole_history_once_stopped() -> None:
    for history in (1, 10):
        stats = Idle().run_here(hz=2000, ticks=20, history=history)
        assert stats.window == history
        assert not math.isnan(stats.lateness.p50)


# Regression: LoopOptions.check bounds hz only by > 0: a tiny rate overflows the period
# (OverflowError, or 'memoryview: invalid value for format q' from the ticker)
def test_a_tiny_rate_is_refused_clearly() -> None:
    for hz in (1e-10, 1e-300):
        with pytest.raises(ValueError, match="hz="):
            Idle().run_here(hz=hz, ticks=1)


# Regression: Outputs.__setitem__ skips a write equal to the current value: -0.0 == 0.0
def test_negative_zero_is_published() -> None:
    loop = NegativeZero()
    loop.run_here(hz=2000, ticks=2)
    assert math.copysign(1.0, loop.outputs["x"]) == -1.0
    assert math.copysign(1.0, loop.outputs["pair"][0]) == -1.0


# Regression: _slots.pack unpacks any iterable into a tuple slot: a dict stores its keys
def test_a_dict_is_not_a_tuple_value() -> None:
    with pytest.raises(corral.StepFailed) as caught:
        WritesADict().run_here(hz=2000, ticks=2)
    assert isinstance(caught.value.original_error, TypeError)


# Regression: LoopOptions.check takes an async def step(): each tick makes a coroutine and drops
# it (a RuntimeWarning), and the loop silently does nothing
def test_an_async_step_is_refused() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TypeError, match="step"):
            AsyncStep().run_here(hz=2000, ticks=2)


# Regression: run_here: teardown()'s error replaces the StepFailed (the child logs it and still
# reports StepFailed)
def test_run_here_reports_the_step_failure_when_teardown_also_raises() -> None:
    with pytest.raises(corral.StepFailed) as caught:
        TeardownRaises().run_here(hz=2000, ticks=10)
    assert caught.value.tick == 2
