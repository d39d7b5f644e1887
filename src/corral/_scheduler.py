"""Interval workers and the one timer that serves all of them.

A supervisor keeps every interval worker on one timer wheel, served by one
scheduling task. Due async functions run inline in that task: the
scheduler drives the coroutine's first step itself, so a function that
finishes without suspending costs no task switch and no timer of its own.
When a function does suspend, the task that started it carries on as that
run's driver (so the run keeps one task identity, and cancel scopes and
``current_task()`` stay right) and a fresh task takes over the scheduling.
Sync functions go to the supervisor's thread pool and report back by callback.
"""

from __future__ import annotations

import contextvars
import heapq
import math
from collections.abc import Callable, Coroutine, Generator
from typing import Any, Literal, final

import anyio
import anyio.lowlevel
from anyio.abc import TaskGroup

from ._eventloop import LoopHandle
from ._threads import Job
from ._timing import Timer
from ._worker import Runtime, Worker, WorkerState, stray_cancellation

#: Due times are served in slots of a millisecond: loop timers wake with about
#: that granularity anyway, and sleeping for less would only spin.
SLOTS_PER_SECOND = 1000
#: How long one batch may hold the loop before the scheduler lets other tasks run.
BATCH_SLICE = 0.002

Mode = Literal["rate", "delay"]
_Suspended = tuple[Coroutine[Any, Any, Any], Any]


@final
class IntervalWorker(Worker):
    """Runs its function every ``interval`` seconds (see ``Supervisor.every``).

    In ``"rate"`` mode tick *k* is due at ``t0 + k * interval`` (``t0``: when
    the worker was started, plus ``delay_before``), so there is no drift; a
    tick that would start more than one interval late is skipped and counted
    (see ``statistics().skipped``) rather than run in a burst. In
    ``"delay"`` mode each run is due ``interval`` after the previous one ended.
    Lateness is measured from the due time; it can be slightly negative, down
    to -0.5 ms, because due times within a millisecond are served together.
    """

    kind = "interval"
    _measures_lateness = True

    def __init__(
        self,
        runtime: Runtime,
        scheduler: Scheduler,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_error: Callable[[Exception], object] | None,
        *,
        interval: float,
        delay_before: float,
        mode: Mode,
    ) -> None:
        super().__init__(runtime, name, fn, args, on_error)
        assert self.timers.lateness is not None
        self._lateness: Timer = self.timers.lateness
        self.interval = interval
        self.mode = mode
        self._rate = mode == "rate"
        self._scheduler = scheduler
        self._clock = runtime.loop.clock
        # One context for the worker's whole life, as a task of its own would have.
        self._context = contextvars.copy_context()
        self._t0 = self._clock() + delay_before
        self._tick = 0
        self._skip_count = 0
        self._running = False
        self._started = 0.0
        self._job: Job | None = None
        self._due = self._t0

    def _launch(self) -> None:
        self._scheduler.schedule(self, self._t0)

    def _skipped(self) -> int:
        return self._skip_count

    def _on_stop(self) -> None:
        if not self._running:
            self._finish()  # its heap entry is dropped when it comes due

    def _fire(self, due: float, now: float) -> _Suspended | None:
        """Start one run (called by the scheduler); the coroutine, if it suspended.

        This is the per-tick hot path: keep it free of avoidable calls.
        """
        if now - due >= self.interval and self._rate:
            due = self._skip_to_latest_tick(now)
        self._lateness.record(now - due)
        self._running = True
        self._started = now
        if not self._is_async:
            self._job = self._rt.threads.submit(self._fn, self._args, self._thread_done)
            return None
        try:
            coro = self._fn(*self._args)  # creating it runs none of its code
            step = self._context.run(coro.send, None)
        except StopIteration as finished:
            self._done(finished.value, None)
        except Exception as error:
            self._done(None, error)
        except self._rt.loop.cancelled as exc:  # nothing cancels code that never awaited
            self._done(None, stray_cancellation(self._fn, exc))
        else:
            return coro, step
        return None

    def _skip_to_latest_tick(self, now: float) -> float:
        """Skip (and count) ticks more than an interval late; the due time to run."""
        t0, interval = self._t0, self.interval
        latest = int((now - t0) / interval)
        # Division rounds either way; settle on the last tick due at or before now.
        while t0 + (latest + 1) * interval <= now:
            latest += 1
        while latest > self._tick and t0 + latest * interval > now:
            latest -= 1
        self._skip_count += latest - self._tick
        self._tick = latest
        return t0 + latest * interval

    async def _drive(self, coro: Coroutine[Any, Any, Any], step: Any) -> None:
        """Finish a run whose coroutine suspended, in the task that started it."""
        try:
            result, error = await self._settle(_Resumed, coro, step, self._context)
        except BaseException:
            self._cancelled()  # the supervisor cancelled this run at shutdown
            raise
        self._done(result, error)

    def _cancelled(self) -> None:
        if self._job is not None:
            self._job.cancel()  # a run still waiting for a thread never starts
        super()._cancelled()

    def _thread_done(self, result: object, error: Exception | None) -> None:
        if not self._finished:  # else: cancelled at shutdown while the thread ran
            self._done(result, error)

    def _done(self, result: object, error: Exception | None) -> None:
        self._running = False
        self._job = None
        end = self._clock()
        if result is None and error is None and not self._run_waiters:
            self._runs += 1  # the common case, without the general bookkeeping
            self._duration.record(end - self._started)
        elif not self._outcome(result, error, end - self._started):
            self._finish()
            return
        if self._state is not WorkerState.RUNNING:
            self._finish()
            return
        self._tick += 1
        if self._rate:
            self._scheduler.schedule(self, self._t0 + self._tick * self.interval)
        else:
            self._scheduler.schedule(self, end + self.interval)


