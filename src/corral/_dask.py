"""``corral.DaskBackend``: a pool's chunks run as tasks on a Dask distributed cluster.

The pool's map family, chunking, read-ahead, retries and errors stay the
same; only where a chunk runs changes. A chunk goes to the cluster as one
task (``pure=False``: every chunk runs) carrying the pickled function and
its items; each worker keeps the function unpickled by its key. (Scattering
the function once instead would tie every chunk to the workers holding it:
when they die, Dask cancels the chunks rather than blaming the one that
killed them.) Dask itself is imported only when a pool
with this backend opens (``pip install 'corral[dask]'``).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import pickle
import uuid
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc
import sniffio

from ._batch import Chunk
from ._chunks import ChunkQueue
from ._errors import ProcessTimeout, SerializationError, WorkerCrashed, WorkerStopped
from ._forker import Forker
from ._poolworker import Functions, run_async, run_sync, runs_async
from ._service import Service
from ._wire import dumps_inband

logger = logging.getLogger(__name__)

DEPTH: Final = 2  # chunks in flight per cluster thread: one running, one waiting
TARGET_SECONDS: Final = 0.1  # a chunk's work: a Dask task costs a millisecond or more
REFRESH_SECONDS: Final = 1.0  # how often the cluster's thread count is read again


class DaskBackend:
    """Run a :class:`~corral.Pool`'s maps on a Dask cluster.

    ``corral.Pool(backend=corral.DaskBackend(address_or_cluster))`` keeps the
    whole map API; each chunk of items becomes one Dask task. Pick it when a
    map's items take 10 ms or more each and one machine's cores are not
    enough, or when the data is on the cluster: a Dask task costs a
    millisecond or more, where a chunk to a local worker costs tens of
    microseconds.

    ``address_or_cluster`` is a scheduler address (``"tcp://host:8786"``), a
    cluster object (``distributed.LocalCluster``, or any with a
    ``scheduler_address``), a ``distributed.Client`` (its scheduler is
    used), or None: Dask starts a local cluster with its defaults, closed
    with the pool. ``target_seconds`` is the work a chunk is sized to once
    items have been timed; ``client_options`` go to ``distributed.Client``.

    The cluster's workers need corral installed (as they need any library
    the mapped function uses). A timed-out item raises
    :class:`~corral.ProcessTimeout` and its task is cancelled, but Dask
    cannot stop a task already running: the work goes on to its end on the
    cluster. A crash is what Dask reports after its own retries (its
    ``KilledWorker``); the item raises :class:`~corral.WorkerCrashed`. Dask
    runs on asyncio: use this backend under asyncio (uvloop too), not trio.
    """

    def __init__(
        self,
        address_or_cluster: Any = None,
        *,
        target_seconds: float = TARGET_SECONDS,
        **client_options: Any,
    ) -> None:
        if isinstance(target_seconds, bool) or not isinstance(target_seconds, int | float):
            raise TypeError(f"target_seconds= is a number of seconds; got {target_seconds!r}")
        if not 0 < target_seconds < math.inf:
            raise ValueError(f"target_seconds= is > 0 seconds; got {target_seconds!r}")
        if not (
            address_or_cluster is None
            or isinstance(address_or_cluster, str)
            or hasattr(address_or_cluster, "scheduler_address")
            or hasattr(address_or_cluster, "scheduler")
        ):
            raise TypeError(
                "DaskBackend takes a scheduler address ('tcp://host:8786'), a cluster "
                "(distributed.LocalCluster, ...), a distributed.Client, or None for a local "
                f"cluster; got {type(address_or_cluster).__name__}"
            )
        self.target_seconds = float(target_seconds)
        self.workers = 1  # cluster threads: known once connected
        self._address = address_or_cluster
        self._client_options = client_options
        self._client: Any = None
        self._error: BaseException | None = None
        self._connected = anyio.Event()
        self._serving: anyio.CancelScope | None = None  # the task that connects and sends
        self._served = anyio.Event()
        self._token = uuid.uuid4().hex  # this pool's keys, apart from other pools' on the cluster
        self._in_flight = 0
        self._alone = False  # a suspect is running: nothing else is sent
        self._freed = anyio.Event()
        self._opened = False
        self._name = "pool"
        self._chunks = ChunkQueue()

    def __repr__(self) -> str:
        return f"<DaskBackend {self._address!r} threads={self.workers}>"

    def open(
        self,
        name: str,
        chunks: ChunkQueue,
        group: anyio.abc.TaskGroup,
        forker: Forker | None,
        register: Callable[[Service], None],
    ) -> None:
        if self._opened:
            raise RuntimeError("a DaskBackend serves one pool; create one per pool")
        if sniffio.current_async_library() != "asyncio":
            raise RuntimeError(
                "DaskBackend needs asyncio (Dask's client is built on it): run the app with "
                "corral.run() or anyio's asyncio backend, not trio"
            )
        self._opened = True
        self._serving = anyio.CancelScope()
        self._name, self._chunks = name, chunks
        group.start_soon(self._serve, name=f"corral-dask:{name}")

    async def ready(self) -> None:
        await self._connected.wait()
        if self._error is not None:
            raise self._error

    async def aclose(self) -> None:
        if self._serving is not None:  # no chunk is sent from now on; those in flight are
            self._serving.cancel()  # cancelled
            with anyio.CancelScope(shield=True):
                await self._served.wait()
        client, self._client = self._client, None
        if client is not None:  # (a cluster Dask started for us closes with it)
            with anyio.CancelScope(shield=True), anyio.move_on_after(10):
                await client.close()

    def restarts(self) -> int:
        return 0  # (the cluster replaces its own workers)

    # -- the connection ----------------------------------------------------------------

    async def _connect(self) -> Any:
        try:
            from distributed import Client  # noqa: PLC0415

            connect: Any = Client  # (untyped)
        except ImportError:
            raise ImportError(
                "DaskBackend needs Dask's distributed scheduler: pip install 'corral[dask]'"
            ) from None
        address = self._address
        if hasattr(address, "scheduler") and not hasattr(address, "scheduler_address"):
            address = address.scheduler.address  # a Client: its scheduler, our own client
        try:
            client = await connect(address, asynchronous=True, **self._client_options)
        except OSError as error:
            raise WorkerStopped(
                f"pool {self._name!r} could not reach the Dask scheduler at "
                f"{address!r}: {error}; check the address, and that the scheduler runs"
            ) from error
        self._client = client
        await self._count_threads(client)
        return client

    async def _count_threads(self, client: Any) -> None:
        threads = await client.nthreads()
        workers = max(1, sum(threads.values()))
        if workers != self.workers:
            self.workers = workers
            self._freed.set()  # (more room: the chunk waiting may go)
            self._freed = anyio.Event()
            self._chunks.capacity_changed()

    # -- running chunks ----------------------------------------------------------------

    async def _serve(self) -> None:
        """Connect, then hand chunks to the cluster (a task, for the pool's lifetime)."""
        try:
            assert self._serving is not None
            with self._serving:
                await self._send_chunks()
        finally:
            self._connected.set()
            self._served.set()

    async def _send_chunks(self) -> None:
        try:
            client = await self._connect()
        except Exception as error:
            self._error = error
            self._connected.set()
            while True:  # nothing hangs: every map fails with what went wrong
                self._chunks.fail(await self._chunks.take(), error)
        self._connected.set()
        async with anyio.create_task_group() as running:
            running.start_soon(self._refresh, client)
            while True:
                chunk = await self._chunks.take()
                if chunk.suspect:  # it runs alone
                    room = 1
                elif chunk.batch.timeout is not None:  # timed from its sending: none waits
                    room = self.workers
                else:
                    room = DEPTH * self.workers
                while self._in_flight >= room or self._alone:
                    await self._freed.wait()
                self._in_flight += 1
                self._alone = chunk.suspect
                running.start_soon(self._run_chunk, client, chunk)

    async def _refresh(self, client: Any) -> None:
        """Follow the cluster's size (workers come and go)."""
        while True:
            await anyio.sleep(REFRESH_SECONDS)
            with contextlib.suppress(Exception):
                await self._count_threads(client)

    async def _run_chunk(self, client: Any, chunk: Chunk) -> None:
        try:
            await self._send(client, chunk)
        finally:
            self._in_flight -= 1
            self._alone = False
            self._freed.set()
            self._freed = anyio.Event()

    async def _send(self, client: Any, chunk: Chunk) -> None:
        from distributed import KilledWorker  # noqa: PLC0415  (imported: Dask is running)

        batch, chunks = chunk.batch, self._chunks
        if batch.closed:
            return
        try:
            items = dumps_inband(chunk.items)
        except SerializationError as error:
            chunks.unpicklable(chunk, error)
            return
        limit = None if batch.timeout is None else batch.timeout * len(chunk.items)
        future = client.submit(
            run_chunk,
            f"{self._token}-{batch.key}",
            batch.blob,
            batch.mode,
            items,
            pure=False,
            key=f"corral-{self._name}-{uuid.uuid4().hex}",
        )
        try:
            with anyio.move_on_after(limit) as waiting:
                reply = await future
            if waiting.cancelled_caught:
                assert limit is not None
                if len(chunk.items) > 1:  # which item overran? each runs alone, timed
                    chunks.split(chunk)
                else:
                    chunks.timed_out(chunk, ProcessTimeout("item", float(limit), 0))
                # Dask cannot stop a running task: its thread stays taken until it ends,
                # and so does this chunk's room (a chunk sent now would wait for it).
                with contextlib.suppress(Exception):
                    await future
                return
        except KilledWorker as error:
            # Dask blames every task on a worker that died, run or queued: an item is
            # blamed once it has killed a worker running alone.
            if len(chunk.items) == 1 and not chunk.suspect:
                chunk.suspect = True
                chunks.requeue(chunk)
                return
            chunks.crashed(
                chunk, WorkerCrashed(f"{self._name} on Dask", None, detail=f": {error}")
            )
            return
        except Exception as error:  # the task could not run there (not one item's error)
            if len(chunk.items) > 1:
                chunks.split(chunk)
            else:
                chunks.fail(chunk, error)
            return
        finally:
            if not future.done():
                with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                    await future.cancel()
        if isinstance(reply, str):  # a result would not pickle
            chunks.unpicklable(chunk, SerializationError(reply))
            return
        chunks.finished(chunk, pickle.loads(reply))


# -- on the cluster's workers ----------------------------------------------------------

_functions = Functions()


def run_chunk(key: str, blob: bytes, mode: str, items: bytes) -> bytes | str:
    """A chunk on a Dask worker: the pickled reply, or why a result would not pickle."""
    fn = _functions.get(key, blob)
    values = pickle.loads(items)
    if runs_async(fn, mode):
        # A loop of its own, in a fresh context: the worker's thread may carry the
        # context of Dask's own event loop (which says "asyncio is running here").
        reply = contextvars.Context().run(anyio.run, run_async, fn, mode, values)
    else:
        reply = run_sync(fn, mode, values)
    try:
        return dumps_inband(reply)
    except SerializationError as error:
        return str(error)
