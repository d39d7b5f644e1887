"""Virtual time for asyncio loops (``corral.testing.VirtualClock``)."""

from __future__ import annotations

import asyncio
import math
import selectors
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, final

T = TypeVar("T")

#: What asyncio adds to the time to find what is due (BaseEventLoop._clock_resolution).
RESOLUTION = time.get_clock_info("monotonic").resolution


@final
class VirtualClock:
    """Virtual time for asyncio: sleeps and timers end as soon as nothing else can run.

    Loops made by :meth:`new_event_loop` read the time from this clock, which
    starts at 0 and jumps to the next timer whenever the loop has been idle
    (no ready callbacks, no I/O) for ``autojump`` real seconds. An interval
    worker with a one-hour interval makes its hundredth run in milliseconds,
    and its ticks are exactly on time, since the clock stands still while
    callbacks run.

    Only time moves: I/O is real. Child processes and threads run on real
    time, so a timeout the host waits on can expire (virtually) before a
    child or a thread has answered; raise ``autojump`` (say to 0.2) to give
    them real time to answer first. uvloop cannot be driven this way: these
    loops are the stock asyncio loop. On trio, use ``trio.testing.MockClock``
    (corral reads trio's clock).

    Use it with :meth:`run` or, with anyio's pytest plugin, by returning
    :attr:`anyio_backend` from an ``anyio_backend`` fixture.
    """

    def __init__(self, *, autojump: float = 0.0) -> None:
        if not (autojump >= 0 and math.isfinite(autojump)):
            raise ValueError(f"autojump must be a finite number of seconds >= 0, not {autojump!r}")
        self.autojump = autojump
        self._now = 0.0

    def time(self) -> float:
        """The virtual time now, in seconds since the clock was made."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` now (timers due by then fire next)."""
        if not seconds >= 0:
            raise ValueError(f"the clock only moves forward; got {seconds!r} seconds")
        self._now += seconds

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new asyncio event loop on this clock."""
        return _VirtualLoop(self)

    @property
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """``("asyncio", {"loop_factory": ...})``: what an ``anyio_backend`` fixture returns."""
        return "asyncio", {"loop_factory": self.new_event_loop}

    def run(self, main: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``main(*args)`` on a new loop on this clock and return its result."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main(*args))


class _VirtualSelector(selectors.DefaultSelector):
    """Waits for I/O for real, up to ``autojump``; then moves the clock to the next timer."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock
        self.next_due: Callable[[], float | None] = lambda: None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:  # nothing scheduled, or something ready now
            return super().select(timeout)
        events = super().select(min(timeout, self._clock.autojump))
        if events:
            return events
        due = self.next_due()
        if due is None or not math.isfinite(due):  # a timer at infinity: wait for I/O
            return super().select(None)
        # asyncio runs what is due before now + the clock's resolution; past 2**24 s
        # that sum rounds to now itself, so the clock goes just past the due time.
        if due + RESOLUTION <= due:
            due = math.nextafter(due, math.inf)
        self._clock._now = max(self._clock._now, due)
        return []


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        selector = _VirtualSelector(clock)
        super().__init__(selector)
        self._virtual_clock = clock
        selector.next_due = self._next_due

    def time(self) -> float:
        return self._virtual_clock._now

    def _next_due(self) -> float | None:
        scheduled: list[asyncio.TimerHandle] = getattr(self, "_scheduled", [])  # (asyncio's heap)
        return scheduled[0].when() if scheduled else None
