"""The results of one map, as an async iterator (``pool.imap``, ``pool.imap_unordered``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Generic, Self, TypeVar

import sniffio

from ._batch import Batch, Done
from ._progress import ProgressBar

T = TypeVar("T")


class MapIterator(Generic[T]):
    """The results of one map: ``async for result in pool.imap(...)``.

    Leaving it early (``break`` and dropping it, an error, :meth:`close`)
    stops the map: no more items are read, and chunks not yet sent are not
    run. ``async for results in it.chunks()`` takes the results a chunk at a
    time (lists), for the least cost per item.
    """

    def __init__(
        self,
        batch: Batch,
        ordered: bool,
        return_exceptions: bool,
        discard: Callable[[Batch], None],
        bar: ProgressBar | None = None,
    ) -> None:
        self._batch = batch
        self._ordered = ordered
        self._return_exceptions = return_exceptions
        self._discard = discard
        self._bar = bar
        self._waiting: dict[int, Done] = {}
        self._next_start = 0
        self._current: Iterator[Any] = iter(())  # the chunk being handed out
        self._failed: BaseException | None = None  # to raise once what came before is taken
        self._closed = False

    def __aiter__(self) -> AsyncIterator[T]:
        # On asyncio an async generator: its __anext__ is C code, ~60 ns an item less than
        # ours. trio warns about one left unfinished (a loop left by break), so not there.
        return self._each() if sniffio.current_async_library() == "asyncio" else self

    async def _each(self) -> AsyncIterator[T]:
        for value in self._current:  # (what an earlier loop or anext() left)
            yield value
        while (values := await self.next_chunk()) is not None:
            self._current = iter(values)
            for value in self._current:  # (shared: a loop left early leaves the rest here)
                yield value

    async def __anext__(self) -> T:
        for value in self._current:
            return value  # type: ignore[no-any-return]
        while (values := await self.next_chunk()) is not None:
            self._current = iter(values)
            for value in self._current:
                return value  # type: ignore[no-any-return]
        raise StopAsyncIteration

    def chunks(self) -> AsyncIterator[list[T]]:
        """The results a chunk at a time (what is left of the current one first)."""
        return _Chunks(self)

    async def next_chunk(self) -> list[Any] | None:
        """The next chunk's results (errors raised, or in place); None at the end."""
        if self._failed is not None:  # (after the results before it)
            error, self._failed = self._failed, None
            self.close()
            raise error
        done = await self._next_done()
        if done is None:
            self.close()
            if self._batch.error is not None:
                raise self._batch.error
            return None
        if self._bar is not None:
            self._bar.advance(len(done.values), self._batch.length)
        if not done.errors:
            return done.values
        if not self._return_exceptions:  # the results before the first error, then it
            first = min(done.errors)
            self._failed = done.errors[first]
            if first == 0:
                return await self.next_chunk()
            return done.values[:first]
        values = list(done.values)
        for position, error in done.errors.items():
            values[position] = error
        return values

    async def _next_done(self) -> Done | None:
        batch = self._batch
        while True:
            ready = self._waiting.pop(self._next_start, None)
            if ready is not None:
                self._next_start += len(ready.values)
                batch.taken(len(ready.values))
                return ready
            done = await batch.outcomes.receive()
            if done is None:
                return None
            if not self._ordered:
                batch.taken(len(done.values))
                return done
            self._waiting[done.start] = done

    def close(self) -> None:
        """Stop the map (what is in flight ends unseen)."""
        if not self._closed:
            self._closed = True
            if self._bar is not None:
                self._bar.finish()
            self._batch.reader.cancel()
            self._discard(self._batch)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # (its event loop may be gone)
            self.close()


class _Chunks(Generic[T]):
    """``async for results in iterator.chunks()``: lists of results."""

    def __init__(self, iterator: MapIterator[T]) -> None:
        self._iterator = iterator
        self._left: list[T] = list(iterator._current)  # what the current chunk has left

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[T]:
        if self._left:
            left, self._left = self._left, []
            return left
        values = await self._iterator.next_chunk()
        if values is None:
            raise StopAsyncIteration
        return values
