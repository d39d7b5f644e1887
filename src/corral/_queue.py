"""The queue behind a queue worker: FIFO or by priority, bounded or not,
cancellation-safe, and closable so consumers can drain it and leave."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from typing import Any, final

import anyio
import anyio.lowlevel

from ._errors import QueueFull, WorkerStopped


class Closed(Exception):
    """Raised by :meth:`WorkQueue.get` once the queue is closed and empty."""


@final
class WorkQueue:
    """Items for a queue worker; with ``priority`` they come out lowest first."""

    def __init__(self, owner: str, maxsize: int, priority: bool) -> None:
        self._owner = owner
        self.maxsize = maxsize
        self.priority = priority
        self._fifo: deque[Any] = deque()
        self._heap: list[tuple[Any, int, Any]] = []
        self._order = itertools.count()
        self._getters: deque[anyio.Event] = deque()
        self._putters: deque[anyio.Event] = deque()
        self.closed = False

    def __len__(self) -> int:
        return len(self._heap) if self.priority else len(self._fifo)

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self)

    def put_nowait(self, item: Any) -> None:
        self._check_open()
        entry = self._entry(item)
        if self.full():
            raise QueueFull(
                f"queue worker {self._owner!r} is full (maxsize={self.maxsize}); "
                "use `await worker.put(item)` to wait for room"
            )
        self._push(entry)

    async def put(self, item: Any) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        self._check_open()
        entry = self._entry(item)  # a bad item fails now, before it takes a turn
        while self.full():
            await _wait_turn(self._putters)
            self._check_open()
        self._push(entry)
        await anyio.lowlevel.cancel_shielded_checkpoint()

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerStopped(
                f"queue worker {self._owner!r} is stopped and takes no more items; "
                "start a new worker or put before stopping it"
            )

    def _entry(self, item: Any) -> Any:
        if not self.priority:
            return item
        level, value = _split_priority(self._owner, item)
        return (level, next(self._order), value)

    def _push(self, entry: Any) -> None:
        if self.priority:
            heapq.heappush(self._heap, entry)
        else:
            self._fifo.append(entry)
        _wake_one(self._getters)

    async def get(self) -> Any:
        while not len(self):
            if self.closed:
                raise Closed
            await _wait_turn(self._getters)
        item = heapq.heappop(self._heap)[2] if self.priority else self._fifo.popleft()
        _wake_one(self._putters)
        return item

    def close(self) -> None:
        """No more puts; waiting getters drain what is left, then get ``Closed``."""
        self.closed = True
        for waiters in (self._getters, self._putters):
            while waiters:
                waiters.popleft().set()

    def clear(self) -> int:
        """Drop every queued item; returns how many were dropped."""
        dropped = len(self)
        self._fifo.clear()
        self._heap.clear()
        return dropped


def _split_priority(owner: str, item: Any) -> tuple[Any, Any]:
    if not (isinstance(item, tuple) and len(item) == 2):
        raise TypeError(
            f"queue worker {owner!r} was started with priority=True, so items must be "
            f"(priority, item) tuples; got {item!r}"
        )
    return item[0], item[1]


def _wake_one(waiters: deque[anyio.Event]) -> None:
    if waiters:
        waiters.popleft().set()


async def _wait_turn(waiters: deque[anyio.Event]) -> None:
    """Wait to be woken; a wake-up that arrives with a cancellation is passed on."""
    event = anyio.Event()
    waiters.append(event)
    try:
        await event.wait()
    except BaseException:
        if event.is_set():
            _wake_one(waiters)
        else:
            waiters.remove(event)
        raise
