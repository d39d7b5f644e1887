"""Edge cases found in review: each test pins down one behaviour that once broke."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import anyio
import pytest
import sniffio
import trio.testing

import corral

from .conftest import thread_idents

pytestmark = pytest.mark.anyio


def asyncio_only(reason: str = "a stray CancelledError is an asyncio hazard") -> None:
    if sniffio.current_async_library() != "asyncio":
        pytest.skip(reason)


@pytest.mark.parametrize(
    "anyio_backend",
    [pytest.param(("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), id="mock")],
)
async def test_a_1ms_interval_keeps_running_past_one_second_of_virtual_time() -> None:
    """The sleep and the serve loop must agree on when a slot is due, to the bit."""

    async def tick() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.every(0.001, tick)
        with anyio.fail_after(5):
            await worker.wait_runs(1500)


@pytest.mark.parametrize("where", ["inline", "suspended", "queue"])
async def test_a_stray_cancelled_error_is_a_failure_not_a_cancellation(where: str) -> None:
    asyncio_only()

    async def cancelled_future() -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.cancel()
        await future  # raises CancelledError although nobody cancelled this task

    async def inline() -> None:
        raise asyncio.CancelledError

    async def suspended() -> None:
        await anyio.lowlevel.checkpoint()
        await cancelled_future()

    async def on_item(item: int) -> None:
        await cancelled_future()

    with pytest.raises(corral.WorkerFailed, match="not being cancelled") as info:
        async with corral.Supervisor() as sup:
            if where == "queue":
                sup.queue_worker(on_item).put_nowait(1)
            else:
                sup.every(0.001, inline if where == "inline" else suspended)
            await anyio.sleep_forever()
    assert isinstance(info.value.__cause__, RuntimeError)
    assert isinstance(info.value.__cause__.__cause__, asyncio.CancelledError)


async def test_a_producer_feeding_a_queue_exits_cleanly_and_everything_is_consumed() -> None:
    produced: list[int] = []
    consumed: list[int] = []

    async def consume(item: int) -> None:
        await anyio.sleep(0.002)  # slower than the producer: its puts wait for room
        consumed.append(item)

    async with corral.Supervisor() as sup:
        queue = sup.queue_worker(consume, maxsize=1)

        async def produce() -> None:
            for _ in range(3):
                produced.append(len(produced))
                await queue.put(produced[-1])

        producer = sup.every(0.001, produce)
        with anyio.fail_after(5):
            while len(produced) < 8:  # leave mid-run: the producer waits inside put()
                await anyio.lowlevel.checkpoint()
    assert consumed == produced
    assert producer.state is queue.state is corral.WorkerState.STOPPED


async def test_a_failed_queue_worker_refuses_puts_and_frees_blocked_threads() -> None:
    results: list[str] = []
    blocked = threading.Event()

    async def boom(item: int) -> None:
        if item == 0:
            await anyio.to_thread.run_sync(blocked.wait, 5)
            raise ValueError("no")

    with pytest.raises(corral.WorkerFailed):
        async with corral.Supervisor() as sup:
            worker = sup.queue_worker(boom, maxsize=1)
            worker.put_nowait(0)
            with anyio.fail_after(5):
                while worker.qsize():  # until the worker has taken item 0
                    await anyio.lowlevel.checkpoint()
            worker.put_nowait(1)  # fills the queue while item 0 runs

            def producer() -> None:
                try:
                    worker.put_threadsafe(2)  # blocks: the queue is full
                except corral.WorkerStopped:
                    results.append("refused")

            thread = threading.Thread(target=producer)
            thread.start()
            blocked.set()
            await anyio.sleep_forever()
    await anyio.to_thread.run_sync(thread.join, 5)
    assert results == ["refused"]
    with pytest.raises(corral.WorkerStopped):
        worker.put_nowait(3)


async def test_when_one_consumer_fails_its_siblings_finish_their_items() -> None:
    finished: list[str] = []
    sibling_started = anyio.Event()

    async def handle(item: str) -> None:
        if item == "slow":
            sibling_started.set()
            await anyio.sleep(0.05)
            finished.append(item)
        else:
            await sibling_started.wait()
            raise ValueError(item)

    with pytest.raises(corral.WorkerFailed):
        async with corral.Supervisor(shutdown_timeout=5) as sup:
            worker = sup.queue_worker(handle, concurrency=2)
            worker.put_nowait("slow")
            worker.put_nowait("bad")
            await anyio.sleep_forever()
    assert finished == ["slow"]
    assert worker.state is corral.WorkerState.FAILED


@pytest.mark.parametrize("kind", ["loop", "event"])
async def test_no_run_starts_after_stop(kind: str) -> None:
    started_while_stopping: list[str] = []
    box: dict[str, corral.Worker] = {}

    async def fn() -> None:
        if box["w"].state is not corral.WorkerState.RUNNING:
            started_while_stopping.append(box["w"].state.value)

    async with corral.Supervisor() as sup:
        if kind == "loop":
            box["w"] = sup.loop_worker(fn)
            await box["w"].wait_runs(10)
        else:
            event = box["w"] = sup.event_worker(fn)
            event.trigger()
            await anyio.lowlevel.checkpoint()  # the worker takes the trigger
        box["w"].stop()
        await box["w"].wait_stopped()
    assert started_while_stopping == []


async def test_outer_cancellation_still_stops_gracefully() -> None:
    finished: list[str] = []
    running = anyio.Event()

    async def slow_tick() -> None:
        running.set()
        await anyio.sleep(0.05)
        finished.append("tick")

    async def handle(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        finished.append(f"item {item}")

    with anyio.CancelScope() as outer:
        async with corral.Supervisor(shutdown_timeout=5) as sup:
            queue = sup.queue_worker(handle)
            sup.every(10, slow_tick)
            for i in range(3):
                queue.put_nowait(i)
            await running.wait()
            outer.cancel()
            await anyio.sleep_forever()
    assert outer.cancelled_caught
    assert sorted(finished) == ["item 0", "item 1", "item 2", "tick"]
    assert all(w.state is corral.WorkerState.STOPPED for w in sup.workers)


async def test_a_queued_sync_run_of_a_cancelled_worker_never_starts() -> None:
    release = threading.Event()
    entered = anyio.Event()
    token = anyio.lowlevel.current_token()
    ran: list[str] = []

    def hog() -> None:
        anyio.from_thread.run_sync(entered.set, token=token)
        release.wait(5)

    def late() -> None:
        ran.append("late")

    try:
        async with corral.Supervisor(shutdown_timeout=0.05, max_threads=1) as sup:
            sup.every(10, hog)
            await entered.wait()  # the only thread is taken
            waiting = sup.event_worker(late)
            waiting.trigger()
            with anyio.fail_after(5):
                while waiting.statistics().pending != 0:
                    await anyio.lowlevel.checkpoint()
    finally:
        release.set()
    for thread in threading.enumerate():  # let the freed thread take what is queued
        if thread.name.startswith("corral:"):
            await anyio.to_thread.run_sync(thread.join, 5)
    assert waiting.state is corral.WorkerState.CANCELLED
    assert ran == []


async def test_a_malformed_priority_put_does_not_swallow_a_wakeup() -> None:
    got: list[Any] = []
    gate = anyio.Event()

    async def handle(item: str) -> None:
        await gate.wait()
        got.append(item)

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, priority=True, maxsize=1)
        worker.put_nowait((1, "a"))
        with anyio.fail_after(5):
            while worker.qsize():
                await anyio.lowlevel.checkpoint()
        worker.put_nowait((1, "b"))  # the queue is full again
        with pytest.raises(TypeError, match="must be \\(priority, item\\) tuples"):
            await worker.put("malformed")  # refused at once, without waiting for room
        async with anyio.create_task_group() as tg:
            tg.start_soon(worker.put, (1, "c"))
            gate.set()
        await worker.wait_runs(3)
    assert got == ["a", "b", "c"]


@pytest.mark.parametrize("event_first", [True, False], ids=["event-first", "queue-first"])
async def test_a_draining_queue_may_trigger_an_event_worker_at_shutdown(event_first: bool) -> None:
    """Whatever the start order, shutdown must not turn the wiring into failures."""
    redraws = 0
    handled: list[int] = []

    async def redraw() -> None:
        nonlocal redraws
        redraws += 1

    async def handle(item: int) -> None:
        await anyio.lowlevel.checkpoint()
        handled.append(item)
        dashboard.trigger()

    async with corral.Supervisor() as sup:
        if event_first:
            dashboard = sup.event_worker(redraw)
            queue = sup.queue_worker(handle)
        else:
            queue = sup.queue_worker(handle)
            dashboard = sup.event_worker(redraw)
        for i in range(20):
            queue.put_nowait(i)
    assert handled == list(range(20))  # drained in full, no WorkerFailed
    assert all(w.state is corral.WorkerState.STOPPED for w in sup.workers)


@pytest.mark.timeout(20)
async def test_entering_from_an_already_cancelled_scope_does_not_hang() -> None:
    reached = False
    with anyio.CancelScope() as scope:
        scope.cancel()
        async with corral.Supervisor(shutdown_timeout=0.2) as sup:
            reached = True
            sup.every(0.01, anyio.lowlevel.checkpoint)
            await anyio.sleep(5)  # the pending cancellation lands here
    assert reached
    assert scope.cancelled_caught
    assert sup.state == "stopped"


@pytest.mark.timeout(20)
async def test_a_native_asyncio_timeout_during_shutdown_does_not_hang() -> None:
    asyncio_only("asyncio.timeout cancels natively, past anyio's shields")
    before = asyncio.all_tasks()

    async def slow() -> None:
        await anyio.sleep(0.3)  # still running when the body ends

    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):  # expires while __aexit__ waits for `slow`
            async with corral.Supervisor(shutdown_timeout=2) as sup:
                worker = sup.loop_worker(slow)
                await worker.wait_runs(0)
                await anyio.sleep(0.02)
    assert sup.state == "stopped"
    assert worker.state in (corral.WorkerState.STOPPED, corral.WorkerState.CANCELLED)
    assert asyncio.all_tasks() == before


@pytest.mark.timeout(20)
async def test_a_body_group_raising_while_a_worker_fails_still_shuts_down() -> None:
    threads_before = thread_idents()

    async def boom() -> None:
        await anyio.sleep(0.02)
        raise ValueError("worker boom")

    async def child() -> None:
        try:
            await anyio.sleep_forever()
        finally:
            raise KeyError("child cleanup failed")

    with pytest.raises(BaseException) as info:  # noqa: PT011  (the group's shape varies by loop)
        async with corral.Supervisor(shutdown_timeout=0.5) as sup:
            sup.loop_worker(boom, name="boom")
            sup.loop_worker(lambda: None, name="sync")
            async with anyio.create_task_group() as tg:
                tg.start_soon(child)
                await anyio.sleep_forever()
    assert "child cleanup failed" in repr(info.value)
    assert sup.state == "stopped"
    assert all(w.state is not corral.WorkerState.RUNNING for w in sup.workers)
    assert thread_idents() == threads_before


async def test_shutdown_timeout_zero_still_leaves_no_idle_thread() -> None:
    threads_before = thread_idents()
    async with corral.Supervisor(shutdown_timeout=0) as sup:
        worker = sup.queue_worker(lambda item: None, concurrency=8)
        for i in range(32):
            worker.put_nowait(i)
        await worker.wait_runs(32)
    assert thread_idents() == threads_before


async def test_intervals_beyond_the_timer_range_are_refused() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(ValueError, match="at most 1e\\+09"):
            sup.every(1e306, lambda: None)
        with pytest.raises(ValueError, match="delay_before must be"):
            sup.every(1, lambda: None, delay_before=1e12)
