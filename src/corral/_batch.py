"""One map over a pool: its items read ahead in chunks, its results as they come.

A :class:`Batch` reads its items (any iterable or async iterable) into
:class:`Chunk`\\ s no faster than its results are taken (a window of chunks
in flight), sizes chunks from how long items take, and hands out results in
order or as completed. The pool's worker drivers run the chunks.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import itertools
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

import anyio
import anyio.lowlevel

from ._answers import rebuild_failure

TARGET_SECONDS: Final = 0.02  # a chunk's work, once items have been timed
FLOOR_SHARE: Final = 0.05  # the least work of a chunk near the end, of the target (local:
# 1 ms, a round trip's worth; Dask: 5 ms)
FIRST_CHUNKS: Final = 1  # items per chunk before anything has been timed
MAX_CHUNK: Final = 100_000


@dataclass(eq=False)
class Chunk:
    """Consecutive items of a batch, sent to a worker as one request."""

    batch: Batch
    start: int  # the index of the first item
    items: list[Any]
    attempts: int = 0  # failed attempts so far (crashes, timeouts)
    suspect: bool = False  # was near a crash: runs alone next, to see if it is to blame

    def cut(self, size: int) -> tuple[Chunk, Chunk]:
        """The first ``size`` items, and the rest: two chunks."""
        return (
            Chunk(self.batch, self.start, self.items[:size], self.attempts, self.suspect),
            Chunk(self.batch, self.start + size, self.items[size:], self.attempts, self.suspect),
        )


@dataclass(eq=False)
class Done:
    """A chunk's end: its results in order, and the errors by position."""

    start: int
    values: list[Any]
    errors: dict[int, BaseException]


class Outcomes:
    """A map's finished chunks, in the order they finish, for its one taker.

    (Not an anyio memory stream: one dropped unclosed in a garbage cycle, say
    with the traceback of a cancellation, warns when the collector gets to it.)
    """

    __slots__ = ("_arrived", "_ended", "_ready")

    def __init__(self) -> None:
        self._ready: deque[Done] = deque()
        self._arrived = anyio.Event()
        self._ended = False

    def put(self, done: Done) -> None:
        self._ready.append(done)
        self._arrived.set()

    def end(self, *, drop: bool = False) -> None:
        """No more will come (``drop``: and those not taken are dropped)."""
        self._ended = True
        if drop:
            self._ready.clear()
        self._arrived.set()

    async def receive(self) -> Done | None:
        """The next finished chunk, waiting for one; None once ended and all taken."""
        while not self._ready:
            if self._ended:
                return None
            arrived = self._arrived
            await arrived.wait()
            if self._arrived is arrived:
                self._arrived = anyio.Event()
        return self._ready.popleft()


@dataclass(eq=False)
class Batch:
    """The items of one map call, and what has come of them."""

    key: int
    blob: bytes
    mode: str
    capacity: Callable[[], int]  # calls that run at once now (a cluster's may change)
    chunksize: int | None
    timeout: float | None
    retries: int
    length: int | None = None  # known up front (a sized iterable), else once read
    target: float = TARGET_SECONDS  # a chunk's work, once items have been timed
    concurrent: bool = False  # its calls are awaited: a worker runs two chunks at once
    read: int = 0  # items read so far
    done: int = 0  # items ended so far
    per_item: float | None = None  # measured seconds per item
    in_window: int = 0  # chunks read and not yet wholly taken (at most 4 per worker)
    error: BaseException | None = None  # the input failed (not an item)
    closed: bool = False  # ended, or left by its consumer: its chunks are not run

    def __post_init__(self) -> None:
        self._room = anyio.Event()  # set (and replaced) when a chunk leaves the window
        self.outcomes = Outcomes()
        self.reader = anyio.CancelScope()  # the task reading the items
        self._sizes: deque[int] = deque()  # the chunks read, in order, not yet all taken
        self._taken = 0

    def close(self, *, taker: bool = False) -> None:
        """No more outcomes (``taker``: and nobody takes them any more)."""
        self.closed = True
        self.outcomes.end(drop=taker)

    def sizes_read(self, size: int) -> None:
        self._sizes.append(size)

    def taken(self, items: int) -> None:
        """The consumer took ``items`` results: chunks wholly taken free room to read."""
        self._taken += items
        while self._sizes and self._taken >= self._sizes[0]:
            self._taken -= self._sizes.popleft()
            self.in_window -= 1
            self._room.set()
            self._room = anyio.Event()

    def capacity_changed(self) -> None:
        """The workers changed in number: the window is measured again."""
        self._room.set()
        self._room = anyio.Event()

    async def enter_window(self) -> None:
        """Wait for room to read another chunk (a window of 4 per worker, as they are now)."""
        while self.in_window >= max(4 * self.capacity(), 2):
            await self._room.wait()
        self.in_window += 1

    # -- chunk sizes -----------------------------------------------------------------

    def next_size(self) -> int:
        if self.chunksize is not None:
            return self.chunksize
        if self.timeout is not None:  # an item's time limit: one at a time
            return 1
        if self.per_item is None:
            return FIRST_CHUNKS
        per_item = max(self.per_item, 1e-9)
        size = int(self.target / per_item)
        if self.length is not None:  # several chunks per worker, so the end is even...
            share = math.ceil((self.length - self.read) / (4 * self.capacity()))
            size = min(size, max(share, int(FLOOR_SHARE * self.target / per_item)))  # ...not tiny
        return max(1, min(size, MAX_CHUNK))

    def timed(self, items: int, seconds: float) -> None:
        per_item = seconds / max(items, 1)
        self.per_item = per_item if self.per_item is None else (self.per_item + per_item) / 2

    # -- results ---------------------------------------------------------------------

    def deliver(self, chunk: Chunk, results: list[Any], errors: list[tuple[int, Any]]) -> None:
        failed = {}
        for position, payload in errors:
            error = rebuild_failure(payload)
            error.add_note(f"(item {chunk.start + position} of the map)")
            failed[position] = error
        self._emit(Done(chunk.start, results, failed))
        self.done += len(results)
        self._check_ended()

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        """Every item of ``chunk`` ends with ``error``."""
        failed = {}
        for position in range(len(chunk.items)):
            copy = _copy(error)  # (its own notes: the same error may fail other items)
            copy.add_note(f"(item {chunk.start + position} of the map)")
            failed[position] = copy
        self._emit(Done(chunk.start, [None] * len(chunk.items), failed))
        self.done += len(chunk.items)
        self._check_ended()

    def _emit(self, done: Done) -> None:
        if not self.closed:  # (left early: nobody takes it)
            self.outcomes.put(done)

    def _check_ended(self) -> None:
        if self.length is not None and self.done >= self.length and not self.closed:
            self.close()

    def close_input(self, error: BaseException | None = None) -> None:
        """No more items (``error``: reading them failed; raised after the items read)."""
        self.length = self.read
        self.error = error
        self._check_ended()

    def abort(self, error: BaseException) -> None:
        """End now with ``error`` (the pool closed): what is in flight ends unseen."""
        if not self.closed:
            self.error = error
            self.close()


