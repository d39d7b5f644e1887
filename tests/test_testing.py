"""corral.testing: the leftovers check, the wait helpers, the virtual clock and the fixture."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from typing import Any

import anyio
import psutil
import pytest

import corral
from corral.testing import (
    VirtualClock,
    nothing_left_running,
    supervised,
    wait_for_restarts,
    wait_for_runs,
    wait_until,
)

pytestmark = pytest.mark.anyio


class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n


async def test_the_fixture_gives_a_running_supervisor(
    corral_supervisor: corral.Supervisor,
) -> None:
    worker = corral_supervisor.every(0.001, lambda: None)
    await wait_for_runs(worker, 3)
    proxy = await corral_supervisor.spawn(Counter)
    assert await proxy.bump() == 1  # the child is closed by the fixture, then checked


async def test_a_clean_block_passes_with_a_child_and_threads() -> None:
    async with supervised(shutdown_timeout=2.0) as sup:
        sup.every(0.001, lambda: None)  # a sync worker: runs in the supervisor's threads
        proxy = await sup.spawn(Counter)
        assert await proxy.bump() == 1
    assert sup.statistics().state == "stopped"


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_a_process_left_behind_fails_and_is_killed() -> None:
    child: subprocess.Popen[bytes] | None = None
    with pytest.raises(AssertionError, match=r"left running .*\n  process \d+: .*sleep") as caught:
        async with nothing_left_running(timeout=0.1):
            child = subprocess.Popen(  # noqa: ASYNC220  (left running on purpose)
                [sys.executable, "-c", "import time; time.sleep(60)"]
            )
    assert child is not None
    assert str(child.pid) in str(caught.value)
    assert child.wait(timeout=5) == -signal.SIGKILL  # killed by the check, not left to leak


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_a_thread_and_a_file_descriptor_left_behind_fail() -> None:
    release = threading.Event()
    thread = threading.Thread(target=release.wait, name="forgotten", daemon=True)
    read_end, write_end = os.pipe()
    try:
        with pytest.raises(AssertionError) as caught:
            async with nothing_left_running(timeout=0.05):
                thread.start()
                leaked = os.dup(read_end)
        message = str(caught.value)
        assert "thread 'forgotten'" in message
        assert f"file descriptor {leaked}: pipe:" in message
        os.close(leaked)
        # and each check can be left out
        async with nothing_left_running(timeout=0.05, threads=False, fds=False):
            leaked = os.dup(read_end)
        os.close(leaked)
    finally:
        release.set()
        thread.join(5)
        os.close(read_end)
        os.close(write_end)


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_what_goes_away_within_the_timeout_passes() -> None:
    async with nothing_left_running(timeout=5.0):
        child = await anyio.open_process([sys.executable, "-c", "pass"])
        # not waited for in the block: the check waits for it to be reaped
    await child.wait()
    await child.aclose()


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_wait_for_runs_says_what_it_saw_on_timeout() -> None:
    async with supervised() as sup:
        gate = anyio.Event()

        async def slow() -> None:
            await gate.wait()

        worker = sup.loop_worker(slow, name="slowpoke")
        with pytest.raises(TimeoutError, match=r"'slowpoke' made 0 of 2 runs within 0.05 s"):
            await wait_for_runs(worker, 2, timeout=0.05)
        gate.set()
        worker.stop()
        with pytest.raises(corral.WorkerStopped, match="before reaching 5"):
            await wait_for_runs(worker, 5)


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_wait_for_restarts_follows_a_killed_child() -> None:
    async with supervised() as sup:
        proxy = await sup.spawn(Counter, restart="on-failure")
        await proxy.bump()
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGKILL)
        await wait_for_restarts(proxy, 1)
        assert proxy.statistics().restarts == 1
        assert await proxy.bump() == 1  # a fresh child
        with pytest.raises(TimeoutError, match=r"had 1 of 2 restarts within 0.05 s \(state run"):
            await wait_for_restarts(proxy, 2, timeout=0.05)


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_wait_for_restarts_fails_at_once_for_a_child_that_will_not_restart() -> None:
    async with supervised() as sup:
        proxy = await sup.spawn(Counter, restart="on-failure")
        await proxy.aclose()
        with pytest.raises(AssertionError, match="is closed after 0 of 1 restarts"):
            await wait_for_restarts(proxy, 1, timeout=30)


@pytest.mark.loops("asyncio")  # (the check does not depend on the loop)
async def test_wait_until() -> None:
    seen: list[int] = []
    async with supervised() as sup:
        sup.every(0.001, lambda: seen.append(1))
        await wait_until(lambda: len(seen) >= 3)
    with pytest.raises(TimeoutError, match=r"within 0.02 s: only 0"):
        await wait_until(lambda: False, timeout=0.02, message=lambda: "only 0")


def test_the_virtual_clock_runs_an_hourly_worker_a_hundred_times_at_once() -> None:
    clock = VirtualClock()
    calls: list[float] = []

    async def main() -> corral.WorkerStatistics:
        async with supervised() as sup:

            async def tick() -> None:
                calls.append(anyio.current_time())

            worker = sup.every(3600.0, tick)
            await wait_for_runs(worker, 100)  # 5 s + 100 hours of virtual time at most
            worker.stop()
        return worker.statistics()

    stats = clock.run(main)
    assert calls[:100] == [k * 3600.0 for k in range(100)]  # exactly on the hour, no drift
    assert stats.skipped == 0
    assert stats.lateness is not None
    assert stats.lateness.max == 0.0
    assert clock.time() >= 99 * 3600


def test_the_virtual_clock_in_delay_mode_and_advance() -> None:
    clock = VirtualClock()

    async def main() -> list[float]:
        starts: list[float] = []
        async with supervised() as sup:

            async def work() -> None:
                starts.append(anyio.current_time())
                await anyio.sleep(10.0)  # virtual: ends at once

            worker = sup.every(60.0, work, mode="delay")
            await wait_for_runs(worker, 3)
            clock.advance(1000.0)  # time passes with nothing due: the next run is just late
            await wait_for_runs(worker, 4)
        return starts

    starts = clock.run(main)
    assert starts[:3] == [0.0, 70.0, 140.0]  # each 60 s after the previous run's end
    assert starts[3] >= 1000.0


def test_the_virtual_clock_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="autojump must be"):
        VirtualClock(autojump=-1)
    with pytest.raises(ValueError, match="only moves forward"):
        VirtualClock().advance(-1.0)


class TestAsAnyioBackend:
    clock = VirtualClock()

    @pytest.fixture
    def anyio_backend(self) -> Any:
        return self.clock.anyio_backend

    async def test_sleeps_take_no_real_time(self) -> None:
        started = psutil.Process().cpu_times()
        before = anyio.current_time()
        await anyio.sleep(86_400)
        assert anyio.current_time() - before == pytest.approx(86_400)
        assert self.clock.time() >= 86_400
        assert sum(psutil.Process().cpu_times()[:2]) - sum(started[:2]) < 1.0
