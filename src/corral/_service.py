"""A child process kept running: start, watch, restart by policy, close.

One manager task per spawned child (in the supervisor's task group, or in
the one ``corral.spawn()`` opens) starts the child, waits for it to exit,
fails every call still waiting with the reason, and restarts it when the
policy says so. Proxies and ``open_worker`` sit on top.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Hashable
from typing import Any

import anyio
import anyio.abc

from ._errors import ProtocolError, StartupError, WorkerStopped
from ._forker import Forker
from ._lifetime import (
    ProxyStatistics,
    RestartPolicy,
    RestartWindow,
    ServiceState,
    check_options,
)
from ._messenger import Messenger
from ._serving import Member
from ._spawn import ChildProcess, EarlyLoss, check_cpu, launch, pickled_target
from ._supervision import ALONE, Policy, reason
from ._wire import DEFAULT_MAX_FRAME

logger = logging.getLogger(__name__)

LOST_GRACE = 1.0  # seconds a child without a connection has to exit before it is killed


class Service:
    """The host's side of one long-lived child, across its restarts."""

    def __init__(
        self,
        kind: str,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        name: str,
        cpu: int | tuple[int, ...] | list[int] | None = None,
        restart: RestartPolicy = "never",
        max_restarts: int | None = None,
        restart_window: float | None = None,
        startup_timeout: float = 30.0,
        log_level: int | None = None,
        max_frame_size: int = DEFAULT_MAX_FRAME,
        on_failure: Callable[[str, BaseException], None] | None = None,
        pass_fds: tuple[int, ...] = (),
        on_finished: Callable[[], object] | None = None,
    ) -> None:
        check_options(restart, max_restarts, restart_window, startup_timeout)
        if not callable(fn):
            raise TypeError(
                f"spawn() takes a class or a callable that builds the object, got {fn!r}"
            )
        self.kind = kind
        self.name = name
        self.cpu = check_cpu(cpu)
        self.restart = restart
        self.startup_timeout = float(startup_timeout)
        self._target = pickled_target(fn, args, kwargs)  # once, not on every restart
        self._log_level = log_level
        self._max_frame_size = max_frame_size
        self.on_failure = on_failure
        self._pass_fds = pass_fds
        self.on_finished = on_finished  # once the last child has gone, for good
        self.state: ServiceState = "starting"
        self.members: dict[str, Member] = {}
        self.messenger: Messenger | None = None
        self.child: ChildProcess | None = None
        self.restarts = 0
        self.counts = [0, 0, 0]  # calls, errors, in flight: kept by the proxies
        self.last_exit: int | None = None
        self.error: BaseException | None = None
        # Alone, its own policy (None limits: 3 restarts within 5 s); a supervisor
        # puts its strategy in place, and None limits then mean only the supervisor's.
        # The window also counts restarts for the backoff.
        self.max_restarts, self.restart_window = max_restarts, restart_window
        self.policy: Policy = ALONE
        self.window = RestartWindow(
            3 if max_restarts is None else max_restarts, restart_window or 5.0
        )
        self.last_exit_reason: str | None = None
        self.sessions = 0  # children that have ended
        self._in_session = False
        self._session_done = anyio.Event()
        self._recycled: str | None = None  # why its supervisor stopped the current child
        self._changed = anyio.Event()
        self._finished = anyio.Event()
        self._closing = False
        self._lost_error: BaseException | None = None
        self._lost_event = anyio.Event()
        self._pause: anyio.CancelScope | None = None
        self._launching: anyio.CancelScope | None = None
        self.last_messenger: Messenger | None = None
        # For a job (see Job): after each child, what to start once in its place
        # (bytes), or False (done: no restart); a new connection's hook; handlers
        # of channels; whether a close lets a start finish (then closes it).
        self.relaunch: Callable[[], bytes | bool | None] | None = None
        self._relaunch_target: bytes | None = None
        self.on_connected: Callable[[Messenger], None] | None = None
        self.handlers: dict[Hashable, Callable[[Messenger, Any], None]] = {}
        self.finish_start = False
        self.kill_requested = False
        self.last_failure: BaseException | None = None  # why the last child ended, if it failed
        self.forker: Forker | None = None  # a supervisor's zygote to fork children from

    def __repr__(self) -> str:
        pid = self.child.pid if self.child is not None else None
        return f"<child {self.name!r} {self.state} pid={pid}>"

    # -- the manager task --------------------------------------------------------------

    async def run(self, *, task_status: anyio.abc.TaskStatus[None] | None = None) -> None:
        """Run the child until closed or given up on (a task; ready once started).

        Without ``task_status`` (``start_soon``), a first start that fails is
        handled like any failure, by the restart policy.
        """
        try:
            await self._run(task_status)
        finally:
            with anyio.CancelScope(shield=True):
                if self.child is not None and self.child.returncode is None:
                    self.child.kill()
                    await self.child.wait()
            if self.messenger is not None:  # (cancelled: the session ended uncleanly)
                self.messenger._fail_all(self._stopped_error())
                self.messenger.abort()  # its socket too, now
                self.messenger = None
            if self.state not in ("failed",):
                self.state = "closed"
            if self.on_finished is not None:
                self.on_finished()
            self._finished.set()
            self._notify()

    async def _run(self, task_status: anyio.abc.TaskStatus[None] | None) -> None:
        started = False
        while True:
            self._in_session = True
            try:
                failure = await self._session(task_status if not started else None)
            finally:
                self._in_session = False
                self.sessions += 1
                self._session_done.set()
                self._session_done = anyio.Event()
            started = True
            self.last_failure = failure
            self.last_exit_reason = self._recycled or reason(failure)
            self._recycled = None
            target = None
            if (  # (a job closing starts its retry all the same: that child then stops)
                self.relaunch is not None
                and not self.kill_requested
                and (not self._closing or self.finish_start)
            ):
                target = self.relaunch()
            if isinstance(target, bytes):  # not a restart by policy: counted, not against it
                self._relaunch_target = target
                self.restarts += 1
                self.state = "restarting"
                continue
            if self._closing:
                return
            if target is False:  # its work is done: no restart, whatever the policy
                self.give_up(None, "")
                return
            if not await self.policy.after_exit(self, failure):
                return

    async def pause(self, seconds: float, gate: anyio.Event | None = None) -> bool:
        """Wait ``seconds`` (or for ``gate``) before a restart; False if closed meanwhile."""
        self.state = "restarting"
        self._notify()
        with anyio.CancelScope() as self._pause:
            if self._closing:
                self._pause.cancel()
            if gate is not None:
                await gate.wait()
            else:
                await anyio.sleep(seconds)
        self._pause = None
        return not self._closing

    async def recycle(self, grace: float, why: str) -> None:
        """Stop the current child so that its supervisor can start it again.

        Asked to close, it has ``grace`` seconds to exit before it is killed. A
        start under way is called off. Returns once the child has gone.
        """
        if not self._in_session:
            return
        done = self._session_done
        self._recycled = f"stopped: {why}"
        if self._launching is not None:
            self._launching.cancel()
        elif self.messenger is not None and not self.messenger.closed:
            try:
                self.messenger.request_close_nowait()
            except Exception:  # already gone: the manager sees the exit
                logger.debug("child %r: close request not sent", self.name, exc_info=True)
        with anyio.move_on_after(grace):
            await done.wait()
            return
        logger.warning(
            "child %r did not exit within %gs of its restart; killing it", self.name, grace
        )
        if self.child is not None:
            self.child.kill()
        await done.wait()

    async def settled(self) -> None:
        """Wait until a restart under way has ended: running, ended again, or gone."""
        sessions = self.sessions
        while self.state != "running" and self.sessions == sessions:
            if self._finished.is_set():
                return
            await self._changed.wait()

    def alive(self) -> bool:
        """False once the child has stopped for good (closed, killed or given up on)."""
        return not self._finished.is_set() and not self._closing and self.state != "failed"

    async def _session(
        self, task_status: anyio.abc.TaskStatus[None] | None
    ) -> BaseException | None:
        """Run one child from start to exit; returns why it failed (None: a clean exit)."""
        self._lost_error = None
        self._lost_event = anyio.Event()
        failure: BaseException | None = None
        started = False
        async with anyio.create_task_group() as tasks:  # the child's watcher and pumps
            try:
                with anyio.CancelScope() as launching:
                    self._launching = launching
                    if self._closing and (self.kill_requested or not self.finish_start):
                        launching.cancel()  # closed before this (re)start began
                    target, self._relaunch_target = self._relaunch_target or self._target, None
                    launched = await launch(
                        self.kind,
                        target,
                        name=self.name,
                        cpu=self.cpu,
                        task_group=tasks,
                        startup_timeout=self.startup_timeout,
                        log_level=self._log_level,
                        max_frame_size=self._max_frame_size,
                        pass_fds=self._pass_fds,
                        forker=self.forker,
                        handlers=self.handlers,
                    )
            except Exception as error:
                failure = error
                if isinstance(error, StartupError) and error.exit_code is not None:
                    self.last_exit = error.exit_code  # (it exited as it started)
            finally:
                self._launching = None
            if failure is None and launching.cancelled_caught:
                # aclose() or kill() during the start (launch() killed that child)
                failure = self._stopped_error() if task_status is not None else None
            elif failure is None:
                child, messenger, members = launched
                started = True
                if self._closing and (self.kill_requested or not self.finish_start):
                    child.kill()  # aclose() or kill() came while it started: it served nothing
                elif self._closing:  # a job's start finished: now it may close (stop)
                    messenger.request_close_nowait()
                self.child, self.messenger = child, messenger
                self.last_messenger = messenger
                self.members = dict(members or {})
                early = messenger.on_lost
                messenger.on_lost = functools.partial(self._lost, child)
                if isinstance(early, EarlyLoss) and early.lost:  # ended as it became ready
                    self._lost(child, early.error)
                self.state = "closing" if self._closing else "running"
                if self.on_connected is not None:
                    self.on_connected(messenger)
                self._notify()
                if task_status is not None:
                    task_status.started()
                failure = await self._until_exit(child, messenger)
            tasks.cancel_scope.cancel()  # a pump a grandchild keeps open must not hold us
        if failure is not None and task_status is not None and not started:  # first start
            self.state = "failed"
            raise failure  # (raised out here: not wrapped in the group's exception group)
        return failure

    async def _until_exit(self, child: ChildProcess, messenger: Messenger) -> BaseException | None:
        async with anyio.create_task_group() as reaper:
            reaper.start_soon(self._kill_once_lost, child)
            code = await child.wait()
            reaper.cancel_scope.cancel()
        await child.wait_stderr(0.1)
        self.last_exit = code
        failure: BaseException | None = None
        lost = self.lost_error
        if isinstance(lost, ProtocolError):
            failure = ProtocolError(f"child {self.name!r}: {lost}; it was killed")
        elif code != 0:
            failure = child.failure()
        self.messenger = None
        if failure is not None:
            messenger._fail_all(failure)
        elif self._closing:
            messenger._fail_all(self._stopped_error())
        elif self.kind == "function":
            messenger._fail_all(
                WorkerStopped(f"child {self.name!r} exited: its function returned")
            )
        else:  # a service that exits by itself, even cleanly, leaves its calls unanswered
            messenger._fail_all(child.crashed())
        messenger.abort()
        self._notify()
        return failure

    @property
    def launching(self) -> bool:
        """True while a (re)start of the child is under way."""
        return self._launching is not None

    @property
    def closing(self) -> bool:
        """True once aclose() or kill() was called."""
        return self._closing

    @property
    def lost_error(self) -> BaseException | None:
        """Why the current child's connection ended (None: end of file, or still open)."""
        return self._lost_error

    def _lost(self, child: ChildProcess, error: BaseException | None) -> None:
        """The connection ended: the child cannot be reached, so it must go."""
        self._lost_error = error
        if isinstance(error, ProtocolError):
            logger.error("child %r: %s; killing it", self.name, error)
            child.kill()
        self._lost_event.set()

    async def _kill_once_lost(self, child: ChildProcess) -> None:
        """A child whose connection ended gets a moment to exit by itself, then is killed."""
        await self._lost_event.wait()
        with anyio.move_on_after(LOST_GRACE):
            await child.wait()
            return
        logger.warning("child %r closed its connection but did not exit; killing it", self.name)
        child.kill()

    def give_up(self, failure: BaseException | None, detail: str) -> None:
        """The child will not start again: closed (no failure) or failed."""
        if failure is None:
            self.state = "closed"
            return
        if detail:
            failure.add_note(detail)
        self.state = "failed"
        self.error = failure
        logger.error("child %r failed and will not be restarted: %s", self.name, failure)
        if self.on_failure is not None:
            self.on_failure(self.name, failure)

    # -- for proxies and owners ----------------------------------------------------------

    @property
    def target(self) -> bytes:
        """The pickled target each start begins from (what ``relaunch`` may return)."""
        return self._target

    async def connected(self, other_than: Messenger | None = None) -> Messenger:
        """The current child's messenger, waiting through a restart (and for one newer
        than ``other_than``)."""
        while True:
            if self._closing:
                raise self._stopped_error()
            if self.messenger is not None and self.messenger is not other_than:
                return self.messenger
            if self._finished.is_set():
                raise self.error or self._stopped_error()
            changed = self._changed
            await changed.wait()

    def stopped_error(self) -> BaseException:
        """What a call made now raises when the child is not there to take it."""
        return self.error if self.state == "failed" and self.error else self._stopped_error()

    def _stopped_error(self) -> WorkerStopped:
        return WorkerStopped(f"child {self.name!r} is {self.state}; it takes no more calls")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def aclose(self, grace: float = 5.0) -> None:
        """Ask the child to close; kill it if it has not exited within ``grace`` seconds."""
        if not self._closing:
            self._closing = True
            self._stop_starting(launch=not self.finish_start)
            if self.state == "running":
                self.state = "closing"
            messenger = self.messenger
            if messenger is not None and not messenger.closed:
                try:  # without waiting for it to drain: the grace period bounds that too
                    messenger.request_close_nowait()
                except Exception:  # already gone: the manager sees the exit
                    logger.debug("child %r: close request not sent", self.name, exc_info=True)
        with anyio.move_on_after(grace if math.isfinite(grace) else None):
            await self._finished.wait()
            return
        logger.warning(
            "child %r did not exit within %gs of the close request; killing it", self.name, grace
        )
        self.kill()
        await self._finished.wait()

    def kill(self) -> None:
        """Kill the child now (no restart; calls in flight raise WorkerCrashed)."""
        self._closing = self.kill_requested = True
        self._stop_starting()
        if self.child is not None:
            self.child.kill()

    def _stop_starting(self, *, launch: bool = True) -> None:
        """End a restart pause, and a launch under way (that child is killed)."""
        for scope in (self._pause, self._launching if launch else None):
            if scope is not None:
                scope.cancel()

    @property
    def pid(self) -> int | None:
        """The current child's process id (None between restarts and after exit)."""
        child = self.child
        return child.pid if child is not None and child.returncode is None else None

    def statistics(self) -> ProxyStatistics:
        """A snapshot of the child and the calls made through its proxies."""
        child = self.child
        rss, cpu = child.resources() if child is not None else (None, None)
        calls, errors, in_flight = self.counts
        return ProxyStatistics(
            name=self.name,
            state=self.state,
            pid=self.pid,
            calls=calls,
            errors=errors,
            in_flight=in_flight,
            restarts=self.restarts,
            last_exit=self.last_exit,
            rss=rss,
            cpu_percent=cpu,
            last_exit_reason=self.last_exit_reason,
        )

    async def wait_closed(self) -> None:
        """Wait until the child has exited for good (closed, killed or given up on)."""
        await self._finished.wait()
