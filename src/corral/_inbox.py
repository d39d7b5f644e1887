"""Received values waiting for a receiver: one priority queue per channel."""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any, final

from ._connection import Future


@final
class _Box:
    __slots__ = ("heap", "waiters")

    def __init__(self) -> None:
        self.heap: list[tuple[int, int, Any]] = []
        self.waiters: deque[Future] = deque()

    def wake_one(self) -> None:
        if self.waiters:
            future = self.waiters.popleft()
            if not future.done():
                future.set_result(None)


@final
class Inboxes:
    """Values per channel, lowest priority first, then in arrival order.

    Receivers wait in line per channel; one woken for a value it will not
    take (it was cancelled meanwhile) passes the wake-up on.
    """

    __slots__ = ("_boxes", "_order")

    def __init__(self) -> None:
        self._boxes: dict[Hashable, _Box] = {}
        self._order = itertools.count()

    def put(self, channel: Hashable, priority: int, value: Any) -> None:
        """Queue ``value`` on ``channel`` and wake its first receiver."""
        box = self._box(channel)
        heapq.heappush(box.heap, (priority, next(self._order), value))
        box.wake_one()

    def pop(self, channel: Hashable) -> tuple[bool, Any]:
        """``(True, value)`` for the next value on ``channel``, or ``(False, None)``."""
        box = self._boxes.get(channel)
        if box is not None and box.heap:
            return True, heapq.heappop(box.heap)[2]
        return False, None

    async def get(
        self, channel: Hashable, future: Callable[[], Future], check: Callable[[], None]
    ) -> Any:
        """The next value on ``channel``; ``check()`` raises when none can come any more."""
        box = self._box(channel)
        while not box.heap:
            check()
            waiter = future()
            box.waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter in box.waiters:
                    box.waiters.remove(waiter)
                elif box.heap:  # woken for a value it will not take: pass it on
                    box.wake_one()
                raise
        return heapq.heappop(box.heap)[2]

    def wake_all(self) -> None:
        """Wake every receiver (each re-runs its ``check()``)."""
        for box in self._boxes.values():
            while box.waiters:
                box.wake_one()

    def _box(self, channel: Hashable) -> _Box:
        box = self._boxes.get(channel)
        if box is None:
            box = self._boxes[channel] = _Box()
        return box
