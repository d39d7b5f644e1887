"""``corral.Pool``: calls in batches on worker processes (or a Dask cluster).

Each map is a :class:`~._batch.Batch` whose chunks go into the pool's one
:class:`~._chunks.ChunkQueue` (so several maps run at once); a backend takes
them from there: the pool's own worker processes (``_poolworkers``) or a Dask
cluster (``_dask``).
"""

from __future__ import annotations

import itertools
import logging
import math
import os
from collections.abc import AsyncIterable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, Self, TypeVar, final, overload

import anyio
import anyio.abc

from ._batch import Batch, read_items
from ._chunks import Backend, ChunkQueue
from ._dask import DaskBackend
from ._errors import SerializationError, WorkerStopped
from ._forker import Forker
from ._mapapi import MapFamily
from ._mapiter import MapIterator
from ._poolworker import KEPT_FUNCTIONS, runs_async
from ._poolworkers import LocalWorkers
from ._process import Process
from ._progress import ProgressBar
from ._service import Service
from ._spawn import child_env
from ._wire import dumps_inband

logger = logging.getLogger(__name__)

T = TypeVar("T")


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


class Pool(MapFamily):
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
        backend: DaskBackend | None = None,
        max_tasks_per_worker: int | None = None,
        startup_timeout: float = 30.0,
        shutdown_timeout: float = 5.0,
        name: str = "pool",
    ) -> None:
        if backend is not None:
            if not isinstance(backend, DaskBackend):
                raise TypeError(
                    "backend= is a corral.DaskBackend(...), or None for worker processes on "
                    f"this machine; got {type(backend).__name__}"
                )
            if workers is not None or max_tasks_per_worker is not None:
                raise ValueError(
                    "workers= and max_tasks_per_worker= are for the pool's own worker "
                    "processes; with a DaskBackend the cluster's workers run the calls"
                )
            self._backend: Backend = backend
        else:
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
            self._backend = LocalWorkers(
                workers,
                max_tasks_per_worker=max_tasks_per_worker,
                startup_timeout=startup_timeout,
                shutdown_timeout=shutdown_timeout,
            )
        self.name = name
        self._chunks = ChunkQueue()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._own_group: anyio.abc.TaskGroup | None = None
        self._forker: Forker | None = None
        self._keys = itertools.count()
        self._blob_keys: dict[bytes, int] = {}
        self._state = "new"

    @property
    def workers(self) -> int:
        """Calls that run at once: worker processes, or the Dask cluster's threads."""
        return self._backend.workers

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
            # The pool's own zygote, so that replacement workers fork fast.
            forker = None if isinstance(self._backend, DaskBackend) else Forker(group, child_env)
            self.open(group, forker, lambda service: None)
            await self._backend.ready()
        except BaseException:
            await self.__aexit__(None, None, None)
            raise
        return self

    def open(
        self,
        group: anyio.abc.TaskGroup,
        forker: Forker | None,
        register: Callable[[Service], None],
    ) -> None:
        """Start the backend in ``group`` (a supervisor's, or the pool's own)."""
        if self._state != "new":
            raise RuntimeError("a Pool is used for one `async with` block; create another")
        self._task_group, self._forker = group, forker
        self._backend.open(self.name, self._chunks, group, forker, register)
        self._state = "running"

    async def aclose(self) -> None:
        """Close the workers (those still busy after ``shutdown_timeout`` are killed)."""
        if self._state in ("closing", "closed"):
            return
        self._state = "closing"
        with anyio.CancelScope(shield=True):
            await self._backend.aclose()
        self._chunks.abort_all(WorkerStopped(f"pool {self.name!r} closed during the map"))
        self._state = "closed"

    async def __aexit__(self, *exc_info: object) -> None:
        group, forker = self._own_group, self._forker
        assert group is not None
        await self.aclose()
        if forker is not None:
            with anyio.CancelScope(shield=True):
                await forker.aclose()
        group.cancel_scope.cancel()
        await group.__aexit__(None, None, None)

    # -- the map family (map, imap, imap_unordered: in MapFamily) ----------------------

    async def starmap(
        self,
        fn: Callable[..., T],
        items: Iterable[tuple[Any, ...]] | AsyncIterable[tuple[Any, ...]],
        /,
        **options: Any,
    ) -> list[T]:
        """``[fn(*item) for item in items]`` (each item a tuple); options as for :meth:`map`."""
        results: list[T] = await self.star().map(fn, items, **options)
        return results

    def star(self) -> StarPool:
        """The map family with each item, a tuple, spread into the arguments."""
        return StarPool(self)

    @overload
    async def submit(self, fn: type[Process], /, *args: Any, **kwargs: Any) -> Any: ...
    @overload
    async def submit(
        self, fn: Callable[..., Coroutine[Any, Any, T]], /, *args: Any, **kwargs: Any
    ) -> T: ...
    @overload
    async def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T: ...
    async def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` on a worker: its result, or what it raised."""
        mode = "process-apply" if _mode(fn, False) == "process" else "apply"
        with self._start(fn, [(args, kwargs)], {}, star=False, mode=mode) as outcome:
            results = await outcome.next_chunk()
        assert results is not None
        return results[0]

    apply = submit

    def statistics(self) -> PoolStatistics:
        """The pool's counts so far."""
        return PoolStatistics(
            workers=self.workers,
            restarts=self._backend.restarts(),
            **self._chunks.counts,
        )

    # -- one batch ---------------------------------------------------------------------

    def _start(
        self,
        fn: Any,
        items: Any,
        options: dict[str, Any],
        *,
        star: bool,
        ordered: bool = True,
        mode: str | None = None,
    ) -> MapIterator[Any]:
        """Start one map: its reader runs, its results come through the iterator."""
        if self._state != "running" or self._task_group is None:
            raise WorkerStopped(
                f"pool {self.name!r} is {self._state}; use it inside `async with corral.Pool()`"
            )
        chunksize, timeout = options.get("chunksize"), options.get("timeout")
        retries = options.get("retries", 0)
        _check_options(fn, chunksize, timeout, retries)
        blob = _pickled(fn)
        batch = Batch(
            self._key(blob),
            blob,
            mode or _mode(fn, star),
            lambda: self._backend.workers,
            chunksize,
            timeout,
            retries,
            _length(items),
            target=self._backend.target_seconds,
        )
        batch.concurrent = runs_async(fn, batch.mode)
        self._chunks.started(batch)
        self._task_group.start_soon(self._read, batch, items, star)
        bar = ProgressBar(self.name, batch.length) if options.get("progress") else None
        return MapIterator(
            batch, ordered, options.get("return_exceptions", False), self._chunks.discard, bar
        )

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
            await read_items(batch, items, self._chunks.put, star)


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
class StarPool(MapFamily):
    """A pool's map family with each item (a tuple) spread into the arguments."""

    _star = True

    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    def _start(
        self, fn: Any, items: Any, options: dict[str, Any], *, star: bool, ordered: bool = True
    ) -> MapIterator[Any]:
        return self._pool._start(fn, items, options, star=star, ordered=ordered)


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
