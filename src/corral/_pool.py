"""``corral.Pool``: calls in batches on worker processes.

Each worker is a child (forked from the pool's zygote once it is ready)
serving chunks of calls (``_poolworker``); two driver tasks per worker keep
one chunk running and one waiting there. Maps are :class:`~._batch.Batch`\\ es
whose chunks share one queue, so several maps run at once.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, Self, TypeVar, final, overload

import anyio
import anyio.abc

from ._batch import Batch, Chunk, Done, read_items
from ._errors import ProcessTimeout, SerializationError, WorkerCrashed, WorkerStopped
from ._forker import Forker
from ._messenger import Messenger
from ._poolworker import TASKS, UnknownFunction, serve_pool
from ._process import Process
from ._progress import ProgressBar
from ._service import Service
from ._spawn import child_env
from ._wire import dumps_inband

logger = logging.getLogger(__name__)

T = TypeVar("T")
DEPTH: Final = 2  # chunks in flight per worker: one running, one waiting
KEPT_FUNCTIONS: Final = 64  # pickled functions remembered, to send each once per worker


@final
@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A frozen snapshot of a pool's counts."""

    workers: int
    submitted: int
    completed: int
    failed: int
    retried: int
    crashes: int
    timeouts: int
    restarts: int
    chunks: int


