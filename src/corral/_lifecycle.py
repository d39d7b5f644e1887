"""The run cycle of a :class:`~corral.Process`, wherever it runs (a child, a pool worker).

prerun → run → postrun, repeated until ``runs`` are done, ``join_in``
seconds have passed or ``stop()`` was called; then on_finish and result, or
on_error when a section failed. A failed run is retried from prerun while
lives remain. Each section's duration goes into its :class:`Timer`.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Final, Protocol

import anyio
import anyio.lowlevel
import anyio.to_thread

from ._errors import (
    OnFinishError,
    PostRunError,
    PreRunError,
    ProcessError,
    ProcessTimeout,
    ResultError,
    RunError,
)
from ._process import SECTIONS, Process
from ._timing import Timer

logger = logging.getLogger(__name__)

_ERRORS: Final[dict[str, type[ProcessError]]] = {
    "prerun": PreRunError,
    "run": RunError,
    "postrun": PostRunError,
    "on_finish": OnFinishError,
    "result": ResultError,
    "on_error": ProcessError,
}
YIELD_EVERY: Final = 0.001  # seconds of back-to-back sync runs before the loop gets a turn
TIMER_WINDOW: Final = 10_000


class Link(Protocol):
    """How a running process talks to its host."""

    def tell(self, value: Any) -> None: ...

    async def listen(self, timeout: float | None) -> Any: ...  # noqa: ASYNC109

    def progress(self, current_run: int) -> None: ...


@dataclass
class Resume:
    """Where a process takes up again in a new child, its old one having had to go."""

    run: int  # the run to retry
    lives: int  # the lives left
    elapsed: float  # seconds of join_in used
    timers: dict[str, Timer]
    stop: bool = False  # stop() was called: the retry is the last run
    unread: list[Any] = field(default_factory=list)  # what the host told, not yet read


@dataclass
class Outcome:
    """How a process ended: its result or its error, its runs and its timers."""

    value: Any = None
    error: BaseException | None = None
    runs: int = 0
    timers: dict[str, Timer] = field(default_factory=dict)
    resume: Resume | None = None  # a sync section would not stop, and lives remain


class Abandoned(Exception):
    """A sync section overran its limit in a thread that cannot be stopped."""


async def run_cycle(obj: Process, link: Link, resume: Resume | None = None) -> Outcome:
    """Run ``obj``'s whole lifecycle; never raises for what its sections raise.

    With ``resume``, the cycle takes up where a child that had to go left it:
    that run is retried, with the lives, timers and join_in time left.

    A sync section that overruns its limit cannot be stopped (its thread runs
    on): the caller must end the process (its error's cause is
    :class:`Abandoned`), and, where lives remain, ``resume`` says how to go on
    in a new one.
    """
    if resume is None:
        timers = {name: Timer(window=TIMER_WINDOW) for name in (*SECTIONS, "process")}
        resume = Resume(run=1, lives=obj.lives, elapsed=0.0, timers=timers)
    timers = resume.timers
    outcome = Outcome(timers=timers)
    obj._corral_channel, obj._corral_stop = link, resume.stop
    hooks = {name: _hook(obj, name) for name in SECTIONS}
    started = anyio.current_time() - resume.elapsed
    lives = resume.lives
    run = resume.run - 1
    last_turn = perf_counter()
    try:
        while not obj._corral_stop and (obj.runs is None or run < obj.runs):
            if obj.join_in is not None and anyio.current_time() - started >= obj.join_in:
                break
            run += 1
            obj.current_run = outcome.runs = run
            link.progress(run)
            while True:  # the run, and its retries
                try:
                    await _attempt(obj, hooks, timers)
                except ProcessError as error:
                    lives -= 1
                    if lives <= 0:
                        raise
                    if isinstance(error.__cause__, Abandoned):
                        elapsed = anyio.current_time() - started
                        outcome.resume = Resume(run, lives, elapsed, timers, obj._corral_stop)
                        raise
                    await anyio.lowlevel.checkpoint()  # stop() and tell() get through
                    last_turn = perf_counter()
                    if _stopped(obj):  # a stop ends the retries too
                        logger.info("%s: %s; stopped, not retried", _name(obj), error)
                        break
                    logger.info("%s: %s; retrying (lives left: %d)", _name(obj), error, lives)
                    continue
                break
            if perf_counter() - last_turn > YIELD_EVERY:  # stop() and tell() get through
                await anyio.lowlevel.checkpoint()
                last_turn = perf_counter()
        if hooks["on_finish"] is not None:
            await _section(obj, "on_finish", hooks["on_finish"], timers["on_finish"])
        outcome.value = await _section(obj, "result", hooks["result"], timers["result"])
    except ProcessError as error:
        outcome.error = error
        if outcome.resume is None and hooks["on_error"] is not None:
            await _handle(obj, error, hooks["on_error"], outcome)
    return outcome


async def _attempt(obj: Process, hooks: dict[str, Any], timers: dict[str, Timer]) -> None:
    """prerun(), run() and postrun(), once; the three timed together as ``process``."""
    began = perf_counter()
    for name in ("prerun", "run", "postrun"):
        if hooks[name] is not None:
            await _section(obj, name, hooks[name], timers[name])
    timers["process"].record(perf_counter() - began)


async def _handle(obj: Process, error: ProcessError, on_error: Any, outcome: Outcome) -> None:
    """Run ``on_error()`` (``self.error`` set): what it returns may stand in for the error.

    An exception is raised instead; any other value but None is the result.
    """
    obj.error = error
    try:
        handled = await _section(obj, "on_error", on_error, outcome.timers["on_error"])
    except ProcessError as also:
        logger.error("%s: on_error() failed too: %s", _name(obj), also)
        return
    if isinstance(handled, BaseException):
        outcome.error = handled
    elif handled is not None:
        outcome.error, outcome.value = None, handled


def _hook(obj: Process, name: str) -> Any:
    """The bound hook, or None where the class keeps the base's no-op (skipped)."""
    if name in ("run", "result"):
        return getattr(obj, name)
    if getattr(type(obj), name) is getattr(Process, name):
        return None
    return getattr(obj, name)


async def _section(obj: Process, name: str, method: Any, timer: Timer) -> Any:
    limit = getattr(obj.timeouts, name)
    began = perf_counter()
    try:
        if limit is None:
            value = method()
            if value is not None and inspect.isawaitable(value):  # (None: the usual, fast)
                value = await value
            return value
        in_thread = False
        with anyio.move_on_after(limit):
            if inspect.iscoroutinefunction(method):
                return await method()
            in_thread = True
            value = await anyio.to_thread.run_sync(method, abandon_on_cancel=True)
            in_thread = False
            if inspect.isawaitable(value):  # an async def behind a plain decorator
                value = await value
            return value
        error = ProcessTimeout(name, limit, obj.current_run)
        if in_thread:  # its thread is still running it
            error.__cause__ = Abandoned(name)
        raise error
    except ProcessError:
        raise
    except Exception as error:
        raise _ERRORS[name](obj.current_run, error) from error
    finally:
        timer.record(perf_counter() - began)


def _stopped(obj: Process) -> bool:
    """Whether stop() was called (a function: type checkers cannot see it change)."""
    return obj._corral_stop


def _name(obj: Process) -> str:
    return type(obj).__qualname__
