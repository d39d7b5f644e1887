"""The tick engine: ``step()`` at absolute deadlines, and the waits between ticks.

Tick ``k`` is due at ``t0 + k * period``: lateness never accumulates. The
loop sleeps until a short spin window before the deadline, then spins on
``perf_counter_ns`` (a sleep alone wakes tens of microseconds late).

Two ways to wait, one engine:

- in a child, :class:`LoopSelector` is the event loop's selector. asyncio
  calls ``select()`` between turns, so ticks run there, and the event loop
  (host calls, messages) only gets the CPU when the next deadline is at least
  ``budget`` away;
- in-process (``ControlLoop.run_here``), :meth:`Ticker.run_blocking` sleeps
  and ticks on the calling thread.

Per tick the engine writes three words to the ring and a few counters to the
header (see ``_region``), and logs nothing: statistics are computed by the
reader, an overrun is reported through the loop's ``on_overrun``.
"""

from __future__ import annotations

import contextlib
import gc
import os
import selectors
import time
from collections.abc import Callable
from time import perf_counter_ns
from typing import Any, Final

from ._region import Region, W
from ._slots import Outputs

STARVED_AFTER: Final = 100_000_000  # ns without a host turn before one is forced
_GC_YOUNG: Final = 1000  # objects allocated (with gc disabled) before an idle collection


class Ticker:
    """Runs ``obj.step()`` once per period at absolute deadlines."""

    def __init__(
        self,
        obj: Any,
        region: Region,
        period: int,
        *,
        skip: bool,
        spin: int,
        outputs: Outputs | None,
        eventfd: int | None = None,
        cpu_clock: Callable[[], int] = time.process_time_ns,
        collect_garbage: bool = False,
    ) -> None:
        self.obj = obj
        self.region = region
        self.period = period
        self.skip = skip
        self.spin = spin
        self.outputs = outputs
        self.eventfd = eventfd
        self.cpu_clock = cpu_clock
        self.collect_garbage = collect_garbage
        self.deadline = 0
        self.number = 0  # the grid number of the next tick
        self.running = False
        self.failure: tuple[int, BaseException] | None = None
        self.on_stopped: Callable[[], object] | None = None
        self._young_collections = 0

    def begin(self, first_deadline: int) -> None:
        """Start ticking: tick 0 is due at ``first_deadline`` (perf_counter_ns)."""
        words = self.region.words
        words[W.PERIOD] = self.period
        words[W.CPU0] = words[W.CPU_NOW] = self.cpu_clock()
        words[W.WALL0] = words[W.WALL_NOW] = perf_counter_ns()
        self.deadline = first_deadline
        self.number = 0
        self.running = True
        words[W.RUNNING] = 1

    def active(self) -> bool:
        """True while ticking."""
        return self.running

    def stop(self) -> None:
        """Stop ticking (the current tick, if any, completes)."""
        if self.running:
            self.running = False
            self.region.words[W.RUNNING] = 0
            if self.on_stopped is not None:
                self.on_stopped()

    def tick(self) -> None:
        """Spin to the deadline, run one step and account for it."""
        deadline = self.deadline
        while perf_counter_ns() < deadline:
            pass
        wake = perf_counter_ns()
        period = self.period
        number = self.number
        words = self.region.words
        if self.skip and wake - deadline >= period:  # woke a whole period late: latest due tick
            missed = (wake - deadline) // period
            number += missed
            deadline += missed * period
            words[W.SKIPPED] += missed
        obj = self.obj
        obj.tick = number
        try:
            obj.step()
        except BaseException as error:  # even sys.exit(): teardown() must still run
            self.failure = (number, error)
            self.stop()
            return
        end = perf_counter_ns()
        self._record(number, deadline, wake, end)
        if obj._corral_stop:
            self.stop()

    def _record(self, number: int, deadline: int, wake: int, end: int) -> None:
        """Account for a tick run; choose the next deadline; wake watchers."""
        words = self.region.words
        count = words[W.TICKS]
        entry = self.region.ring_start + 3 * (count % self.region.history)
        words[entry] = deadline
        words[entry + 1] = wake
        words[entry + 2] = end
        words[W.TICKS] = count + 1
        words[W.MAX_LATE] = max(words[W.MAX_LATE], wake - deadline)
        words[W.MAX_STEP] = max(words[W.MAX_STEP], end - wake)
        period = self.period
        following = deadline + period
        overrun = end - following
        self.number = number + 1
        if overrun > 0:
            words[W.OVERRUNS] += 1
            if self.skip:  # the deadlines that passed during the step are not run late
                missed = overrun // period + 1
                following += missed * period
                self.number += missed
                words[W.SKIPPED] += missed
            try:
                self.obj.on_overrun(number, overrun / 1e9)
            except BaseException as error:  # as if the step had raised it
                self.failure = (number, error)
                self.stop()
        self.deadline = following
        if not count & 63:
            words[W.CPU_NOW] = self.cpu_clock()
            words[W.WALL_NOW] = perf_counter_ns()
        outputs = self.outputs
        if outputs is not None and outputs.changed:
            outputs.changed = False
            if self.eventfd is not None and words[W.WATCHERS]:
                with contextlib.suppress(BlockingIOError):  # full: the host is woken anyway
                    os.eventfd_write(self.eventfd, 1)

    def idle(self) -> None:
        """Work that may be done when the next deadline is far: young garbage."""
        if self.collect_garbage and gc.get_count()[0] > _GC_YOUNG:
            self._young_collections += 1
            gc.collect(2 if self._young_collections % 16 == 0 else 1)

    def sleep_until_due(self) -> None:
        """Sleep until the spin window before the next deadline (without serving anything)."""
        wake_at = self.deadline - self.spin
        now = perf_counter_ns()
        if now < wake_at:
            time.sleep((wake_at - now) / 1e9)

    def run_blocking(self, ticks: int | None, until: int | None) -> None:
        """Tick on this thread until stopped, ``ticks`` ticks run or ``until`` (ns) passed."""
        words = self.region.words
        while self.running:
            if ticks is not None and words[W.TICKS] >= ticks:
                break
            if until is not None and self.deadline > until:
                break
            if self.deadline - perf_counter_ns() > 2 * self.spin:
                self.idle()
            self.sleep_until_due()
            self.tick()
        self.stop()