class _Slot:
    """One worker: its service, and which functions its current child has been sent."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.known: set[int] = set()
        self.messenger: Messenger | None = None
        self.tasks_done = 0
        self.in_flight: list[Chunk] = []  # sent, not answered: the first is running
        self.culprits: dict[int, Chunk] = {}  # per child that died: the chunk it ran
        self.idle = anyio.Event()  # set (and replaced) each time nothing is in flight


class Pool:
    """Worker processes that run calls in batches: ``async with corral.Pool() as pool``.

    ``await pool.map(fn, items)`` returns the results in order;
    ``pool.imap(...)`` yields them in order, ``pool.imap_unordered(...)``
    as they complete; ``await pool.submit(fn, *args, **kwargs)`` runs one
    call. ``fn`` may be any function (lambdas, closures, classes defined in
    ``__main__``: it is pickled with cloudpickle, once per worker), an
    ``async def`` (run on the worker's event loop) or a
    :class:`~corral.Process` subclass (built from each item, run to its
    result). See the page on pools for the options.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        max_tasks_per_worker: int | None = None,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 5.0,
        name: str = "pool",
    ) -> None:
        if workers is None:
            workers = (
                len(os.sched_getaffinity(0))
                if hasattr(os, "sched_getaffinity")
                else (os.cpu_count() or 1)
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(
                f"workers= is a whole number >= 1 (None: one per core); got {workers!r}"
            )
        if max_tasks_per_worker is not None and (
            isinstance(max_tasks_per_worker, bool)
            or not isinstance(max_tasks_per_worker, int)
            or max_tasks_per_worker < 1
        ):
            raise ValueError(
                "max_tasks_per_worker= is a whole number >= 1, or None; got "
                f"{max_tasks_per_worker!r}"
            )
        self.workers = workers
        self.name = name
        self._max_tasks = max_tasks_per_worker
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._slots: list[_Slot] = []
        self._task_group: anyio.abc.TaskGroup | None = None
        self._own_group: anyio.abc.TaskGroup | None = None
        self._forker: Forker | None = None
        self._queue: deque[Chunk] = deque()
        self._queued = anyio.Event()
        self._keys = itertools.count()
        self._blob_keys: dict[bytes, int] = {}
        self._counts = dict.fromkeys(
            ("submitted", "completed", "failed", "retried", "crashes", "timeouts", "chunks"), 0
        )
        self._state = "new"

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} {self._state} workers={self.workers}>"

    # -- the block -------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "new":
            raise RuntimeError("a Pool is used for one `async with` block; create another")
        group = anyio.create_task_group()
        await group.__aenter__()
        self._own_group = group
        try:
            forker = Forker(group, child_env)  # the pool's zygote: replacements fork fast
            self.open(group, forker, lambda service: None)
        except BaseException:
            group.cancel_scope.cancel()
            await group.__aexit__(None, None, None)
            raise
        return self

    def open(
        self,
        group: anyio.abc.TaskGroup,
        forker: Forker,
        register: Callable[[Service], None],
    ) -> None:
        """Start the workers in ``group`` (a supervisor's, or the pool's own)."""
        if self._state != "new":
            raise RuntimeError("a Pool is used for one `async with` block; create another")
        self._task_group, self._forker = group, forker
        for number in range(self.workers):
            service = Service(
                "function",
                serve_pool,
                (),
                {},
                name=f"{self.name}-{number + 1}",
                restart="on-failure",
                max_restarts=1_000_000,  # a worker lost to an item is always replaced
                restart_window=1.0,
                startup_timeout=self._startup_timeout,
            )
            service.forker = forker
            register(service)
            slot = _Slot(service)
            self._slots.append(slot)
            group.start_soon(service.run, name=f"corral-pool:{service.name}")
            for _ in range(DEPTH):
                group.start_soon(self._drive, slot, name=f"corral-pool-driver:{service.name}")
        self._state = "running"

    async def aclose(self) -> None:
        """Close the workers (those still busy after ``shutdown_timeout`` are killed)."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as closing:
                for slot in self._slots:
                    closing.start_soon(slot.service.aclose, self._shutdown_timeout)
        self._state = "closed"

    async def __aexit__(self, *exc_info: object) -> None:
        group, forker = self._own_group, self._forker
        assert group is not None
        assert forker is not None
        await self.aclose()
        with anyio.CancelScope(shield=True):
            await forker.aclose()
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)

    # -- the map family --------------------------------------------------------------

    @overload
    async def map(
        self, fn: Callable[..., Coroutine[Any, Any, T]], items: Iterable[Any] | Any, **options: Any
    ) -> list[T]: ...
    @overload
    async def map(
        self, fn: Callable[..., T], items: Iterable[Any] | Any, **options: Any
    ) -> list[T]: ...
    async def map(self, fn: Any, items: Iterable[Any] | Any, **options: Any) -> list[Any]:
        """``[fn(item) for item in items]``, run on the workers; the results in order.

        An ``async def`` is awaited on the worker; a :class:`~corral.Process`
        class is built from each item and run to its result. Options:
        ``chunksize`` (items per request; chosen from how long items take),
        ``timeout`` (seconds per item: one that overruns is killed with its
        worker, and raises :class:`~corral.ProcessTimeout`), ``retries``
        (for items that failed by a crash or a timeout), ``return_exceptions``
        (errors in place of results, instead of raising the first),
        ``progress`` (a bar on a terminal).
        """
        return await self._collect(fn, items, options)

    async def starmap(
        self, fn: Callable[..., T], items: Iterable[tuple[Any, ...]] | Any, **options: Any
    ) -> list[T]:
        """``[fn(*item) for item in items]`` (each item a tuple), run on the workers."""
        return await self._collect(fn, items, options, star=True)

    @overload
    def imap(
        self, fn: Callable[..., Coroutine[Any, Any, T]], items: Iterable[Any] | Any, **options: Any
    ) -> MapIterator[T]: ...
    @overload
    def imap(
        self, fn: Callable[..., T], items: Iterable[Any] | Any, **options: Any
    ) -> MapIterator[T]: ...
    def imap(self, fn: Any, items: Iterable[Any] | Any, **options: Any) -> MapIterator[Any]:
        """``fn(item)`` for each item, on the workers: the results in order, as they come.

        The items are read ahead only as far as the results are taken (an
        endless iterator is fine). Options as for :meth:`map`.
        """
        return self._each(fn, items, options)

    @overload
    def imap_unordered(
        self, fn: Callable[..., Coroutine[Any, Any, T]], items: Iterable[Any] | Any, **options: Any
    ) -> MapIterator[T]: ...
    @overload
    def imap_unordered(
        self, fn: Callable[..., T], items: Iterable[Any] | Any, **options: Any
    ) -> MapIterator[T]: ...
    def imap_unordered(
        self, fn: Any, items: Iterable[Any] | Any, **options: Any
    ) -> MapIterator[Any]:
        """Like :meth:`imap`, the results as they complete."""
        return self._each(fn, items, options, ordered=False)

    def star(self) -> StarPool:
        """The map family with each item, a tuple, spread into the arguments."""
        return StarPool(self)

    async def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on a worker: its result, or what it raised."""
        results: list[T] = await self._collect(fn, [(args, kwargs)], {}, mode="apply")
        return results[0]

    apply = submit

    def statistics(self) -> PoolStatistics:
        """The pool's counts so far."""
        return PoolStatistics(
            workers=self.workers,
            restarts=sum(slot.service.restarts for slot in self._slots),
            **self._counts,
        )

    # -- one batch ---------------------------------------------------------------------

    async def _collect(
        self, fn: Any, items: Any, options: dict[str, Any], **how: Any
    ) -> list[Any]:
        results: list[Any] = []
        with self._start(fn, items, options, **how) as outcomes:
            while (values := await outcomes.next_chunk()) is not None:
                results.extend(values)
        return results

    def _each(self, fn: Any, items: Any, options: dict[str, Any], **how: Any) -> MapIterator[Any]:
        return self._start(fn, items, options, **how)

    def _start(
        self,
        fn: Any,
        items: Any,
        options: dict[str, Any],
        *,
        star: bool = False,
        ordered: bool = True,
        mode: str | None = None,
    ) -> MapIterator[Any]:
        """Start one map: its reader runs, its results come through the iterator."""
        if self._state != "running" or self._task_group is None:
            raise WorkerStopped(
                f"pool {self.name!r} is {self._state}; use it inside `async with corral.Pool()`"
            )
        unknown = set(options) - {
            "chunksize",
            "timeout",
            "retries",
            "return_exceptions",
            "progress",
        }
        if unknown:
            raise TypeError(
                f"unknown option {sorted(unknown)[0]!r}; a map takes chunksize=, timeout=, "
                "retries=, return_exceptions= and progress="
            )
        chunksize, timeout = options.get("chunksize"), options.get("timeout")
        retries = options.get("retries", 0)
        _check_options(fn, chunksize, timeout, retries)
        blob = _pickled(fn)
        batch = Batch(
            self._key(blob),
            blob,
            mode or _mode(fn, star),
            self.workers,
            chunksize,
            timeout,
            retries,
            _length(items),
        )
        self._task_group.start_soon(self._read, batch, items, star)
        bar = ProgressBar(self.name, batch.length) if options.get("progress") else None
        return MapIterator(self, batch, ordered, options.get("return_exceptions", False), bar)

    def _key(self, blob: bytes) -> int:
        """The function's key: the same pickle, the same key (workers keep it: sent once)."""
        key = self._blob_keys.pop(blob, None)
        if key is None:
            key = next(self._keys)
        self._blob_keys[blob] = key  # (most recent last)
        while len(self._blob_keys) > KEPT_FUNCTIONS:
            del self._blob_keys[next(iter(self._blob_keys))]
        return key

    async def _read(self, batch: Batch, items: Any, star: bool) -> None:
        with batch.reader:
            await read_items(batch, items, self._put, star)

    async def _put(self, chunk: Chunk) -> None:
        self._counts["submitted"] += len(chunk.items)
        self._queue.append(chunk)
        self._wake()

    def _wake(self) -> None:
        self._queued.set()
        self._queued = anyio.Event()

    def _discard(self, batch: Batch) -> None:
        """A map left early: its chunks not yet sent are dropped."""
        for chunk in [c for c in self._queue if c.batch is batch]:
            self._queue.remove(chunk)
        batch.close(taker=True)

    # -- the workers -------------------------------------------------------------------

    async def _drive(self, slot: _Slot) -> None:
        """Send chunks to ``slot``'s worker, one at a time (a task; DEPTH per worker)."""
        while True:
            while not self._queue:
                await self._queued.wait()
            chunk = self._queue.popleft()
            if chunk.batch.closed:
                continue
            await self._run_chunk(slot, chunk)

    async def _run_chunk(self, slot: _Slot, chunk: Chunk) -> None:
        batch = chunk.batch
        running = chunk  # (until it is known which chunk the worker was running)
        self._counts["chunks"] += 1
        service = slot.service
        try:
            messenger = service.messenger or await service.connected()
            if messenger is not slot.messenger:  # a new child: it knows no function yet
                slot.messenger, slot.known = messenger, set()
                slot.culprits.clear()
            blob = None if batch.key in slot.known else batch.blob
            slot.known.add(batch.key)
            request = (batch.key, blob, batch.mode, chunk.items)
            limit = None if batch.timeout is None else batch.timeout * len(chunk.items)
            while limit is not None and slot.in_flight:  # timed from its start: alone
                await slot.idle.wait()
            slot.in_flight.append(chunk)  # (the first is the one running)
            try:
                with anyio.move_on_after(limit) as waiting:
                    reply = await messenger.request(request, channel=TASKS)
            finally:
                running = slot.in_flight[0]
                slot.in_flight.remove(chunk)
                if not slot.in_flight:
                    slot.idle.set()
                    slot.idle = anyio.Event()
            if waiting.cancelled_caught:
                self._timed_out(slot, chunk, limit)
                return
        except UnknownFunction:
            slot.known.discard(batch.key)
            self._requeue(chunk)
            return
        except (WorkerCrashed, WorkerStopped, anyio.BrokenResourceError) as error:
            if service.closing:  # the pool (or its supervisor) is closing: no retry
                batch.fail(chunk, WorkerStopped(f"pool {self.name!r} closed: {error}"))
                return
            culprit = slot.culprits.setdefault(id(slot.messenger), running)
            if chunk is culprit:
                self._lost(chunk, error)
            else:  # it was waiting behind the one that took the worker down
                self._requeue(chunk)
            return
        except SerializationError as error:  # an item, or a result, will not pickle
            self._unpicklable(chunk, error)
            return
        self._finished(slot, chunk, reply)

    def _finished(self, slot: _Slot, chunk: Chunk, reply: Any) -> None:
        """A chunk answered: its results to its batch, and the worker's count of tasks."""
        results, errors, seconds = reply
        batch = chunk.batch
        batch.timed(len(chunk.items), seconds)
        batch.deliver(chunk, results, errors)
        self._counts["completed"] += len(results) - len(errors)
        self._counts["failed"] += len(errors)
        slot.tasks_done += len(chunk.items)
        if self._max_tasks is not None and slot.tasks_done >= self._max_tasks:
            slot.tasks_done = 0
            child = slot.service.child
            if child is not None:  # recycled: the restart policy brings a new one
                slot.culprits[id(slot.messenger)] = chunk  # (nothing behind it is to blame)
                child.kill()

    def _requeue(self, chunk: Chunk) -> None:
        self._queue.appendleft(chunk)
        self._wake()

    def _split(self, chunk: Chunk) -> None:
        """Run a chunk's items one by one, to find the one to blame."""
        for position in reversed(range(len(chunk.items))):
            self._queue.appendleft(
                Chunk(chunk.batch, chunk.start + position, [chunk.items[position]], chunk.attempts)
            )
        self._wake()

    def _lost(self, chunk: Chunk, error: BaseException) -> None:
        """The worker died under ``chunk``: find the item, retry it, or fail it."""
        self._counts["crashes"] += 1
        if len(chunk.items) > 1:
            self._split(chunk)
            return
        self._retry_or_fail(chunk, error)

    def _timed_out(self, slot: _Slot, chunk: Chunk, limit: float | None) -> None:
        self._counts["timeouts"] += 1
        slot.culprits[id(slot.messenger)] = chunk  # (not what waited behind it)
        child = slot.service.child
        if child is not None:  # its work cannot be stopped otherwise: a new worker comes
            child.kill()
        self._retry_or_fail(chunk, ProcessTimeout("item", float(limit or 0), 0))

    def _retry_or_fail(self, chunk: Chunk, error: BaseException) -> None:
        chunk.attempts += 1
        if chunk.attempts <= chunk.batch.retries:
            self._counts["retried"] += 1
            self._requeue(chunk)
            return
        chunk.batch.fail(chunk, error)

    def _unpicklable(self, chunk: Chunk, error: SerializationError) -> None:
        if len(chunk.items) > 1:
            self._split(chunk)
            return
        chunk.batch.fail(chunk, error)


