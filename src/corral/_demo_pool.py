"""The demo's pool: a day of readings analysed in windows on worker processes.

One window comes from a faulty sensor whose analysis kills its worker
(``os._exit``): the item raises :class:`~corral.WorkerCrashed`, the worker
is replaced, and the map goes on. Then a burst of tiny conversions shows the
pool's throughput. The functions are module-level, so the workers (forked
from the supervisor's zygote) find them by name.
"""

from __future__ import annotations

import os
import random
import statistics
from typing import TYPE_CHECKING, Any, Final

from ._errors import WorkerCrashed
from ._timing import catchtime

if TYPE_CHECKING:
    from ._supervisor import Supervisor

WINDOWS: Final = 400  # windows of readings to analyse
READINGS: Final = 2_000  # readings per window
FAULTY: Final = 123  # the window whose analysis kills its worker
CONVERSIONS: Final = 200_000  # tiny calls, for throughput


def window_stats(seed: int) -> tuple[float, float]:
    """The mean and peak of one window of simulated readings."""
    rng = random.Random(seed)
    values = [rng.gauss(21.0, 0.5) for _ in range(READINGS)]
    if seed == FAULTY:
        os._exit(70)  # a faulty sensor's data crashes the analysis (and its process)
    return statistics.fmean(values), max(values)


def fahrenheit(celsius: float) -> float:
    return celsius * 1.8 + 32


async def pool_demo(sup: Supervisor, live: bool) -> dict[str, Any]:
    """Run the two maps on a pool owned by ``sup``; their figures."""
    pool = sup.pool(2, name="analysts")
    with catchtime() as analysing:
        results = await pool.map(
            window_stats, range(WINDOWS), progress=live, return_exceptions=True
        )
    crashed = [i for i, r in enumerate(results) if isinstance(r, WorkerCrashed)]
    peaks = [r[1] for r in results if isinstance(r, tuple)]
    with catchtime() as converting:
        converted = await pool.map(fahrenheit, range(CONVERSIONS))
    assert converted[100] == fahrenheit(100)
    stats = pool.statistics()
    return {
        "windows": WINDOWS,
        "analysed": len(peaks),
        "crashed_items": crashed,
        "peak_c": round(max(peaks), 2),
        "analyse_s": round(analysing.elapsed, 2),
        "conversions": CONVERSIONS,
        "conversions_per_s": round(CONVERSIONS / converting.elapsed),
        "restarts": stats.restarts,
        "crashes": stats.crashes,
        "chunks": stats.chunks,
    }


def pool_line(p: dict[str, Any]) -> str:
    """The summary's line about the pool."""
    crashed = ", ".join(str(i) for i in p["crashed_items"]) or "none"
    restarts = f"{p['restarts']} restart{'' if p['restarts'] == 1 else 's'}"
    return (
        f"pool: 2 workers forked from the zygote; {p['analysed']} of {p['windows']} windows "
        f"analysed in {p['analyse_s']} s (peak {p['peak_c']} C); window {crashed} killed its "
        f"worker: that item raised WorkerCrashed, the worker was replaced ({restarts}) and "
        f"the map went on; {p['conversions']:,} tiny calls at "
        f"{p['conversions_per_s'] / 1e6:.2f} M/s"
    )