class LoopSelector(selectors.SelectSelector):
    """An event loop selector that runs the ticks while asyncio waits for I/O.

    ``select()`` (µs timeouts, unlike epoll's ms) waits for I/O until the
    spin window, and returns to the event loop only while the next deadline
    is more than ``room`` away; nearer than that, it sleeps, spins and ticks
    (I/O that arrived too late is seen again after the tick). If the loop
    has had no room for :data:`STARVED_AFTER`, the event loop gets one turn
    anyway (counted as starved): a close request must get through to a loop
    that overruns.
    """

    def __init__(self) -> None:
        super().__init__()
        self.ticker: Ticker | None = None
        self.room = 0
        self._last_turn = 0
        self._forced = False  # this turn was forced on a loop with no room: admit all

    def attach(self, ticker: Ticker, budget: int) -> None:
        self.ticker = ticker
        self.room = max(budget, ticker.spin)
        self._last_turn = perf_counter_ns()

    def has_room(self) -> bool:
        """Whether host work may start now: not ticking, or the next deadline is far enough."""
        ticker = self.ticker
        if ticker is None or not ticker.running or self._forced:
            return True
        return perf_counter_ns() < ticker.deadline - self.room

    def _forced_turn(self, ticker: Ticker, now: int) -> list[tuple[selectors.SelectorKey, int]]:
        """A turn for the host on a loop with no room (counted as starved)."""
        self._last_turn = now
        self._forced = True
        ticker.region.words[W.STARVED] += 1
        return super().select(0)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        ticker = self.ticker
        if ticker is None or not ticker.active():
            return super().select(timeout)
        self._forced = False
        end = None if timeout is None else perf_counter_ns() + max(0, int(timeout * 1e9))
        while ticker.active():
            now = perf_counter_ns()
            room = ticker.deadline - self.room
            if now < room:
                if room - now > self.room:
                    ticker.idle()
                # one wake-up per tick when nothing happens: at the spin window
                wake = ticker.deadline - ticker.spin
                limit = wake if end is None else min(wake, end)
                events = super().select(max(0, limit - perf_counter_ns()) / 1e9)
                after = perf_counter_ns()
                waiting = bool(events) or (end is not None and after >= end)
                if not waiting:
                    self._last_turn = after  # idle: nobody waited for a turn
                if after < room:
                    if waiting:
                        self._last_turn = after
                        return events
                    continue
                # too near the deadline now: what arrived is seen again after the tick,
                # unless it has waited too long already
                if waiting and after - self._last_turn > STARVED_AFTER:
                    return self._forced_turn(ticker, after)
            elif now - self._last_turn > STARVED_AFTER:  # a turn, even with no I/O ready:
                return self._forced_turn(ticker, now)  # ready callbacks (tasks) need one too
            ticker.sleep_until_due()
            ticker.tick()
        return super().select(0)  # stopped (failed or asked to): let the loop see it
