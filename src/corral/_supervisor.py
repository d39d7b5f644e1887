"""The Supervisor: one task group that owns every worker started through it."""

from __future__ import annotations

import logging
import math
from types import TracebackType
from typing import Any, Self, TypeVar, final

import anyio
import anyio.abc
from anyio.abc import TaskGroup

from ._dask import DaskBackend
from ._errors import HooksFailed, SupervisorNotRunning, WorkerFailed
from ._eventloop import LoopHandle
from ._forker import Forker
from ._hooks import Hooks
from ._lifetime import (
    BACKOFF,
    MAX_BACKOFF,
    ProxyStatistics,
    RestartWindow,
    SupervisorState,
    SupervisorStatistics,
)
from ._pool import Pool
from ._scheduler import IntervalWorker, Scheduler
from ._service import Service
from ._spawn import child_env
from ._specs import W, WorkerSpec
from ._starting import WorkerStarter
from ._supervision import Strategy, Supervision
from ._threads import ThreadPool
from ._tree import Tree
from ._worker import Runtime, Worker
from ._workers import EventWorker, LoopWorker, QueueWorker

logger = logging.getLogger(__name__)
T = TypeVar("T")


@final
class Supervisor(WorkerStarter, Tree):
    """Owns workers for the length of an ``async with`` block.

    >>> async def main() -> None:
    ...     async with Supervisor(shutdown_timeout=5.0) as sup:
    ...         ticker = sup.every(0.1, poll_sensors)
    ...         ...

    Leaving the block, however it happens (the body ends, raises, or is
    cancelled from outside), stops everything started through it: first
    gracefully (no new runs start, runs in progress finish; workers that are
    not queue workers stop first, then queue workers drain and stop, the last
    started first), then, after ``shutdown_timeout`` seconds, by cancellation.
    The ``on_shutdown`` hooks run after that. A worker failure that nothing handles
    cancels the block's body and is raised from ``async with`` as
    :class:`~corral.WorkerFailed`, naming the worker. An exception raised by
    the body itself propagates unchanged, after the same shutdown.

    Sync functions run in threads owned by the supervisor (at most
    ``max_threads`` at once), which are gone when the block exits.

    Children (``spawn``, ``control_loop`` and nested ``supervisor()``) that
    may restart do so by OTP's rules. ``strategy`` says which restart
    together: ``"one_for_one"`` (the one that ended), ``"one_for_all"``
    (all: the others are stopped, the last started first, then all start
    again in start order) or ``"rest_for_one"`` (it and those started after
    it). Each restart waits a backoff: the n-th restart of a child within
    ``restart_window`` waits between half and all of ``min(backoff * 2 **
    (n - 1), max_backoff)`` seconds. More than ``max_restarts`` restarts
    within ``restart_window`` seconds make the supervisor escalate: it stops
    its children and fails (``async with`` raises
    :class:`~corral.WorkerFailed` with the restart history), or, when
    nested, fails as a child of its parent.
    """

    def __init__(
        self,
        *,
        name: str = "supervisor",
        shutdown_timeout: float = 5.0,
        max_threads: int = 40,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        restart_window: float = 5.0,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        if isinstance(shutdown_timeout, bool) or not isinstance(shutdown_timeout, int | float):
            raise TypeError(
                f"shutdown_timeout must be a number of seconds, got {shutdown_timeout!r}"
            )
        if not shutdown_timeout >= 0 or math.isnan(shutdown_timeout):
            raise ValueError(
                f"shutdown_timeout must be 0 or more seconds, got {shutdown_timeout!r}"
            )
        if isinstance(max_threads, bool) or not isinstance(max_threads, int) or max_threads < 1:
            raise ValueError(
                f"max_threads must be a whole number of at least 1, got {max_threads!r}"
            )
        self._supervision = Supervision(
            name,
            strategy=strategy,
            max_restarts=max_restarts,
            restart_window=restart_window,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._supervision.grace = float(shutdown_timeout)
        self._supervision.on_escalate = self._failed
        self.name = name
        self.shutdown_timeout = float(shutdown_timeout)
        self.max_threads = max_threads
        self.on_shutdown = Hooks()
        """Hooks run when the block exits, after every worker has stopped."""
        self._state: SupervisorState = "new"
        self._workers: dict[str, Worker] = {}
        self._children: dict[str, Service] = {}
        self._pools: list[Pool] = []
        self._name_counts: dict[str, int] = {}
        self._failure: WorkerFailed | None = None
        self._runtime: Runtime | None = None
        self._scheduler: Scheduler | None = None
        self._outer: TaskGroup | None = None
        self._task_group: TaskGroup | None = None
        self._workers_gone: anyio.Event | None = None
        self._body: anyio.CancelScope | None = None
        self._forker: Forker | None = None
        self._parent: Tree | None = None
        self._nested: dict[str, Supervisor] = {}

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r} {self._state} workers={len(self._workers)}>"

    # -- the block ---------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError(
                f"supervisor {self.name!r} has already been used; create a new Supervisor "
                "for each `async with` block"
            )
        loop = LoopHandle()
        self._workers_gone = anyio.Event()
        outer = anyio.create_task_group()
        await outer.__aenter__()
        try:
            # Workers live in a task group of their own, shielded from cancellation
            # that comes from outside: leaving the block, however it happens, stops
            # them gracefully first, and cancels them only when that times out.
            # (Shielded: a caller already cancelled must not abandon the host
            # mid-start; the body sees that cancellation at its first checkpoint.)
            with anyio.CancelScope(shield=True):
                workers: TaskGroup = await outer.start(
                    self._host_workers, name="corral-supervisor"
                )
        except BaseException:
            await outer.__aexit__(None, None, None)
            raise
        self._outer = outer
        self._forker = Forker(outer, child_env)  # its zygote starts with the first child
        threads = ThreadPool(loop, max_threads=self.max_threads, name=f"corral:{self.name}")
        self._open(workers, loop, threads)
        # The body gets a scope of its own, so a worker failure can cancel the
        # body while the other workers still stop gracefully.
        self._body = anyio.CancelScope()
        self._body.__enter__()
        return self

    def _open(self, workers: TaskGroup, loop: LoopHandle, threads: ThreadPool) -> None:
        self._task_group = workers
        self._scheduler = Scheduler(loop, workers)
        workers.start_soon(self._scheduler.serve, name="corral-scheduler")
        self._runtime = Runtime(loop, threads, workers, self._worker_failed)
        self._supervision.tasks = workers
        workers.start_soon(self._supervision.serve, name="corral-restarts")
        self._state = "running"

    async def _host_workers(self, *, task_status: anyio.abc.TaskStatus[TaskGroup]) -> None:
        try:
            with anyio.CancelScope(shield=True):
                async with anyio.create_task_group() as workers:
                    task_status.started(workers)
                    await anyio.sleep_forever()  # until __aexit__ cancels this group
        finally:
            assert self._workers_gone is not None
            self._workers_gone.set()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        assert self._body is not None
        assert self._runtime is not None
        assert self._task_group is not None
        assert self._outer is not None
        assert self._workers_gone is not None
        reraise = False
        try:  # trio raises what is left of a group it filtered
            body_cancelled_by_us = bool(self._body.__exit__(exc_type, exc, tb))
        except BaseException as remaining:  # finish the shutdown first, then raise it
            body_cancelled_by_us, exc, reraise = False, remaining, True
        try:
            hooks = await self._shut_down()
        finally:
            await self._outer.__aexit__(None, None, None)
        if self._failure is not None:
            if exc is not None and not body_cancelled_by_us:
                # The body's own exception (or a cancellation from outside) goes on
                # unchanged; the worker failure must not vanish, so it is logged.
                logger.error(
                    "supervisor %r: %s", self.name, self._failure, exc_info=self._failure.error
                )
                exc.add_note(f"(while leaving the supervisor: {self._failure})")
                if reraise:
                    raise exc
                return False
            raise self._failure from self._failure.error
        if reraise:
            assert exc is not None
            raise exc
        if not hooks.ok and exc is None:
            raise HooksFailed(hooks.errors)
        return body_cancelled_by_us

    def _worker_failed(self, worker: Worker, error: Exception) -> None:
        loop = self._runtime.loop if self._runtime is not None else None
        if loop is None or loop.in_loop_thread():
            self._failed(worker.name, error)
        else:  # (a sync function's run ends in its thread)
            loop.call_soon_threadsafe(self._failed, worker.name, error)

    def _failed(self, name: str, error: BaseException) -> None:
        if self._parent is not None:  # nested: an unhandled worker failure is fatal to it
            self._supervision.escalate_self(WorkerFailed(name, error))
            return
        if self._failure is None:
            if name in self._children or name in self._nested:
                self._failure = WorkerFailed(
                    name,
                    error,
                    "Pass restart='on-failure' to sup.spawn() or sup.control_loop() to restart "
                    "a child that crashes, or give the supervisor a larger max_restarts= if it "
                    "restarts too often.",
                )
                self._failure.history = tuple(self._supervision.history)
            else:
                self._failure = WorkerFailed(name, error)
            logger.debug("supervisor %r: worker %r failed", self.name, name, exc_info=error)
        else:  # the first failure is raised; later ones must not vanish
            logger.error("supervisor %r: worker %r also failed", self.name, name, exc_info=error)
        if self._state == "running" and self._body is not None:
            self._body.cancel()

    def pool(
        self,
        workers: int | None = None,
        *,
        backend: DaskBackend | None = None,
        max_tasks_per_worker: int | None = None,
        name: str | None = None,
        startup_timeout: float = 30.0,
    ) -> Pool:
        """A :class:`~corral.Pool` owned by this supervisor, its workers among its children.

        The workers are forked from the supervisor's zygote and closed with
        the other children when the block ends. With a
        :class:`~corral.DaskBackend` the client connects in the background
        (maps wait for it, and fail with the reason if it cannot) and is
        closed when the block ends.
        """
        runtime = self._running()
        assert self._forker is not None
        pool = Pool(
            workers,
            backend=backend,
            max_tasks_per_worker=max_tasks_per_worker,
            startup_timeout=startup_timeout,
            shutdown_timeout=self.shutdown_timeout,
            name=self._unique_name(name, Pool) if name else self._unique_name(None, Pool),
        )
        pool.open(runtime.task_group, self._forker, self._register_pool_worker)
        self._pools.append(pool)
        return pool

    def _register_pool_worker(self, service: Service) -> None:
        service.name = self._unique_name(service.name, None)
        self._children[service.name] = service

    # -- starting workers (the public ways are in WorkerStarter) ------------------

    async def _adopt(self, service: Service, *, job: bool = False) -> None:
        runtime = self._running()
        self._children[service.name] = service
        service.forker = self._forker
        if job:  # it starts in the background, and its end, crash or not, is the job's result
            runtime.task_group.start_soon(service.run, name=f"corral-child:{service.name}")
            return
        supervision = self._supervision  # its strategy restarts it, or escalates
        service.policy = supervision
        window = service.restart_window or supervision.window.seconds
        service.window = RestartWindow(service.max_restarts, window)
        try:
            await runtime.task_group.start(service.run, name=f"corral-child:{service.name}")
        except BaseException:
            del self._children[service.name]
            raise
        supervision.children.append(service)
        logger.debug("supervisor %r spawned %r", self.name, service)

    def _start(self, spec: WorkerSpec[W]) -> W:
        runtime = self._running()
        name = self._unique_name(spec.name, spec.fn)
        common = (name, spec.fn, spec.args, spec.on_error)
        worker: Worker
        if spec.kind == "interval":  # the spec's options are the handle's keywords
            assert self._scheduler is not None
            worker = IntervalWorker(runtime, self._scheduler, *common, **spec.options)
        elif spec.kind == "queue":
            worker = QueueWorker(runtime, *common, **spec.options)
        elif spec.kind == "event":
            worker = EventWorker(runtime, *common)
        else:
            worker = LoopWorker(runtime, *common)
        worker._launch()
        self._workers[name] = worker
        logger.debug("supervisor %r started %s worker %r", self.name, spec.kind, name)
        return worker  # type: ignore[return-value]  # the spec's kind names its handle type

    # -- introspection -----------------------------------------------------------

    @property
    def state(self) -> SupervisorState:
        """``"new"``, ``"running"``, ``"stopping"`` or ``"stopped"``."""
        return self._state

    @property
    def workers(self) -> tuple[Worker, ...]:
        """Every worker started so far, stopped ones included, in start order."""
        return tuple(self._workers.values())

    def statistics(self) -> SupervisorStatistics:
        """A frozen snapshot of the supervisor and each of its workers.

        It computes every worker's percentiles, so with thousands of workers it
        takes milliseconds: call it at human rates, or ask the workers you
        watch for their own ``statistics()``.
        """
        runtime = self._runtime
        supervision = self._supervision
        return SupervisorStatistics(
            name=self.name,
            state=self._state,
            workers=tuple(w.statistics() for w in self._workers.values()),
            threads_busy=len(runtime.threads.busy()) if runtime is not None else 0,
            children=self.child_statistics(),
            strategy=supervision.strategy,
            restarts=supervision.restarts,
            restart_history=tuple(supervision.history),
            supervisors=tuple(nested.statistics() for nested in self._nested.values()),
        )

    def child_statistics(self) -> tuple[ProxyStatistics, ...]:
        """``statistics().children`` alone: cheap however many workers there are."""
        return tuple(child.statistics() for child in self._children.values())

    # -- helpers -----------------------------------------------------------------

    def _check_running(self) -> None:
        self._running()

    def _running(self) -> Runtime:
        if self._state != "running" or self._runtime is None:
            raise SupervisorNotRunning(
                f"supervisor {self.name!r} is {self._state}; start workers inside "
                "`async with corral.Supervisor() as sup:`"
            )
        if not self._runtime.loop.in_loop_thread():
            raise RuntimeError(
                f"supervisor {self.name!r} was called from another thread; start workers from "
                "the event loop's thread (use anyio.from_thread.run_sync to get there)"
            )
        return self._runtime

    def _unique_name(self, name: str | None, fn: Any) -> str:
        taken = self._workers.keys() | self._children.keys() | self._nested.keys()
        if name is not None:
            if name in taken:
                raise ValueError(
                    f"supervisor {self.name!r} already has a worker named {name!r}; "
                    "pass a different name="
                )
            return name
        base = getattr(fn, "__qualname__", None) or type(fn).__name__
        n = self._name_counts.get(base, 0)
        name = base if n == 0 else f"{base}#{n + 1}"
        while name in taken:  # only if a user took a name like "fn#2"
            n += 1
            name = f"{base}#{n + 1}"
        self._name_counts[base] = n + 1
        return name
