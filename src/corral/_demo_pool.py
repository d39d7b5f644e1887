"""The demo's pool: windows of readings analysed on worker processes as they arrive.

Windows arrive at a steady pace over most of the demo, so the progress bar
moves with it. One window, half-way, comes from a faulty sensor whose
analysis kills its worker (``os._exit``): that item raises
:class:`~corral.WorkerCrashed`, the worker is replaced, and the map goes on.
At the end a burst of tiny conversions shows the pool's throughput. The
functions are module-level, so the workers (forked from the supervisor's
zygote) find them by name.
"""

from __future__ import annotations

import functools
import os
import random
import statistics
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Final

import anyio

from ._errors import WorkerCrashed
from ._timing import catchtime

if TYPE_CHECKING:
    from ._pool import Pool

READINGS: Final = 2_000  # readings per window
WINDOWS_PER_SECOND: Final = 25
CONVERSIONS: Final = 200_000  # tiny calls, for throughput


def window_stats(seed: int, faulty: int) -> tuple[float, float]:
    """The mean and peak of one window of simulated readings."""
    rng = random.Random(seed)
    values = [rng.gauss(21.0, 0.5) for _ in range(READINGS)]
    if seed == faulty:
        os._exit(70)  # a faulty sensor's data crashes the analysis (and its process)
    return statistics.fmean(values), max(values)


def fahrenheit(celsius: float) -> float:
    return celsius * 1.8 + 32


class Analysis:
    """The windows' map, fed at a steady pace over ``seconds``; its progress as it goes."""

    def __init__(self, pool: Pool, seconds: float, on_event: Callable[[str], None]) -> None:
        self.pool = pool
        self.total = max(20, round(seconds * WINDOWS_PER_SECOND))
        self.faulty = self.total // 2
        self.pace = seconds / self.total
        self.done = 0
        self.crashed: list[int] = []
        self.peaks: list[float] = []
        self.elapsed = 0.0
        self.finished = anyio.Event()
        self._on_event = on_event

    async def run(self) -> None:
        """Analyse every window as it arrives (the plant runs this as a task)."""
        started = anyio.current_time()
        try:
            results = self.pool.imap_unordered(
                functools.partial(window_stats, faulty=self.faulty),
                self._arriving(started),
                return_exceptions=True,
            )
            async for result in results:
                self.done += 1
                if isinstance(result, WorkerCrashed):
                    self.crashed.append(self.faulty)
                    self._on_event(
                        f"pool: window {self.faulty} killed its worker: that item raised "
                        "WorkerCrashed, a new worker took over, the map goes on"
                    )
                elif isinstance(result, tuple):
                    self.peaks.append(result[1])
        finally:
            self.elapsed = anyio.current_time() - started
            self.finished.set()

    async def _arriving(self, started: float) -> AsyncIterator[int]:
        for window in range(self.total):  # window k arrives at k * pace: no drift
            yield window
            await anyio.sleep(max(0.0, started + (window + 1) * self.pace - anyio.current_time()))

    def note(self) -> str:
        """The progress line's tail: crashes and worker replacements."""
        stats = self.pool.statistics()
        return (
            f"{self.done} windows analysed, {len(self.crashed)} killed its worker, "
            f"{stats.restarts} worker(s) replaced, {stats.chunks} chunks"
        )

    async def summary(self) -> dict[str, Any]:
        """Its figures, after a burst of tiny calls for the pool's throughput."""
        with catchtime() as converting:
            converted = await self.pool.map(fahrenheit, range(CONVERSIONS))
        assert converted[100] == fahrenheit(100)
        stats = self.pool.statistics()
        return {
            "windows": self.total,
            "analysed": len(self.peaks),
            "crashed_items": self.crashed,
            "peak_c": round(max(self.peaks, default=0.0), 2),
            "analyse_s": round(self.elapsed, 2),
            "conversions": CONVERSIONS,
            "conversions_per_s": round(CONVERSIONS / converting.elapsed),
            "restarts": stats.restarts,
            "crashes": stats.crashes,
            "chunks": stats.chunks,
        }


def pool_line(p: dict[str, Any]) -> str:
    """The summary's line about the pool."""
    if p["crashed_items"]:
        restarts = f"{p['restarts']} restart{'' if p['restarts'] == 1 else 's'}"
        crash = (
            f"window {', '.join(map(str, p['crashed_items']))} killed its worker: that item "
            f"raised WorkerCrashed, the worker was replaced ({restarts}) and the map went on"
        )
    else:
        crash = "the faulty window had not arrived when the demo ended"
    return (
        f"pool: 2 workers forked from the zygote; {p['analysed']} of {p['windows']} windows "
        f"analysed as they arrived over {p['analyse_s']} s (peak {p['peak_c']} C); {crash}; "
        f"{p['conversions']:,} tiny calls at {p['conversions_per_s'] / 1e6:.2f} M/s"
    )
