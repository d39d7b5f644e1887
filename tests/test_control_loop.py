"""Control loops in pinned children: slots, host calls, statistics, failures, lifetime."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import corral
from tests.conftest import thread_idents
from tests.loops import WIDE, Counter, FailsOnce, SetupFails, Wide

pytestmark = pytest.mark.anyio

CPU = max(os.sched_getaffinity(0))  # the last core: the other one is left to the host


async def until(
    rt: corral.ControlLoopProxy[Any], name: str, condition: Callable[[Any], bool]
) -> Any:
    """Wait (woken by the loop's eventfd, with a deadline) for output ``name`` to pass."""
    with anyio.fail_after(10):
        async for value in rt.watch(name):
            if condition(value):
                return value
    raise AssertionError(f"the loop closed before {name} passed the condition")


async def test_inputs_outputs_and_host_calls() -> None:
    async with corral.Supervisor() as sup:
        rt = await sup.control_loop(Counter(), hz=1000, cpu=CPU)
        await rt.set("setpoint", 3.0)
        await rt.set("gains", [1.0, 0.5, 0.0])  # a list is taken for a tuple slot
        await until(rt, "command", lambda value: value == 1.5)
        assert await rt.get("gains") == (1.0, 0.5, 0.0)
        assert await rt.add(2, 3) == 5  # a sync method, served between ticks
        assert await rt.later("x") == "x"  # an async one
        before = await rt.get("count")
        await until(rt, "count", lambda value: value > before + 20)
        facts = await rt.facts()
        assert facts["threads"] == 1, "nothing in a loop's child may start a thread"
        assert facts["affinity"] == [CPU]
        assert facts["policy"] == os.SCHED_FIFO
        assert facts["gc_enabled"] is False
        stats = await rt.statistics()
        assert stats.running
        assert stats.pinned
        assert stats.policy == "SCHED_FIFO"
        assert stats.memory_locked
        assert stats.gc_frozen
        assert stats.ticks >= before + 20
        assert stats.hz == 1000
        assert 0 < stats.window <= stats.ticks
        assert 0 < stats.cpu_percent < 100


async def test_the_loop_keeps_ticking_under_host_calls() -> None:
    async with corral.control_loop(Counter(), hz=1000, cpu=CPU) as rt:
        first = (await rt.statistics()).ticks

        async def caller(n: int) -> None:
            for i in range(50):
                assert await rt.add(n, i) == n + i

        async with anyio.create_task_group() as tasks:
            for n in range(64):
                tasks.start_soon(caller, n)
        assert (await rt.facts())["calls"] == 64 * 50
        stats = await rt.statistics()
        assert stats.running
        assert stats.ticks > first
        assert stats.starved == 0


async def test_watch_yields_now_then_each_change_and_ends_on_close() -> None:
    seen: list[object] = []
    first, changed = anyio.Event(), anyio.Event()
    async with (
        corral.control_loop(Counter(), hz=500) as rt,
        anyio.create_task_group() as tasks,
    ):

        async def watch() -> None:
            async for value in rt.watch("command"):
                seen.append(value)
                first.set()
                if value == 4.0:
                    changed.set()

        tasks.start_soon(watch)
        with anyio.fail_after(10):
            await first.wait()
            assert seen == [0.0]
            await rt.set("setpoint", 2.0)
            await changed.wait()
            await rt.aclose()  # the watcher ends by itself
    assert seen == [0.0, 4.0]


async def test_teardown_runs_on_close_and_values_stay_readable() -> None:
    async with corral.control_loop(Counter(), hz=1000) as rt:
        await until(rt, "count", lambda value: value > 5)
    assert await rt.get("torn_down") is True  # written by teardown(), read from the copy
    stats = await rt.statistics()
    assert not stats.running
    assert stats.ticks > 5
    with pytest.raises(corral.WorkerStopped):
        await rt.set("setpoint", 1.0)
    with pytest.raises(corral.WorkerStopped):
        await rt.add(1, 2)


async def test_a_raising_step_fails_the_supervisor_naming_the_tick() -> None:
    with pytest.raises(corral.WorkerFailed) as caught:
        async with corral.Supervisor() as sup:
            rt = await sup.control_loop(Counter(fail_at=30), hz=1000)
            await rt.wait_closed()
    error = caught.value.error
    assert isinstance(error, corral.StepFailed)
    assert error.tick == 30
    assert isinstance(error.original_error, KeyError)
    assert "step() raised on tick 30: KeyError" in str(caught.value)
    assert any("Remote traceback" in note for note in error.__notes__)
    assert await rt.get("torn_down") is True  # teardown ran after the failure
    assert (await rt.statistics()).ticks == 30


async def test_calls_after_a_failed_step_raise_it() -> None:
    async with corral.control_loop(Counter(fail_at=10), hz=1000) as rt:
        await rt.wait_closed()
        with pytest.raises(corral.StepFailed, match="tick 10"):
            await rt.add(1, 1)
        with pytest.raises(corral.StepFailed):
            async for _ in rt.watch("count"):
                pass


async def test_restart_on_failure_keeps_inputs(tmp_path: Path) -> None:
    async with corral.Supervisor() as sup:
        rt = await sup.control_loop(
            FailsOnce(str(tmp_path / "failed")), hz=1000, restart="on-failure"
        )
        await rt.set("setpoint", 7.5)
        await until(rt, "runs_seen", lambda value: value == 2)
        assert await rt.get("setpoint") == 7.5
        assert (await rt.statistics()).restarts == 1


async def test_setup_that_raises_is_a_startup_error() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(corral.StartupError, match=r"setup\(\) raised OSError"):
            await sup.control_loop(SetupFails(), hz=100)


async def test_slots_never_tear_across_processes() -> None:
    async with corral.control_loop(Wide(), hz=1000, cpu=CPU) as rt:
        deadline = time.monotonic() + 0.5
        reads = writes = 0
        while time.monotonic() < deadline:
            for _ in range(200):
                writes += 1
                await rt.set("wide_in", (writes,) * WIDE)
                value = await rt.get("wide_out")
                assert min(value) == max(value), value
                reads += 1
            await anyio.lowlevel.checkpoint()
        loop_reads = await rt.get("reads")
        assert await rt.get("torn") == 0
    assert reads > 1000
    assert loop_reads > 1000


async def test_bad_slot_names_and_values() -> None:
    async with corral.control_loop(Counter(), hz=200) as rt:
        with pytest.raises(ValueError, match="no input slot named 'nope'; declared: setpoint"):
            await rt.set("nope", 1.0)
        with pytest.raises(ValueError, match="'count' is an output slot"):
            await rt.set("count", 1)
        with pytest.raises(ValueError, match="no slot named 'nope'"):
            await rt.get("nope")
        with pytest.raises(TypeError, match="slot 'setpoint' holds float; got 'fast' \\(str\\)"):
            await rt.set("setpoint", "fast")
        with pytest.raises(ValueError, match="tuple of 3 floats; got 2 items"):
            await rt.set("gains", (1.0, 2.0))
        with pytest.raises(TypeError, match="slot 'enabled' holds bool"):
            await rt.set("enabled", "yes")
        with pytest.raises(AttributeError, match="'step' belongs to the object's own machinery"):
            await rt.call("step")
        assert await rt.get("setpoint") == 0.0  # nothing was written by the bad calls
        assert await rt.add(1, 1) == 2  # and the loop still serves


async def test_bad_options_raise_before_anything_starts() -> None:
    async with corral.Supervisor() as sup:
        for hz in (0, -5, 1e9, True, "fast"):
            with pytest.raises(ValueError, match="hz= must be a rate in Hz"):
                await sup.control_loop(Counter(), hz=hz)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="cpu=4096 is not a core"):
            await sup.control_loop(Counter(), hz=100, cpu=4096)
        with pytest.raises(ValueError, match='overrun= must be "skip" or "catch-up"'):
            await sup.control_loop(Counter(), hz=100, overrun="drop")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"spin=0\.5 s is not shorter than the period"):
            await sup.control_loop(Counter(), hz=100, spin=0.5)
        with pytest.raises(TypeError, match="unexpected keyword"):
            await sup.control_loop(Counter(), hz=100, speed=3)  # type: ignore[call-arg]
        with pytest.raises(TypeError, match=r"corral\.ControlLoop subclass"):
            await sup.control_loop(object(), hz=100)  # type: ignore[type-var]
        assert sup.statistics().children == ()


