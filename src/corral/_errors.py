"""The exception hierarchy: one base, each error says what happened and what to do."""

from __future__ import annotations

import signal
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._lifetime import RestartEvent


class CorralError(Exception):
    """Base class of every error corral raises on its own account."""


class WorkerFailed(CorralError):
    """A worker's function raised and nothing handled it.

    Raised from ``async with Supervisor()`` when a worker has no ``on_error``
    handler (or the handler itself raised). The original exception is the
    ``__cause__``; :attr:`worker` names the worker.
    """

    def __init__(
        self,
        worker: str,
        error: BaseException,
        hint: str = "Pass on_error= to handle failures and keep the worker running.",
    ) -> None:
        self.worker = worker
        self.error = error
        self.history: tuple[RestartEvent, ...] = ()
        """The supervisor's last restarts, oldest first, when a child escalated."""
        super().__init__(
            f"worker {worker!r} failed: {type(error).__name__}: {str(error).rstrip('.')}. {hint}"
        )


class WorkerStopped(CorralError, RuntimeError):
    """The worker has stopped, so it cannot take this request.

    Raised by a put on a stopped queue worker, and by ``wait_runs()`` when the
    worker stops before reaching the requested number of runs.
    """


class QueueFull(CorralError):
    """``put_nowait()`` found the queue worker at its ``maxsize``.

    Use ``await worker.put(item)`` to wait for room instead.
    """


class SupervisorNotRunning(CorralError, RuntimeError):
    """The supervisor is not inside its ``async with`` block."""


class HooksFailed(CorralError):
    """One or more hook functions raised; :attr:`errors` maps each name to its error."""

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        self.errors = dict(errors)
        listed = "; ".join(f"{name}: {type(e).__name__}: {e}" for name, e in self.errors.items())
        super().__init__(f"{len(self.errors)} hook(s) failed: {listed}")


class SerializationError(CorralError, TypeError):
    """A value could not be pickled (or unpickled) to cross a process boundary.

    :attr:`argument` names the argument, when one is to blame. Nothing was
    sent: the connection is still usable.
    """

    def __init__(self, message: str, *, argument: str | None = None) -> None:
        self.argument = argument
        super().__init__(message)


class ProtocolError(CorralError):
    """The byte stream from the other process is corrupt.

    The connection cannot be trusted after this, so it is closed and its
    process stopped; calls in flight raise this error.
    """


class StartupError(CorralError):
    """A child process failed before it was ready (import, unpickling or constructor).

    :attr:`traceback` holds the child's formatted traceback; it is also in the
    message.
    """

    def __init__(self, message: str, *, traceback: str = "", exit_code: int | None = None) -> None:
        self.traceback = traceback
        self.exit_code = exit_code
        self.message = message
        super().__init__(f"{message}\n{traceback}".rstrip() if traceback else message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_startup, (self.message, self.traceback, self.exit_code))


class WorkerCrashed(CorralError):
    """The child process died while a call was in flight (or before it could be made).

    :attr:`exit_code` is the process's exit status (negative: killed by a
    signal, whose name is :attr:`signal_name`); :attr:`stderr` holds the last
    lines it wrote to stderr.
    """

    def __init__(
        self,
        name: str,
        exit_code: int | None,
        *,
        stderr: str = "",
        detail: str = "",
    ) -> None:
        self.name = name
        self.exit_code = exit_code
        self.stderr = stderr
        self.signal_name: str | None = None
        if exit_code is not None and exit_code < 0:
            try:
                self.signal_name = signal.Signals(-exit_code).name
            except ValueError:
                self.signal_name = f"signal {-exit_code}"
            how = f"was killed by {self.signal_name}"
        elif exit_code is None:
            how = "stopped answering (its connection closed)"
        else:
            how = f"exited with code {exit_code}"
        message = f"child process {name!r} {how}"
        if detail:
            message += f" {detail}"
        if stderr:
            message += f"; the last lines it wrote to stderr:\n{stderr}"
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_crashed, (self.name, self.exit_code, self.stderr, self.args[0]))


def _rebuild_startup(message: str, traceback: str, exit_code: int | None) -> StartupError:
    return StartupError(message, traceback=traceback, exit_code=exit_code)


