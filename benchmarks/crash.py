"""A child killed with 1,000 calls in flight: how soon does every caller know?

corral: 1,000 concurrent ``await proxy.aecho(i, delay=60)`` calls, then the
child is SIGKILLed; measured from the kill until the last call has raised
``WorkerCrashed``. The peer: ``ProcessPoolExecutor(1)`` with 1,000 submitted
``time.sleep(60)`` tasks through ``loop.run_in_executor``, its worker
SIGKILLed; measured until the last future has raised ``BrokenProcessPool``.
(``multiprocessing.Pool`` is not measured: its callers wait forever, cpython
issue 96061.)

    python benchmarks/crash.py            # 5 rounds
    python benchmarks/crash.py --quick    # 3 rounds
    python benchmarks/crash.py --rounds 2 --json crash.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import Echo

import corral
from _peers import corral_source

CALLS = 1000
TARGET_MS = 100.0  # the issue's: every caller knows within this


async def corral_round() -> float:
    """Milliseconds from the kill until every call in flight has raised."""
    async with corral.spawn(Echo) as echo:
        raised: list[float] = []
        everyone = anyio.Event()

        async def call(i: int) -> None:
            try:
                await echo.aecho(i, delay=60)
            except corral.WorkerCrashed:
                raised.append(time.perf_counter())
                if len(raised) == CALLS:
                    everyone.set()

        async with anyio.create_task_group() as tg:
            for i in range(CALLS):
                tg.start_soon(call, i)
            with anyio.fail_after(30):
                while echo.statistics().in_flight < CALLS:
                    await anyio.lowlevel.checkpoint()  # until every call has been sent
            pid = echo.pid
            assert pid is not None
            killed = time.perf_counter()
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(30):
                await everyone.wait()
        return (max(raised) - killed) * 1000


async def executor_round() -> float:
    """The same for a ProcessPoolExecutor(1) whose worker is killed."""
    loop = asyncio.get_running_loop()
    pool = ProcessPoolExecutor(1)
    try:
        await loop.run_in_executor(pool, time.sleep, 0)  # the worker is up
        futures = [loop.run_in_executor(pool, time.sleep, 60) for _ in range(CALLS)]
        await asyncio.sleep(0.2)  # the first task has started
        (pid,) = list(pool._processes)
        killed = time.perf_counter()
        os.kill(pid, signal.SIGKILL)
        raised: list[float] = []
        for future in futures:
            try:
                await asyncio.wait_for(future, 30)
            except BrokenProcessPool:
                raised.append(time.perf_counter())
        assert len(raised) == CALLS
        return (max(raised) - killed) * 1000
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, help="rounds of each (5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    options = parser.parse_args()
    rounds = options.rounds or (3 if options.quick else 5)
    results: dict[str, list[float]] = {"corral": [], "executor": []}

    async def run_all() -> None:
        for _ in range(rounds):
            results["corral"].append(await corral_round())
            results["executor"].append(await executor_round())

    corral.run(run_all)
    ours = statistics.median(results["corral"])
    theirs = statistics.median(results["executor"])
    rows: list[tuple[str, Any, str]] = [
        ("corral: proxy calls raise WorkerCrashed", ours, _fmt(results["corral"])),
        (
            "ProcessPoolExecutor(1): futures raise BrokenProcessPool",
            theirs,
            _fmt(results["executor"]),
        ),
    ]
    print(f"\nA child SIGKILLed with {CALLS:,} calls in flight ({rounds} rounds)\n")
    print(f"{'variant':<56} {'median ms':>10}  rounds ms")
    for name, median, by_round in rows:
        print(f"{name:<56} {median:>10.1f}  {by_round}")
    verdict = "PASS" if ours <= TARGET_MS else "MISS"
    print(f"\ncorral within {TARGET_MS:g} ms (the issue's target): {ours:.1f} ms  {verdict}")
    print(f"executor / corral: {theirs / ours:.2f}x")
    if options.json:
        figures = {
            "python": sys.version,
            "corral": corral_source(),
            "params": {"calls": CALLS, "rounds": rounds, "quick": options.quick},
            "results": {
                name: {"median_ms": statistics.median(values), "rounds_ms": values}
                for name, values in results.items()
            },
            "target_ms": TARGET_MS,
            "verdict": verdict,
        }
        with open(options.json, "w") as f:
            json.dump(figures, f, indent=2)
        print(f"figures written to {options.json}")


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


if __name__ == "__main__":
    main()
