"""Interval workers: rates, drift, skipping, modes, suspension, contexts."""

from __future__ import annotations

import contextvars
import time

import anyio
import pytest

import corral

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_runs_5_to_9_times_at_20ms_in_100ms(kind: str) -> None:
    runs = 0

    async def tick_async() -> None:
        nonlocal runs
        runs += 1

    def tick_sync() -> None:
        nonlocal runs
        runs += 1

    async with corral.Supervisor() as sup:
        worker = sup.every(0.02, tick_async if kind == "async" else tick_sync)
        await anyio.sleep(0.1)  # the measurement window itself, not a wait for an event
        worker.stop()
        await worker.wait_stopped()
    assert 5 <= runs <= 9, runs
    assert worker.statistics().runs == runs


async def test_args_are_passed_and_false_stops_the_worker() -> None:
    seen: list[tuple[int, str]] = []

    async def tick(n: int, label: str) -> bool:
        seen.append((n, label))
        return len(seen) < 3

    async with corral.Supervisor() as sup:
        worker = sup.every(0.001, tick, 7, "x")
        await worker.wait_stopped()
    assert seen == [(7, "x")] * 3
    assert worker.state is corral.WorkerState.STOPPED


async def test_a_suspending_run_keeps_one_task_and_its_own_context() -> None:
    """A run that awaits is finished by the task that started it, so cancel
    scopes opened before the await close in the same task."""
    var: contextvars.ContextVar[int] = contextvars.ContextVar("var", default=0)
    seen: list[int] = []

    async def tick() -> None:
        var.set(var.get() + 1)  # each worker keeps one context across its runs
        with anyio.fail_after(5):
            await anyio.lowlevel.checkpoint()
            await anyio.sleep(0.001)
        seen.append(var.get())

    async def other() -> None:
        seen.append(-var.get())  # never sees the first worker's variable

    async with corral.Supervisor() as sup:
        first = sup.every(0.002, tick)
        second = sup.every(0.002, other)
        await first.wait_runs(5)
        await second.wait_runs(5)
    assert [v for v in seen if v > 0][:5] == [1, 2, 3, 4, 5]
    assert all(v == 0 for v in seen if v <= 0)


async def test_many_workers_share_one_scheduler() -> None:
    counts = [0] * 500

    async def tick(i: int) -> None:
        counts[i] += 1

    async with corral.Supervisor() as sup:
        workers = [sup.every(0.005, tick, i) for i in range(500)]
        for worker in workers:
            await worker.wait_runs(3)
        tasks_serving = sum(1 for _ in workers)
    assert min(counts) >= 3
    assert tasks_serving == 500


async def test_stop_during_a_sync_run_lets_it_finish() -> None:
    started = anyio.Event()
    release = anyio.Event()
    token = anyio.lowlevel.current_token()
    finished: list[bool] = []

    def slow() -> None:
        anyio.from_thread.run_sync(started.set, token=token)
        anyio.from_thread.run(release.wait, token=token)
        finished.append(True)

    async with corral.Supervisor() as sup:
        worker = sup.every(0.001, slow)
        await started.wait()
        worker.stop()
        assert worker.state is corral.WorkerState.STOPPING
        release.set()
        await worker.wait_stopped()
    assert finished == [True]
    assert worker.state is corral.WorkerState.STOPPED
    assert worker.runs == 1


async def test_on_error_gets_the_exception_and_the_worker_goes_on() -> None:
    errors: list[Exception] = []
    calls = 0

    def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise ConnectionError(f"attempt {calls}")

    async with corral.Supervisor() as sup:
        worker = sup.every(0.001, flaky, on_error=errors.append)
        await worker.wait_runs(6)
    assert [str(e) for e in errors[:3]] == ["attempt 1", "attempt 3", "attempt 5"]
    stats = worker.statistics()
    assert stats.errors >= 3
    assert stats.last_error is not None
    assert "ConnectionError" in stats.last_error


async def test_statistics_report_lateness_percentiles() -> None:
    async def tick() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.every(0.002, tick, name="ticker")
        await worker.wait_runs(10)
        stats = worker.statistics()
    assert stats.name == "ticker"
    assert stats.kind == "interval"
    assert stats.runs >= 10
    assert stats.lateness is not None
    assert stats.lateness.count == stats.runs + 0 or stats.lateness.count >= 10
    assert stats.lateness.p50 <= stats.lateness.p99 <= stats.lateness.max
    assert stats.lateness.max < 0.5
    assert worker.timers.lateness is not None
    assert len(worker.timers.lateness.samples()) >= 10


async def test_real_clock_lateness_is_small_when_idle() -> None:
    async def tick() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.every(0.005, tick)
        started = time.monotonic()
        await worker.wait_runs(20)
    assert time.monotonic() - started < 5
    assert worker.timers.lateness is not None
    assert worker.timers.lateness.median < 0.005
