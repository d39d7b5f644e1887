"""10,000 interval workers at 10 Hz: corral's shared timer against the naive version.

The naive version is what people write by hand: one task per worker, each
doing ``await asyncio.sleep(next_deadline - now)`` on absolute deadlines.
Each variant runs in a fresh interpreter so CPU and RSS are its own; both run
in the same invocation on the same machine, and the ratio is what counts.

    python benchmarks/interval_workers.py                 # 10,000 workers, 20 s, uvloop
    python benchmarks/interval_workers.py --quick         # 2,000 workers, 5 s
    python benchmarks/interval_workers.py --loop asyncio  # the stock loop
    python benchmarks/interval_workers.py --json iw.json  # also write the figures to a file
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from array import array
from typing import Any

import psutil

import corral
from _peers import corral_source
from _stats import percentile

#: Ticks per worker that count as start-up: the first falls due while the loop is
#: still starting the other workers, and the second can meet the burst of first runs.
STARTUP_TICKS = 2


class Meter:
    """CPU time and RSS of this process over the measured window."""

    def __init__(self) -> None:
        self.process = psutil.Process()

    def start(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = sum(self.process.cpu_times()[:2])

    def stop(self) -> dict[str, float]:
        wall = time.perf_counter() - self.wall0
        cpu = sum(self.process.cpu_times()[:2]) - self.cpu0
        return {
            "wall_s": wall,
            "cpu_pct": 100 * cpu / wall,
            "rss_mb": self.process.memory_info().rss / 2**20,
        }


async def run_corral(workers: int, hz: float, duration: float) -> dict[str, Any]:
    calls = 0
    interval = 1 / hz

    async def tick() -> None:
        nonlocal calls
        calls += 1

    meter = Meter()
    starts: list[float] = []
    async with corral.Supervisor() as sup:
        handles = []
        for _ in range(workers):
            # Like the naive tasks, each worker's first tick is due an interval after
            # its start (with no delay it is due at once, while the other workers
            # are still being started: see docs/benchmarks.md).
            starts.append(time.monotonic())
            handles.append(sup.every(interval, tick, delay_before=interval))
        meter.start()
        await asyncio.sleep(duration)
        figures = meter.stop()
        end = time.monotonic()
        delivered = calls
        skipped = sum(h.statistics().skipped for h in handles)
        windows = [h.timers.lateness.samples() for h in handles]  # type: ignore[union-attr]
    expected = sum(int((end - t0) / interval) for t0 in starts)  # its first tick is t0+1
    return {
        **figures,
        "delivered": delivered,
        "skipped": skipped,
        "expected": expected,
        "lateness": [s for w in windows for s in w],
        "lateness_after_start": [s for w in windows for s in w[STARTUP_TICKS:]],
    }


async def run_naive(workers: int, hz: float, duration: float) -> dict[str, Any]:
    calls = 0
    first = array("d")
    rest = array("d")
    starts = array("d")
    interval = 1 / hz

    async def tick() -> None:
        nonlocal calls
        calls += 1

    async def naive_worker() -> None:
        t0 = time.monotonic()
        starts.append(t0)
        k = 0
        while True:
            k += 1
            due = t0 + k * interval
            await asyncio.sleep(due - time.monotonic())
            (rest if k > STARTUP_TICKS else first).append(time.monotonic() - due)
            await tick()

    meter = Meter()
    tasks = [asyncio.create_task(naive_worker()) for _ in range(workers)]
    meter.start()
    await asyncio.sleep(duration)
    figures = meter.stop()
    end = time.monotonic()
    delivered = calls
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        **figures,
        "delivered": delivered,
        "skipped": 0,
        "expected": sum(int((end - t0) / interval) for t0 in starts),  # its first tick is t0+1
        "lateness": list(first) + list(rest),
        "lateness_after_start": list(rest),
    }


def child(variant: str, loop: str, workers: int, hz: float, duration: float) -> None:
    fn = run_corral if variant == "corral" else run_naive
    if loop == "uvloop":
        import uvloop  # noqa: PLC0415

        result = uvloop.run(fn(workers, hz, duration))
    else:
        result = asyncio.run(fn(workers, hz, duration))
    late = result.pop("lateness")
    steady = result.pop("lateness_after_start")
    result.update(
        variant=variant,
        loop=loop,
        late_steady_max_ms=1000 * max(steady),
        late_p50_ms=1000 * percentile(late, 50),
        late_p99_ms=1000 * percentile(late, 99),
        late_max_ms=1000 * max(late),
        late_mean_ms=1000 * statistics.fmean(late),
    )
    json.dump(result, sys.stdout)


def measure(variant: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--loop", args.loop]
    cmd += ["--workers", str(args.workers), "--hz", str(args.hz), "--duration", str(args.duration)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out))


def report(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.workers:,} interval workers at {args.hz:g} Hz for {args.duration:g} s "
        f"on {args.loop} (Python {sys.version.split()[0]}, {psutil.cpu_count()} cores)\n"
    )
    head = f"{'variant':<8} {'delivered':>10} {'skipped':>8} {'accounted':>9} {'p50 ms':>8} "
    head += f"{'p99 ms':>8} {'max ms':>8} {'steady max':>10} {'CPU %':>6} {'RSS MB':>7}"
    print(head)
    for r in rows:
        accounted = 100 * (r["delivered"] + r["skipped"]) / r["expected"]
        print(
            f"{r['variant']:<8} {r['delivered']:>10,} {r['skipped']:>8,} {accounted:>8.2f}% "
            f"{r['late_p50_ms']:>8.2f} {r['late_p99_ms']:>8.2f} {r['late_max_ms']:>8.2f} "
            f"{r['late_steady_max_ms']:>10.2f} {r['cpu_pct']:>6.1f} {r['rss_mb']:>7.1f}"
        )
    print(
        "\naccounted: (delivered + skipped) / ticks due while measuring. steady max: the worst"
        f"\nlateness after each worker's first {STARTUP_TICKS} ticks (the first falls due while"
        "\nthe loop is still starting the other workers; the second can meet that burst)."
    )
    ours, naive = rows
    print(
        f"\nratio naive/corral: p99 lateness {naive['late_p99_ms'] / ours['late_p99_ms']:.1f}x, "
        f"max lateness {naive['late_max_ms'] / ours['late_max_ms']:.1f}x, "
        f"CPU {naive['cpu_pct'] / ours['cpu_pct']:.2f}x"
    )


def write_json(path: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    params = {k: getattr(args, k) for k in ("workers", "hz", "duration", "loop", "quick")}
    figures = {
        "python": sys.version,
        "corral": corral_source(),
        "cores": psutil.cpu_count(),
        "params": {**params, "startup_ticks": STARTUP_TICKS},
        "results": {row["variant"]: row for row in rows},
    }
    with open(path, "w") as f:
        json.dump(figures, f, indent=2)
    print(f"figures written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=10_000)
    parser.add_argument("--hz", type=float, default=10.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--quick", action="store_true", help="2,000 workers for 5 s")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument("--child", choices=["corral", "naive"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.workers, args.duration = 2_000, 5.0
    if args.child:
        child(args.child, args.loop, args.workers, args.hz, args.duration)
        return
    rows = [measure("corral", args), measure("naive", args)]
    report(rows, args)
    if args.json:
        write_json(args.json, rows, args)


if __name__ == "__main__":
    main()
