"""The host's handle on a :class:`~corral.Process` running in its child: a ``Job``."""

from __future__ import annotations

import contextlib
import logging
import pickle
from collections import deque
from typing import Any, Generic, TypeVar, final

import anyio

from ._answers import Failed, failure_payload, rebuild_failure, unpack
from ._errors import (
    CorralError,
    ResultError,
    SerializationError,
    StartupError,
    WorkerCrashed,
    WorkerStopped,
)
from ._messenger import Messenger
from ._process import SECTIONS, Process, prepared
from ._processchild import ACK, OUTCOME, PROGRESS, STOP, TELL, serve_process
from ._service import Service
from ._spawn import pickled_target
from ._timing import Timer
from ._wire import dumps_inband

P = TypeVar("P", bound=Process)
logger = logging.getLogger(__name__)


@final
class ProcessTimers:
    """The durations of a job's sections, one :class:`~corral.Timer` each.

    ``process`` times prerun + run + postrun of each run. Filled in when the
    job ends (the child keeps them while it runs).
    """

    __slots__ = ("on_error", "on_finish", "postrun", "prerun", "process", "result", "run")
    prerun: Timer
    run: Timer
    postrun: Timer
    on_finish: Timer
    result: Timer
    on_error: Timer
    process: Timer

    def __init__(self, timers: dict[str, Timer] | None = None) -> None:
        for name in (*SECTIONS, "process"):
            setattr(self, name, (timers or {}).get(name) or Timer())

    def __repr__(self) -> str:
        return f"<ProcessTimers runs={self.run.count}>"


