"""Workers served by their own task: queue, event and loop workers."""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable
from typing import Any, final

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._queue import Closed, WorkQueue
from ._worker import Runtime, Worker, WorkerState

logger = logging.getLogger(__name__)


class TaskWorker(Worker):
    """A worker whose runs happen in one or more tasks of the supervisor."""

    concurrency = 1

    def _launch(self) -> None:
        self._live_tasks = self.concurrency
        for _ in range(self.concurrency):
            self._rt.task_group.start_soon(self._serve, name=f"corral-worker:{self.name}")

    @abc.abstractmethod
    async def _next(self) -> tuple[Any, ...] | None:
        """Wait for the next run; its extra arguments, or None to end this task."""

    async def _serve(self) -> None:
        clock = self._rt.loop.clock
        ending = WorkerState.CANCELLED
        try:
            while True:
                # Yield once per run, even when the next item or trigger is already
                # there, so a busy worker cannot starve the loop; and do it before
                # choosing the run, so a stop() that arrives meanwhile is seen.
                await anyio.lowlevel.checkpoint()
                extra = await self._next()
                if extra is None:
                    break
                start = clock()
                result, error = await self._call(*extra)
                if not self._outcome(result, error, clock() - start):
                    break
            ending = WorkerState.STOPPED
        finally:
            self._live_tasks -= 1
            if self._live_tasks == 0:  # siblings still running keep the worker alive
                self._finish(ending)


@final
class QueueWorker(TaskWorker):
    """Runs its function once per item put on its queue (see ``Supervisor.queue_worker``).

    The function is called as ``fn(*args, item)``. With ``priority=True`` items
    are put as ``(priority, item)`` tuples; lower priorities run first, FIFO
    within a level, and the function receives only ``item``.
    """

    kind = "queue"

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_error: Callable[[Exception], object] | None,
        *,
        maxsize: int,
        concurrency: int,
        priority: bool,
    ) -> None:
        super().__init__(runtime, name, fn, args, on_error)
        self._queue = WorkQueue(name, maxsize, priority)
        self._token = anyio.lowlevel.current_token()
        self.concurrency = concurrency

    @property
    def maxsize(self) -> int:
        """The queue's bound (0: unbounded)."""
        return self._queue.maxsize

    def qsize(self) -> int:
        """Items waiting to be run."""
        return len(self._queue)

    async def put(self, item: Any) -> None:
        """Queue ``item``, waiting for room when the queue is at ``maxsize``.

        Raises :class:`~corral.WorkerStopped` once the worker is stopping.
        """
        await self._queue.put(item)

    def put_nowait(self, item: Any) -> None:
        """Queue ``item`` now, or raise :class:`~corral.QueueFull` (or ``WorkerStopped``)."""
        self._queue.put_nowait(item)

    def put_threadsafe(self, item: Any) -> None:
        """Queue ``item`` from a thread other than the event loop's.

        Blocks the calling thread while the queue is full, and raises what
        ``put()`` raises. It needs the event loop to run to complete, so never
        block the loop's thread waiting for the calling thread (``join()`` it
        with ``await anyio.to_thread.run_sync(thread.join)``). On the loop's
        own thread use ``put``/``put_nowait``.
        """
        if self._rt.loop.in_loop_thread():
            raise RuntimeError(
                "put_threadsafe() would block the event loop it needs; on the loop's thread "
                "use `await worker.put(item)` or `worker.put_nowait(item)`"
            )
        anyio.from_thread.run(self._queue.put, item, token=self._token)

    def stop(self, *, drain: bool = True) -> None:
        """Stop taking items; by default the queued ones still run first.

        With ``drain=False`` queued items are dropped (their count is logged at
        warning level) and the worker stops after the runs in progress.
        """
        if not drain and self._state in (WorkerState.RUNNING, WorkerState.STOPPING):
            dropped = self._queue.clear()
            if dropped:
                logger.warning(
                    "queue worker %r stopped; dropped %d queued items", self.name, dropped
                )
        super().stop()

    def _on_stop(self) -> None:
        self._queue.close()

    def _returned_false(self) -> None:
        self.stop(drain=False)

    def _pending(self) -> int:
        return len(self._queue)

    async def _next(self) -> tuple[Any, ...] | None:
        if self._state not in (WorkerState.RUNNING, WorkerState.STOPPING):
            return None
        try:
            return (await self._queue.get(),)
        except Closed:
            return None

    def _finish(self, state: WorkerState = WorkerState.STOPPED) -> None:
        if self._finished:
            return
        self._queue.close()  # however it ends, later puts fail instead of waiting forever
        super()._finish(state)
        if self._queue:
            logger.warning(
                "queue worker %r %s with %d items still queued; they were not run",
                self.name,
                self._state.value,
                len(self._queue),
            )


@final
class EventWorker(TaskWorker):
    """Runs its function when triggered (see ``Supervisor.event_worker``).

    Triggers that arrive while it runs coalesce into one more run.
    """

    kind = "event"
    _triggered = False
    _wakeup: anyio.Event

    def _launch(self) -> None:
        self._wakeup = anyio.Event()
        super()._launch()

    def trigger(self) -> bool:
        """Ask for a run; safe from any thread, and returns at once.

        Returns ``True`` when a run is now pending, ``False`` (doing nothing)
        once the worker is stopping or stopped. A trigger asks for a run *if
        the worker still runs*, and triggers already coalesce, so a late one
        (say, from a queue worker draining at shutdown) is not an error.
        """
        if self._state is not WorkerState.RUNNING:
            logger.debug("event worker %r is %s; trigger ignored", self.name, self._state.value)
            return False
        if self._rt.loop.in_loop_thread():
            self._set_triggered()
            return True
        return self._rt.loop.call_soon_threadsafe(self._set_triggered)

    def _set_triggered(self) -> None:
        if self._state is WorkerState.RUNNING:
            self._triggered = True
            self._wakeup.set()

    def _on_stop(self) -> None:
        self._wakeup.set()

    def _pending(self) -> int:
        return int(self._triggered)

    async def _next(self) -> tuple[Any, ...] | None:
        while not self._triggered and self._state is WorkerState.RUNNING:
            await self._wakeup.wait()
            self._wakeup = anyio.Event()
        if self._state is not WorkerState.RUNNING:
            return None
        self._triggered = False
        return ()


@final
class LoopWorker(TaskWorker):
    """Runs its function back to back until stopped (see ``Supervisor.loop_worker``).

    Like every worker it yields to the event loop before each run, so an async
    function that never awaits still cannot starve other tasks.
    """

    kind = "loop"

    async def _next(self) -> tuple[Any, ...] | None:
        return () if self._state is WorkerState.RUNNING else None
