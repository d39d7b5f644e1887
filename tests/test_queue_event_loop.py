"""Queue, event and loop workers."""

from __future__ import annotations

import threading

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st

import corral
from corral._queue import WorkQueue

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_queue_worker_sums_2_3_4_to_9(kind: str) -> None:
    total = 0

    async def add_async(x: int) -> None:
        nonlocal total
        total += x

    def add_sync(x: int) -> None:
        nonlocal total
        total += x

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(add_async if kind == "async" else add_sync)
        for x in (2, 3, 4):
            await worker.put(x)
        await worker.wait_runs(3)
    assert total == 9


async def test_queue_worker_passes_args_before_the_item() -> None:
    seen: list[tuple[str, int]] = []

    async def handle(prefix: str, item: int) -> None:
        seen.append((prefix, item))

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, "p")
        worker.put_nowait(1)
        await worker.wait_runs(1)
    assert seen == [("p", 1)]


async def test_priority_order_holds_and_is_fifo_within_a_level() -> None:
    order: list[str] = []
    gate = anyio.Event()

    async def handle(item: str) -> None:
        await gate.wait()  # hold the first item so the rest queue up behind it
        order.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, priority=True)
        worker.put_nowait((0, "first"))
        await _until_busy(worker)
        for item in [(5, "e1"), (1, "b1"), (9, "z"), (1, "b2"), (3, "c"), (5, "e2")]:
            await worker.put(item)
        gate.set()
        await worker.wait_runs(7)
    assert order == ["first", "b1", "b2", "c", "e1", "e2", "z"]


async def _until_busy(worker: corral.QueueWorker) -> None:
    """Wait (without sleeping blindly) until the worker has taken its first item."""
    with anyio.fail_after(5):
        while worker.qsize():
            await anyio.lowlevel.checkpoint()


@given(st.lists(st.tuples(st.integers(-3, 3), st.integers()), max_size=50))
def test_work_queue_orders_by_priority_then_arrival(items: list[tuple[int, int]]) -> None:
    async def main() -> list[int]:
        queue = WorkQueue("q", maxsize=0, priority=True)
        for item in items:
            queue.put_nowait(item)
        return [await queue.get() for _ in items]

    expected = [value for _, value in sorted(items, key=lambda pair: pair[0])]  # stable sort
    assert anyio.run(main) == expected


async def test_maxsize_applies_backpressure_and_put_nowait_raises_queue_full() -> None:
    gate = anyio.Event()

    async def handle(item: int) -> None:
        await gate.wait()

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, maxsize=2)
        worker.put_nowait(0)
        await _until_busy(worker)
        worker.put_nowait(1)
        worker.put_nowait(2)
        with pytest.raises(corral.QueueFull, match=r"await worker\.put"):
            worker.put_nowait(3)
        with anyio.move_on_after(0.05) as scope:
            await worker.put(3)  # blocks: the queue is full
        assert scope.cancelled_caught
        assert worker.qsize() == 2
        gate.set()
        await worker.put(3)
        await worker.wait_runs(4)
    assert worker.statistics().runs == 4


async def test_concurrency_runs_items_at_once() -> None:
    running = 0
    peak = 0
    all_in = anyio.Event()

    async def handle(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            all_in.set()
        await all_in.wait()
        running -= 1

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, concurrency=3)
        for i in range(6):
            await worker.put(i)
        await worker.wait_runs(6)
    assert peak == 3


async def test_put_from_another_thread_is_delivered() -> None:
    got: list[int] = []

    async def handle(item: int) -> None:
        got.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, maxsize=1)
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for i in range(20):
                    worker.put_threadsafe(i)
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        thread = threading.Thread(target=produce)
        thread.start()
        await worker.wait_runs(20)
        await anyio.to_thread.run_sync(thread.join, 5)
    assert not errors
    assert got == list(range(20))


async def test_put_threadsafe_on_the_loop_thread_says_what_to_use() -> None:
    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(print)
        with pytest.raises(RuntimeError, match="put_nowait"):
            worker.put_threadsafe(1)


async def test_stop_drains_queued_items_by_default() -> None:
    got: list[int] = []

    async def handle(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        got.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle)
        for i in range(10):
            worker.put_nowait(i)
        worker.stop()
        with pytest.raises(corral.WorkerStopped, match="takes no more items"):
            await worker.put(99)
        await worker.wait_stopped()
    assert got == list(range(10))
    assert worker.state is corral.WorkerState.STOPPED


