"""Restart strategies: which children start again together, how often, and escalation.

A :class:`Supervision` is the restart half of one supervisor (OTP's
semantics). When one of its children ends, it applies the child's
``restart`` policy; it counts each restart against its ``max_restarts``
within ``restart_window`` (and the child's own limit, if it has one); it
picks the children that restart together (``one_for_one``: that child;
``one_for_all``: all; ``rest_for_one``: it and those started after it),
stops the others (the last started first), waits the backoff, and starts
them again in start order. When a limit is exceeded, or a child with
``restart="never"`` fails, it escalates: the top supervisor fails; a
nested one stops its children and becomes a failed child of its parent.

A child's manager task (``Service._run``) asks :meth:`after_exit` what to
do after each of its processes ends; a child held for a group restart
waits there, its manager alive, until released.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

import anyio

from ._errors import WorkerCrashed
from ._lifetime import (
    BACKOFF,
    MAX_BACKOFF,
    RestartEvent,
    RestartPolicy,
    RestartWindow,
    check_limits,
    check_policy,
    restarts_after,
)

if TYPE_CHECKING:
    from anyio.abc import TaskGroup

    from ._service import Service

logger = logging.getLogger(__name__)

Strategy = Literal["one_for_one", "one_for_all", "rest_for_one"]
HISTORY = 100  # restart events a supervisor keeps for its statistics
Job = tuple[Callable[..., Coroutine[Any, Any, Any]], tuple[Any, ...]]


class Policy(Protocol):
    """What a child's manager asks after each of its processes has ended."""

    async def after_exit(self, service: Service, failure: BaseException | None) -> bool:
        """Wait as the policy says, then True to start the child again, False to stop."""
        ...


def reason(failure: BaseException | None) -> str:
    """Why a child ended, in one line."""
    if failure is None:
        return "exited cleanly"
    text = str(failure).split("\n", 1)[0]
    return text if isinstance(failure, WorkerCrashed) else f"{type(failure).__name__}: {text}"


class OwnPolicy:
    """The policy of a child with no supervisor (``corral.spawn``), or of a job: alone."""

    async def after_exit(self, service: Service, failure: BaseException | None) -> bool:
        failed = failure is not None
        if not restarts_after(service.restart, failed):
            service.give_up(failure, "")
            return False
        window = service.window
        if not window.admit(time.monotonic()):
            error = failure or WorkerCrashed(service.name, service.last_exit)
            service.give_up(error, window.spent())
            return False
        delay = window.delay()
        logger.warning(
            "child %r %s; restarting in %.2gs (%s)",
            service.name,
            "crashed" if failed else "exited",
            delay,
            window,
        )
        service.restarts += 1
        return await service.pause(delay)


ALONE = OwnPolicy()


