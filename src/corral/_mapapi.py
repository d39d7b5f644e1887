"""The map family, typed: what :class:`~corral.Pool` and its ``star()`` view share.

The overloads give each call its result type: an ``async def``'s awaited
value, ``Any`` for a :class:`~corral.Process` class (its ``result()``), and
the error in an item's place with ``return_exceptions=True``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from typing import Any, ClassVar, Literal, TypeVar, overload

from ._mapiter import MapIterator
from ._process import Process

T = TypeVar("T")


class MapFamily(ABC):
    """``map``, ``imap`` and ``imap_unordered`` (each item spread into the arguments or not)."""

    _star: ClassVar[bool] = False

    @abstractmethod
    def _start(
        self, fn: Any, items: Any, options: dict[str, Any], *, star: bool, ordered: bool = True
    ) -> MapIterator[Any]:
        """Start one map (the pool's)."""

    @overload
    async def map(
        self,
        fn: type[Process],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]: ...

    @overload
    async def map(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> list[T]: ...

    @overload
    async def map(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> list[T | BaseException]: ...

    @overload
    async def map(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> list[T]: ...

    @overload
    async def map(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> list[T | BaseException]: ...

    async def map(
        self,
        fn: Any,
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """``[fn(item) for item in items]``, run on the workers; the results in order.

        ``fn`` is a function (lambdas and closures too), an ``async def``
        (awaited on the worker) or a :class:`~corral.Process` class (built
        from each item and run to its result). ``items`` is any iterable or
        async iterable; it is read ahead only as far as there is room.

        ``chunksize``: items per request (None: chosen from how long items
        take). ``timeout``: seconds per item; one that overruns is killed
        with its worker and raises :class:`~corral.ProcessTimeout`.
        ``retries``: further tries for an item lost to a crash or a timeout.
        ``progress``: a bar on a terminal. ``return_exceptions``: each
        failed item's error in its place, instead of raising the first.
        """
        options = _options(chunksize, timeout, retries, progress, return_exceptions)
        results: list[Any] = []
        with self._start(fn, items, options, star=self._star) as outcomes:
            while (values := await outcomes.next_chunk()) is not None:
                results.extend(values)
        return results

    @overload
    def imap(
        self,
        fn: type[Process],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> MapIterator[Any]: ...

    @overload
    def imap(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def imap(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> MapIterator[T | BaseException]: ...

    @overload
    def imap(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def imap(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> MapIterator[T | BaseException]: ...

    def imap(
        self,
        fn: Any,
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> MapIterator[Any]:
        """``fn(item)`` for each item, on the workers: the results in order, as they come.

        The items are read ahead only as far as the results are taken (an
        endless iterator is fine). Options as for :meth:`map`.
        """
        options = _options(chunksize, timeout, retries, progress, return_exceptions)
        return self._start(fn, items, options, star=self._star)

    @overload
    def imap_unordered(
        self,
        fn: type[Process],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> MapIterator[Any]: ...

    @overload
    def imap_unordered(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def imap_unordered(
        self,
        fn: Callable[..., Coroutine[Any, Any, T]],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> MapIterator[T | BaseException]: ...

    @overload
    def imap_unordered(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: Literal[False] = False,
    ) -> MapIterator[T]: ...

    @overload
    def imap_unordered(
        self,
        fn: Callable[..., T],
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool,
    ) -> MapIterator[T | BaseException]: ...

    def imap_unordered(
        self,
        fn: Any,
        items: Iterable[Any] | AsyncIterable[Any],
        /,
        *,
        chunksize: int | None = None,
        timeout: float | None = None,
        retries: int = 0,
        progress: bool = False,
        return_exceptions: bool = False,
    ) -> MapIterator[Any]:
        """Like :meth:`imap`, the results as they complete."""
        options = _options(chunksize, timeout, retries, progress, return_exceptions)
        return self._start(fn, items, options, star=self._star, ordered=False)


def _options(
    chunksize: int | None, timeout: float | None, retries: int, progress: bool, errors: bool
) -> dict[str, Any]:
    return {
        "chunksize": chunksize,
        "timeout": timeout,
        "retries": retries,
        "progress": progress,
        "return_exceptions": errors,
    }