async def test_stop_without_drain_drops_queued_items(caplog: pytest.LogCaptureFixture) -> None:
    got: list[int] = []
    gate = anyio.Event()

    async def handle(item: int) -> None:
        await gate.wait()
        got.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle)
        for i in range(5):
            worker.put_nowait(i)
        await _until_busy_with(worker, 4)
        worker.stop(drain=False)
        gate.set()
        await worker.wait_stopped()
    assert got == [0]
    assert "dropped 4 queued items" in caplog.text


async def _until_busy_with(worker: corral.QueueWorker, left: int) -> None:
    with anyio.fail_after(5):
        while worker.qsize() != left:
            await anyio.lowlevel.checkpoint()


async def test_supervisor_exit_drains_queues() -> None:
    got: list[int] = []

    def handle(item: int) -> None:
        got.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle)
        for i in range(50):
            worker.put_nowait(i)
    assert got == list(range(50))


async def test_event_triggered_twice_runs_twice() -> None:
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1

    async with corral.Supervisor() as sup:
        worker = sup.event_worker(refresh)
        worker.trigger()
        await worker.wait_runs(1)
        worker.trigger()
        await worker.wait_runs(2)
    assert runs == 2


async def test_triggers_during_a_run_coalesce_into_one_more_run() -> None:
    running = anyio.Event()
    release = anyio.Event()
    runs = 0

    async def refresh() -> None:
        nonlocal runs
        runs += 1
        running.set()
        await release.wait()

    async with corral.Supervisor() as sup:
        worker = sup.event_worker(refresh)
        worker.trigger()
        await running.wait()
        for _ in range(10):
            worker.trigger()
        assert worker.statistics().pending == 1
        release.set()
        await worker.wait_runs(2)
        worker.stop()
        await worker.wait_stopped()
    assert runs == 2


async def test_trigger_from_another_thread() -> None:
    ran = anyio.Event()

    def refresh() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.event_worker(refresh)
        thread = threading.Thread(target=worker.trigger)
        thread.start()
        await worker.wait_runs(1)
        await anyio.to_thread.run_sync(thread.join, 5)
        ran.set()
    assert worker.runs == 1


async def test_trigger_after_stop_is_ignored_and_says_so() -> None:
    async with corral.Supervisor() as sup:
        worker = sup.event_worker(lambda: None)
        assert worker.trigger() is True
        await worker.wait_runs(1)
        worker.stop()
        assert worker.trigger() is False  # stopping: no run will come of it
        await worker.wait_stopped()
        assert worker.trigger() is False
    assert worker.runs == 1


@pytest.mark.parametrize("kind", ["async", "sync"])
async def test_loop_worker_runs_back_to_back_until_false(kind: str) -> None:
    count = 0

    def step_sync() -> bool:
        nonlocal count
        count += 1
        return count < 50

    async def step_async() -> bool:
        return step_sync()

    async with corral.Supervisor() as sup:
        worker = sup.loop_worker(step_async if kind == "async" else step_sync)
        await worker.wait_stopped()
    assert count == 50
    assert worker.state is corral.WorkerState.STOPPED


async def test_a_loop_worker_that_never_awaits_does_not_starve_the_loop() -> None:
    spins = 0

    async def spin() -> None:
        nonlocal spins
        spins += 1

    async with corral.Supervisor() as sup:
        worker = sup.loop_worker(spin)
        await anyio.sleep(0.01)  # would never return if the worker held the loop
        worker.stop()
    assert spins > 10


async def test_false_from_a_queue_worker_stops_it() -> None:
    async def handle(item: int) -> bool:
        return item != 3

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle)
        for i in range(10):
            worker.put_nowait(i)
        await worker.wait_stopped()
    assert worker.runs == 4
    assert worker.state is corral.WorkerState.STOPPED


async def test_wait_runs_raises_when_the_worker_stops_first() -> None:
    async with corral.Supervisor() as sup:
        worker = sup.event_worker(lambda: False)
        worker.trigger()
        with pytest.raises(corral.WorkerStopped, match="before reaching 5"):
            await worker.wait_runs(5)


async def test_a_busy_queue_worker_yields_between_items() -> None:
    processed = 0

    async def handle(item: int) -> None:  # never awaits
        nonlocal processed
        processed += 1

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle)
        for i in range(100):
            worker.put_nowait(i)
        await anyio.lowlevel.checkpoint()
        assert processed < 100  # the worker yielded: the loop was not held for all items
        await worker.wait_runs(100)
