"""The few things anyio has no portable form for: a precise clock and
non-blocking calls into the loop from other threads.

uvloop's ``loop.time()`` is libuv's millisecond clock, cached once per loop
iteration: too coarse to measure lateness with. Where the loop's clock runs on
``time.monotonic``'s base (stock asyncio and uvloop both do), corral measures
with ``time.monotonic`` and hands those deadlines to the loop unchanged.

``anyio.from_thread.run_sync`` blocks the calling thread until the loop has run
the call; a thread-pool completion or a ``trigger()`` from a signal-handling
thread must not block, so this module uses each backend's own non-blocking
primitive. It is the only module that touches a backend directly.
"""

from __future__ import annotations

import abc
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any, final

import anyio
import sniffio

logger = logging.getLogger(__name__)


@final
class LoopHandle:
    """A reference to the running event loop, usable from any thread."""

    __slots__ = ("_asyncio_loop", "_call_soon", "_granularity", "cancelled", "clock", "thread_id")

    def __init__(self) -> None:
        library = sniffio.current_async_library()
        self.thread_id = threading.get_ident()
        self.cancelled: type[BaseException] = anyio.get_cancelled_exc_class()
        if library == "asyncio":
            import asyncio  # noqa: PLC0415  (only on this backend)

            loop = asyncio.get_running_loop()
            self._asyncio_loop: Any = loop
            monotonic_base = abs(loop.time() - time.monotonic()) < 0.1
            self.clock: Callable[[], float] = time.monotonic if monotonic_base else loop.time
            # libuv timers count whole milliseconds from a clock cached per iteration
            self._granularity = 0.001 if type(loop).__module__.startswith("uvloop") else 0.0
            self._call_soon: Callable[..., Any] = loop.call_soon_threadsafe
        elif library == "trio":
            import trio  # noqa: PLC0415

            self._asyncio_loop = None
            self._granularity = 0.0
            self.clock = trio.current_time  # precise, and may be a test clock
            self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:  # pragma: no cover - anyio supports only these two
            raise RuntimeError(f"corral does not support the {library!r} event loop")

    def alarm(self) -> Alarm:
        """A new :class:`Alarm` for this loop."""
        if self._asyncio_loop is not None:
            return _AsyncioAlarm(self._asyncio_loop, self._granularity)
        return _AnyioAlarm()

    def in_loop_thread(self) -> bool:
        """True when called from the thread that runs the loop."""
        return threading.get_ident() == self.thread_id

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: object) -> bool:
        """Schedule ``fn(*args)`` on the loop from any thread, without waiting.

        Returns False when the loop has already closed (the call is dropped and
        logged at debug level: nothing is left to deliver it to).
        """
        try:
            self._call_soon(fn, *args)
        except RuntimeError:
            logger.debug("event loop closed; dropped call to %r", fn)
            return False
        return True


class Alarm(abc.ABC):
    """A sleep until a deadline (on :attr:`LoopHandle.clock`) that :meth:`wake` can cut short.

    anyio's way, a cancel scope with a deadline around ``Event.wait()``, costs
    about 40 µs per wake on asyncio because the timeout is delivered as a
    cancellation; the interval scheduler wakes up to a thousand times a
    second, so on asyncio this is a future and ``loop.call_at`` (about 3 µs).
    It never returns before the deadline unless woken: uvloop's timers can
    fire up to a millisecond early, so there the delay is rounded up to whole
    milliseconds. One task sleeps on an alarm at a time; :meth:`wake` is for
    the loop thread.
    """

    @abc.abstractmethod
    async def sleep_until(self, deadline: float) -> None:
        """Return at ``deadline`` (``math.inf``: never), or sooner if woken."""

    @abc.abstractmethod
    def wake(self) -> None:
        """End the current sleep now; does nothing when no one sleeps."""


@final
class _AsyncioAlarm(Alarm):
    __slots__ = ("_future", "_granularity", "_loop")

    def __init__(self, loop: Any, granularity: float) -> None:
        self._loop = loop
        self._granularity = granularity
        self._future: Any = None

    async def sleep_until(self, deadline: float) -> None:
        loop = self._loop
        future = self._future = loop.create_future()
        timer = None
        if not math.isinf(deadline):
            if self._granularity:
                now = loop.time()  # lags the real clock, which only lengthens the wait
                steps = math.ceil((deadline - now) / self._granularity)
                deadline = now + steps * self._granularity
            timer = loop.call_at(deadline, _resolve, future)
        try:
            await future
        finally:
            self._future = None
            if timer is not None:
                timer.cancel()

    def wake(self) -> None:
        if self._future is not None:
            _resolve(self._future)


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


@final
class _AnyioAlarm(Alarm):
    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    async def sleep_until(self, deadline: float) -> None:
        self._event = anyio.Event()
        try:
            with anyio.CancelScope(deadline=deadline):
                await self._event.wait()
        finally:
            self._event = None

    def wake(self) -> None:
        if self._event is not None:
            self._event.set()
