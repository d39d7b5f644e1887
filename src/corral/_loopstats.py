"""A control loop's statistics, computed by the reader from the loop's region.

The loop only writes raw times (see ``_ticker``); sorting them for
percentiles happens here, on the host, never between ticks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from operator import sub
from typing import final

from ._region import HEADER, Flag, Region, W, ring_entries
from ._timing import _interpolate


@final
@dataclass(frozen=True, slots=True)
class Percentiles:
    """A distribution in seconds: median, tail percentiles, maximum and mean (``nan``: none)."""

    p50: float
    p99: float
    p999: float
    max: float
    mean: float

    @classmethod
    def of(cls, values_ns: list[int], maximum_ns: int | None = None) -> Percentiles:
        """From nanosecond samples; ``maximum_ns`` overrides the sample maximum."""
        if not values_ns:
            return cls(math.nan, math.nan, math.nan, math.nan, math.nan)
        ordered = sorted(values_ns)
        top = max(ordered[-1], maximum_ns or 0)
        return cls(
            _interpolate(ordered, 50) / 1e9,
            _interpolate(ordered, 99) / 1e9,
            _interpolate(ordered, 99.9) / 1e9,
            top / 1e9,
            sum(ordered) / len(ordered) / 1e9,
        )

    def __str__(self) -> str:
        def us(x: float) -> str:
            return f"{x * 1e6:.1f}"

        return (
            f"p50 {us(self.p50)} / p99 {us(self.p99)} / p99.9 {us(self.p999)} "
            f"/ max {us(self.max)} us"
        )


@final
@dataclass(frozen=True, slots=True)
class ControlLoopStatistics:
    """A frozen snapshot of a control loop (times in seconds).

    ``ticks``, ``skipped``, ``overruns`` and the maxima of ``lateness`` and
    ``step`` cover the whole run; the percentiles cover the last ``window``
    ticks (the loop's ``history``). Lateness is how long after its deadline a
    step started; period error is how far the time between two consecutive
    steps was from the period; an overrun is a step that ended after the
    next deadline; a skipped tick is one never run (``overrun="skip"``).
    ``cpu_percent`` is the loop's CPU use (its process, or its thread for
    ``run_here``) as a percentage of one core. ``starved`` counts the times
    host calls were let in although the loop had no room between ticks.
    """

    name: str
    hz: float
    running: bool
    ticks: int
    skipped: int
    overruns: int
    lateness: Percentiles
    period_error: Percentiles
    step: Percentiles
    window: int
    cpu_percent: float
    policy: str
    priority: int
    pinned: bool
    memory_locked: bool
    gc_frozen: bool
    dma_latency: bool
    starved: int
    restarts: int = 0

    def __str__(self) -> str:
        return (
            f"{self.name}: {self.ticks} ticks at {self.hz:g} Hz, {self.skipped} skipped, "
            f"{self.overruns} overruns; lateness {self.lateness}; step {self.step}; "
            f"CPU {self.cpu_percent:.1f}%; {self.policy}"
            f"{', memory locked' if self.memory_locked else ''}"
        )


def summarize(region: Region, name: str, *, restarts: int = 0) -> ControlLoopStatistics:
    """The statistics of the loop writing ``region`` (it may be running)."""
    ring = region.copy_ring()  # first: the counters read after it cover all of it
    return summarize_copy(ring, region.words[:HEADER].tolist(), name, restarts)


def summarize_copy(
    ring_copy: tuple[bytes, int, int, int, int], words: list[int], name: str, restarts: int
) -> ControlLoopStatistics:
    """:func:`summarize` from copies (so the work can run in a worker thread)."""
    ring = ring_entries(*ring_copy)
    deadlines, wakes, ends = ring[0::3], ring[1::3], ring[2::3]
    lateness = list(map(sub, wakes, deadlines))  # map over C functions: ~10x a comprehension
    steps = list(map(sub, ends, wakes))
    gaps = map(sub, wakes[1:], wakes[:-1])
    due_gaps = map(sub, deadlines[1:], deadlines[:-1])
    period_error = list(map(abs, map(sub, gaps, due_gaps)))
    wall = words[W.WALL_NOW] - words[W.WALL0]
    flags = words[W.FLAGS]
    period = words[W.PERIOD]
    return ControlLoopStatistics(
        name=name,
        hz=1e9 / period if period else math.nan,
        running=bool(words[W.RUNNING]),
        ticks=words[W.TICKS],
        skipped=words[W.SKIPPED],
        overruns=words[W.OVERRUNS],
        lateness=Percentiles.of(lateness, words[W.MAX_LATE]),
        period_error=Percentiles.of(period_error),
        step=Percentiles.of(steps, words[W.MAX_STEP]),
        window=len(lateness),
        cpu_percent=100 * (words[W.CPU_NOW] - words[W.CPU0]) / wall if wall > 0 else 0.0,
        policy="SCHED_FIFO" if words[W.POLICY] else "SCHED_OTHER",
        priority=words[W.PRIORITY],
        pinned=bool(flags & Flag.PINNED),
        memory_locked=bool(flags & Flag.MEMORY_LOCKED),
        gc_frozen=bool(flags & Flag.GC_FROZEN),
        dma_latency=bool(flags & Flag.DMA_LATENCY),
        starved=words[W.STARVED],
        restarts=restarts,
    )
