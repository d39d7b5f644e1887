"""A supervisor as a tree: the supervisors nested in it, and how it stops what it
owns (workers feeding queues first, then each queue once drained, then its
children and nested supervisors together; within ``shutdown_timeout``, then
by cancellation; then its ``on_shutdown`` hooks)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal

import anyio

from ._hooks import HookResults, Hooks
from ._lifetime import BACKOFF, MAX_BACKOFF, SupervisorState, check_policy
from ._supervision import Strategy, Supervision
from ._workers import QueueWorker

if TYPE_CHECKING:
    from anyio.abc import TaskGroup, TaskStatus

    from ._eventloop import LoopHandle
    from ._forker import Forker
    from ._pool import Pool
    from ._service import Service
    from ._supervisor import Supervisor
    from ._threads import ThreadPool
    from ._worker import Runtime, Worker

logger = logging.getLogger(__name__)


class Tree:
    """Nesting and stopping, of :class:`~corral.Supervisor` (a mixin)."""

    name: str
    shutdown_timeout: float
    on_shutdown: Hooks
    _state: SupervisorState
    _runtime: Runtime | None
    _task_group: TaskGroup | None
    _workers_gone: anyio.Event | None
    _workers: dict[str, Worker]
    _children: dict[str, Service]
    _nested: dict[str, Supervisor]
    _pools: list[Pool]
    _forker: Forker | None
    _parent: Tree | None
    _supervision: Supervision
    max_threads: int

    if TYPE_CHECKING:

        def _running(self) -> Runtime: ...
        def _unique_name(self, name: str | None, fn: Any) -> str: ...
        def _open(self, workers: TaskGroup, loop: LoopHandle, threads: ThreadPool) -> None: ...
        async def _host_workers(self, *, task_status: TaskStatus[TaskGroup]) -> None: ...

    async def supervisor(
        self,
        *,
        name: str | None = None,
        strategy: Strategy = "one_for_one",
        max_restarts: int = 3,
        restart_window: float = 5.0,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        restart: Literal["never", "on-failure"] = "on-failure",
    ) -> Supervisor:
        """A nested supervisor, running, and a child of this one; returns it.

        >>> async def main() -> None:
        ...     async with corral.Supervisor(strategy="one_for_one") as sup:
        ...         camera = await sup.supervisor(name="camera", strategy="one_for_all")
        ...         grabber = await camera.spawn(Grabber, restart="on-failure")
        ...         encoder = await camera.spawn(Encoder, restart="on-failure")

        Everything started through it is its own, with its own strategy and
        restart limits. When it escalates (its limit exceeded, a child with
        ``restart="never"`` failed, or one of its in-process workers failed
        unhandled) it stops its children and fails as a child of this
        supervisor, which restarts it (with ``restart="on-failure"``: its
        held children start again in order, its count afresh), counted
        against this supervisor's own limit, by this supervisor's strategy,
        or escalates in turn (``restart="never"``). It stops with this
        supervisor, or earlier with ``await nested.aclose()``.
        """
        from ._supervisor import Supervisor  # noqa: PLC0415  (it is this module's user)

        runtime = self._running()
        check_policy(restart, ("never", "on-failure"))
        nested = Supervisor(
            name=self._unique_name(name, Supervisor),
            shutdown_timeout=self.shutdown_timeout,
            max_threads=self.max_threads,
            strategy=strategy,
            max_restarts=max_restarts,
            restart_window=restart_window,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        inner = nested._supervision
        inner.restart = restart
        nested._parent, nested._forker = self, self._forker
        nested._workers_gone = anyio.Event()
        workers: TaskGroup = await runtime.task_group.start(
            nested._host_workers, name=f"corral-supervisor:{nested.name}"
        )
        nested._open(workers, runtime.loop, runtime.threads)
        inner.parent = self._supervision
        self._supervision.children.append(inner)
        self._nested[nested.name] = nested
        return nested

    async def aclose(self) -> None:
        """Stop a nested supervisor now, as leaving a block stops a top one.

        Its workers and children stop gracefully (then by cancellation after
        ``shutdown_timeout``) and its ``on_shutdown`` hooks run. A top
        supervisor is stopped by leaving its ``async with`` block instead.
        """
        if self._parent is None:
            raise RuntimeError(
                f"supervisor {self.name!r} is not nested; leave its `async with` block to stop it"
            )
        self._supervision.state = "closed"
        if self._state == "running":
            await self._shut_down()
        elif self._workers_gone is not None:
            await self._workers_gone.wait()

    async def _shut_down(self) -> HookResults:
        """Stop every worker and child: gracefully, then by cancellation; then the hooks."""
        assert self._runtime is not None
        assert self._task_group is not None
        assert self._workers_gone is not None
        self._state = "stopping"
        workers = list(self._workers.values())
        try:
            with anyio.CancelScope(shield=True):
                await self._stop_gracefully(workers)
        finally:  # also when a native asyncio cancel or Ctrl-C cut the graceful stop short
            with anyio.CancelScope(shield=True):
                await self._cancel()
                for pool in self._pools:  # (a Dask client; local workers closed as children)
                    await pool.aclose()
                if self._forker is not None and self._parent is None:
                    await self._forker.aclose()
            for worker in workers:
                worker._cancelled()  # only those the cancellation caught mid-run
            with anyio.CancelScope(shield=True):
                hooks = await self._run_shutdown_hooks()
                if self._parent is None:  # (nested supervisors lend their parent's threads)
                    await self._runtime.threads.aclose(timeout=self.shutdown_timeout)
            self._state = "stopped"
        return hooks

    async def _cancel(self) -> None:
        """Cancel every task of this supervisor and its nested ones; wait until they end."""
        assert self._task_group is not None
        assert self._workers_gone is not None
        for nested in self._nested.values():
            await nested._cancel()
        self._task_group.cancel_scope.cancel()
        await self._workers_gone.wait()

    async def _stop_gracefully(self, workers: list[Worker]) -> None:
        """Stop workers that feed queues first, then each queue once drained, then children."""
        queues = [w for w in workers if isinstance(w, QueueWorker)]
        feeders = [w for w in workers if not isinstance(w, QueueWorker)]
        with anyio.move_on_after(self.shutdown_timeout) as scope:
            for worker in feeders:
                worker.stop()
            for worker in feeders:
                await worker.wait_stopped()
            for queue in reversed(queues):  # a later stage may feed an earlier one
                queue.stop()
                await queue.wait_stopped()
            async with anyio.create_task_group() as closing:  # children close together
                left = max(scope.deadline - anyio.current_time(), 0)
                for child in self._children.values():
                    closing.start_soon(child.aclose, left)
                for nested in self._nested.values():
                    closing.start_soon(nested.aclose)
            return
        late = [w.name for w in workers if w.state.value in ("running", "stopping")]
        if not late:  # the last one stopped just as time ran out
            return
        logger.warning(
            "supervisor %r: %d worker(s) still running %.3gs after the stop request; "
            "cancelling: %s",
            self.name,
            len(late),
            self.shutdown_timeout,
            ", ".join(late),
        )

    async def _run_shutdown_hooks(self) -> HookResults:
        assert self._runtime is not None
        with anyio.move_on_after(self.shutdown_timeout):
            results = await self.on_shutdown._run((), None, threads=self._runtime.threads)
            for name, error in results.errors.items():
                logger.error(
                    "supervisor %r: shutdown hook %s failed", self.name, name, exc_info=error
                )
            return results
        logger.warning(
            "supervisor %r: shutdown hooks did not finish within %.3gs",
            self.name,
            self.shutdown_timeout,
        )
        return HookResults()
