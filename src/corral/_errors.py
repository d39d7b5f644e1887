"""The exception hierarchy: one base, each error says what happened and what to do."""

from __future__ import annotations

from collections.abc import Mapping


class CorralError(Exception):
    """Base class of every error corral raises on its own account."""


class WorkerFailed(CorralError):
    """A worker's function raised and nothing handled it.

    Raised from ``async with Supervisor()`` when a worker has no ``on_error``
    handler (or the handler itself raised). The original exception is the
    ``__cause__``; :attr:`worker` names the worker.
    """

    def __init__(self, worker: str, error: BaseException) -> None:
        self.worker = worker
        self.error = error
        super().__init__(
            f"worker {worker!r} failed: {type(error).__name__}: {error}. "
            "Pass on_error= to handle failures and keep the worker running."
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
