"""corral.Process: the run cycle in a child, lives, stop/kill, tell/listen, timeouts, errors."""

from __future__ import annotations

import pickle
import time

import anyio
import pytest

import corral
from tests.processes import (
    Counter,
    Echo,
    Flaky,
    Forever,
    Hangs,
    Sleeper,
    SlowAsync,
    StopsAtFive,
)

pytestmark = pytest.mark.anyio


async def test_a_counter_runs_100_times_with_timers() -> None:
    async with corral.Supervisor() as sup:
        started = time.perf_counter()
        job = await sup.start(Counter())
        assert time.perf_counter() - started < 0.1  # start returns at once
        assert await job.result() == 100
        assert job.timers.run.count == 100
        assert job.timers.process.count == 100
        assert job.current_run == 100
        assert not job.is_alive


async def test_five_short_processes_run_together() -> None:
    async with corral.Supervisor() as sup:
        started = time.perf_counter()
        jobs = [await sup.start(Sleeper(0.1)) for _ in range(5)]
        assert [await job.result() for job in jobs] == [0.1] * 5
        assert time.perf_counter() - started < 5 * 0.1 + 1.0  # not one after another


async def test_lives_retry_a_failed_run_keeping_state_and_the_counter() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Flaky(runs=3, lives=2))  # type: ignore[call-arg]
        assert await job.result() == (4, 3)  # four run() calls, result from run 3
        exhausted = await sup.start(Flaky(), runs=3, lives=1)  # options given at start
        with pytest.raises(corral.RunError) as caught:
            await exhausted.result()
    error = caught.value
    assert error.current_run == 2
    assert isinstance(error.original_error, KeyError)
    assert str(error) == "Error in run on run 2: KeyError('boom')"
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


async def test_stop_finishes_the_run_then_on_finish_and_result() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Forever())
        with anyio.fail_after(10):
            assert await job.listen() == "three runs done"
        started = time.perf_counter()
        job.stop()
        assert time.perf_counter() - started < 0.01  # returns at once
        result = await job.result()
    assert result % 10 == 0  # on_finish ran
    assert result >= 30


async def test_kill_leaves_a_hung_process_dead_with_no_result() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Hangs())
        with anyio.fail_after(10):
            assert await job.listen() == "running"
        job.kill()
        assert await job.result() is None
        assert not job.is_alive


async def test_a_process_that_stops_itself_at_run_5() -> None:
    async with corral.start(StopsAtFive()) as job:
        assert await job.result() == 5


async def test_tell_and_listen_both_ways() -> None:
    async with corral.start(Echo()) as job:
        for value in ("a", "b", "c"):
            await job.tell(value)
        with anyio.fail_after(10):
            assert [await job.listen() for _ in range(3)] == ["a", "b", "c"]
        assert await job.listen(timeout=0.1) is None


async def test_a_timed_out_section_is_interrupted() -> None:
    started = time.perf_counter()
    async with corral.start(SlowAsync()) as job:
        with pytest.raises(corral.ProcessTimeout) as caught:
            await job.result()
    assert caught.value.section == "run"
    assert caught.value.limit == 0.3
    assert time.perf_counter() - started < 2.0  # not the 3 s sleep


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError, match="runs= is a whole number"):
        Counter(runs=0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match="lives= is a whole number"):
        Counter(lives=0)  # type: ignore[call-arg]
    with pytest.raises(ValueError, match=r"Timeouts\(run=...\) is a number of seconds"):
        corral.Timeouts(run=-1)
    counter = Counter(runs=5, join_in=2.0)  # type: ignore[call-arg]
    assert (counter.runs, counter.join_in, Counter.runs) == (5, 2.0, 100)


async def test_start_time_options_are_checked_before_anything_starts() -> None:
    with pytest.raises(ValueError, match="join_in= is a number of seconds"):
        async with corral.start(Counter(), join_in=-1):
            pass
    async with corral.Supervisor() as sup:
        with pytest.raises(TypeError, match=r"corral\.Process subclass"):
            await sup.start(object())  # type: ignore[type-var]
        assert sup.statistics().children == ()


async def test_a_sync_section_that_overruns_ends_its_child() -> None:
    async with corral.Supervisor() as sup:
        started = time.perf_counter()
        job = await sup.start(Hangs(), timeouts=corral.Timeouts(run=0.3))
        with pytest.raises(corral.ProcessTimeout) as caught:
            await job.result()
        assert time.perf_counter() - started < 5.0  # not the 60 s sleep
        assert not job.is_alive  # its thread could not be stopped: the child went
    assert caught.value.section == "run"