def _copy(error: BaseException) -> BaseException:
    """The same error for another item (notes of its own)."""
    other = copy.copy(error)
    # (tblib, which Dask installs, copies an exception sharing its __dict__: not its notes)
    with contextlib.suppress(AttributeError, TypeError):
        other.__dict__ = dict(vars(error))
    other.__notes__ = list(getattr(error, "__notes__", []))
    return other


async def read_items(batch: Batch, items: Any, put: Any, star: bool) -> None:
    """Read ``items`` into chunks and ``await put(chunk)`` each (a task), within the window."""
    try:
        if hasattr(items, "__aiter__"):
            await _read_async(batch, items.__aiter__(), put, star)
        else:
            if inspect.isawaitable(items):
                raise TypeError("pass the items, not a coroutine: await it first")
            try:
                iterator = iter(items)
            except TypeError:
                raise TypeError(
                    "a pool maps over an iterable or an async iterable; got "
                    f"{type(items).__name__}"
                ) from None
            await _read_sync(batch, iterator, put, star)
    except Exception as error:
        batch.close_input(error)
        return
    batch.close_input()


async def _read_sync(batch: Batch, iterator: Iterator[Any], put: Any, star: bool) -> None:
    """Chunks of up to the next size, each read in no much more than a chunk's target time
    (a slow generator must not hold the event loop for a whole chunk of items)."""
    ended = False
    while not batch.closed and not ended:
        size, step = batch.next_size(), 1
        chunk: list[Any] = []
        deadline = time.perf_counter() + batch.target
        try:
            while len(chunk) < size:
                wanted = min(step, size - len(chunk))
                before = len(chunk)
                chunk.extend(itertools.islice(iterator, wanted))  # (keeps what came first)
                if len(chunk) - before < wanted:
                    ended = True
                    break
                if time.perf_counter() > deadline:
                    break
                step *= 2
        except Exception:
            if chunk:  # the items read before it broke are mapped, then it is raised
                await _put(batch, chunk, put, star)
            raise
        if chunk:
            await _put(batch, chunk, put, star)


async def _read_async(batch: Batch, iterator: Any, put: Any, star: bool) -> None:
    """A chunk goes as soon as an item is there, with what else is ready, up to a size.

    (Waiting for a full chunk would hang a stream whose next item waits for a result.)
    A task of its own takes the items one by one, no further ahead than the chunk being
    made: so a chunk never waits on the iterator, nor is it read far ahead.
    """
    send, ready = anyio.create_memory_object_stream[Any]()
    broken: list[BaseException] = []

    async def pump() -> None:
        with send:
            try:
                async for item in iterator:
                    await send.send(item)
            except Exception as error:
                broken.append(error)

    async with anyio.create_task_group() as reading, ready:
        reading.start_soon(pump)
        while not batch.closed:
            try:
                chunk = [await ready.receive()]
            except anyio.EndOfStream:
                break
            size = batch.next_size()
            while len(chunk) < size:
                try:
                    chunk.append(ready.receive_nowait())
                except anyio.WouldBlock:
                    await anyio.lowlevel.checkpoint()  # the pump's turn: is another ready?
                    try:
                        chunk.append(ready.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                except anyio.EndOfStream:
                    break
            await _put(batch, chunk, put, star)
        reading.cancel_scope.cancel()
    if broken:
        raise broken[0]


async def _put(batch: Batch, items: list[Any], put: Any, star: bool) -> None:
    if star:
        for position, item in enumerate(items):
            if not isinstance(item, tuple):
                raise TypeError(
                    "a star map takes tuples of arguments; item "
                    f"{batch.read + position} is {type(item).__name__}: {item!r}"
                )
    await batch.enter_window()
    if batch.closed:  # (left while this waited for room)
        return
    start = batch.read
    batch.read += len(items)
    batch.sizes_read(len(items))
    await put(Chunk(batch, start, items))
