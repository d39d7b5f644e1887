"""A pool's own worker processes: the backend a :class:`~corral.Pool` has by default.

Each worker is a child (forked from a zygote once it is ready) serving
chunks of calls (``_poolworker``); ``DEPTH`` driver tasks per worker keep
one chunk running there and one waiting. A worker that dies is replaced;
its chunk is blamed (split, to find the item) and what waited behind it
runs again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import anyio
import anyio.abc

from ._batch import Chunk
from ._chunks import ChunkQueue
from ._errors import ProcessTimeout, SerializationError, WorkerCrashed, WorkerStopped
from ._forker import Forker
from ._messenger import Messenger
from ._poolworker import KEPT_FUNCTIONS, TASKS, UnknownFunction, serve_pool
from ._service import Service

DEPTH: Final = 2  # chunks in flight per worker: one running, one waiting
TARGET_SECONDS: Final = 0.02  # a chunk's work, once items have been timed


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

    def answered(self, chunk: Chunk) -> Chunk:
        """``chunk`` is no longer in flight; the one that was running until now."""
        running = self.in_flight[0]
        self.in_flight.remove(chunk)
        if not self.in_flight:
            self.idle.set()
            self.idle = anyio.Event()
        return running


class LocalWorkers:
    """Worker processes on this machine, each serving chunks of calls."""

    target_seconds = TARGET_SECONDS

    def __init__(
        self,
        workers: int,
        *,
        max_tasks_per_worker: int | None,
        startup_timeout: float,
        shutdown_timeout: float,
    ) -> None:
        self.workers = workers
        self._max_tasks = max_tasks_per_worker
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._slots: list[_Slot] = []
        self._name = "pool"
        self._chunks = ChunkQueue()

    def open(
        self,
        name: str,
        chunks: ChunkQueue,
        group: anyio.abc.TaskGroup,
        forker: Forker | None,
        register: Callable[[Service], None],
    ) -> None:
        self._name, self._chunks = name, chunks
        for number in range(self.workers):
            service = Service(
                "function",
                serve_pool,
                (),
                {},
                name=f"{name}-{number + 1}",
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

    async def ready(self) -> None:
        pass  # (the workers start in the background; chunks wait for them)

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as closing:
                for slot in self._slots:
                    closing.start_soon(slot.service.aclose, self._shutdown_timeout)

    def restarts(self) -> int:
        return sum(slot.service.restarts for slot in self._slots)

    async def _drive(self, slot: _Slot) -> None:
        """Send chunks to ``slot``'s worker, one at a time (a task; DEPTH per worker)."""
        while True:
            await self._run_chunk(slot, await self._chunks.take())

    async def _run_chunk(self, slot: _Slot, chunk: Chunk) -> None:
        batch, chunks = chunk.batch, self._chunks
        running = chunk  # (until it is known which chunk the worker was running)
        service = slot.service
        try:
            messenger = service.messenger or await service.connected()
            if messenger is not slot.messenger:  # a new child: it knows no function yet
                slot.messenger, slot.known = messenger, set()
                slot.culprits.clear()
            blob = None if batch.key in slot.known else batch.blob
            if len(slot.known) > 2 * KEPT_FUNCTIONS:  # (the worker forgets old ones too)
                slot.known.clear()
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
                running = slot.answered(chunk)
            if waiting.cancelled_caught:
                assert limit is not None
                self._kill(slot, chunk)  # its work cannot be stopped otherwise
                chunks.timed_out(chunk, ProcessTimeout("item", float(limit), 0))
                return
        except UnknownFunction:
            slot.known.discard(batch.key)
            chunks.requeue(chunk)
            return
        except (WorkerCrashed, WorkerStopped, anyio.BrokenResourceError) as error:
            if service.closing:  # the pool (or its supervisor) is closing: no retry
                chunks.fail(chunk, WorkerStopped(f"pool {self._name!r} closed: {error}"))
                return
            culprit = slot.culprits.setdefault(id(slot.messenger), running)
            if chunk is culprit:
                chunks.crashed(chunk, error)
            else:  # it was waiting behind the one that took the worker down
                chunks.requeue(chunk)
            return
        except SerializationError as error:  # an item, or a result, will not pickle
            chunks.unpicklable(chunk, error)
            return
        except Exception as error:  # the worker could not take the chunk (its function)
            chunks.fail(chunk, error)
            return
        chunks.finished(chunk, reply)
        slot.tasks_done += len(chunk.items)
        if self._max_tasks is not None and slot.tasks_done >= self._max_tasks:
            slot.tasks_done = 0
            self._kill(slot, chunk)  # recycled: the restart policy brings a new one

    def _kill(self, slot: _Slot, chunk: Chunk) -> None:
        """End ``slot``'s child for ``chunk``'s sake (what waited behind it is not to blame)."""
        child = slot.service.child
        if child is not None:
            slot.culprits[id(slot.messenger)] = chunk
            child.kill()