class MapIterator(Generic[T]):
    """The results of one map: ``async for result in pool.imap(...)``.

    Leaving it early (``break``, an error, being dropped) stops the map: no
    more items are read, and chunks not yet sent are not run.
    """

    def __init__(
        self,
        pool: Pool,
        batch: Batch,
        ordered: bool,
        return_exceptions: bool,
        bar: ProgressBar | None = None,
    ) -> None:
        self._pool = pool
        self._bar = bar
        self._batch = batch
        self._ordered = ordered
        self._return_exceptions = return_exceptions
        self._waiting: dict[int, Done] = {}
        self._next_start = 0
        self._values: deque[Any] = deque()
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> T:
        while not self._values:
            values = await self.next_chunk()
            if values is None:
                raise StopAsyncIteration
            self._values.extend(values)
        value: T = self._values.popleft()
        return value

    async def next_chunk(self) -> list[Any] | None:
        """The next chunk's results (errors raised, or in place); None at the end."""
        done = await self._next_done()
        if self._bar is not None and done is not None:
            self._bar.advance(len(done.values), self._batch.length)
        if done is None:
            self.close()
            if self._batch.error is not None:
                raise self._batch.error
            return None
        if not done.errors:
            return done.values
        if not self._return_exceptions:
            self.close()
            raise next(iter(done.errors.values()))
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
            try:
                done = await batch.outcomes.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
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
            self._pool._discard(self._batch)

    async def aclose(self) -> None:
        self.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def _mode(fn: Any, star: bool) -> str:
    if isinstance(fn, type) and issubclass(fn, Process):
        return "process-star" if star else "process"
    return "star" if star else "call"


