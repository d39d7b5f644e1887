"""Review regression tests for corral.Process and its Job, second round (issue 5).

Each test states what the docs (docs/process.md) promise and fails today;
the reason on each xfail names the bug. The process classes are in
tests/processes_regress2.py, which the children import.
"""

from __future__ import annotations

import pathlib
import time

import anyio
import pytest

import corral
from tests.processes_regress import HangsOnceThenSpins
from tests.processes_regress2 import (
    FailsToStart,
    HangsOnceThenSpinsTelling,
    HangsWithNoLifeLeft,
    KilledAfterItsOutcome,
    ResultLoadsNowhere,
    TellsWhatLoadsNowhere,
)

pytestmark = pytest.mark.anyio

SOON = 3.0  # seconds: what takes milliseconds when it works (a child starts in ~0.1 s)


def _until_exited(pid: int, seconds: float) -> None:
    """Block the host's loop (as sync work in it would) until child ``pid`` has exited."""
    stat = pathlib.Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if stat.read_text().rpartition(")")[2].split()[0] == "Z":
                return
        except FileNotFoundError:  # (reaped by a zygote)
            return
    raise TimeoutError(f"child {pid} did not exit within {seconds}s")


def _stays_alive(pid: int, seconds: float) -> None:
    """Block the host's loop (as sync work in it would) for ``seconds``; ``pid`` must not exit."""
    stat = pathlib.Path(f"/proc/{pid}/stat")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert stat.read_text().rpartition(")")[2].split()[0] != "Z", f"child {pid} exited"


# -- the outcome and its acknowledgement --------------------------------------------------


async def test_a_timeout_with_no_life_left_is_not_lost_to_a_write_as_the_child_goes() -> None:
    async with corral.start(HangsWithNoLifeLeft()) as job:
        with anyio.fail_after(SOON):
            pid = await job.listen()
        # the host is busy while run() overruns its 0.2 s: the child, done, waits for the
        # host to take its outcome, so a write of the host's cannot meet a child gone
        _stays_alive(pid, 0.6)
        job.stop()  # too late, but harmless: "returns at once"
        with anyio.fail_after(SOON), pytest.raises(corral.ProcessTimeout):
            await job.result()


async def test_a_result_that_will_not_unpickle_in_the_host_fails_the_job_only() -> None:
    async with corral.Supervisor() as sup:
        job = await sup.start(ResultLoadsNowhere())
        unpickled = (corral.ResultError, corral.SerializationError)
        with anyio.fail_after(SOON), pytest.raises(unpickled):
            await job.result()


async def test_a_told_value_that_will_not_unpickle_raises_from_listen() -> None:
    async with corral.start(TellsWhatLoadsNowhere()) as job:
        with anyio.fail_after(SOON):
            with pytest.raises(corral.SerializationError):
                await job.listen()
            assert await job.listen() == "after"
        assert await job.result() == "done"


async def test_a_child_killed_after_its_outcome_arrived_is_not_run_again(
    tmp_path: pathlib.Path,
) -> None:
    go = tmp_path / "go"
    async with corral.Supervisor() as sup:
        job = await sup.start(
            KilledAfterItsOutcome(str(go), str(tmp_path / "first")), restart="on-failure"
        )
        with anyio.fail_after(SOON):
            pid = await job.listen()
        go.write_text("go")
        _until_exited(pid, SOON)  # the host is busy: its outcome sent, the child is killed
        with anyio.fail_after(SOON):
            assert await job.result() == "first child"


# -- kill(), close and the start -----------------------------------------------------------


async def test_kill_during_a_retry_in_a_new_child_gives_none(tmp_path: pathlib.Path) -> None:
    async with corral.start(HangsOnceThenSpinsTelling(str(tmp_path / "hung"))) as job:
        with anyio.fail_after(SOON):
            assert await job.listen() == "hanging"
            assert await job.listen() == "retried"  # from the new child
        job.kill()
        with anyio.fail_after(SOON):
            assert await job.result() is None


async def test_leaving_the_block_while_a_sync_run_is_stuck_is_a_stop(
    tmp_path: pathlib.Path,
) -> None:
    process = HangsOnceThenSpins(str(tmp_path / "hung"))
    async with corral.start(process, shutdown_timeout=SOON * 2) as job:
        with anyio.fail_after(SOON):
            assert await job.listen() == "hanging"
    # as job.stop() at this point gives (test_stop_is_kept_across_a_retry_in_a_new_child)
    assert await job.result() == 1


async def test_a_start_that_fails_while_the_job_closes_raises_the_startup_error() -> None:
    async with corral.start(FailsToStart()) as job:
        with pytest.raises(corral.StartupError):
            await job.result()  # not closing: the start's error
    async with corral.start(FailsToStart()) as job:
        pass  # leaving at once: the child is still starting
    with pytest.raises(corral.StartupError):
        await job.result()
