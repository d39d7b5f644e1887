"""Timers and statistics: running totals over every sample, percentiles over a window."""

from __future__ import annotations

import math
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import final

__all__ = ["Timer", "TimingSummary", "catchtime"]


@final
@dataclass(frozen=True, slots=True)
class TimingSummary:
    """A frozen snapshot of a :class:`Timer`, in seconds (``nan`` when empty)."""

    count: int
    mean: float
    min: float
    max: float
    p50: float
    p99: float


@final
class Timer:
    """Collects durations (seconds) and answers statistics about them.

    ``count``, ``total``, ``mean``, ``stdev``, ``min`` and ``max`` cover every
    sample ever recorded, in constant memory. ``median`` and ``percentile()``
    cover the most recent ``window`` samples (all samples when ``window`` is
    ``None``), so a long-running worker keeps bounded memory while its
    percentiles describe recent behaviour.

    >>> t = Timer()
    >>> for s in (0.1, 0.2, 0.3):
    ...     t.record(s)
    >>> t.count, round(t.mean, 3), t.median
    (3, 0.2, 0.2)
    """

    __slots__ = (
        "_cap",
        "_count",
        "_max",
        "_min",
        "_next",
        "_samples",
        "_shift",
        "_sorted",
        "_sum",
        "_sumsq",
        "window",
    )

    def __init__(self, window: int | None = None) -> None:
        if window is not None and window < 1:
            raise ValueError(f"window must be a positive number of samples or None, got {window}")
        self.window = window
        self._cap = window if window is not None else sys.maxsize
        self._samples = array("d")
        self._next = 0  # where the next sample goes once the window is full
        self._sorted: list[float] | None = None
        self._count = 0
        # Sums of (sample - first sample): cheap to keep on a hot path, and the
        # shift keeps the variance exact enough when the mean dwarfs the spread.
        self._shift = 0.0
        self._sum = 0.0
        self._sumsq = 0.0
        self._min = math.inf
        self._max = -math.inf

    def record(self, seconds: float) -> None:
        """Add one sample (cheap enough for a per-tick hot path)."""
        if not self._count:
            self._shift = seconds
        self._count += 1
        d = seconds - self._shift
        self._sum += d
        self._sumsq += d * d
        if seconds < self._min:  # noqa: PLR1730  (a compare is cheaper than min() here)
            self._min = seconds
        if seconds > self._max:  # noqa: PLR1730
            self._max = seconds
        samples = self._samples
        if len(samples) < self._cap:
            samples.append(seconds)
        else:
            samples[self._next] = seconds
            self._next = (self._next + 1) % self._cap
        self._sorted = None

    @contextmanager
    def time(self) -> Iterator[None]:
        """Record how long the ``with`` block takes."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.record(time.perf_counter() - start)

    @property
    def count(self) -> int:
        """Number of samples ever recorded."""
        return self._count

    @property
    def total(self) -> float:
        """Sum of every sample."""
        return self._sum + self._shift * self._count

    @property
    def mean(self) -> float:
        """Mean of every sample (``nan`` when empty)."""
        return self._shift + self._sum / self._count if self._count else math.nan

    @property
    def stdev(self) -> float:
        """Sample standard deviation of every sample (``nan`` with fewer than two)."""
        n = self._count
        if n < 2:
            return math.nan
        return math.sqrt(max(0.0, (self._sumsq - self._sum * self._sum / n) / (n - 1)))

    @property
    def min(self) -> float:
        """Smallest sample ever recorded (``nan`` when empty)."""
        return self._min if self._count else math.nan

    @property
    def max(self) -> float:
        """Largest sample ever recorded (``nan`` when empty)."""
        return self._max if self._count else math.nan

    @property
    def most_recent(self) -> float:
        """The last sample recorded (``nan`` when empty)."""
        if not self._samples:
            return math.nan
        return self._samples[self._next - 1] if self._next else self._samples[-1]

    @property
    def median(self) -> float:
        """Median of the retained window."""
        return self.percentile(50)

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100) of the retained window, linearly interpolated."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be between 0 and 100, got {p}")
        if not self._samples:
            return math.nan
        if self._sorted is None:
            self._sorted = sorted(self._samples)
        return _interpolate(self._sorted, p)

    def samples(self) -> list[float]:
        """The retained window, oldest first."""
        return list(self._samples[self._next :]) + list(self._samples[: self._next])

    def summary(self) -> TimingSummary:
        """A frozen snapshot: count, mean, min, max, p50 and p99."""
        return TimingSummary(
            count=self.count,
            mean=self.mean,
            min=self.min,
            max=self.max,
            p50=self.percentile(50),
            p99=self.percentile(99),
        )

    def __repr__(self) -> str:
        return f"Timer(count={self.count}, mean={self.mean:.6g}, max={self.max:.6g})"


def _interpolate(ordered: Sequence[float], p: float) -> float:
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@final
class _Elapsed:
    __slots__ = ("_end", "_start")

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._end: float | None = None

    @property
    def elapsed(self) -> float:
        """Seconds since the block started; frozen once it ends."""
        end = self._end if self._end is not None else time.perf_counter()
        return end - self._start

    def __repr__(self) -> str:
        return f"<catchtime elapsed={self.elapsed:.6f}s>"


@contextmanager
def catchtime(timer: Timer | None = None) -> Iterator[_Elapsed]:
    """Measure a block: ``with catchtime() as t: ...`` then ``t.elapsed`` (seconds).

    Works inside ``async`` code too. When ``timer`` is given, the duration is
    also recorded into it.
    """
    measured = _Elapsed()
    try:
        yield measured
    finally:
        measured._end = time.perf_counter()
        if timer is not None:
            timer.record(measured.elapsed)
