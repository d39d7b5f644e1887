"""``corral.Process``: a class whose lifecycle hooks run in a child process.

The run cycle (prerun → run → postrun, repeated; then on_finish and
result, or on_error) lives in ``_lifecycle``, which a child or a pool worker
runs; the host's handle is ``_job.Job``.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any, Final, TypeVar, final

__all__ = ["Process", "Timeouts"]

SECTIONS: Final = ("prerun", "run", "postrun", "on_finish", "result", "on_error")
OPTIONS: Final = ("runs", "join_in", "lives", "timeouts")
RESERVED: Final = (*SECTIONS, "stop", "tell", "listen")  # methods an instance must not hide
UNSET: Final = object()
T = TypeVar("T")


@final
@dataclass(frozen=True, slots=True)
class Timeouts:
    """Limits in seconds for a :class:`Process`'s sections (``None``: no limit).

    A section that runs past its limit is interrupted and raises
    :class:`~corral.ProcessTimeout`; a failed run counts against ``lives``.
    """

    prerun: float | None = None
    run: float | None = None
    postrun: float | None = None
    on_finish: float | None = None
    result: float | None = None
    on_error: float | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
            ):
                raise ValueError(
                    f"Timeouts({field.name}=...) is a number of seconds > 0 or None, got {value!r}"
                )


class _Configurable(type):
    """Takes ``runs=``, ``join_in=``, ``lives=`` and ``timeouts=`` off the constructor call.

    So a subclass's own ``__init__`` never sees them, and needs no
    ``super().__init__()``.
    """

    def __call__(
        cls: type[T],
        *args: Any,
        runs: int | Any | None = UNSET,
        join_in: float | Any | None = UNSET,
        lives: int | Any = UNSET,
        timeouts: Timeouts | Any = UNSET,
        **kwargs: Any,
    ) -> T:
        obj: T = super().__call__(*args, **kwargs)  # type: ignore[misc]
        configure(obj, runs=runs, join_in=join_in, lives=lives, timeouts=timeouts)
        return obj


def configure(obj: Any, **given: Any) -> None:
    """Set the options given (those not left as ``UNSET``) on ``obj``, once all are checked."""
    given = {name: value for name, value in given.items() if value is not UNSET}
    check_config(SimpleNamespace(**{name: getattr(obj, name) for name in OPTIONS} | given))
    for name, value in given.items():
        setattr(obj, name, value)


def prepared(process: Any, config: dict[str, Any]) -> Process:
    """``process`` checked, with the start's options (on a copy: the caller's stays as it is)."""
    if not isinstance(process, Process):
        raise TypeError(f"start() takes an instance of a corral.Process subclass, got {process!r}")
    cls = type(process).__qualname__
    if type(process).run is Process.run:
        raise TypeError(f"{cls} must define run(), the work of one run")
    hidden = [name for name in RESERVED if name in getattr(process, "__dict__", {})]
    if hidden:
        raise TypeError(
            f"{cls}: the attribute {hidden[0]!r} set on the instance hides the method "
            f"{hidden[0]}() the process needs; give the attribute another name"
        )
    if any(value is not UNSET for value in config.values()):
        process = copy.copy(process)
    configure(process, **config)
    checked: Process = process
    return checked


def check_config(obj: Any) -> None:
    """Reject a bad ``runs``, ``join_in``, ``lives`` or ``timeouts`` with what to pass."""
    runs, join_in, lives, timeouts = obj.runs, obj.join_in, obj.lives, obj.timeouts
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise ValueError(
            f"runs= is a whole number >= 1, or None to run until stopped; got {runs!r}"
        )
    if join_in is not None and (
        isinstance(join_in, bool)
        or not isinstance(join_in, int | float)
        or not 0 < join_in < math.inf
    ):
        raise ValueError(f"join_in= is a number of seconds > 0, or None; got {join_in!r}")
    if isinstance(lives, bool) or not isinstance(lives, int) or lives < 1:
        raise ValueError(f"lives= is a whole number >= 1 (1: no retry); got {lives!r}")
    if not isinstance(timeouts, Timeouts):
        raise TypeError(f"timeouts= takes corral.Timeouts(run=..., ...), got {timeouts!r}")


class Process(metaclass=_Configurable):
    """A unit of work with lifecycle hooks, run in a child process.

    Subclass it and define ``run()``; optionally ``prerun()``, ``postrun()``
    (around each run), ``on_finish()`` (once, after the last run),
    ``result()`` (its return value is the job's result), ``on_error()``
    (instead of ``result()`` when a section failed). Each may be ``def`` or
    ``async def``. No ``super().__init__()`` call is needed.

    Configure with class attributes or constructor keywords (``Upscale(img,
    runs=3)``): ``runs`` (``None``: until stopped), ``join_in`` (seconds,
    ``None``: no limit), ``lives`` (a failed run is retried from
    ``prerun()`` until the lives are used up, keeping the instance's state
    and the run counter), ``timeouts`` (:class:`Timeouts`).

    Inside the child, ``self.current_run`` is the run under way (from 1),
    ``self.error`` the error that ended the cycle (for ``on_error()``),
    ``self.stop()`` ends the cycle after the current run, ``self.tell(x)``
    sends ``x`` to the host and ``await self.listen(timeout)`` receives
    what the host told.
    """

    runs: int | None = None
    join_in: float | None = None
    lives: int = 1
    timeouts: Timeouts = Timeouts()
    current_run: int = 0
    error: BaseException | None = None
    _corral_stop: bool = False
    _corral_channel: Any = None

    def prerun(self) -> Any:
        """Before each run (override as needed)."""

    def run(self) -> Any:
        """One run's work (override this): required."""

    def postrun(self) -> Any:
        """After each run (override as needed)."""

    def on_finish(self) -> Any:
        """Once, after the last run (override as needed)."""

    def result(self) -> Any:
        """The job's result (override as needed; the default is None)."""
        return None

    def on_error(self) -> Any:
        """Instead of result() when a section failed, ``self.error`` (override as needed).

        Return None (the default) to have the job raise ``self.error``; an
        exception to raise that instead; any other value to make it the
        job's result.
        """

    def stop(self) -> None:
        """End the cycle after the current run; on_finish() and result() still run."""
        self._corral_stop = True

    def tell(self, value: Any) -> None:
        """Send ``value`` to the host (``await job.listen()`` there); never waits."""
        channel = self._corral_channel
        if channel is None:
            raise RuntimeError("tell() works in the process's child, once it has started")
        channel.tell(value)

    async def listen(self, timeout: float | None = None) -> Any:  # noqa: ASYNC109  (None on timeout)
        """The next value the host sent with ``await job.tell(x)``; None after ``timeout``."""
        channel = self._corral_channel
        if channel is None:
            raise RuntimeError("listen() works in the process's child, once it has started")
        return await channel.listen(timeout)