class Supervision:
    """One supervisor's strategy, restart intensity and restart history."""

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy,
        max_restarts: int,
        restart_window: float,
        backoff: float = BACKOFF,
        max_backoff: float = MAX_BACKOFF,
    ) -> None:
        check_policy(strategy, get_args(Strategy), "strategy")
        check_limits(max_restarts, restart_window=restart_window, backoff=backoff)
        check_limits(None, max_backoff=max_backoff)
        if max_backoff < backoff:
            raise ValueError(
                f"max_backoff= ({max_backoff!r}) must be at least backoff= ({backoff!r})"
            )
        self.name = name
        self.strategy: Strategy = strategy
        self.window = RestartWindow(max_restarts, float(restart_window))
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self.restart: RestartPolicy = (
            "on-failure"  # (nested) what its parent does when it escalates
        )
        self.children: list[Service | Supervision] = []  # in start order
        self.history: deque[RestartEvent] = deque(maxlen=HISTORY)
        self.restarts = 0  # restarts it made
        self.grace = 5.0  # seconds a child stopped for a restart has to exit
        self.parent: Supervision | None = None
        self.state: Literal["running", "restarting", "failed", "closed"] = "running"
        self.on_escalate: Callable[[str, BaseException], None] | None = None  # the top's failure
        self.tasks: TaskGroup | None = None  # where restarts of groups run
        self.restarts_window = RestartWindow(None, float(restart_window))  # (nested) its own
        self._held: dict[Service, anyio.Event] = {}
        self._jobs, self._queued = anyio.create_memory_object_stream[Job](math.inf)
        self._lock = anyio.Lock()  # (bound to its event loop on first use)

    # -- a child ended ---------------------------------------------------------------

    async def after_exit(self, service: Service, failure: BaseException | None) -> bool:
        if service not in self._held:
            outcome = self._child_ended(service, failure)
            if outcome is None:
                return False
            if isinstance(outcome, float) and not await service.pause(outcome):
                return False
        # held for a group restart (or taken into one during its own pause): its turn
        while (gate := self._held.get(service)) is not None:
            if not await service.pause(0.0, gate):
                return False
        return True

    def _child_ended(
        self, child: Service | Supervision, failure: BaseException | None
    ) -> float | anyio.Event | None:
        """Apply the policy: the pause before a restart alone, the gate the child waits
        at (a restart with others, or an escalation under way), or None (it is done)."""
        if not restarts_after(child.restart, failure is not None):
            if failure is not None:
                return self._escalate(child, failure, "")
            if not isinstance(child, Supervision):
                child.give_up(None, "")
            return None
        now = time.monotonic()
        last_exit = None if isinstance(child, Supervision) else child.last_exit
        error = failure or WorkerCrashed(child.name, last_exit)
        own = child.restarts_window if isinstance(child, Supervision) else child.window
        if not own.admit(now):
            return self._escalate(child, error, own.spent())
        if not self.window.admit(now):
            return self._escalate(child, error, self._spent())
        delay = own.delay(self.backoff, self.max_backoff)
        group = self._group(child)
        self._record(child, reason(failure), delay, group)
        if len(group) == 1 and not isinstance(child, Supervision):
            return delay
        for member in group:  # (now: one that ends meanwhile waits for this restart)
            self._hold_one(member)
        self._run_soon(self._restart_group, child, group, delay)
        return self._hold_one(child)

    def _escalate(
        self, child: Service | Supervision, error: BaseException, note: str
    ) -> anyio.Event | None:
        if note:
            error.add_note(note)
        error.add_note(self._history_note())
        if self.parent is None:  # the top: it fails, and its closing stops every child
            if isinstance(child, Supervision):
                child.state = "failed"
            else:
                child.give_up(error, "")
            if self.on_escalate is not None:
                self.on_escalate(child.name, error)
            return None
        logger.error(
            "supervisor %r: child %r failed; stopping its children and escalating to %r",
            self.name,
            child.name,
            self.parent.name,
        )
        if isinstance(child, Supervision):
            child.state = "failed"
        for member in self._alive():
            self._hold_one(member)
        self._run_soon(self._escalate_up, child, error)
        return self._hold_one(child)

    def escalate_self(self, error: BaseException) -> None:
        """(Nested) fail for good: stop every child, then fail as a child of the parent."""
        self.restart = "never"  # (an in-process worker's unhandled failure: no restart)
        self._run_soon(self._escalate_up, None, error)

    # A group is held from the failure on, so a member that ends meanwhile waits for
    # the group's restart instead of counting as a restart of its own. Restarts of
    # groups, escalations and a parent's stop or start of this subtree then run one
    # at a time (under the lock), each holding its group again as it begins: one can
    # never start a child that another has stopped and still holds, nor stop one that
    # another has just started (which would then be taken for a clean exit).

    async def _escalate_up(
        self, culprit: Service | Supervision | None, error: BaseException
    ) -> None:
        """A nested supervisor gave up: stop its children, then it is its parent's problem."""
        async with self._lock:
            self.state = "failed"
            await self._stop(self._alive(), culprit, f"supervisor {self.name!r} escalated")
        assert self.parent is not None
        self.parent._child_ended(self, error)  # it restarts this subtree, or escalates

    async def _restart_group(
        self, culprit: Service | Supervision, held: list[Service | Supervision], delay: float
    ) -> None:
        """Stop the others (the last started first), pause, start all again in start order."""
        async with self._lock:  # (the group as it is now, and those held at the failure)
            members = set(held) | set(self._group(culprit))
            group = [child for child in self.children if child in members]
            await self._stop(group, culprit, f"restarted with {culprit.name!r} ({self.strategy})")
            await anyio.sleep(delay)
            for child in group:
                await self._release(child)

    async def _stop(
        self, group: list[Service | Supervision], culprit: Service | Supervision | None, why: str
    ) -> None:
        """Hold each of ``group``, then stop all but ``culprit``, the last started first."""
        for child in group:
            self._hold_one(child)
        for child in reversed(group):
            if child is not culprit:
                await child.recycle(self.grace, why)

    # -- a nested supervisor as a child of its parent ----------------------------------

    async def recycle(self, grace: float, why: str) -> None:
        """Stop every child for a restart of this subtree (each is held until resumed)."""
        async with self._lock:
            self.state = "restarting"
            await self._stop(self._alive(), None, why)

    async def resume(self) -> None:
        """Start the held children again, in start order, with a fresh restart count."""
        async with self._lock:
            self.window.clear()
            self.state = "running"
            for child in list(self.children):
                if not isinstance(child, Supervision):
                    if child not in self._held:
                        continue
                    child.restarts += 1  # (its restart is its parent's: counted here)
                await self._release(child)

    def alive(self) -> bool:
        return self.state != "closed"

    # -- helpers -----------------------------------------------------------------------

    async def _release(self, child: Service | Supervision) -> None:
        if isinstance(child, Supervision):
            if child.state != "closed":
                await child.resume()
            return
        gate = self._held.pop(child, None)
        if gate is not None:
            gate.set()
            await child.settled()

    def _hold_one(self, child: Service | Supervision) -> anyio.Event | None:
        """The gate ``child`` waits at until released (None for a nested supervisor)."""
        if isinstance(child, Supervision):
            return None
        gate = self._held.get(child)
        if gate is None:
            gate = self._held[child] = anyio.Event()
        return gate

    def _alive(self) -> list[Service | Supervision]:
        return [child for child in self.children if child.alive()]

    def _group(self, child: Service | Supervision) -> list[Service | Supervision]:
        if self.strategy == "one_for_one":
            return [child]
        alive = [c for c in self.children if c is child or c.alive()]
        if self.strategy == "one_for_all":
            return alive
        return alive[alive.index(child) :] if child in alive else [child]

    def _record(
        self,
        child: Service | Supervision,
        why: str,
        delay: float,
        group: list[Service | Supervision],
    ) -> None:
        siblings = tuple(c.name for c in group if c is not child)
        self.restarts += 1
        for restarting in group:  # the siblings' restarts count for each of them too
            if not isinstance(restarting, Supervision):  # (a subtree's: in its resume())
                restarting.restarts += 1
        self.history.append(RestartEvent(child.name, why, time.time(), delay, siblings))
        logger.warning(
            "supervisor %r: child %r ended (%s); restarting it%s in %.2gs (%s)",
            self.name,
            child.name,
            why,
            f" with {', '.join(map(repr, siblings))}" if siblings else "",
            delay,
            self.window,
        )

    def _spent(self) -> str:
        return f"(supervisor {self.name!r} escalates) {self.window.spent()}"

    def _history_note(self) -> str:
        if not self.history:
            return f"(supervisor {self.name!r} had made no restarts)"
        lines = [f"(supervisor {self.name!r}'s last restarts:"]
        for event in list(self.history)[-5:]:
            lines.append(f"  {event.child}: {event.reason}")
        return "\n".join(lines) + ")"

    def _run_soon(self, fn: Callable[..., Coroutine[Any, Any, Any]], *args: object) -> None:
        """Run ``fn(*args)`` in a task of its own (from a task, or a loop callback)."""
        try:
            self._jobs.send_nowait((fn, args))
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            logger.debug("supervisor %r closed: %r not run", self.name, fn)

    async def serve(self) -> None:
        """Start each restart or escalation asked for (a task of the supervisor's)."""
        assert self.tasks is not None
        with self._jobs, self._queued:
            async for fn, args in self._queued:
                self.tasks.start_soon(fn, *args, name=f"corral-restart:{self.name}")