def _pickled(fn: Any) -> bytes:
    try:
        return dumps_inband(fn)
    except SerializationError as error:
        raise SerializationError(
            f"the function will not pickle to go to the workers: {error}"
        ) from None


def _length(items: Any) -> int | None:
    if hasattr(items, "__len__") and not hasattr(items, "__aiter__"):
        return len(items)
    return None


@final
class StarPool:
    """A pool's map family with each item (a tuple) spread into the arguments."""

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def map(self, fn: Callable[..., T], items: Any, **options: Any) -> list[T]:
        return await self._pool.starmap(fn, items, **options)

    def imap(self, fn: Callable[..., T], items: Any, **options: Any) -> MapIterator[T]:
        return self._pool._each(fn, items, options, star=True)

    def imap_unordered(self, fn: Callable[..., T], items: Any, **options: Any) -> MapIterator[T]:
        return self._pool._each(fn, items, options, star=True, ordered=False)


def _check_options(fn: Any, chunksize: Any, timeout: Any, retries: Any) -> None:
    if not callable(fn):
        raise TypeError(f"a pool calls a function (or a Process class); got {fn!r}")
    if chunksize is not None and (
        isinstance(chunksize, bool) or not isinstance(chunksize, int) or chunksize < 1
    ):
        raise ValueError(f"chunksize= is a whole number >= 1, or None (chosen); got {chunksize!r}")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not 0 < timeout < math.inf
    ):
        raise ValueError(f"timeout= is a number of seconds > 0 per item, or None; got {timeout!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries= is a whole number >= 0; got {retries!r}")
