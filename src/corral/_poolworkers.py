"""A pool's own worker processes: the backend a :class:`~corral.Pool` has by default.

Each worker is a child (forked from a zygote once it is ready) serving
chunks of calls (``_poolworker``); ``DEPTH`` driver tasks per worker keep
one chunk running there and one waiting. A worker that dies is replaced;
its chunk is blamed (split, to find the item) and what waited behind it
runs again.
"""

from __future__ import annotations

import functools
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
    """One worker: its service, and what its current child has been sent."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.messenger: Messenger | None = None  # the current child's
        self.known: set[int] = set()  # functions the current child has been sent
        self.sent = 0  # items sent to the current child
        self.in_flight: list[Chunk] = []  # sent, not answered (sync: the first is running)
        self.alone = False  # a suspect is in flight: nothing is sent beside it
        self.reserved = False  # a chunk waits to start alone: nothing else is sent
        self.idle = anyio.Event()  # set (and replaced) each time nothing is in flight
        # Per child that died: the chunks in flight then, the ones to blame.
        self.crowds: dict[Messenger, list[Chunk]] = {}
        self.killed: Messenger | None = None  # the child ended on purpose (its messenger)
        self.replace = False  # ended on purpose: start the next one at once, no back-off

    def new_child(self, messenger: Messenger) -> None:
        self.messenger, self.known, self.sent = messenger, set(), 0
        while len(self.crowds) > 4:  # (old children's failures are all handled by now)
            del self.crowds[next(iter(self.crowds))]

    def answered(self, chunk: Chunk) -> list[Chunk]:
        """``chunk`` is no longer in flight; what was in flight with it (it included)."""
        crowd = list(self.in_flight)
        self.in_flight.remove(chunk)
        if not self.in_flight:
            self.alone = False
            self.idle.set()
            self.idle = anyio.Event()
        return crowd


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
            service.relaunch = functools.partial(self._relaunch, slot)
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

    def _relaunch(self, slot: _Slot) -> bytes | None:
        """A child we ended (timeout, recycling) is replaced at once, not as a crash."""
        if slot.replace:
            slot.replace = False
            return slot.service.target
        return None

    async def _ready(self, slot: _Slot, chunk: Chunk) -> Messenger:
        """Wait until ``chunk`` may go to ``slot``'s child: that child's messenger.

        A chunk that must start alone (timed from its start, or a suspect) reserves the
        slot while it waits for it to empty, so other chunks cannot keep it busy.
        """
        alone = chunk.suspect or chunk.batch.timeout is not None
        reserved = False
        try:
            while True:
                service, messenger = slot.service, slot.service.messenger
                full = self._max_tasks is not None and slot.sent >= self._max_tasks
                if (
                    messenger is None
                    or messenger is slot.killed
                    or (messenger is slot.messenger and full)
                ):
                    messenger = await service.connected(other_than=messenger)
                if messenger is not slot.messenger:  # a new child: it knows no function yet
                    slot.new_child(messenger)
                if alone and not reserved and not slot.reserved:
                    slot.reserved = reserved = True
                busy = slot.alone or (slot.reserved and not reserved)
                if not busy and not (alone and slot.in_flight):
                    return messenger
                await slot.idle.wait()
        finally:
            if reserved:
                slot.reserved = False

    async def _run_chunk(self, slot: _Slot, chunk: Chunk) -> None:
        try:
            await self._send(slot, chunk)
        finally:
            full = self._max_tasks is not None and slot.sent >= self._max_tasks
            if full and not slot.in_flight:  # its share sent, and answered: recycled
                self._kill(slot, chunk)  # (a new child comes at once)

    async def _send(self, slot: _Slot, chunk: Chunk) -> None:
        batch, chunks = chunk.batch, self._chunks
        crowd, messenger = [chunk], None
        try:
            messenger = await self._ready(slot, chunk)
            if self._max_tasks is not None:  # never more items to a child than its share
                room = self._max_tasks - slot.sent
                if len(chunk.items) > room:
                    chunk, rest = chunk.cut(room)
                    chunks.requeue(rest)
                slot.sent += len(chunk.items)
            blob = None if batch.key in slot.known else batch.blob
            if len(slot.known) > 2 * KEPT_FUNCTIONS:  # (the worker forgets old ones too)
                slot.known.clear()
            slot.known.add(batch.key)
            limit = None if batch.timeout is None else batch.timeout * len(chunk.items)
            slot.in_flight.append(chunk)
            slot.alone = chunk.suspect
            try:
                with anyio.move_on_after(limit) as waiting:
                    reply = await messenger.request(
                        (batch.key, blob, batch.mode, chunk.items), channel=TASKS
                    )
            finally:
                crowd = slot.answered(chunk)
            if waiting.cancelled_caught:
                assert limit is not None
                self._kill(slot, chunk)  # its work cannot be stopped otherwise
                if len(chunk.items) > 1:  # which item overran? each runs alone, timed
                    chunks.split(chunk)
                else:
                    chunks.timed_out(chunk, ProcessTimeout("item", float(limit), 0))
                return
        except UnknownFunction:
            slot.known.discard(batch.key)
            chunks.requeue(chunk)
            return
        except (WorkerCrashed, WorkerStopped, anyio.BrokenResourceError) as error:
            if slot.service.closing:  # the pool (or its supervisor) is closing: no retry
                chunks.fail(chunk, WorkerStopped(f"pool {self._name!r} closed: {error}"))
            elif messenger is not None:
                self._blame(slot.crowds.setdefault(messenger, crowd), chunk, error)
            else:
                chunks.requeue(chunk)  # (never sent)
            return
        except SerializationError as error:  # an item, or a result, will not pickle
            chunks.unpicklable(chunk, error)
            return
        except Exception as error:  # the worker could not take the chunk (its function)
            chunks.fail(chunk, error)
            return
        chunks.finished(chunk, reply)

    def _blame(self, crowd: list[Chunk], chunk: Chunk, error: BaseException) -> None:
        """The child died with ``crowd`` in flight: is ``chunk`` to blame?"""
        chunks = self._chunks
        if chunk not in crowd:  # it was ended on purpose, for another chunk
            chunks.requeue(chunk)
        elif not any(c.batch.concurrent for c in crowd):  # one at a time: the first ran
            if chunk is crowd[0]:
                chunks.crashed(chunk, error)
            else:
                chunks.requeue(chunk)
        elif len(crowd) == 1:  # it ran alone
            chunks.crashed(chunk, error)
        elif len(chunk.items) > 1:  # ran beside others: its items run alone, one by one
            chunks.split(chunk)
        else:
            chunk.suspect = True
            chunks.requeue(chunk)

    def _kill(self, slot: _Slot, chunk: Chunk) -> None:
        """End ``slot``'s child for ``chunk``'s sake (what was beside it is not to blame)."""
        child, messenger = slot.service.child, slot.messenger
        if (  # (not a child started since, nor one already ended)
            child is not None
            and messenger is not None
            and messenger is slot.service.messenger
            and messenger is not slot.killed
        ):
            slot.killed, slot.replace = messenger, True
            slot.crowds[messenger] = [chunk]
            child.kill()
