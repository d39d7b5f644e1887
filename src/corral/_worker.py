"""What every in-process worker shares: state, statistics, and what to do with
the outcome of one run (count it, hand failures to ``on_error`` or the
supervisor, stop on ``False``)."""

from __future__ import annotations

import abc
import enum
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, final

import anyio
import anyio.lowlevel

from ._errors import WorkerStopped
from ._timing import Timer, TimingSummary

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._eventloop import LoopHandle
    from ._threads import ThreadPool

logger = logging.getLogger(__name__)

#: How many recent samples a worker keeps for its percentiles.
SAMPLE_WINDOW = 1024


class WorkerState(enum.StrEnum):
    """Where a worker is in its life."""

    RUNNING = "running"
    """Started: waiting for its next run or running."""
    STOPPING = "stopping"
    """``stop()`` was called; the current run (or queued items) is finishing."""
    STOPPED = "stopped"
    """Stopped on request, or its function returned ``False``."""
    FAILED = "failed"
    """Its function raised and nothing handled the error."""
    CANCELLED = "cancelled"
    """Cancelled by its supervisor after the graceful stop timed out."""


@final
@dataclass(frozen=True, slots=True)
class WorkerStatistics:
    """A frozen snapshot of one worker (see ``worker.statistics()``).

    ``lateness`` (interval workers only) is how far after its due time each
    run started; ``duration`` is how long each run took, in seconds.
    """

    name: str
    kind: str
    state: WorkerState
    runs: int
    errors: int
    skipped: int
    pending: int
    duration: TimingSummary
    lateness: TimingSummary | None
    last_error: str | None


@final
@dataclass(frozen=True, slots=True)
class WorkerTimers:
    """The worker's :class:`~corral.Timer` objects, for statistics beyond the snapshot."""

    duration: Timer
    lateness: Timer | None


@dataclass(slots=True)
class Runtime:
    """What a running supervisor lends its workers."""

    loop: LoopHandle
    threads: ThreadPool
    task_group: TaskGroup
    failed: Callable[[Worker, Exception], None]


def stray_cancellation(fn: Callable[..., object], exc: BaseException) -> RuntimeError:
    """The failure to report when ``fn`` raised a cancellation nobody asked for."""
    error = RuntimeError(
        f"{fn!r} raised {type(exc).__name__} although its worker was not being cancelled; "
        "did it await a task or future that something else cancelled?"
    )
    error.__cause__ = exc
    return error


