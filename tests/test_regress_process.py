"""Review regression tests for corral.Process and its Job (issue 5).

Each test states what the docs (docs/process.md) promise and fails today;
the reason on each xfail names the bug. The process classes are in
tests/processes_regress.py, which the children import.
"""

from __future__ import annotations

import pathlib
import time

import anyio
import anyio.lowlevel
import pytest

import corral
from tests.processes import Counter, Dies, HangsOnceUnpicklable, Sleeper
from tests.processes_regress import (
    AlwaysFails,
    DecoratedAsyncRun,
    HangsOnceThenSpins,
    HearsAfterARetry,
    HoldsALock,
    Listens,
    OwnStop,
    Spins,
    TellsAroundARetry,
    TellsFromItsThread,
    TellsItsPid,
    UnpicklableResult,
    WaitsInRunTwo,
)

pytestmark = pytest.mark.anyio

SOON = 3.0  # seconds: what takes milliseconds when it works (a child starts in ~0.1 s)


# -- stop(), kill() and the block's end ------------------------------------------------


async def test_stop_before_the_child_has_started_is_not_lost() -> None:
    async with corral.Supervisor(shutdown_timeout=0.5) as sup:
        job = await sup.start(Spins())  # runs=None: only stop() ends it
        job.stop()  # returns at once; the child is still on its way
        with anyio.fail_after(SOON):
            assert await job.result() >= 0


async def test_stop_is_kept_across_a_retry_in_a_new_child(tmp_path: pathlib.Path) -> None:
    async with corral.Supervisor(shutdown_timeout=0.5) as sup:
        job = await sup.start(HangsOnceThenSpins(str(tmp_path / "hung")))
        with anyio.fail_after(SOON):
            assert await job.listen() == "hanging"
        job.stop()  # the run is stuck: that is why one stops it
        with anyio.fail_after(SOON):
            assert await job.result() == 1  # run 1, retried once, then the end


async def test_leaving_the_block_while_the_process_listens_stops_it_gracefully() -> None:
    async with corral.start(Listens()) as job:
        with anyio.fail_after(SOON):
            assert await job.listen() == "listening"
    assert await job.result() == "finished"
    async with corral.Supervisor() as sup:
        job = await sup.start(Listens())
        with anyio.fail_after(SOON):
            assert await job.listen() == "listening"
    assert await job.result() == "finished"


async def test_leaving_the_block_at_once_is_a_stop_not_a_crash() -> None:
    async with corral.start(Counter()) as job:
        pass
    assert isinstance(await job.result(), int)
    async with corral.Supervisor() as sup:
        job = await sup.start(Counter())
    assert isinstance(await job.result(), int)


async def test_job_stop_ends_a_process_that_has_its_own_stop() -> None:
    async with corral.Supervisor(shutdown_timeout=0.5) as sup:
        try:
            job = await sup.start(OwnStop())
        except TypeError:  # refused at start, with a message: fine too
            return
        with anyio.fail_after(SOON):
            assert await job.listen() == "running"
        job.stop()
        with anyio.fail_after(SOON):
            await job.result()


async def test_stop_gets_through_while_a_run_keeps_failing() -> None:
    async with corral.Supervisor(shutdown_timeout=0.5) as sup:
        job = await sup.start(AlwaysFails())
        with anyio.fail_after(SOON):
            assert await job.listen() == "failing"
        job.stop()
        with anyio.fail_after(SOON):
            await job.wait()


# -- what the job reports --------------------------------------------------------------


async def test_current_run_reports_a_run_that_began_soon_after_the_last_report() -> None:
    async with corral.start(WaitsInRunTwo()) as job:
        with anyio.fail_after(SOON):
            assert await job.listen() == "in run 2"
        with anyio.fail_after(SOON):
            while job.current_run != 2:  # reported "at most every 50 ms": it comes
                await job.listen(timeout=0.01)
        await job.tell("go on")
        await job.result()


async def test_current_run_and_timers_are_final_once_the_job_has_ended() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Counter())
        with anyio.fail_after(SOON):
            assert await job.listen() is None  # it has ended (nobody awaited it)
    # and the block waited for its child to be gone
    assert not job.is_alive
    assert (job.current_run, job.timers.run.count) == (100, 100)


async def test_tell_after_the_job_has_ended_raises_worker_stopped() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Dies())
        with anyio.fail_after(SOON):
            assert await job.listen() == "last words"
            assert await job.listen() is None  # ended, all read
        with pytest.raises(corral.WorkerStopped):
            await job.tell("anyone?")


