"""corral.Process against suitkaise's Skprocess: start-to-result and per-run overhead.

Two measurements, each variant in a fresh interpreter, all in the same
invocation on the same machine (absolute times are noise on a shared
machine; the ratios are what count):

1. **Start-to-result** of a trivial process (``runs = 1``, an empty
   ``run()``, ``result()`` returns 42): the wall time from the start call to
   having the result in hand, ``--samples`` times one after another (20; 8
   with ``--quick``), median and p90. corral: ``job = await
   sup.start(Trivial())`` then ``await job.result()`` with the supervisor
   already open (the headline), and a whole ``async with
   corral.start(Trivial()) as job`` block. suitkaise: ``p = SkTrivial();
   p.start(); p.wait(); p.result()``, and ``p.start(); await
   p.result.asynced()()`` from an asyncio program. Each variant's first
   start in its interpreter is reported on its own and not counted: for
   suitkaise it also starts the ``multiprocessing`` Manager process that
   every later start reuses.
2. **Per-run overhead**: a process whose ``run()`` is empty, with ``runs =
   n`` (``--runs``, 10,000) and with ``runs = 1``, one after the other,
   ``--pairs`` times (5; 3 with ``--quick``); per run = (wall of the long
   job - wall of the short one) / (n - 1), the median over the pairs.
   corral's 10,000 runs take less time than its start varies by, so it is
   also measured with ``--corral-runs`` (1,000,000; 200,000 with
   ``--quick``), and that figure is the one compared. Each side's own timer
   of a run's sections in the child (corral ``job.timers.process``,
   suitkaise ``p.timers.full_run``) is shown beside it: it leaves out the
   cycle's own bookkeeping.

The targets (issue 5): corral's per-run overhead at least 10x lower than
suitkaise's, and its start-to-result at least 2x faster.

suitkaise is installed into the running interpreter's environment with pip
when it is missing. It forks its children (``multiprocessing``'s default
start method on Linux up to Python 3.13) and rebuilds the process class in
the child from what it serializes, so its classes need not be importable
there. corral, under a supervisor, forks its children from the supervisor's
zygote (an interpreter that has imported corral) once that is ready: the
first start spawns a fresh interpreter and starts the zygote beside it,
which is why first starts are reported apart. ``corral.start`` without a
supervisor always spawns a fresh interpreter (the classes here live in
``__main__`` and travel by value).

    python benchmarks/process.py                  # both sections (~1 min)
    python benchmarks/process.py --quick          # fewer samples and pairs (~25 s)
    python benchmarks/process.py --section latency --json process.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import psutil

import corral
from _isolated import BUSY_PCT, run_variant
from _peers import corral_source, ensure, version
from _stats import fmt, percentile, table

ANSWER = 42  # what the trivial processes' result() returns
SECTIONS = ("latency", "overhead")
VARIANT_TIMEOUT = 300.0  # seconds after which a variant has hung
LATENCY_TARGET = 2.0  # suitkaise's start-to-result over corral's, at least
OVERHEAD_TARGET = 10.0  # suitkaise's per-run overhead over corral's, at least

#: variant -> (section, label in the tables)
VARIANTS: dict[str, tuple[str, str]] = {
    "latency_corral": (
        "latency",
        "corral     job = await sup.start(Trivial()); await job.result()",
    ),
    "latency_suitkaise": (
        "latency",
        "suitkaise  p = SkTrivial(); p.start(); p.wait(); p.result()",
    ),
    "latency_corral_block": (
        "latency",
        "corral     async with corral.start(Trivial()) as job: await job.result()",
    ),
    "latency_suitkaise_async": (
        "latency",
        "suitkaise  p.start(); await p.result.asynced()()  (asyncio)",
    ),
    "overhead_corral": ("overhead", "corral     sup.start(Empty(), runs=n)"),
    "overhead_corral_long": ("overhead", "corral     the same, more runs"),
    "overhead_suitkaise": ("overhead", "suitkaise  SkEmpty(runs=n).start()"),
}


# -- what the children run ----------------------------------------------------------


class Trivial(corral.Process):
    """One empty run; the result is ANSWER."""

    runs = 1

    def run(self) -> None:
        pass

    def result(self) -> int:
        return ANSWER


class Empty(corral.Process):
    """An empty run, ``runs`` times (given to the constructor)."""

    def run(self) -> None:
        pass


def suitkaise_classes() -> tuple[type[Any], type[Any]]:
    """The peer's two processes: ``SkTrivial()`` and ``SkEmpty(runs)``.

    Defined once suitkaise is importable (it may be installed by this
    script). suitkaise serializes the instance and its class's lifecycle
    methods, and the forked child rebuilds the class from them: it need not
    be importable there.
    """
    skprocess: Any = importlib.import_module("suitkaise.processing").Skprocess

    class SkTrivial(skprocess):  # type: ignore[misc]  # suitkaise: imported at run time
        def __init__(self) -> None:
            self.process_config.runs = 1

        def __run__(self) -> None:
            pass

        def __result__(self) -> int:
            return ANSWER

    class SkEmpty(skprocess):  # type: ignore[misc]
        def __init__(self, runs: int) -> None:
            self.process_config.runs = runs

        def __run__(self) -> None:
            pass

    return SkTrivial, SkEmpty


def latency(first: float, samples: list[float]) -> dict[str, Any]:
    ms = [1000 * s for s in samples]
    return {
        "samples": len(ms),
        "first_ms": 1000 * first,
        "median_ms": statistics.median(ms),
        "p90_ms": percentile(ms, 90),
        "min_ms": min(ms),
        "max_ms": max(ms),
        "samples_ms": ms,
    }


def overhead(
    runs: int, pairs: list[tuple[float, float]], child_mean: list[float]
) -> dict[str, Any]:
    """Per-run figures from (wall of runs=1, wall of runs=n) pairs, in seconds."""
    per_run = [(long - short) / (runs - 1) for short, long in pairs]
    return {
        "runs": runs,
        "pairs": len(pairs),
        "short_ms": 1000 * statistics.median(short for short, _ in pairs),
        "long_ms": 1000 * statistics.median(long for _, long in pairs),
        "per_run_us": 1e6 * statistics.median(per_run),
        "per_run_by_pair_us": [1e6 * v for v in per_run],
        "child_timer_us": 1e6 * statistics.median(child_mean),
    }


async def sample_async(
    once: Callable[[], Awaitable[Any]], samples: int, who: str
) -> dict[str, Any]:
    """Time ``await once()`` (which must give ANSWER): a first call apart, then ``samples``."""
    times = []
    for _ in range(samples + 1):
        t0 = time.perf_counter()
        value = await once()
        times.append(time.perf_counter() - t0)
        expect(value, ANSWER, f"{who}'s result")
    return latency(times[0], times[1:])


def sample(once: Callable[[], Any], samples: int, who: str) -> dict[str, Any]:
    """Time ``once()`` (which must give ANSWER): a first call apart, then ``samples``."""
    times = []
    for _ in range(samples + 1):
        t0 = time.perf_counter()
        value = once()
        times.append(time.perf_counter() - t0)
        expect(value, ANSWER, f"{who}'s result")
    return latency(times[0], times[1:])


def expect(value: Any, wanted: Any, what: str) -> None:
    if value != wanted:
        raise AssertionError(f"{what}: got {value!r}, expected {wanted!r}")


async def latency_corral(p: dict[str, Any]) -> dict[str, Any]:
    async with corral.Supervisor() as sup:

        async def once() -> Any:
            job = await sup.start(Trivial())
            return await job.result()

        figures = await sample_async(once, p["samples"], "corral")
    return figures  # noqa: RET504  (after the block: it could swallow an error, mypy says)


async def latency_corral_block(p: dict[str, Any]) -> dict[str, Any]:
    async def once() -> Any:
        async with corral.start(Trivial()) as job:
            return await job.result()

    return await sample_async(once, p["samples"], "corral")


def latency_suitkaise(p: dict[str, Any]) -> dict[str, Any]:
    sk_trivial, _ = suitkaise_classes()

    def once() -> Any:
        process = sk_trivial()
        process.start()
        process.wait()
        return process.result()

    return sample(once, p["samples"], "suitkaise")  # (its first also starts its Manager)


async def latency_suitkaise_async(p: dict[str, Any]) -> dict[str, Any]:
    sk_trivial, _ = suitkaise_classes()

    async def once() -> Any:
        process = sk_trivial()
        process.start()
        return await process.result.asynced()()

    return await sample_async(once, p["samples"], "suitkaise")


async def overhead_corral(p: dict[str, Any]) -> dict[str, Any]:
    runs = p["runs"]
    child_mean: list[float] = []
    async with corral.Supervisor() as sup:

        async def job_of(n: int) -> float:
            t0 = time.perf_counter()
            job = await sup.start(Empty(), runs=n)
            await job.result()
            elapsed = time.perf_counter() - t0
            expect(job.timers.run.count, n, "corral's runs")
            if n == runs:
                child_mean.append(job.timers.process.mean)
            return elapsed

        await job_of(1)  # warm-up
        pairs = [(await job_of(1), await job_of(runs)) for _ in range(p["pairs"])]
    return overhead(runs, pairs, child_mean)


def overhead_suitkaise(p: dict[str, Any]) -> dict[str, Any]:
    _, sk_empty = suitkaise_classes()
    runs = p["runs"]
    child_mean: list[float] = []

    def job_of(n: int) -> float:
        t0 = time.perf_counter()
        process = sk_empty(n)
        process.start()
        process.wait()
        process.result()
        elapsed = time.perf_counter() - t0
        expect(process.timers.run.num_times, n, "suitkaise's runs")
        if n == runs:
            child_mean.append(process.timers.full_run.mean)
        return elapsed

    job_of(1)  # warm-up: starts suitkaise's Manager process
    pairs = [(job_of(1), job_of(runs)) for _ in range(p["pairs"])]
    return overhead(runs, pairs, child_mean)


ASYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "latency_corral": latency_corral,
    "latency_corral_block": latency_corral_block,
    "overhead_corral": overhead_corral,
    "overhead_corral_long": overhead_corral,
}
SYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "latency_suitkaise": latency_suitkaise,
    "overhead_suitkaise": overhead_suitkaise,
}


def child(variant: str, params: dict[str, Any], out: str) -> None:
    if variant in SYNC_VARIANTS:
        result = SYNC_VARIANTS[variant](params)
    elif variant == "latency_suitkaise_async":
        result = asyncio.run(latency_suitkaise_async(params))
    else:
        result = corral.run(ASYNC_VARIANTS[variant], params)
    with open(out, "w") as f:
        json.dump(result, f)


# -- the host: run each variant in a fresh interpreter, then report ------------------


def measure(variant: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its figures, or {"error": ...}.

    The interpreter gets a session of its own: whatever it leaves running
    (a child, suitkaise's Manager) is killed with its process group.
    """
    if variant == "overhead_corral_long":
        params = {**params, "runs": params["corral_runs"]}
    return run_variant(__file__, variant, params, timeout=VARIANT_TIMEOUT)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def figure(results: dict[str, dict[str, Any]], variant: str, key: str) -> float | None:
    result = results.get(variant)
    return None if result is None or "error" in result else float(result[key])