def is_async_callable(fn: Callable[..., object]) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an async __call__."""
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(type(fn), "__call__", None)  # noqa: B004  (the method, not callability)
    return inspect.iscoroutinefunction(call)


class Worker(abc.ABC):
    """The handle of one in-process worker, returned by the supervisor.

    Not constructed directly: use ``sup.every()``, ``sup.queue_worker()``,
    ``sup.event_worker()``, ``sup.loop_worker()`` or ``sup.start_worker()``.
    """

    kind: ClassVar[str]
    _measures_lateness: ClassVar[bool] = False

    def __init__(
        self,
        runtime: Runtime,
        name: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        on_error: Callable[[Exception], object] | None,
    ) -> None:
        self.name = name
        self._rt = runtime
        self._fn = fn
        self._args = args
        self._is_async = is_async_callable(fn)
        self._on_error = on_error
        self._state = WorkerState.RUNNING
        self._runs = 0
        self._errors = 0
        self._last_error: Exception | None = None
        self._duration = Timer(SAMPLE_WINDOW)
        lateness = Timer(SAMPLE_WINDOW) if self._measures_lateness else None
        self.timers = WorkerTimers(duration=self._duration, lateness=lateness)
        self._finished = False
        self._stopped: anyio.Event | None = None  # made on first wait: cheap to start many
        self._run_waiters: list[tuple[int, anyio.Event]] = []

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} {self._state.value} runs={self._runs}>"

    @abc.abstractmethod
    def _launch(self) -> None:
        """Begin running (called by the supervisor once the worker is built)."""

    @property
    def state(self) -> WorkerState:
        """The worker's current :class:`WorkerState`."""
        return self._state

    @property
    def runs(self) -> int:
        """Runs completed so far, failed ones included."""
        return self._runs

    def stop(self) -> None:
        """Ask the worker to stop gracefully and return at once.

        No new run starts; a run in progress finishes. Use ``await
        wait_stopped()`` to wait for that. Calling it again does nothing.
        """
        if self._state is WorkerState.RUNNING:
            self._state = WorkerState.STOPPING
            self._on_stop()

    def _on_stop(self) -> None:  # noqa: B027  (a hook: a loop worker has nothing to wake)
        """Wake whatever the worker waits on so it sees the stop request."""

    async def wait_stopped(self) -> None:
        """Wait until the worker has stopped (for any reason: stop, ``False``, failure)."""
        if not self._finished:
            if self._stopped is None:
                self._stopped = anyio.Event()
            await self._stopped.wait()

    async def wait_runs(self, n: int) -> None:
        """Wait until the worker has completed at least ``n`` runs.

        Raises :class:`~corral.WorkerStopped` if it stops before that. Meant for
        tests and start-up sequencing: no sleeping, no polling.
        """
        while self._runs < n:
            if self._finished:
                raise WorkerStopped(
                    f"worker {self.name!r} {self._state.value} after {self._runs} runs, "
                    f"before reaching {n}"
                ) from self._last_error
            waiter = anyio.Event()
            self._run_waiters.append((n, waiter))
            await waiter.wait()

    def statistics(self) -> WorkerStatistics:
        """A frozen snapshot: state, runs, errors, skipped ticks, timings."""
        return WorkerStatistics(
            name=self.name,
            kind=self.kind,
            state=self._state,
            runs=self._runs,
            errors=self._errors,
            skipped=self._skipped(),
            pending=self._pending(),
            duration=self.timers.duration.summary(),
            lateness=None if self.timers.lateness is None else self.timers.lateness.summary(),
            last_error=None if self._last_error is None else repr(self._last_error),
        )

    def _skipped(self) -> int:
        return 0

    def _pending(self) -> int:
        return 0

    # -- shared machinery -------------------------------------------------------

    async def _call(self, *extra: Any) -> tuple[object, Exception | None]:
        """One call of the function (async on the loop, sync in a thread): result, error."""
        if self._is_async:
            return await self._settle(self._fn, *self._args, *extra)
        return await self._settle(self._rt.threads.run, self._fn, *self._args, *extra)

    async def _settle(
        self, start: Callable[..., Awaitable[object]], *args: Any
    ) -> tuple[object, Exception | None]:
        """Await ``start(*args)``: its result, or the error that ends the run.

        A cancellation the code raised although nothing is cancelling this task
        is such an error too; a real cancellation propagates.
        """
        try:
            return await start(*args), None
        except Exception as error:
            return None, error
        except self._rt.loop.cancelled as exc:
            await anyio.lowlevel.checkpoint_if_cancelled()  # re-raises if truly cancelled
            return None, stray_cancellation(self._fn, exc)

    def _outcome(self, result: object, error: Exception | None, duration: float) -> bool:
        """Account for one finished run; False when it failed or returned ``False``.

        Whether a pending ``stop()`` ends the worker is for each kind to decide.
        """
        self._runs += 1
        self._duration.record(duration)
        if error is None and inspect.iscoroutine(result):
            result.close()
            error = TypeError(
                f"{self._fn!r} returned a coroutine instead of running: declare it with "
                "`async def` so corral awaits it, rather than returning one from a plain function"
            )
        go_on = True
        if error is not None:
            self._errors += 1
            self._last_error = error
            go_on = self._handle_error(error)
        elif result is False:
            logger.debug("worker %r returned False; stopping", self.name)
            self._returned_false()
            go_on = False
        if self._run_waiters:
            self._wake_run_waiters()
        return go_on

    def _returned_false(self) -> None:
        self.stop()

    def _handle_error(self, error: Exception) -> bool:
        if self._on_error is None:
            self._fail(error)
            return False
        try:
            self._on_error(error)
        except Exception as handler_error:
            self._fail(handler_error)
            return False
        logger.debug("worker %r: on_error handled %r", self.name, error)
        return True

    def _fail(self, error: Exception) -> None:
        if self._state in (WorkerState.RUNNING, WorkerState.STOPPING):
            self._state = WorkerState.FAILED
            self._last_error = error
            self._on_stop()  # wake whatever waits on it: it takes no more work
            self._rt.failed(self, error)

    def _wake_run_waiters(self) -> None:
        waiting = []
        for target, event in self._run_waiters:
            if self._runs >= target or self._finished:
                event.set()
            else:
                waiting.append((target, event))
        self._run_waiters = waiting

    def _finish(self, state: WorkerState = WorkerState.STOPPED) -> None:
        """Mark the worker as done; a failure already recorded is kept."""
        if self._finished:
            return
        if self._state in (WorkerState.RUNNING, WorkerState.STOPPING):
            self._state = state
        self._finished = True
        if self._stopped is not None:
            self._stopped.set()
        self._wake_run_waiters()
        logger.debug("worker %r %s after %d runs", self.name, self._state.value, self._runs)

    def _cancelled(self) -> None:
        """The supervisor cancelled the worker after its graceful stop timed out."""
        self._finish(WorkerState.CANCELLED)