async def test_recipe_steps_are_logged_on_the_host(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="corral")
    async with corral.control_loop(
        Counter(), hz=100, cpu=CPU, name="logged", log_level=logging.INFO
    ) as rt:
        assert await rt.add(0, 0) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "corral._realtime"]
    assert f"logged: pinned to cpu {CPU}" in messages
    assert "logged: SCHED_FIFO priority 50" in messages
    assert any("objects frozen" in m for m in messages)


async def test_statistics_of_a_long_window_leave_no_thread() -> None:
    threads = thread_idents()
    async with corral.control_loop(Counter(), hz=20_000) as rt:
        await until(rt, "count", lambda value: value > 5000)
        stats = await rt.statistics()  # sorted in a thread of its own, which has ended
        assert stats.window > 5000
        assert stats.lateness.p50 <= stats.lateness.p99 <= stats.lateness.max
    assert thread_idents() == threads


async def test_nothing_is_left_behind() -> None:
    for run in range(2):  # noqa: B007  # the first run warms up: libuv opens a spare fd per loop, lazily
        fds = set(os.listdir("/proc/self/fd"))
        async with corral.control_loop(Counter(), hz=1000) as rt:
            pid = rt.pid
            assert pid is not None
            async for value in rt.watch("count"):
                if value:
                    break
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert set(os.listdir("/proc/self/fd")) == fds, f"after run {run}"