@final
class Scheduler:
    """A timer wheel of due workers, and the scheduling role that serves it.

    Due times are bucketed into slots of ``1 / SLOTS_PER_SECOND`` seconds
    (rounded to the nearest slot), and a slot is served once the clock reaches
    it, so a run starts at most half a slot early. Scheduling is a list
    append; only slot numbers go in a heap, so the cost per tick does not grow
    with the number of workers.
    """

    def __init__(self, loop: LoopHandle, task_group: TaskGroup) -> None:
        self._loop = loop
        self._clock = loop.clock
        self._task_group = task_group
        self._slots: dict[int, list[IntervalWorker]] = {}
        self._slot_heap: list[int] = []
        self._alarm = loop.alarm()
        self._sleeping_until = math.inf  # the slot the scheduler sleeps until

    def schedule(self, worker: IntervalWorker, due: float) -> None:
        """Put ``worker`` on the wheel, due at ``due`` (on the loop handle's clock)."""
        worker._due = due
        slot = round(due * SLOTS_PER_SECOND)
        bucket = self._slots.get(slot)
        if bucket is not None:
            bucket.append(worker)
            return
        self._slots[slot] = [worker]
        heapq.heappush(self._slot_heap, slot)
        if slot < self._sleeping_until:
            self._alarm.wake()

    async def serve(self) -> None:
        """Hold the scheduling role: run due workers until cancelled."""
        slots, slot_heap, clock = self._slots, self._slot_heap, self._clock
        running = WorkerState.RUNNING
        while True:
            await self._sleep_until_due()
            now = clock()
            slice_end = now + BATCH_SLICE
            while slot_heap and slot_heap[0] / SLOTS_PER_SECOND <= now:  # as in the sleep
                bucket = slots.pop(heapq.heappop(slot_heap))
                for index, worker in enumerate(bucket):
                    if worker._state is not running:
                        worker._finish()
                        continue
                    suspended = worker._fire(worker._due, now)
                    now = clock()
                    if suspended is not None:
                        # Hand the scheduling role on; this task now drives that run.
                        self._requeue(bucket, index + 1)
                        self._task_group.start_soon(self.serve, name="corral-scheduler")
                        await worker._drive(*suspended)
                        return
                    if now > slice_end:
                        self._requeue(bucket, index + 1)
                        await anyio.lowlevel.checkpoint()  # let other tasks run
                        break
                else:
                    continue
                now = clock()
                slice_end = now + BATCH_SLICE

    def _requeue(self, bucket: list[IntervalWorker], start: int) -> None:
        for worker in bucket[start:]:
            self.schedule(worker, worker._due)

    async def _sleep_until_due(self) -> None:
        if not self._slot_heap:
            due = math.inf
        else:
            due = self._slot_heap[0] / SLOTS_PER_SECOND
            if due <= self._clock():
                return
        self._sleeping_until = due * SLOTS_PER_SECOND
        try:
            await self._alarm.sleep_until(due)
        finally:
            self._sleeping_until = math.inf


@final
class _Resumed:
    """Awaits a coroutine that has already taken its first step.

    It hands the coroutine's pending yield to the awaiting task, then relays
    every resumption (value or exception) back into it, each step in the
    run's own context.
    """

    __slots__ = ("_context", "_coro", "_step")

    def __init__(
        self, coro: Coroutine[Any, Any, Any], step: Any, context: contextvars.Context
    ) -> None:
        self._coro = coro
        self._step = step
        self._context = context

    def __await__(self) -> Generator[Any, Any, Any]:
        coro, run = self._coro, self._context.run
        step = self._step
        while True:
            try:
                sent = yield step
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as thrown:
                try:
                    step = run(coro.throw, thrown)
                except StopIteration as finished:
                    return finished.value
            else:
                try:
                    step = run(coro.send, sent)
                except StopIteration as finished:
                    return finished.value
