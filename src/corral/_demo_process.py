"""The demo's Process: an archiver in a child, fed batches of readings with ``job.tell``."""

from __future__ import annotations

import json
import zlib
from typing import Any

from . import Job, Process, catchtime


class Archiver(Process):
    """Packs each batch of readings the host tells it; one batch per run.

    The archive volume is busy once (the run with the fifth batch raises):
    ``lives`` retries that run with the batch kept. ``stop()`` ends the cycle; ``on_finish()``
    closes the archive and ``result()`` reports.
    """

    lives = 3

    def __init__(self) -> None:
        self.batches = self.readings = self.raw = self.packed = self.retried = 0
        self.pending: list[float] | None = None
        self.closed = False

    async def run(self) -> None:
        if self.pending is None:
            self.pending = await self.listen(timeout=0.25)
            if self.pending is None:  # no batch yet: the run ends, stop() gets a look in
                return
        if self.batches == 4 and not self.retried:  # the fifth batch
            self.retried += 1
            raise OSError("archive volume busy (simulated): the run is retried")
        self._pack(self.pending)
        self.pending = None

    async def on_finish(self) -> None:
        """Pack what was told but not yet read (stop() ends the runs, not the feed)."""
        while (batch := await self.listen(timeout=0.05)) is not None:
            self._pack(batch)
        self.closed = True

    def _pack(self, batch: list[float]) -> None:
        raw = json.dumps([round(r, 3) for r in batch]).encode()
        self.raw += len(raw)
        self.packed += len(zlib.compress(raw, 6))
        self.batches += 1
        self.readings += len(batch)

    def result(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "readings": self.readings,
            "raw_kb": round(self.raw / 1024, 1),
            "packed_kb": round(self.packed / 1024, 1),
            "retried": self.retried,
            "closed": self.closed,
        }


async def archive_summary(job: Job[Archiver]) -> dict[str, Any]:
    """Stop the archiver and gather its figures: its result, runs, and how long stop took."""
    with catchtime() as stopping:
        job.stop()
        summary: dict[str, Any] = await job.result()
    summary.update(runs=job.timers.run.count, stop_ms=round(stopping.elapsed * 1000, 1))
    return summary


def process_line(p: dict[str, Any]) -> str:
    """The summary's line about the archiver."""
    return (
        f"job: Archiver, a corral.Process in a child: {p['batches']} batches "
        f"({p['readings']:,} readings) told to it, packed from {p['raw_kb']} KB into "
        f"{p['packed_kb']} KB in {p['runs']} runs; {p['retried']} failed run retried by "
        f"lives; stop() to on_finish(){' (ran)' if p['closed'] else ''} to result in "
        f"{p['stop_ms']} ms"
    )