def _rebuild_crashed(name: str, exit_code: int | None, stderr: str, message: str) -> WorkerCrashed:
    error = WorkerCrashed(name, exit_code, stderr=stderr)
    error.args = (message,)
    return error


class StepFailed(CorralError):
    """A control loop's ``step()`` raised, so the loop stopped (after its ``teardown()``).

    :attr:`tick` is the number of the tick that raised (tick ``k`` was due
    ``k`` periods after the first), :attr:`original_error` the exception
    (also the ``__cause__``) and :attr:`name` the loop's name. Catch the
    error inside ``step()`` to keep the loop running instead, or pass
    ``restart="on-failure"`` to start it again.
    """

    def __init__(self, name: str, tick: int, original_error: BaseException) -> None:
        self.name = name
        self.tick = tick
        self.original_error = original_error
        super().__init__(
            f"control loop {name!r} stopped: step() raised on tick {tick}: "
            f"{type(original_error).__name__}: {original_error}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (StepFailed, (self.name, self.tick, self.original_error))


class RemoteError(CorralError):
    """A child raised an exception that could not be recreated here.

    Usually its class is not importable in this process, or it does not
    unpickle. :attr:`type_name`, :attr:`message` and :attr:`traceback` (the
    child's formatted traceback) describe it.
    """

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        super().__init__(f"{type_name}: {message}\n\nRemote traceback:\n{traceback}".rstrip())

    def __reduce__(self) -> tuple[Any, ...]:
        return (RemoteError, (self.type_name, self.message, self.traceback))


class CloseRequested(CorralError):
    """The other side asked this side to close (raised from a messenger's receive)."""


class ProcessError(CorralError):
    """A section of a :class:`~corral.Process` failed (see the subclasses).

    :attr:`section` names it, :attr:`current_run` is the run it failed on
    and :attr:`original_error` the exception it raised (also the
    ``__cause__``). The message reads "Error in run on run 5:
    ConnectionError('Failed to connect')", on both sides of the process
    boundary.
    """

    section = "process"

    def __init__(self, current_run: int, original_error: BaseException | None) -> None:
        self.current_run = current_run
        self.original_error = original_error
        self.__cause__ = original_error  # (unpickled in the host, too)
        super().__init__(
            f"Error in {self.section} on run {current_run}: {original_error!r}"
            if original_error is not None
            else f"Error in {self.section} on run {current_run}"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # The original error travels as a failure payload: one that will not
        # unpickle on the other side becomes a RemoteError there, and this
        # error keeps its type and its message.
        from ._answers import failure_payload  # noqa: PLC0415  (_answers imports this module)

        original = self.original_error
        payload = failure_payload(original) if original is not None else None
        return (_rebuild_process_error, (type(self), self.current_run, payload, str(self)))


def _rebuild_process_error(
    cls: type[ProcessError], current_run: int, payload: Any, message: str
) -> ProcessError:
    from ._answers import rebuild_failure  # noqa: PLC0415

    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.current_run = current_run
    error.original_error = error.__cause__ = (
        rebuild_failure(payload) if payload is not None else None
    )
    return error


class PreRunError(ProcessError):
    """``prerun()`` raised."""

    section = "prerun"


class RunError(ProcessError):
    """``run()`` raised (on its last life)."""

    section = "run"


class PostRunError(ProcessError):
    """``postrun()`` raised."""

    section = "postrun"


class OnFinishError(ProcessError):
    """``on_finish()`` raised."""

    section = "on_finish"


class ResultError(ProcessError):
    """``result()`` raised."""

    section = "result"


class ProcessTimeout(ProcessError):
    """A section of a :class:`~corral.Process` ran past its limit in ``timeouts``.

    :attr:`section` names it and :attr:`limit` is the limit in seconds. The
    section was interrupted: an async one cancelled, a sync one's process
    killed.
    """

    def __init__(self, section: str, limit: float, current_run: int) -> None:
        self.section = section
        self.limit = limit
        self.current_run = current_run
        self.original_error = None
        CorralError.__init__(
            self, f"{section} timed out on run {current_run}: it took over {limit:g}s"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProcessTimeout, (self.section, self.limit, self.current_run))
