"""The chunks of a pool's maps waiting to run, and what every backend does with an outcome.

A pool's maps put their chunks in one :class:`ChunkQueue`; a backend (the
pool's own worker processes, or a Dask cluster) takes them, runs them, and
reports back through it: results, a crash to blame on an item, a retry.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

import anyio
import anyio.abc

from ._batch import Batch, Chunk
from ._errors import SerializationError
from ._forker import Forker
from ._service import Service

COUNTS = ("submitted", "completed", "failed", "retried", "crashes", "timeouts", "chunks")


class ChunkQueue:
    """The chunks waiting for a worker, oldest first, and the pool's counts."""

    def __init__(self) -> None:
        self._queue: deque[Chunk] = deque()
        self._queued = anyio.Event()
        self.counts = dict.fromkeys(COUNTS, 0)
        self._batches: weakref.WeakSet[Batch] = weakref.WeakSet()  # maps not yet ended

    def started(self, batch: Batch) -> None:
        self._batches.add(batch)

    def capacity_changed(self) -> None:
        """The backend's workers changed in number: maps waiting for room look again."""
        for batch in list(self._batches):
            batch.capacity_changed()

    def abort_all(self, error: BaseException) -> None:
        """The pool closed: every map still running ends with ``error``, nothing more runs."""
        self._queue.clear()
        for batch in list(self._batches):
            batch.reader.cancel()
            batch.abort(error)

    async def put(self, chunk: Chunk) -> None:
        self.counts["submitted"] += len(chunk.items)
        self._queue.append(chunk)
        self._wake()

    async def take(self) -> Chunk:
        """The next chunk of a map still running (waits for one)."""
        while True:
            while not self._queue:
                await self._queued.wait()
            chunk = self._queue.popleft()
            if not chunk.batch.closed:
                self.counts["chunks"] += 1
                return chunk

    def _wake(self) -> None:
        self._queued.set()
        self._queued = anyio.Event()

    def requeue(self, chunk: Chunk) -> None:
        """``chunk`` runs next (it was not run, or is retried)."""
        self._queue.appendleft(chunk)
        self._wake()

    def split(self, chunk: Chunk) -> None:
        """``chunk``'s items run next, one by one (to find the one to blame)."""
        for position in reversed(range(len(chunk.items))):
            self._queue.appendleft(
                Chunk(chunk.batch, chunk.start + position, [chunk.items[position]], chunk.attempts)
            )
        self._wake()

    def discard(self, batch: Batch) -> None:
        """A map left early: its chunks not yet taken are dropped."""
        for chunk in [c for c in self._queue if c.batch is batch]:
            self._queue.remove(chunk)
        batch.close(taker=True)

    # -- outcomes ----------------------------------------------------------------------

    def finished(self, chunk: Chunk, reply: Any) -> None:
        """``chunk`` answered ``(results, errors, seconds)``."""
        results, errors, seconds = reply
        chunk.batch.timed(len(chunk.items), seconds)
        chunk.batch.deliver(chunk, results, errors)
        self.counts["completed"] += len(results) - len(errors)
        self.counts["failed"] += len(errors)

    def fail(self, chunk: Chunk, error: BaseException) -> None:
        """Every item of ``chunk`` ends with ``error``."""
        chunk.batch.fail(chunk, error)
        self.counts["failed"] += len(chunk.items)

    def crashed(self, chunk: Chunk, error: BaseException) -> None:
        """The worker died running ``chunk``: find the item, retry it, or fail it."""
        self.counts["crashes"] += 1
        if len(chunk.items) > 1:
            self.split(chunk)
        else:
            self.retry_or_fail(chunk, error)

    def timed_out(self, chunk: Chunk, error: BaseException) -> None:
        self.counts["timeouts"] += 1
        self.retry_or_fail(chunk, error)

    def retry_or_fail(self, chunk: Chunk, error: BaseException) -> None:
        chunk.attempts += 1
        if chunk.attempts <= chunk.batch.retries:
            self.counts["retried"] += len(chunk.items)
            self.requeue(chunk)
        else:
            self.fail(chunk, error)

    def unpicklable(self, chunk: Chunk, error: SerializationError) -> None:
        """An item of ``chunk`` (or its result) will not pickle: find which."""
        if len(chunk.items) > 1:
            self.split(chunk)
        else:
            self.fail(chunk, error)


class Backend(Protocol):
    """Where a pool's chunks run: its own worker processes, or a cluster."""

    #: calls that run at once (worker processes, or cluster threads); sizes the read-ahead
    workers: int
    #: seconds of work a chunk is sized to, once items have been timed
    target_seconds: float

    def open(
        self,
        name: str,
        chunks: ChunkQueue,
        group: anyio.abc.TaskGroup,
        forker: Forker | None,
        register: Callable[[Service], None],
    ) -> None:
        """Start taking ``chunks`` in ``group`` (a supervisor's, or the pool's own)."""

    async def ready(self) -> None:
        """Wait until chunks can run (raises what prevents it)."""

    async def aclose(self) -> None:
        """Stop; what is running is abandoned, its maps fail."""

    def restarts(self) -> int:
        """Workers replaced so far."""
