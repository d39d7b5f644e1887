"""The host's handle on a :class:`~corral.Process` running in its child: a ``Job``."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Generic, TypeVar, final

import anyio

from ._answers import rebuild_failure
from ._errors import CorralError, WorkerCrashed, WorkerStopped
from ._process import SECTIONS, Process, configure
from ._processchild import OUTCOME, PROGRESS, STOP, TELL, process_target, serve_process
from ._proxy import receive_from
from ._service import Service
from ._timing import Timer

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

    def __init__(self, service: Service, process: P) -> None:
        self._service = service
        self._process = process
        self._current_run = 0
        self._finished = False
        self._killed = False
        self._outcome: tuple[Any, ...] | None = None
        self._value: Any = None
        self._error: BaseException | None = None
        self._timers = ProcessTimers()
        service.relaunch = self._relaunch

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
        messenger = self._service.messenger or self._service.last_messenger
        if messenger is not None and not self._finished:
            with contextlib.suppress(Exception):
                while True:
                    self._current_run = messenger.receive_nowait(PROGRESS)
        return self._current_run

    @property
    def timers(self) -> ProcessTimers:
        """Each section's durations (complete once the job has ended)."""
        return self._timers

    async def wait(self) -> None:
        """Wait until the process has ended (finished, failed or killed)."""
        if not self._finished:
            await self._service.wait_closed()
            self._settle()

    def _settle(self) -> None:
        """Take the job's end from what its last child sent, once."""
        if self._finished:  # (another waiter did)
            return
        self._finished = True
        outcome = self._outcome or self._last_outcome()
        if outcome is not None:
            value, error, runs, timers, _resume, _target = outcome
            self._value = value
            self._error = rebuild_failure(error) if error is not None else None
            self._current_run = runs
            self._timers = ProcessTimers(timers)
        elif not self._killed:  # the child died, or its start failed
            self._error = self._service.error or WorkerCrashed(self.name, self._service.last_exit)

    def _last_outcome(self) -> tuple[Any, ...] | None:
        """What the last child sent as it ended, if it did."""
        messenger = self._service.last_messenger
        if messenger is None:
            return None
        try:
            outcome: tuple[Any, ...] = messenger.receive_nowait(OUTCOME)
        except Exception:
            return None
        return outcome

    def _relaunch(self) -> bytes | None:
        """After each child: what to start in its place, when its process goes on there.

        That is when a sync section overran its limit (its thread could not
        be stopped, so the child had to go) and lives remain.
        """
        outcome = self._outcome = self._last_outcome()
        if outcome is None or outcome[4] is None:
            return None
        resume, target = outcome[4], outcome[5]
        logger.warning(
            "job %r: %s; the child was ended (its thread would not stop) and a new one "
            "retries run %d (lives left: %d)",
            self.name,
            rebuild_failure(outcome[1]),
            resume.run,
            resume.lives,
        )
        self._outcome = None
        return target if target is not None else process_target(self._process, resume)

    async def result(self) -> Any:
        """Wait for the end; its result, or the error that ended it (None if killed)."""
        await self.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def stop(self) -> None:
        """Finish the current run, then on_finish() and result(); returns at once."""
        messenger = self._service.messenger
        if messenger is not None and not messenger.closed:
            with contextlib.suppress(Exception):  # ending already: nothing to stop
                messenger.send_nowait(None, channel=STOP)

    def kill(self) -> None:
        """End the process at once, without cleanup; its result is None."""
        self._killed = True
        self._service.kill()

    async def tell(self, value: Any) -> None:
        """Send ``value`` to the process (``await self.listen()`` there)."""
        if self._finished:
            raise WorkerStopped(f"job {self.name!r} has ended; it hears nothing more")
        messenger = self._service.messenger or await self._service.connected()
        await messenger.send(value, channel=TELL)

    async def listen(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """The next value the process sent with ``self.tell(x)``.

        None after ``timeout`` seconds, or once the process has ended and all
        it sent has been read.
        """
        with anyio.move_on_after(timeout):
            try:
                return await receive_from(self._service, TELL)
            except CorralError:  # it has ended (and how is result()'s to say)
                return None
        return None


def process_service(
    process: Process, *, name: str, config: dict[str, Any], **options: Any
) -> Service:
    """The (not yet started) service that runs ``process`` in a child.

    ``config`` holds ``runs``/``join_in``/``lives``/``timeouts`` given at
    start (``UNSET`` where not): they are set on ``process`` first.
    """
    if not isinstance(process, Process):
        raise TypeError(f"start() takes an instance of a corral.Process subclass, got {process!r}")
    if type(process).run is Process.run:
        raise TypeError(f"{type(process).__qualname__} must define run(), the work of one run")
    if options.get("restart") == "always":
        raise ValueError(
            "restart='always' would run the process again each time it ends: pass runs=None "
            "to run it until stopped, or restart='on-failure' to start it again after a crash"
        )
    configure(process, **config)
    return Service("function", serve_process, (), {"process": process}, name=name, **options)
