"""The ways to start a worker: ``every``, ``queue_worker``, ``event_worker``,
``loop_worker`` (each also a decorator), ``start_worker`` for specs, and
``spawn`` for an object in a child process.

They only build a checked :class:`WorkerSpec` (or :class:`Service`); the
supervisor behind them starts it. Kept apart from the supervisor's lifecycle, which is the other
half of what a supervisor is.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, Literal, TypeVar, Unpack, overload

from ._control import ControlLoop
from ._job import Job, new_job
from ._lifetime import RestartPolicy
from ._loophost import ControlLoopProxy, LoopKeywords, open_loop
from ._process import UNSET, Process, Timeouts
from ._proxy import Proxy
from ._scheduler import IntervalWorker
from ._service import Service
from ._specs import ErrorHandler, Fn, W, WorkerKind, WorkerSpec
from ._workers import EventWorker, LoopWorker, QueueWorker

T = TypeVar("T")
L = TypeVar("L", bound=ControlLoop)
P = TypeVar("P", bound=Process)


class WorkerStarter(abc.ABC):
    """The worker-starting methods of :class:`~corral.Supervisor`."""

    @abc.abstractmethod
    def _start(self, spec: WorkerSpec[W]) -> W:
        """Start the worker ``spec`` describes (the supervisor's half)."""

    @abc.abstractmethod
    def _check_running(self) -> None:
        """Raise unless workers can be started now, from this thread."""

    @abc.abstractmethod
    def _unique_name(self, name: str | None, fn: Any) -> str:
        """``name``, checked to be free, or one made from ``fn``'s name."""

    @abc.abstractmethod
    async def _adopt(self, service: Service, *, job: bool = False) -> None:
        """Run ``service``'s manager task until its child is ready, or, for a ``job``, not."""

    async def spawn(
        self,
        target: Callable[..., T],
        /,
        *args: Any,
        name: str | None = None,
        cpu: int | tuple[int, ...] | list[int] | None = None,
        restart: RestartPolicy = "never",
        max_restarts: int | None = None,
        restart_window: float | None = None,
        startup_timeout: float = 30.0,
        log_level: int | None = None,
        **kwargs: Any,
    ) -> Proxy[T]:
        """Start ``target(*args, **kwargs)`` in a child process; returns a :class:`~corral.Proxy`.

        >>> async def main() -> None:
        ...     async with corral.Supervisor() as sup:
        ...         cam = await sup.spawn(Camera, "/dev/video0", cpu=1, restart="on-failure")
        ...         await cam.start_capture(fps=30)

        ``target`` is a class (or any callable returning the object to serve),
        cloudpickled to the child, so classes defined in ``__main__`` work.
        Returns once the object is constructed; a constructor that raises
        raises :class:`~corral.StartupError` here, with the child's traceback.
        ``cpu`` pins the child to a core (or cores) before user code is
        imported there.

        ``restart``: ``"never"`` (a crash fails the supervisor, as an
        unhandled worker failure does), ``"on-failure"`` (restart after a
        crash or non-zero exit) or ``"always"`` (after a clean exit too). The
        supervisor's ``strategy`` says which children restart with it, after
        its backoff; more restarts than its ``max_restarts`` within its
        ``restart_window`` make it escalate. ``max_restarts`` and
        ``restart_window`` given here add a limit of this child's own. Calls
        in flight when the child dies raise :class:`~corral.WorkerCrashed`;
        calls made while it restarts wait for the new child. Leaving the block
        closes the child gracefully (see :meth:`Proxy.aclose`), within
        ``shutdown_timeout``.
        """
        self._check_running()
        service = Service(
            "service",
            target,
            args,
            kwargs,
            name=self._unique_name(name, target),
            cpu=cpu,
            restart=restart,
            max_restarts=max_restarts,
            restart_window=restart_window,
            startup_timeout=startup_timeout,
            log_level=log_level,
        )
        await self._adopt(service)
        return Proxy(service)

    async def control_loop(
        self, loop: L, /, hz: float, **options: Unpack[LoopKeywords]
    ) -> ControlLoopProxy[L]:
        """Run ``loop.step()`` ``hz`` times a second in a child; returns its proxy.

        >>> async def main() -> None:
        ...     async with corral.Supervisor() as sup:
        ...         rt = await sup.control_loop(Controller(), hz=1000, cpu=1)
        ...         await rt.set("setpoint", 3.0)
        ...         print(await rt.statistics())

        ``loop`` is a :class:`~corral.ControlLoop` instance, pickled to the
        child, where ``setup()`` runs, then ``step()`` at absolute deadlines
        on the real-time recipe (``cpu=`` pins it; ``realtime=True``, the
        default, adds SCHED_FIFO at ``priority=``, locked memory and the
        DMA latency hold, each degrading with a warning where not
        permitted), then ``teardown()`` when closed. Returns once ticking
        has begun; ``setup()`` raising raises :class:`~corral.StartupError`.

        Host calls (``await rt.method(...)``) are served between ticks, only
        while the next deadline is at least ``budget`` seconds away (default
        the smaller of 200 µs and a quarter period). ``spin`` (default 150
        µs, at most a quarter period) is the busy-wait before each deadline.
        ``overrun="skip"`` (default) drops ticks whose deadline passed
        during an overlong step; ``"catch-up"`` runs them late, back to
        back. ``gc_freeze`` (default True) collects and freezes the heap
        after setup() and keeps the collector out of ticks. ``history``
        (default 65,536) is how many ticks the statistics' percentiles
        cover. ``restart``, ``max_restarts``, ``restart_window``,
        ``startup_timeout`` and ``log_level`` are as for :meth:`spawn`; a
        step that raises is a failure: :class:`~corral.StepFailed` names the
        tick.
        """
        self._check_running()
        options["name"] = self._unique_name(options.get("name"), type(loop))
        service, host = open_loop(loop, hz, options)
        await self._adopt(service)
        return ControlLoopProxy(service, host)

    async def start(
        self,
        process: P,
        /,
        *,
        runs: int | Any | None = UNSET,
        join_in: float | Any | None = UNSET,
        lives: int | Any = UNSET,
        timeouts: Timeouts | Any = UNSET,
        name: str | None = None,
        cpu: int | tuple[int, ...] | list[int] | None = None,
        restart: Literal["never", "on-failure"] = "never",
        max_restarts: int = 3,
        restart_window: float = 5.0,
        startup_timeout: float = 30.0,
        log_level: int | None = None,
    ) -> Job[P]:
        """Run a :class:`~corral.Process` in a child; returns its :class:`~corral.Job` at once.

        >>> async def main() -> None:
        ...     async with corral.Supervisor() as sup:
        ...         job = await sup.start(Upscale(image, runs=3))
        ...         upscaled = await job.result()

        ``process`` is pickled (cloudpickle: classes in ``__main__`` work) and
        its cycle runs in the child (see :class:`~corral.Process`). ``runs``,
        ``join_in``, ``lives`` and ``timeouts`` given here override the
        process's own (as constructor keywords do, but seen by type checkers).

        How the job ends is its own business, not the supervisor's: a section
        that fails, and a child that crashes (:class:`~corral.WorkerCrashed`),
        are raised by ``await job.result()``. ``restart="on-failure"`` starts
        a crashed process again in a new child, from the state it was started
        with (``max_restarts`` within ``restart_window`` seconds). Leaving the
        supervisor's block stops a job still running (its current run
        finishes, then on_finish() and result()), killing it after
        ``shutdown_timeout``.
        """
        self._check_running()
        job = new_job(
            process,
            config={"runs": runs, "join_in": join_in, "lives": lives, "timeouts": timeouts},
            name=self._unique_name(name, type(process)),
            cpu=cpu,
            restart=restart,
            max_restarts=max_restarts,
            restart_window=restart_window,
            startup_timeout=startup_timeout,
            log_level=log_level,
        )
        await self._adopt(job._service, job=True)
        return job

    def start_worker(self, spec: WorkerSpec[W], /, *args: Any, **overrides: Any) -> W:
        """Start the worker a spec describes; returns its handle.

        Extra ``args`` are appended to the spec's; ``overrides`` replace its
        options (for example ``interval=`` or ``name=``).
        """
        if not isinstance(spec, WorkerSpec):
            raise TypeError(
                f"start_worker() takes a WorkerSpec (made with @corral.interval(), "
                f"@corral.queue_worker(), ...), got {spec!r}"
            )
        if args or overrides:
            spec = spec.replace(*args, **overrides)
        return self._start(spec)

    @overload
    def every(
        self,
        seconds: float,
        /,
        *,
        delay_before: float = 0.0,
        mode: Literal["rate", "delay"] = "rate",
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> Callable[[Fn], IntervalWorker]: ...
    @overload
    def every(
        self,
        seconds: float,
        fn: Fn,
        /,
        *args: Any,
        delay_before: float = 0.0,
        mode: Literal["rate", "delay"] = "rate",
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> IntervalWorker: ...
    def every(
        self,
        seconds: float,
        fn: Fn | None = None,
        /,
        *args: Any,
        delay_before: float = 0.0,
        mode: Literal["rate", "delay"] = "rate",
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> IntervalWorker | Callable[[Fn], IntervalWorker]:
        """Run ``fn(*args)`` every ``seconds``; returns an :class:`IntervalWorker`.

        ``mode="rate"`` (the default) keeps a fixed rate on absolute deadlines:
        tick *k* is due at ``t0 + k * seconds`` with ``t0`` = now +
        ``delay_before``; a tick more than one interval late is skipped and
        counted, never bunched. ``mode="delay"`` waits ``seconds`` after each
        run ends. Used bare as ``@sup.every(0.5)`` it decorates a function and
        returns the worker. The function stops the worker by returning
        ``False``; ``on_error(exc)`` handles a failure and the worker goes on.
        """
        options = {"interval": seconds, "delay_before": delay_before, "mode": mode}
        return self._start_or_decorate(
            "interval", fn, args, name, on_error, options, IntervalWorker
        )

    @overload
    def queue_worker(
        self,
        fn: None = None,
        /,
        *,
        maxsize: int = 0,
        concurrency: int = 1,
        priority: bool = False,
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> Callable[[Fn], QueueWorker]: ...
    @overload
    def queue_worker(
        self,
        fn: Fn,
        /,
        *args: Any,
        maxsize: int = 0,
        concurrency: int = 1,
        priority: bool = False,
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> QueueWorker: ...
    def queue_worker(
        self,
        fn: Fn | None = None,
        /,
        *args: Any,
        maxsize: int = 0,
        concurrency: int = 1,
        priority: bool = False,
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> QueueWorker | Callable[[Fn], QueueWorker]:
        """Run ``fn(*args, item)`` for each item put; returns a :class:`QueueWorker`.

        ``await w.put(item)`` waits while ``maxsize`` items are queued (0: no
        bound); ``w.put_nowait(item)`` raises ``QueueFull`` instead; and
        ``w.put_threadsafe(item)`` works from any other thread. Up to
        ``concurrency`` items run at once. With ``priority=True`` items are
        ``(priority, item)`` and lower priorities run first, FIFO within a level.
        """
        options = {"maxsize": maxsize, "concurrency": concurrency, "priority": priority}
        return self._start_or_decorate("queue", fn, args, name, on_error, options, QueueWorker)

    @overload
    def event_worker(
        self, fn: None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
    ) -> Callable[[Fn], EventWorker]: ...
    @overload
    def event_worker(
        self, fn: Fn, /, *args: Any, name: str | None = None, on_error: ErrorHandler | None = None
    ) -> EventWorker: ...
    def event_worker(
        self,
        fn: Fn | None = None,
        /,
        *args: Any,
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> EventWorker | Callable[[Fn], EventWorker]:
        """Run ``fn(*args)`` whenever ``w.trigger()`` is called; returns an :class:`EventWorker`.

        ``trigger()`` is safe from any thread. Triggers that arrive while the
        function runs coalesce into one more run.
        """
        return self._start_or_decorate("event", fn, args, name, on_error, {}, EventWorker)

    @overload
    def loop_worker(
        self, fn: None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
    ) -> Callable[[Fn], LoopWorker]: ...
    @overload
    def loop_worker(
        self, fn: Fn, /, *args: Any, name: str | None = None, on_error: ErrorHandler | None = None
    ) -> LoopWorker: ...
    def loop_worker(
        self,
        fn: Fn | None = None,
        /,
        *args: Any,
        name: str | None = None,
        on_error: ErrorHandler | None = None,
    ) -> LoopWorker | Callable[[Fn], LoopWorker]:
        """Run ``fn(*args)`` back to back until stopped; returns a :class:`LoopWorker`."""
        return self._start_or_decorate("loop", fn, args, name, on_error, {}, LoopWorker)

    def _start_or_decorate(
        self,
        kind: WorkerKind,
        fn: Fn | None,
        args: tuple[Any, ...],
        name: str | None,
        on_error: ErrorHandler | None,
        options: dict[str, Any],
        handle: type[W],
    ) -> W | Callable[[Fn], W]:
        self._check_running()  # fail at the call site, not when the decorator is applied

        def start(fn: Fn) -> W:
            worker = self._start(WorkerSpec[W](kind, fn, args, name, on_error, options))
            assert isinstance(worker, handle)
            return worker

        return start if fn is None else start(fn)