def check(checks: list[dict[str, Any]], what: str, value: float | None, bound: float) -> list[str]:
    verdict = "n/a" if value is None else ("PASS" if value >= bound else "MISS")
    checks.append({"check": what, "value": value, "target": f">= {bound:g}", "verdict": verdict})
    return [what, fmt(value, ".2f", "x"), f">= {bound:g}x", verdict]


def report_latency(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    print(
        f"\n== 1. Start-to-result: a runs=1 process, empty run(), result() returns {ANSWER}; "
        f"{params['samples']} one after another (after a first start, shown apart)"
    )
    base = figure(results, "latency_corral", "median_ms")
    rows = []
    for variant, (section, label) in VARIANTS.items():
        if section != "latency" or variant not in results:
            continue
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", "", "", ""])
            continue
        median = float(result["median_ms"])
        rows.append(
            [
                label,
                fmt(median),
                fmt(result["p90_ms"]),
                f"{result['min_ms']:.1f}-{result['max_ms']:.1f}",
                fmt(result["first_ms"]),
                fmt(ratio(median, base), ".2f", "x"),
            ]
        )
    table(["variant", "median ms", "p90 ms", "range ms", "first ms", "vs corral"], rows)
    print()
    theirs = figure(results, "latency_suitkaise", "median_ms")
    table(
        ["check", "value", "target", "verdict"],
        [
            check(
                checks, "start-to-result: suitkaise / corral", ratio(theirs, base), LATENCY_TARGET
            )
        ],
    )


def report_overhead(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    print(
        f"\n== 2. Per-run overhead: an empty run(), runs=n against runs=1, {params['pairs']} "
        "pairs; per run = (wall of n runs - wall of 1) / (n - 1), the median of the pairs"
    )
    # corral's long job: its n runs stand out of the start's noise (the n may not)
    base = figure(results, "overhead_corral_long", "per_run_us")
    if base is None:
        base = figure(results, "overhead_corral", "per_run_us")
    rows = []
    for variant, (section, label) in VARIANTS.items():
        if section != "overhead" or variant not in results:
            continue
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", "", "", "", "", ""])
            continue
        per_run = float(result["per_run_us"])
        rows.append(
            [
                label,
                f"{result['runs']:,}",
                fmt(result["short_ms"]),
                fmt(result["long_ms"]),
                fmt(per_run, ".2f"),
                " / ".join(f"{v:.2f}" for v in result["per_run_by_pair_us"]),
                fmt(result["child_timer_us"], ".2f"),
                fmt(ratio(per_run, base), ".1f", "x"),
            ]
        )
    table(
        [
            "variant",
            "n",
            "runs=1 ms",
            "runs=n ms",
            "per run us",
            "by pair us",
            "child's timer us",
            "vs corral",
        ],
        rows,
    )
    print(
        "(child's timer: the mean of each side's own timer of a run's sections in the child,"
        " corral\njob.timers.process, suitkaise timers.full_run; vs corral: over corral's "
        "per-run figure with the most runs)\n"
    )
    theirs = figure(results, "overhead_suitkaise", "per_run_us")
    table(
        ["check", "value", "target", "verdict"],
        [
            check(
                checks,
                "per-run overhead: suitkaise / corral",
                ratio(theirs, base),
                OVERHEAD_TARGET,
            )
        ],
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer samples and pairs")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default both)",
    )
    parser.add_argument("--samples", type=int, help="start-to-result samples (20; 8 --quick)")
    parser.add_argument("--runs", type=int, default=10_000, help="runs of the long jobs (10,000)")
    parser.add_argument(
        "--corral-runs",
        type=int,
        help="runs of corral's longer job (1,000,000; 200,000 with --quick)",
    )
    parser.add_argument("--pairs", type=int, help="per-run overhead pairs (5; 3 --quick)")
    parser.add_argument(
        "--settle",
        type=float,
        help=f"before each variant, wait up to this many seconds for the machine to be\n"
        f"under {BUSY_PCT:g}%% busy (default 5; 2 with --quick)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, json.loads(args.params), args.out)
        return
    if args.runs < 2 or (args.corral_runs is not None and args.corral_runs < 2):
        sys.exit("--runs and --corral-runs are at least 2")
    params: dict[str, Any] = {
        "quick": args.quick,
        "samples": args.samples or (8 if args.quick else 20),
        "runs": args.runs,
        "corral_runs": args.corral_runs or (200_000 if args.quick else 1_000_000),
        "pairs": args.pairs or (3 if args.quick else 5),
        "settle": args.settle if args.settle is not None else (2.0 if args.quick else 5.0),
    }
    sections = args.section or list(SECTIONS)
    notes = []
    peer = ensure("suitkaise")
    if peer:
        notes.append(f"suitkaise not measured: {peer}")
        print(f"  {notes[-1]}", file=sys.stderr)
    print(
        f"corral.Process against suitkaise Skprocess: Python {sys.version.split()[0]}, "
        f"{platform.machine()}, {psutil.cpu_count()} cores{' (quick)' if args.quick else ''}"
        f"\ncorral {corral.__version__} from {corral_source()}; suitkaise {version('suitkaise')}"
        f"; uvloop {version('uvloop')}"
        f"\nload average at start {os.getloadavg()[0]:.2f} (other work on the machine skews "
        "every figure; the ratios less so)",
        flush=True,
    )
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    for section in sections:
        for variant, (at, _) in VARIANTS.items():
            if at == section and not (peer and "suitkaise" in variant):
                results[variant] = measure(variant, params)
        (report_latency if section == "latency" else report_overhead)(results, params, checks)
        sys.stdout.flush()
    summarize(results, checks, notes, started)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": sys.version,
                    "corral": corral_source(),
                    "suitkaise": version("suitkaise"),
                    "cores": psutil.cpu_count(),
                    "params": params,
                    "results": results,
                    "checks": checks,
                    "notes": notes,
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")


def summarize(
    results: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
    notes: list[str],
    started: float,
) -> None:
    for variant, result in results.items():
        if result.get("lingered"):
            notes.append(f"{variant} left processes running (killed): {result['lingered']}")
        if result.get("busy_before_pct", 0) > BUSY_PCT:
            notes.append(
                f"{variant}: the machine was {result['busy_before_pct']:.0f}% busy (all cores) "
                "just before it was measured"
            )
    problems = [(v, r) for v, r in results.items() if "error" in r or r.get("stderr")]
    if problems or notes:
        print("\n== Problems and notes")
        for note in notes:
            print(f"- {note}")
        for variant, result in problems:
            print(f"- {variant}: {result.get('error', 'ran, but wrote to stderr')}")
            for line in result.get("stderr", "").strip().splitlines()[-15:]:
                print(f"    {line}")
    passed = sum(c["verdict"] == "PASS" for c in checks)
    missed = [c["check"] for c in checks if c["verdict"] == "MISS"]
    print(
        f"\n{passed} targets met, {len(missed)} missed"
        + "".join(f"\n  MISS {what}" for what in missed)
        + f"\n(total {time.perf_counter() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