async def test_tell_as_the_job_ends_raises_worker_stopped() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(Sleeper(0.02))
        with anyio.fail_after(SOON), pytest.raises(corral.WorkerStopped):
            for told in range(10**9):
                await job.tell(told)
                if told % 50 == 0:
                    await anyio.lowlevel.checkpoint()
        assert await job.result() == 0.02


def _stays_alive(pid: int, seconds: float) -> None:
    """Block the host's loop (as sync work in it would) for ``seconds``; ``pid`` must not exit."""
    stat = pathlib.Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert stat.read_text().rpartition(")")[2].split()[0] != "Z", f"child {pid} exited"


async def test_a_result_is_not_lost_when_the_host_stops_the_job_as_it_ends() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(TellsItsPid())
        with anyio.fail_after(SOON):
            pid = await job.listen()
        await job.tell("end now")  # (no checkpoint: the host's loop does not run again...)
        # ...for a while: the child, done, waits for the host to take its outcome, so a
        # write of the host's cannot meet a child gone (and end the host's reading with it)
        _stays_alive(pid, 0.3)
        job.stop()  # too late, but harmless: "returns at once"
        with anyio.fail_after(SOON):
            assert await job.result() == "done"


# -- results and state that will not pickle ----------------------------------------------


async def test_a_result_that_will_not_pickle_is_the_result_sections_error() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(UnpicklableResult(), restart="on-failure")
        with anyio.fail_after(SOON * 2), pytest.raises(corral.ProcessError) as caught:
            await job.result()
        assert isinstance(caught.value.original_error, corral.SerializationError)
        assert sup.statistics().children[0].restarts == 0  # not a crash: nothing to restart


async def test_an_attribute_that_will_not_pickle_is_named_at_start() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(corral.SerializationError) as caught:
            await sup.start(HoldsALock())
    message = str(caught.value)
    assert "serve_process" not in message
    assert "lock" in message.replace("_thread.lock", "")  # the attribute, not only its type


async def test_a_rejected_start_option_does_not_stick_to_the_instance() -> None:
    counter = Counter()
    async with corral.Supervisor() as sup:
        with pytest.raises(ValueError, match="runs="):
            await sup.start(counter, runs=0)
        job = await sup.start(counter)
        assert await job.result() == 100


# -- retries in a new child (a sync section past its limit) ------------------------------


async def test_what_a_process_told_before_a_retry_in_a_new_child_is_not_lost(
    tmp_path: pathlib.Path,
) -> None:
    async with corral.start(TellsAroundARetry(str(tmp_path / "hung"))) as job:
        with anyio.fail_after(SOON * 2):
            await job.result()
        told = []
        while (value := await job.listen()) is not None:
            told.append(value)
    assert told == ["one", "two", "three"]


async def test_listen_waits_through_a_retry_in_a_new_child(tmp_path: pathlib.Path) -> None:
    async with corral.start(TellsAroundARetry(str(tmp_path / "hung"))) as job:
        with anyio.fail_after(SOON * 2):
            assert [await job.listen() for _ in range(3)] == ["one", "two", "three"]
        await job.result()


async def test_what_the_host_told_a_child_that_had_to_go_is_not_lost(
    tmp_path: pathlib.Path,
) -> None:
    async with corral.start(HearsAfterARetry(str(tmp_path / "hung"))) as job:
        with anyio.fail_after(SOON):
            assert await job.listen() == "hanging"
        await job.tell("hello")  # the run is stuck for a second yet: it reads this later
        with anyio.fail_after(SOON * 2):
            await job.result()
            assert await job.listen() == ("heard", "hello")


async def test_a_retry_from_the_start_state_ignores_later_changes_in_the_host(
    tmp_path: pathlib.Path,
) -> None:
    process = HangsOnceUnpicklable(str(tmp_path / "hung"))
    async with corral.start(process) as job:
        process.calls = 100  # the host's object, after the start: not the process's state
        with anyio.fail_after(SOON * 2):
            calls, last_run = await job.result()
    assert (calls, last_run) == (2, 3)  # runs 2 and 3 in the new child, from the start


async def test_tell_from_a_sync_section_with_a_limit_arrives_while_it_runs(
    tmp_path: pathlib.Path,
) -> None:
    marker = tmp_path / "heard"
    async with corral.start(TellsFromItsThread(4_000_000, str(marker))) as job:
        try:
            with anyio.fail_after(SOON):
                assert len(await job.listen()) == 4_000_000
        finally:
            marker.write_text("heard")  # the run may end now
        await job.result()


async def test_a_decorated_async_run_with_a_limit_is_awaited() -> None:
    async with corral.start(DecoratedAsyncRun()) as job:
        assert await job.result() is True  # without a limit: awaited
    async with corral.start(DecoratedAsyncRun(), timeouts=corral.Timeouts(run=5)) as job:
        assert await job.result() is True