class Job(Generic[P]):
    """A :class:`~corral.Process` running in a child process.

    ``await job.result()`` waits for its end and returns what ``result()``
    returned, or raises the section's error (:class:`~corral.RunError`, ...).
    ``job.stop()`` asks it to finish the current run, then run on_finish()
    and result(); ``job.kill()`` ends it at once (its result is None).
    ``await job.tell(x)`` / ``await job.listen()`` talk to the process
    (``self.listen()`` / ``self.tell()`` there).
    """

    def __init__(self, service: Service) -> None:
        self._service = service
        self._initial = service._target  # the state it started from, pickled
        self._current_run = 0
        self._finished = False
        self._killed = False
        self._stop_requested = False
        self._outcome: tuple[Any, ...] | None = None  # the last child's, as it arrived
        self._resumed_from: tuple[Any, ...] | None = None  # one that had to go, retried
        self._value: Any = None
        self._error: BaseException | None = None
        self._timers = ProcessTimers()
        self._told: deque[Any] = deque()  # what the process told, across its children
        self._arrived = anyio.Event()
        service.relaunch = self._relaunch
        service.on_connected = self._connected
        service.on_finished = self._settle
        service.handlers = {TELL: self._heard, PROGRESS: self._progress, OUTCOME: self._ended}
        service.finish_start = True  # a close while it starts lets it start, then stops it

    def __repr__(self) -> str:
        state = "alive" if self.is_alive else "finished" if self._finished else "starting"
        return f"<Job {self._service.name!r} {state} run={self.current_run}>"

    @property
    def name(self) -> str:
        """The job's name (its child's)."""
        return self._service.name

    @property
    def is_alive(self) -> bool:
        """True while the process's child is running."""
        return self._service.pid is not None

    @property
    def current_run(self) -> int:
        """The run under way (as last reported: every 50 ms at most), or the last run."""
        return self._current_run

    @property
    def timers(self) -> ProcessTimers:
        """Each section's durations (complete once the job has ended)."""
        return self._timers

    # -- what the child sends ------------------------------------------------------------

    def _heard(self, messenger: Messenger, value: Any) -> None:
        self._told.append(value)  # (a Failed, for one that would not unpickle: raised later)
        self._wake()

    def _progress(self, messenger: Messenger, current_run: Any) -> None:
        if isinstance(current_run, int):
            self._current_run = current_run

    def _ended(self, messenger: Messenger, outcome: Any) -> None:
        if isinstance(outcome, Failed):  # it would not unpickle here (its result, say)
            error = ResultError(self._current_run, outcome.error)
            outcome = (None, failure_payload(error), self._current_run, {}, None, None)
        self._outcome = outcome
        with contextlib.suppress(Exception):  # gone already: it needs no answer
            messenger.send_nowait(None, channel=ACK)

    def _connected(self, messenger: Messenger) -> None:
        if self._stop_requested:  # asked before this child was there to hear it
            self._send_stop(messenger)

    def _wake(self) -> None:
        self._arrived.set()
        self._arrived = anyio.Event()

    def _relaunch(self) -> bytes | bool | None:
        """After each child: what to start in its place, when its process goes on there.

        That is when a sync section overran its limit (its thread could not
        be stopped, so the child had to go) and lives remain. False when the
        child sent its outcome (the job is done: no restart, even if it then
        crashed); None when it did not (a crash: the restart policy decides).
        """
        outcome = self._outcome
        if outcome is None:
            return None
        if outcome[4] is None:
            return False
        resume, target = outcome[4], outcome[5]
        assert target is None or isinstance(target, bytes)
        logger.warning(
            "job %r: %s; the child was ended (its thread would not stop) and a new one "
            "retries run %d (lives left: %d)",
            self.name,
            rebuild_failure(outcome[1]),
            resume.run,
            resume.lives,
        )
        self._resumed_from, self._outcome = outcome, None
        if target is None:  # its state would not pickle: from the state it started with
            fn, args, kwargs = pickle.loads(self._initial)
            target = pickled_target(fn, args, {**kwargs, "resume": resume})
        return target

    def _settle(self) -> None:
        """Take in the job's end (once its last child has gone, for good)."""
        if self._finished:
            return
        self._finished = True
        service = self._service
        outcome = self._outcome
        if outcome is None and not self._killed and service.closing and service.error is None:
            outcome = self._resumed_from  # closed during a retry that did not get to its end
        if outcome is not None:
            value, error, runs, timers, _resume, _target = outcome
            self._value = value
            self._error = rebuild_failure(error) if error is not None else None
            self._current_run = runs
            self._timers = ProcessTimers(timers)
        elif self._killed:
            pass  # no result: that is what kill() is for
        elif isinstance(service.last_failure, StartupError):
            self._error = service.last_failure
        elif service.closing:
            self._error = WorkerStopped(
                f"job {self.name!r} was closed (its block or supervisor ended) and did not "
                "finish within the shutdown timeout; it has no result"
            )
        else:  # the child died, or would not start
            self._error = service.error or WorkerCrashed(self.name, service.last_exit)
        self._wake()

    # -- the host's side -----------------------------------------------------------------

    async def wait(self) -> None:
        """Wait until the process has ended (finished, failed or killed)."""
        if not self._finished:
            await self._service.wait_closed()
            self._settle()

    async def result(self) -> Any:
        """Wait for the end; its result, or the error that ended it (None if killed)."""
        await self.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """Finish the current run, then on_finish() and result(); returns at once."""
        self._stop_requested = True
        messenger = self._service.messenger
        if messenger is not None:  # (else the child that connects next is told)
            self._send_stop(messenger)

    @staticmethod
    def _send_stop(messenger: Messenger) -> None:
        if not messenger.closed:
            with contextlib.suppress(Exception):  # ending already: nothing to stop
                messenger.send_nowait(None, channel=STOP)

    def kill(self) -> None:
        """End the process at once, without cleanup; its result is None."""
        self._killed = True
        self._service.kill()

    async def tell(self, value: Any) -> None:
        """Send ``value`` to the process (``await self.listen()`` there).

        Raises :class:`~corral.WorkerStopped` once it has ended.
        """
        ended = WorkerStopped(f"job {self.name!r} has ended; it hears nothing more")
        if self._finished:
            raise ended
        try:
            messenger = self._service.messenger or await self._service.connected()
            await messenger.send(value, channel=TELL)
        except SerializationError:
            raise
        except (CorralError, anyio.BrokenResourceError, anyio.ClosedResourceError) as error:
            raise ended from error

    async def listen(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The next value the process sent with ``self.tell(x)``.

        None after ``timeout`` seconds, or once the process has ended and all
        it sent has been read.
        """
        with anyio.move_on_after(timeout):
            while not self._told:
                if self._finished:
                    return None
                arrived = self._arrived
                await arrived.wait()
            return unpack(self._told.popleft())  # (one that would not unpickle: raised)
        return None


def new_job(process: P, *, name: str, config: dict[str, Any], **options: Any) -> Job[P]:
    """A job for ``process``, whose service (``job._service``) is still to be run.

    ``config`` holds ``runs``/``join_in``/``lives``/``timeouts`` given at
    start (``UNSET`` where not): they apply to this start only.
    """
    checked = prepared(process, config)
    if options.get("restart") == "always":
        raise ValueError(
            "restart='always' would run the process again each time it ends: pass runs=None "
            "to run it until stopped, or restart='on-failure' to start it again after a crash"
        )
    try:
        service = Service(
            "function", serve_process, (), {"process": checked}, name=name, **options
        )
    except SerializationError as error:
        raise _blame_attribute(checked, error) from error
    return Job(service)  # (before the service runs: its handlers must be there from the start)


def _blame_attribute(process: Process, error: SerializationError) -> SerializationError:
    """Name the attribute that will not pickle, when one is to blame."""
    for name, value in getattr(process, "__dict__", {}).items():
        try:
            dumps_inband(value)
        except Exception as problem:
            return SerializationError(
                f"{type(process).__qualname__} will not pickle to go to its child: its "
                f"attribute {name!r} ({type(value).__qualname__}) will not ({problem}). Create "
                "it in the child instead, in prerun() or run()",
                argument=name,
            )
    return error
