"""The few things anyio has no portable form for: a precise clock and
non-blocking calls into the loop from other threads.

uvloop's ``loop.time()`` is libuv's millisecond clock, cached once per loop
iteration: too coarse to measure lateness with. Where the loop's clock runs on
``time.monotonic``'s base (stock asyncio and uvloop both do), corral measures
with ``time.monotonic`` and converts to loop time only to set a deadline.

``anyio.from_thread.run_sync`` blocks the calling thread until the loop has run
the call; a thread-pool completion or a ``trigger()`` from a signal-handling
thread must not block, so this module uses each backend's own non-blocking
primitive. It is the only module that touches a backend directly.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, final

import sniffio

logger = logging.getLogger(__name__)


@final
class LoopHandle:
    """A reference to the running event loop, usable from any thread."""

    __slots__ = ("_call_soon", "clock", "loop_clock", "thread_id")

    def __init__(self) -> None:
        library = sniffio.current_async_library()
        self.thread_id = threading.get_ident()
        if library == "asyncio":
            import asyncio  # noqa: PLC0415  (only on this backend)

            loop = asyncio.get_running_loop()
            self.loop_clock: Callable[[], float] = loop.time
            monotonic_base = abs(loop.time() - time.monotonic()) < 0.1
            self.clock: Callable[[], float] = time.monotonic if monotonic_base else loop.time
            self._call_soon: Callable[..., Any] = loop.call_soon_threadsafe
        elif library == "trio":
            import trio  # noqa: PLC0415

            self.loop_clock = self.clock = trio.current_time  # precise, and may be a test clock
            self._call_soon = trio.lowlevel.current_trio_token().run_sync_soon
        else:  # pragma: no cover - anyio supports only these two
            raise RuntimeError(f"corral does not support the {library!r} event loop")

    def to_loop_time(self, t: float) -> float:
        """Convert a time read from :attr:`clock` to the loop's own clock, for deadlines."""
        return t + (self.loop_clock() - self.clock())

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
