"""The Supervisor: failure surfacing, shutdown, leaks, statistics, naming."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import corral

from .conftest import live_tasks, thread_idents

pytestmark = pytest.mark.anyio


def _start(sup: corral.Supervisor, kind: str, fn: Callable[..., Any]) -> corral.Worker:
    if kind == "interval":
        return sup.every(0.001, fn, name="broken")
    if kind == "queue":
        queue = sup.queue_worker(fn, name="broken")
        queue.put_nowait(1)
        return queue
    if kind == "event":
        event = sup.event_worker(fn, name="broken")
        event.trigger()
        return event
    return sup.loop_worker(fn, name="broken")


@pytest.mark.parametrize("kind", ["interval", "queue", "event", "loop"])
@pytest.mark.parametrize("sync", [True, False], ids=["sync", "async"])
async def test_unhandled_failure_cancels_the_block_and_names_the_worker(
    kind: str, sync: bool
) -> None:
    def fail_sync(*args: Any) -> None:
        raise ZeroDivisionError("boom")

    async def fail_async(*args: Any) -> None:
        await anyio.lowlevel.checkpoint()
        raise ZeroDivisionError("boom")

    reached_end = False
    with pytest.raises(
        corral.WorkerFailed, match="worker 'broken' failed: ZeroDivisionError: boom"
    ) as info:
        async with corral.Supervisor() as sup:
            _start(sup, kind, fail_sync if sync else fail_async)
            await anyio.sleep_forever()
            reached_end = True  # pragma: no cover
    assert not reached_end
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    assert info.value.worker == "broken"
    assert sup.statistics().workers[0].state is corral.WorkerState.FAILED


async def test_failure_in_on_error_is_a_failure_too() -> None:
    def handler(exc: Exception) -> None:
        raise RuntimeError("handler broke") from exc

    with pytest.raises(corral.WorkerFailed, match="handler broke"):
        async with corral.Supervisor() as sup:
            sup.every(0.001, lambda: 1 / 0, on_error=handler, name="w")
            await anyio.sleep_forever()


async def test_other_workers_stop_gracefully_when_one_fails() -> None:
    finished: list[int] = []

    async def slow(item: int) -> None:
        await anyio.sleep(0.01)
        finished.append(item)

    with pytest.raises(corral.WorkerFailed):
        async with corral.Supervisor() as sup:
            queue = sup.queue_worker(slow)
            for i in range(3):
                queue.put_nowait(i)
            sup.event_worker(lambda: 1 / 0).trigger()
            await anyio.sleep_forever()
    assert finished == [0, 1, 2]  # drained, not cut off


async def test_body_exception_propagates_unchanged_after_shutdown() -> None:
    stopped = []

    async def tick() -> None:
        pass

    with pytest.raises(KeyError, match="mine"):
        async with corral.Supervisor() as sup:
            worker = sup.every(0.001, tick)
            sup.on_shutdown.register(lambda: stopped.append(worker.state))
            await worker.wait_runs(2)
            raise KeyError("mine")
    assert stopped == [corral.WorkerState.STOPPED]


async def test_outer_cancellation_stops_everything() -> None:
    before = live_tasks()

    async def tick() -> None:
        pass

    with anyio.move_on_after(0.05) as scope:
        async with corral.Supervisor() as sup:
            worker = sup.every(0.001, tick)
            sup.loop_worker(anyio.lowlevel.checkpoint)
            await anyio.sleep_forever()
    assert scope.cancelled_caught
    assert worker.state is corral.WorkerState.STOPPED
    assert sup.state == "stopped"
    assert live_tasks() == before


async def test_leaving_the_block_leaves_no_task_and_no_thread() -> None:
    tasks_before = live_tasks()
    threads_before = thread_idents()

    def sync_tick(*item: int) -> None:
        pass

    async def async_tick() -> None:
        await anyio.lowlevel.checkpoint()

    async with corral.Supervisor() as sup:
        workers = [
            sup.every(0.001, sync_tick),
            sup.every(0.001, async_tick),
            sup.queue_worker(sync_tick, concurrency=4),
            sup.event_worker(sync_tick),
            sup.loop_worker(sync_tick),
        ]
        workers[3].trigger()  # type: ignore[attr-defined]
        for i in range(8):
            workers[2].put_nowait(i)  # type: ignore[attr-defined]
        for worker in workers:
            await worker.wait_runs(1)
        assert len(thread_idents() - threads_before) >= 1
        assert live_tasks() > tasks_before
    assert live_tasks() == tasks_before
    assert thread_idents() == threads_before
    assert all(w.state is corral.WorkerState.STOPPED for w in workers)


async def test_a_stuck_async_worker_is_cancelled_after_shutdown_timeout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    entered = anyio.Event()

    async def stuck(item: int) -> None:
        entered.set()
        await anyio.sleep_forever()

    with anyio.fail_after(5):
        async with corral.Supervisor(shutdown_timeout=0.05) as sup:
            worker = sup.queue_worker(stuck, name="stuck")
            worker.put_nowait(1)
            worker.put_nowait(2)
            await entered.wait()
    assert worker.state is corral.WorkerState.CANCELLED
    assert "still running" in caplog.text
    assert "stuck" in caplog.text
    assert "cancelled with 1 items still queued" in caplog.text


async def test_a_stuck_sync_function_is_abandoned_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = threading.Event()
    entered = anyio.Event()
    token = anyio.lowlevel.current_token()

    def stuck() -> None:
        anyio.from_thread.run_sync(entered.set, token=token)
        release.wait(10)

    try:
        with anyio.fail_after(5):
            async with corral.Supervisor(shutdown_timeout=0.05) as sup:
                worker = sup.every(1, stuck)
                await entered.wait()
    finally:
        release.set()
    assert worker.state is corral.WorkerState.CANCELLED
    assert "abandoned in daemon threads: " in caplog.text
    assert "stuck" in caplog.text


async def test_shutdown_hooks_run_after_workers_stop() -> None:
    order: list[str] = []

    async def tick() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.every(0.001, tick)

        @sup.on_shutdown.register
        async def last() -> None:
            order.append(f"hook saw {worker.state.value}")

        @sup.on_shutdown.register(priority=1)
        def first() -> None:
            order.append("first")

    assert order == ["first", "hook saw stopped"]


async def test_a_failing_shutdown_hook_is_raised_when_nothing_else_is() -> None:
    def bad() -> None:
        raise OSError("disk gone")

    with pytest.raises(corral.HooksFailed, match="disk gone"):
        async with corral.Supervisor() as sup:
            sup.on_shutdown.register(bad)


async def test_statistics_list_every_worker_with_its_state() -> None:
    async with corral.Supervisor(name="plant") as sup:
        a = sup.every(0.001, lambda: None, name="a")
        sup.queue_worker(lambda x: None, name="b")
        await a.wait_runs(1)
        a.stop()
        await a.wait_stopped()
        stats = sup.statistics()
    assert stats.name == "plant"
    assert stats.state == "running"
    assert [(w.name, w.kind, w.state) for w in stats.workers] == [
        ("a", "interval", corral.WorkerState.STOPPED),
        ("b", "queue", corral.WorkerState.RUNNING),
    ]
    assert sup.statistics().state == "stopped"
    assert [w.name for w in sup.workers] == ["a", "b"]


async def test_default_names_are_qualnames_made_unique() -> None:
    async def poll() -> None:
        pass

    async with corral.Supervisor() as sup:
        names = [sup.every(1, poll).name for _ in range(3)]
        with pytest.raises(ValueError, match="already has a worker named 'x'"):
            sup.every(1, poll, name="x") and sup.every(1, poll, name="x")
    base = poll.__qualname__
    assert names == [base, f"{base}#2", f"{base}#3"]


async def test_decorator_forms_start_workers() -> None:
    seen: list[str] = []

    async with corral.Supervisor() as sup:

        @sup.every(0.001)
        async def ticker() -> bool:
            seen.append("tick")
            return False

        @sup.queue_worker(maxsize=5)
        def handle(item: str) -> None:
            seen.append(item)

        @sup.event_worker()
        def on_event() -> None:
            seen.append("event")

        @sup.loop_worker(name="looper")
        async def loop() -> bool:
            seen.append("loop")
            return False

        handle.put_nowait("item")
        on_event.trigger()
        for worker in (ticker, handle, on_event, loop):
            await worker.wait_runs(1)
    assert isinstance(ticker, corral.IntervalWorker)
    assert isinstance(handle, corral.QueueWorker)
    assert handle.maxsize == 5
    assert loop.name == "looper"
    assert sorted(seen) == ["event", "item", "loop", "tick"]


@corral.interval(0.001, name="spec-ticker")
async def module_ticker(log: list[str]) -> bool:
    log.append("tick")
    return len(log) < 3


@corral.queue_worker
def module_queue(item: int) -> None:
    pass


async def test_module_level_specs_start_in_any_supervisor_with_overrides() -> None:
    assert isinstance(module_ticker, corral.WorkerSpec)
    assert module_ticker.fn.__name__ == "module_ticker"
    for _ in range(2):  # the same spec, started by two supervisors
        log: list[str] = []
        async with corral.Supervisor() as sup:
            worker = sup.start_worker(module_ticker, log, interval=0.002)
            await worker.wait_stopped()
        assert worker.name == "spec-ticker"
        assert isinstance(worker, corral.IntervalWorker)
        assert worker.interval == 0.002
        assert log == ["tick"] * 3
    async with corral.Supervisor() as sup:
        queue = sup.start_worker(module_queue, name="renamed")
        assert queue.name == "renamed"
        with pytest.raises(TypeError, match="queue workers take no option"):
            sup.start_worker(module_queue, interval=1)


async def test_a_supervisor_is_used_once() -> None:
    sup = corral.Supervisor()
    async with sup:
        pass
    with pytest.raises(RuntimeError, match="create a new Supervisor"):
        async with sup:
            pass  # pragma: no cover


async def test_starting_workers_outside_the_block_says_how() -> None:
    sup = corral.Supervisor()
    with pytest.raises(corral.SupervisorNotRunning, match=r"async with corral\.Supervisor"):
        sup.every(1, lambda: None)
    async with sup:
        pass
    with pytest.raises(corral.SupervisorNotRunning, match="is stopped"):
        sup.queue_worker(lambda x: None)


async def test_starting_workers_from_another_thread_is_refused() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(RuntimeError, match="from another thread"):
            await anyio.to_thread.run_sync(sup.every, 1, lambda: None)


async def test_sync_functions_share_at_most_max_threads() -> None:
    inside = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()

    def work(item: int) -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
        release.wait(5)
        with lock:
            inside -= 1

    async with corral.Supervisor(max_threads=2) as sup:
        worker = sup.queue_worker(work, concurrency=6)
        for i in range(12):
            worker.put_nowait(i)
        with anyio.fail_after(5):
            while sup.statistics().threads_busy < 2:
                await anyio.lowlevel.checkpoint()
        release.set()
        await worker.wait_runs(12)
    assert peak == 2
