"""Figures the benchmarks share (computed as corral.Timer computes its own); their tables."""

from __future__ import annotations

import math

#: The percentiles a distribution is kept at (for plots): every 1%, and the tail.
DISTRIBUTION_POINTS = (*range(100), 99.5, 99.9, 100)


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (0-100) of ``values``, linearly interpolated."""
    return _at(sorted(values), p)


def distribution(values: list[float]) -> list[list[float]]:
    """``values`` at each of DISTRIBUTION_POINTS: [[percentile, value], ...]."""
    ordered = sorted(values)
    return [[p, _at(ordered, p)] for p in DISTRIBUTION_POINTS]


def _at(ordered: list[float], p: float) -> float:
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def table(headers: list[str], rows: list[list[str]]) -> None:
    """Print ``rows`` under ``headers``: the first column left-aligned, the others right."""
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join(
            [first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))]
        )

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def fmt(value: float | None, spec: str = ".1f", suffix: str = "") -> str:
    """``value`` formatted, or "-" when there is none."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def rate(value: float) -> str:
    """A count per second, short: 7.73 M, 24.1 k, 196."""
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return f"{value:.0f}"
