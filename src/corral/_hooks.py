"""Hooks: a collection of functions run together (pyaltt's FunctionCollection, async)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, final, overload

import anyio
import anyio.to_thread

from ._errors import HooksFailed
from ._specs import check_function
from ._threads import ThreadPool
from ._worker import is_async_callable

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

#: The priority of a hook registered without one.
DEFAULT_PRIORITY = 100


@final
@dataclass(frozen=True)
class HookResults:
    """What one ``await hooks.run()`` gave: results and errors keyed by hook name.

    A hook's name is ``module.qualname`` of its function (with ``#2``, ``#3``
    appended when names repeat). Indexing gives a hook's result; a failed hook
    has an entry in :attr:`errors` instead.
    """

    results: Mapping[str, Any] = field(default_factory=dict)
    errors: Mapping[str, Exception] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when no hook raised."""
        return not self.errors

    @property
    def failed(self) -> tuple[str, ...]:
        """Names of the hooks that raised, in the order they ran."""
        return tuple(self.errors)

    def __getitem__(self, name: str) -> Any:
        if name in self.errors:
            raise KeyError(f"hook {name!r} raised {self.errors[name]!r}; see .errors") from None
        return self.results[name]

    def raise_for_errors(self) -> None:
        """Raise :class:`~corral.HooksFailed` if any hook raised."""
        if self.errors:
            raise HooksFailed(self.errors)


@final
class Hooks:
    """Functions registered to run together, in priority order or concurrently.

    >>> hooks = Hooks()
    >>> @hooks.register(priority=10)
    ... def first() -> str:
    ...     return "first"
    >>> len(hooks)
    1

    Sync functions run in a worker thread, async ones on the loop. Lower
    priorities run first; equal priorities in the order they were registered.
    With ``concurrent=True`` all run at once. A failing hook does not stop
    the others: its exception is reported in the results.
    """

    def __init__(self, *, concurrent: bool = False) -> None:
        self.concurrent = concurrent
        self._hooks: list[tuple[int, int, str, Callable[..., Any]]] = []
        self._registered = 0

    @overload
    def register(self, fn: F, /, *, priority: int = DEFAULT_PRIORITY) -> F: ...
    @overload
    def register(
        self, fn: None = None, /, *, priority: int = DEFAULT_PRIORITY
    ) -> Callable[[F], F]: ...
    def register(
        self, fn: F | None = None, /, *, priority: int = DEFAULT_PRIORITY
    ) -> F | Callable[[F], F]:
        """Add ``fn``; usable as ``@hooks.register`` or ``@hooks.register(priority=5)``.

        Returns the function unchanged.
        """
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority must be an int (lower runs first), got {priority!r}")

        def add(fn: F) -> F:
            check_function(fn, "a hook")
            if fn in self:
                raise ValueError(f"{fn!r} is already registered; unregister it first")
            self._registered += 1
            self._hooks.append((priority, self._registered, self._name_for(fn), fn))
            self._hooks.sort(key=lambda hook: (hook[0], hook[1]))
            return fn

        return add if fn is None else add(fn)

    def unregister(self, fn: Callable[..., Any]) -> None:
        """Remove ``fn``; raises ``ValueError`` if it was not registered."""
        for index, hook in enumerate(self._hooks):
            if hook[3] == fn:
                del self._hooks[index]
                return
        raise ValueError(f"{fn!r} is not registered")

    def __len__(self) -> int:
        return len(self._hooks)

    def __contains__(self, fn: object) -> bool:
        return any(hook[3] == fn for hook in self._hooks)

    def __iter__(self) -> Iterator[Callable[..., Any]]:
        """The registered functions, in the order they run."""
        return iter([hook[3] for hook in self._hooks])

    def __repr__(self) -> str:
        return f"<Hooks {[hook[2] for hook in self._hooks]}>"

    async def run(self, *args: Any, concurrent: bool | None = None) -> HookResults:
        """Call every hook with ``args``; never raises for a hook's failure.

        ``concurrent`` overrides the collection's default for this run. Check
        :attr:`HookResults.ok`, or call :meth:`HookResults.raise_for_errors`.
        """
        return await self._run(args, concurrent, threads=None)

    async def _run(
        self, args: tuple[Any, ...], concurrent: bool | None, threads: ThreadPool | None
    ) -> HookResults:
        results: dict[str, Any] = {}
        errors: dict[str, Exception] = {}

        async def call(name: str, fn: Callable[..., Any]) -> None:
            try:
                if is_async_callable(fn):
                    results[name] = await fn(*args)
                elif threads is not None:
                    results[name] = await threads.run(fn, *args)
                else:
                    results[name] = await anyio.to_thread.run_sync(fn, *args)
            except Exception as error:
                logger.debug("hook %s raised %r", name, error)
                errors[name] = error

        hooks = list(self._hooks)
        if self.concurrent if concurrent is None else concurrent:
            async with anyio.create_task_group() as tg:
                for _, _, name, fn in hooks:
                    tg.start_soon(call, name, fn, name=f"corral-hook:{name}")
        else:
            for _, _, name, fn in hooks:
                await call(name, fn)
        return HookResults(results, errors)

    def _name_for(self, fn: Callable[..., Any]) -> str:
        base = f"{getattr(fn, '__module__', None)}.{getattr(fn, '__qualname__', repr(fn))}"
        taken = {hook[2] for hook in self._hooks}
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}#{n}"
        return name
