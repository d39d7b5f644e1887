"""corral.Process: the run cycle in a child, lives, stop/kill, tell/listen, timeouts, errors."""

from __future__ import annotations

import pathlib
import pickle
import time

import anyio
import pytest

import corral
from tests.processes import (
    Counter,
    CrashesOnce,
    Dies,
    Echo,
    FailsIn,
    Flaky,
    Forever,
    Hangs,
    HangsOnce,
    HangsOnceUnpicklable,
    RaisesOdd,
    Sleeper,
    SlowAsync,
    StopsAtFive,
    Timed,
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
        jobs = [await sup.start(Sleeper(1.0)) for _ in range(5)]
        assert [await job.result() for job in jobs] == [1.0] * 5
        assert time.perf_counter() - started < 5 * 1.0 - 1.0  # not one after another


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


async def test_a_sync_section_that_overruns_is_retried_in_a_new_child_keeping_state() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(HangsOnce())
        with anyio.fail_after(20):
            pids, last_run = await job.result()
        (child,) = sup.statistics().children
    assert last_run == 3
    assert len(pids) == 4  # run 1, run 2 (hung), run 2 again, run 3: the list was kept
    assert pids[0] == pids[1] != pids[2] == pids[3]  # the retry ran in a new child
    assert child.restarts == 1
    assert job.timers.run.count == 4  # the overrun is timed too
    assert job.timers.process.count == 3


async def test_a_retry_in_a_new_child_starts_from_the_first_state_when_it_will_not_pickle(
    tmp_path: pathlib.Path,
) -> None:
    async with corral.start(HangsOnceUnpicklable(str(tmp_path / "hung"))) as job:
        with anyio.fail_after(20):
            calls, last_run = await job.result()
    assert last_run == 3
    assert calls == 2  # the state of the start: runs 2 and 3 in the new child


async def test_a_retry_in_a_new_child_that_overruns_again_uses_up_the_lives() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Hangs(), runs=1, lives=2, timeouts=corral.Timeouts(run=0.2))
        with anyio.fail_after(20), pytest.raises(corral.ProcessTimeout) as caught:
            await job.result()
        (child,) = sup.statistics().children
    assert caught.value.current_run == 1
    assert child.restarts == 1


async def test_a_crash_is_the_jobs_error_not_the_supervisors(tmp_path: pathlib.Path) -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(CrashesOnce(str(tmp_path / "crashed")))
        with anyio.fail_after(20), pytest.raises(corral.WorkerCrashed) as caught:
            await job.result()
        assert caught.value.exit_code == 3
        again = await sup.start(CrashesOnce(str(tmp_path / "crashed")))  # still running
        assert await again.result() == 3


async def test_restart_on_failure_runs_a_crashed_process_again_from_its_start(
    tmp_path: pathlib.Path,
) -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(CrashesOnce(str(tmp_path / "crashed")), restart="on-failure")
        with anyio.fail_after(20):
            assert await job.result() == 3  # the state it was started with: calls from 0
        assert sup.statistics().children[0].restarts == 1
        with pytest.raises(ValueError, match="restart='always' would run the process again"):
            await sup.start(Counter(), restart="always")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("section", "error_type", "run"),
    [
        ("prerun", corral.PreRunError, 2),
        ("run", corral.RunError, 2),
        ("postrun", corral.PostRunError, 2),
        ("on_finish", corral.OnFinishError, 3),
        ("result", corral.ResultError, 3),
    ],
)
async def test_each_section_has_its_error_and_on_error_sees_it(
    section: str, error_type: type[corral.ProcessError], run: int
) -> None:
    async with corral.start(FailsIn(section)) as job:
        with pytest.raises(error_type) as caught:
            await job.result()
        assert await job.listen(timeout=10) == error_type.__name__  # from on_error()
    assert caught.value.current_run == run
    assert isinstance(caught.value.original_error, ValueError)
    assert str(caught.value) == f"Error in {section} on run {run}: ValueError('{section} failed')"


async def test_all_sections_run_in_order_sync_and_async_with_timers() -> None:
    async with corral.start(FailsIn("none")) as job:
        calls = await job.result()
    assert calls == [*["prerun", "run", "postrun"] * 3, "on_finish", "result"]
    timers = job.timers
    assert (timers.prerun.count, timers.postrun.count, timers.process.count) == (3, 3, 3)
    assert (timers.on_finish.count, timers.result.count, timers.on_error.count) == (1, 1, 0)
    assert timers.process.mean >= timers.run.mean


async def test_what_on_error_returns_stands_in_for_the_error() -> None:
    async with corral.start(FailsIn("run", handled="value")) as job:
        assert await job.result() == ["recovered", "prerun", "run", "postrun", "prerun", "run"]
    async with corral.start(FailsIn("run", handled="exception")) as job:
        with pytest.raises(LookupError, match="replaced"):
            await job.result()


async def test_join_in_ends_the_cycle_after_its_seconds() -> None:
    started = time.perf_counter()
    async with corral.start(Timed()) as job:
        runs = await job.result()
    assert 3 <= runs <= 31  # about 0.3 s of 0.01 s runs
    assert time.perf_counter() - started < 5.0


async def test_an_original_error_that_will_not_unpickle_keeps_its_section_error() -> None:
    async with corral.start(RaisesOdd()) as job:
        with pytest.raises(corral.RunError) as caught:
            await job.result()
        assert await job.listen(timeout=10) == "before"
        assert await job.listen() is None  # ended, all read: None, not a hang
    error = caught.value
    assert str(error) == "Error in run on run 1: OddError(1)"
    assert isinstance(error.original_error, corral.RemoteError)
    assert error.original_error.type_name.endswith("OddError")
    assert error.__cause__ is error.original_error


async def test_what_a_crashed_process_told_is_still_read_then_listen_gives_none() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Dies())
        with pytest.raises(corral.WorkerCrashed):
            await job.result()
        assert await job.listen(timeout=10) == "last words"
        assert await job.listen(timeout=10) is None
        with pytest.raises(corral.WorkerStopped, match="has ended"):
            await job.tell("anyone?")
