"""Worker specs: a worker described before any supervisor runs it.

Every way of starting a worker goes through a spec, so arguments are checked
in one place, at the call site, whatever form the user chose:
``sup.every(0.5, fn)``, ``@sup.every(0.5)``, or ``@corral.interval(0.5)``
followed by ``sup.start_worker(spec)``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, final, overload

from ._worker import Worker

if TYPE_CHECKING:
    from ._scheduler import IntervalWorker
    from ._workers import EventWorker, LoopWorker, QueueWorker

WorkerKind = Literal["interval", "queue", "event", "loop"]
Fn = Callable[..., Any]
ErrorHandler = Callable[[Exception], object]
W = TypeVar("W", bound=Worker)

#: Each kind's options besides ``name`` and ``on_error``, with their defaults
#: (``interval`` has none: it must be given). A spec fills in what is missing.
DEFAULTS: Mapping[WorkerKind, Mapping[str, Any]] = {
    "interval": {"delay_before": 0.0, "mode": "rate"},
    "queue": {"maxsize": 0, "concurrency": 1, "priority": False},
    "event": {},
    "loop": {},
}
KIND_OPTIONS: Mapping[WorkerKind, frozenset[str]] = {
    kind: frozenset(defaults) | ({"interval"} if kind == "interval" else set())
    for kind, defaults in DEFAULTS.items()
}


@final
@dataclass(frozen=True)
class WorkerSpec(Generic[W]):
    """A worker that any supervisor can start with ``sup.start_worker(spec)``.

    It is typed by the handle it starts (``WorkerSpec[IntervalWorker]``, ...),
    so ``start_worker`` returns that handle's type.

    Made by the decorators :func:`interval`, :func:`queue_worker`,
    :func:`event_worker` and :func:`loop_worker`. The decorated function stays
    callable as before: calling the spec calls the function (``spec.fn``).
    """

    kind: WorkerKind
    fn: Fn
    args: tuple[Any, ...] = ()
    name: str | None = None
    on_error: ErrorHandler | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_function(self.fn, f"{'an' if self.kind[0] in 'aeiou' else 'a'} {self.kind} worker")
        if self.on_error is not None:
            check_error_handler(self.on_error)
        if self.name is not None and (not isinstance(self.name, str) or not self.name):
            raise TypeError(f"name must be a non-empty string, got {self.name!r}")
        object.__setattr__(self, "options", {**DEFAULTS[self.kind], **self.options})
        unknown = set(self.options) - KIND_OPTIONS[self.kind]
        if unknown:
            allowed = ", ".join(sorted(KIND_OPTIONS[self.kind] | {"name", "on_error"}))
            raise TypeError(
                f"{self.kind} workers take no option(s) {', '.join(sorted(unknown))}; "
                f"they take: {allowed}"
            )
        _CHECKS[self.kind](self.options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def replace(self, *args: Any, **overrides: Any) -> WorkerSpec[W]:
        """A copy with extra positional ``args`` and options overridden (checked again)."""
        fields = {k: overrides.pop(k) for k in ("name", "on_error") if k in overrides}
        return dataclasses.replace(
            self, args=self.args + args, options={**self.options, **overrides}, **fields
        )


def check_function(fn: object, role: str) -> None:
    """Raise ``TypeError`` unless ``fn`` is a plain or async callable."""
    if inspect.iscoroutine(fn):
        fn.close()  # it will never run; spare the user a "never awaited" warning
        raise TypeError(
            f"{role} needs a function, got a coroutine object; pass the function itself "
            "(`sup.every(1, poll)`), not the result of calling it (`sup.every(1, poll())`)"
        )
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise TypeError(f"{role} needs a function that returns, not a generator: {fn!r}")
    if not callable(fn):
        raise TypeError(f"{role} needs a callable, got {type(fn).__name__} {fn!r}")


def check_error_handler(fn: object) -> None:
    if not callable(fn):
        raise TypeError(f"on_error must be a callable taking the exception, got {fn!r}")
    if inspect.iscoroutinefunction(fn):
        raise TypeError(
            "on_error must be a plain function: it runs on the event loop right after the "
            "failure; to do async work, put the error on a queue worker from it"
        )


def _check_interval(options: Mapping[str, Any]) -> None:
    _check_seconds("interval", options.get("interval"), positive=True)
    _check_seconds("delay_before", options["delay_before"], positive=False)
    mode = options["mode"]
    if mode not in ("rate", "delay"):
        raise ValueError(
            f"mode must be 'rate' (fixed rate, no drift) or 'delay' (pause after each run), "
            f"got {mode!r}"
        )


#: Longer than anyone waits (about 31 years), short enough for the timer's arithmetic.
MAX_SECONDS = 1e9


def _check_seconds(what: str, value: object, *, positive: bool) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} must be a number of seconds, got {value!r}")
    if not math.isfinite(value) or value < 0 or (positive and value == 0) or value > MAX_SECONDS:
        bound = "greater than 0" if positive else "0 or more"
        raise ValueError(
            f"{what} must be a finite number of seconds {bound} and at most {MAX_SECONDS:.0e}, "
            f"got {value!r}"
        )


def _check_queue(options: Mapping[str, Any]) -> None:
    for what, low in (("maxsize", 0), ("concurrency", 1)):
        value = options[what]
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{what} must be a whole number of at least {low}, got {value!r}")
    if not isinstance(options["priority"], bool):
        raise TypeError(f"priority must be True or False, got {options['priority']!r}")


_CHECKS: Mapping[WorkerKind, Callable[[Mapping[str, Any]], None]] = {
    "interval": _check_interval,
    "queue": _check_queue,
    "event": lambda options: None,
    "loop": lambda options: None,
}


def interval(
    seconds: float,
    /,
    *,
    delay_before: float = 0.0,
    mode: Literal["rate", "delay"] = "rate",
    name: str | None = None,
    on_error: ErrorHandler | None = None,
) -> Callable[[Fn], WorkerSpec[IntervalWorker]]:
    """Decorate a function as an interval worker spec; see ``Supervisor.every``.

    >>> @interval(0.5)
    ... async def poll() -> None: ...
    >>> poll.kind, poll.options["interval"]
    ('interval', 0.5)
    """
    options = {"interval": seconds, "delay_before": delay_before, "mode": mode}
    _check_interval(options)
    return _decorator("interval", name, on_error, options)


@overload
def queue_worker(fn: Fn, /) -> WorkerSpec[QueueWorker]: ...
@overload
def queue_worker(
    fn: None = None,
    /,
    *,
    maxsize: int = 0,
    concurrency: int = 1,
    priority: bool = False,
    name: str | None = None,
    on_error: ErrorHandler | None = None,
) -> Callable[[Fn], WorkerSpec[QueueWorker]]: ...
def queue_worker(
    fn: Fn | None = None,
    /,
    *,
    maxsize: int = 0,
    concurrency: int = 1,
    priority: bool = False,
    name: str | None = None,
    on_error: ErrorHandler | None = None,
) -> WorkerSpec[QueueWorker] | Callable[[Fn], WorkerSpec[QueueWorker]]:
    """Decorate a function as a queue worker spec; see ``Supervisor.queue_worker``."""
    options = {"maxsize": maxsize, "concurrency": concurrency, "priority": priority}
    return _bare_or_called("queue", fn, name, on_error, options)


@overload
def event_worker(fn: Fn, /) -> WorkerSpec[EventWorker]: ...
@overload
def event_worker(
    fn: None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
) -> Callable[[Fn], WorkerSpec[EventWorker]]: ...
def event_worker(
    fn: Fn | None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
) -> WorkerSpec[EventWorker] | Callable[[Fn], WorkerSpec[EventWorker]]:
    """Decorate a function as an event worker spec; see ``Supervisor.event_worker``."""
    return _bare_or_called("event", fn, name, on_error, {})


@overload
def loop_worker(fn: Fn, /) -> WorkerSpec[LoopWorker]: ...
@overload
def loop_worker(
    fn: None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
) -> Callable[[Fn], WorkerSpec[LoopWorker]]: ...
def loop_worker(
    fn: Fn | None = None, /, *, name: str | None = None, on_error: ErrorHandler | None = None
) -> WorkerSpec[LoopWorker] | Callable[[Fn], WorkerSpec[LoopWorker]]:
    """Decorate a function as a loop worker spec; see ``Supervisor.loop_worker``."""
    return _bare_or_called("loop", fn, name, on_error, {})


def _bare_or_called(
    kind: WorkerKind,
    fn: Fn | None,
    name: str | None,
    on_error: ErrorHandler | None,
    options: dict[str, Any],
) -> WorkerSpec[Any] | Callable[[Fn], WorkerSpec[Any]]:
    decorate = _decorator(kind, name, on_error, options)
    return decorate if fn is None else decorate(fn)


def _decorator(
    kind: WorkerKind, name: str | None, on_error: ErrorHandler | None, options: dict[str, Any]
) -> Callable[[Fn], WorkerSpec[Any]]:
    def decorate(fn: Fn) -> WorkerSpec[Any]:
        return WorkerSpec(kind, fn, name=name, on_error=on_error, options=options)

    return decorate
