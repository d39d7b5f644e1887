"""The generated part of docs/benchmarks.md: markdown from the benchmarks' JSON figures.

Pure: no benchmark runs here, nothing is read or written. ``render(run)``
makes the section from a run (see ``report.py``: the machine, each
benchmark's status and figures, the plots drawn); ``splice(document,
section)`` puts it between the markers of the hand-written page.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from _stats import fmt, rate

BEGIN = "<!-- report:begin -->"
END = "<!-- report:end -->"
#: The benchmarks, in the order they run and are shown: name -> title.
TITLES = {
    "interval_workers": "Interval workers",
    "rpc": "Calls into a child process",
    "crash": "A child killed with 1,000 calls in flight",
    "control_loop": "Control loop",
    "process": "Process",
    "pool": "Pool",
    "soak": "Soak",
}
STDERR_LINES = 15  # of a failed benchmark's error output, shown


# -- corral against a peer: one row ------------------------------------------------------


@dataclass
class Versus:
    """One figure of corral's against one peer's.

    ``lower``: lower is better (a time, CPU); the factor is then the peer's
    figure over corral's, else corral's over the peer's, so that above 1x
    corral is ahead either way. ``why``: the peer was not measured, and why.
    """

    measure: str
    ours: float | None
    peer: str
    theirs: float | None
    show: Callable[[float], str]
    lower: bool = True
    words: tuple[str, str] = ("faster", "slower")
    why: str | None = None
    ours_note: str = ""
    theirs_note: str = ""


def factor(row: Versus) -> float | None:
    """How far ahead corral is (above 1) or behind (below 1); None if not known."""
    if row.ours is None or row.theirs is None or row.ours <= 0 or row.theirs <= 0:
        return None
    return row.theirs / row.ours if row.lower else row.ours / row.theirs


def times(value: float) -> str:
    """A factor: 3 significant figures at most (1.35x, 21.4x, 194x)."""
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x" if value < 100 else f"{value:.0f}x"


def verdict(row: Versus) -> str:
    """ "**1.35x faster**" where corral is ahead, "1.54x slower" where it is behind."""
    value = factor(row)
    ahead, behind = row.words
    if value is None:
        return zeros(row)
    if round(value, 2) == 1:
        return "about the same"
    if value >= 1:
        return f"**{times(value)} {ahead}**"
    return f"{times(1 / value)} {behind}"


def zeros(row: Versus) -> str:
    """The verdict where a figure is 0 (no factor): none skipped against some, say."""
    if row.ours is None or row.theirs is None or min(row.ours, row.theirs) < 0:
        return "-"
    if row.ours == row.theirs:
        return "the same"
    ahead, behind = row.words
    if (row.ours < row.theirs) == row.lower:
        return f"**{ahead}** (corral: {row.show(row.ours)})"
    return f"{behind} (the peer: {row.show(row.theirs)})"


def versus_table(rows: list[Versus]) -> list[str]:
    """corral's figures against the peers': a markdown table, a measure's name once."""
    lines = ["| measure | corral | peer | peer's figure | corral is |", "|---|---|---|---|---|"]
    last = None
    for row in rows:
        first = row.measure != last
        last = row.measure
        ours = (fmt_value(row.ours, row.show) + row.ours_note) if first else ""
        if row.why is not None:
            theirs, said = f"not measured: {row.why}", "-"
        else:
            theirs, said = fmt_value(row.theirs, row.show) + row.theirs_note, verdict(row)
        cells = [row.measure if first else "", ours, row.peer, theirs, said]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def fmt_value(value: float | None, show: Callable[[float], str]) -> str:
    return "-" if value is None else show(value)


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    """A plain markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def unit(spec: str, suffix: str) -> Callable[[float], str]:
    """A formatter: ``value`` with ``spec`` and ``suffix``."""
    return lambda value: f"{value:{spec}}{suffix}"


def per_s(value: float) -> str:
    return f"{rate(value)}/s"


def micro(value: float) -> str:
    """Microseconds, in ms from 1,000 µs."""
    return f"{value:.1f} µs" if value < 1000 else f"{value / 1000:.2f} ms"


def milli(seconds: float) -> str:
    """Seconds, in ms."""
    return f"{1000 * seconds:.1f} ms"


MS = unit(".1f", " ms")
PCT = unit(".0%", "")


# -- figures out of a benchmark's JSON ---------------------------------------------------


def get(tree: Any, *keys: str) -> Any:
    """``tree[k1][k2]...``, or None where a key is missing or a result is an error."""
    for key in keys:
        if not isinstance(tree, dict) or key not in tree or "error" in tree:
            return None
        tree = tree[key]
    return None if isinstance(tree, dict) and "error" in tree else tree


def pick(*keys: str) -> Callable[[Any], float]:
    """A reader of ``result[k1][k2]...``."""

    def read(result: Any) -> float:
        for key in keys:
            result = result[key]
        return float(result)

    return read


def missing(result: Any, notes: list[str], package: str) -> str | None:
    """Why a peer has no figure: its error, a note naming its package, or "not run"."""
    if isinstance(result, dict) and "error" in result:
        return str(result["error"])
    if result is not None:
        return None
    said = next((note for note in notes if package in note), "not run")
    return said.split("not measured: ", 1)[-1]  # (the note's own "X not measured: why")


def peer_rows(
    measure: str,
    ours: float | None,
    peers: list[tuple[str, Any, str]],
    key: Callable[[Any], float | None],
    notes: list[str],
    *,
    note: Callable[[Any], str] | None = None,
    **style: Any,
) -> Iterator[Versus]:
    """A row per peer: (label, its result or None, the package that names it in notes).

    ``note(result)``: said after a measured peer's figure (and corral's, given as
    ``ours_note`` in ``style``).
    """
    for label, result, package in peers:
        why = missing(result, notes, package)
        theirs = None if why else key(result)
        said = note(result) if note is not None and why is None else ""
        yield Versus(measure, ours, label, theirs, why=why, theirs_note=said, **style)


#: (measure, key of the figure in each result, its format, words): one row per peer
Metric = tuple[str, str, Callable[[float], str], tuple[str, str]]
LOWER = ("lower", "higher")
LESS_CPU = ("less CPU", "more CPU")


def metric_rows(
    metrics: list[Metric], ours: Any, peers: list[tuple[str, Any, str]], notes: list[str]
) -> list[Versus]:
    """For each metric (lower is better), corral's ``ours[key]`` against each peer's."""
    rows: list[Versus] = []
    for measure, key, show, words in metrics:
        rows += peer_rows(measure, get(ours, key), peers, pick(key), notes, show=show, words=words)
    return rows


# -- one section per benchmark ------------------------------------------------------------

Section = tuple[list[str], str]  # the markdown lines, and a headline for the summary


def interval_workers(figures: dict[str, Any], notes: list[str]) -> Section:
    p, results = figures["params"], figures["results"]
    ours, naive = results.get("corral"), results.get("naive")
    lines = [
        f"{p['workers']:,} async interval workers at {p['hz']:g} Hz for {p['duration']:g} s on "
        f"{p['loop']}, against the naive version: a task per worker sleeping to absolute "
        "deadlines.",
        "",
    ]
    rows = metric_rows(
        [
            ("lateness p50", "late_p50_ms", unit(".2f", " ms"), LOWER),
            ("lateness p99", "late_p99_ms", unit(".2f", " ms"), LOWER),
            ("lateness max after start-up", "late_steady_max_ms", unit(".2f", " ms"), LOWER),
            ("CPU (100% = a core)", "cpu_pct", unit(".1f", "%"), LESS_CPU),
            ("RSS", "rss_mb", unit(".1f", " MB"), ("less memory", "more memory")),
        ],
        ours,
        [("naive: a task per worker", naive, "naive")],
        notes,
    )
    lines += versus_table(rows)
    counts = [
        f"{name} delivered {r['delivered']:,} ticks and counted {r['skipped']:,} as skipped "
        f"({100 * (r['delivered'] + r['skipped']) / r['expected']:.2f}% of those due)"
        for name, r in (("corral", ours), ("the naive version", naive))
        if r is not None and "error" not in r and r.get("expected")
    ]
    if counts:
        lines += ["", "; ".join(counts) + "."]
    p99, steady, cpu = rows[1], rows[2], rows[3]
    return lines, (
        f"lateness p99 {verdict(p99)}, max after start-up {verdict(steady)} than naive; "
        f"{verdict(cpu)}"
    )


RPC_PEERS = [  # variant, loops it runs on ("-": once, loop-independent), label, package
    ("rt_floor", None, "(a) hand-written asyncio socketpair echo", "rt_floor"),
    ("rt_floor_uvchild", ("asyncio",), "(a\\*) the same, uvloop child", "rt_floor_uvchild"),
    ("rt_pipe", "-", "(b) `multiprocessing.Pipe`, blocking", "rt_pipe"),
    ("rt_anyio", None, "(c) `anyio.to_process.run_sync`", "rt_anyio"),
    ("rt_executor", None, "(d) `run_in_executor(ProcessPoolExecutor(1))`", "rt_executor"),
    ("rt_aiomp", None, "(e) aiomultiprocess `Pool.apply`", "aiomultiprocess"),
]


def rpc(figures: dict[str, Any], notes: list[str]) -> Section:
    p, results = figures["params"], figures["results"]
    loops: list[str] = figures["loops"]

    def result(variant: str, loop: str) -> Any:
        return results.get(variant, {}).get(loop)

    lines = [
        "`await proxy.echo(x)` on a spawned child, one call at a time (a 32-byte `bytes`; "
        f"{p['callers']} concurrent callers for throughput, {p['big_mib']} MiB for the large "
        "payload), on each host loop.",
        "",
    ]
    rows: list[Versus] = []
    heads: dict[str, Versus] = {}
    for loop in loops:
        ours = result("rt_corral", loop)
        peers = [
            (label, result(variant, "-" if at == "-" else loop), package)
            for variant, at, label, package in RPC_PEERS
            if at in (None, "-") or loop in at
        ]
        p99 = get(ours, "p99_us")
        for row in peer_rows(
            f"round trip, median ({loop} host)",
            get(ours, "median_us"),
            peers,
            pick("median_us"),
            notes,
            note=lambda r: f" (p99 {micro(r['p99_us'])})",
            ours_note="" if p99 is None else f" (p99 {micro(p99)})",
            show=micro,
        ):
            heads.setdefault(f"{loop} {row.peer[:3]}", row)
            rows.append(row)
        rows += peer_rows(
            f"throughput, {p['callers']} callers ({loop} host)",
            get(result("tp_corral", loop), "calls_per_s"),
            [
                ("hand-written pipelined echo", result("tp_pipelined", loop), "tp_pipelined"),
                *(
                    [("the same, uvloop child", result("tp_pipelined_uvchild", loop), "uvchild")]
                    if loop == "asyncio"
                    else []
                ),
            ],
            pick("calls_per_s"),
            notes,
            show=unit(",.0f", " calls/s"),
            lower=False,
        )
        rows += peer_rows(
            f"{p['big_mib']} MiB echoed ({loop} host)",
            get(result("big_corral", loop), "gb_per_s"),
            [("raw blocking socketpair copy", result("big_raw", "-"), "big_raw")],
            pick("gb_per_s"),
            notes,
            show=unit(".2f", " GB/s"),
            lower=False,
        )
        rows += peer_rows(
            f"spawn-to-ready ({loop} host; forked from the zygote)",
            get(result("spawn_corral", loop), "median_ms"),
            [
                (
                    '`python -c "import corral"` (a fresh interpreter: a spawn without a zygote)',
                    result("spawn_import", "-"),
                    "spawn_import",
                )
            ],
            pick("median_ms"),
            notes,
            show=MS,
        )
    lines += versus_table(rows)
    first = loops[0] if loops else "uvloop"
    executor, floor = heads.get(f"{first} (d)"), heads.get(f"{first} (a)")
    headline = ", ".join(
        f"{verdict(row)} than {name}"
        for row, name in ((executor, "`run_in_executor`"), (floor, "the hand-written floor"))
        if row is not None
    )
    return lines, f"round trip ({first}) {headline}"


def crash(figures: dict[str, Any], notes: list[str]) -> Section:
    results, p = figures["results"], figures["params"]
    ours = get(results, "corral", "median_ms")
    rows = list(
        peer_rows(
            f"from the SIGKILL to the last caller's error (median of {p['rounds']})",
            ours,
            [("`ProcessPoolExecutor(1)`: `BrokenProcessPool`", results.get("executor"), "ppe")],
            pick("median_ms"),
            notes,
            show=MS,
        )
    )
    rows.append(
        Versus(
            rows[0].measure,
            ours,
            "`multiprocessing.Pool`",
            None,
            MS,
            why="its callers wait forever (cpython issue 96061)",
        )
    )
    lines = [
        f"{p['calls']:,} calls in flight on a proxy when its child is SIGKILLed: how soon every "
        "caller has raised `WorkerCrashed`.",
        "",
        *versus_table(rows),
        "",
        f"Rounds, ms: corral {', '.join(f'{v:.1f}' for v in results['corral']['rounds_ms'])}; "
        f"`ProcessPoolExecutor` {', '.join(f'{v:.1f}' for v in results['executor']['rounds_ms'])}."
        f" Target: within {figures['target_ms']:g} ms, "
        + ("**met**." if figures["verdict"] == "PASS" else "**missed**."),
    ]
    return lines, f"every caller knows in {fmt(ours)} ms, {verdict(rows[0])} than the executor"


CONTROL_NAMES = {"corral": "corral", "avena": "(a)", "absolute": "(b)"}
CONTROL_NAMES["corral_other"] = "corral `priority=0`"
CONTROL_PEERS = [
    ("(a) `sleep(period - elapsed)`", "avena"),
    ("(b) `sleep` to `t0 + k * period`", "absolute"),
]


def control_loop(figures: dict[str, Any], notes: list[str]) -> Section:
    p, results = figures["params"], figures["results"]
    ours = results.get("corral")
    peers = [(label, results.get(variant), variant) for label, variant in CONTROL_PEERS]
    lines = [
        f"A {p['hz']:,g} Hz loop with a trivial `step()`, pinned to cpu {p['cpu']}, "
        f"{p['duration']:g} s per variant, while the host drives {p['callers']} RPC callers "
        f"and {p['burners']} processes burn CPU; the peers get the same pinning and priority.",
        "",
    ]
    rows = metric_rows(
        [
            ("lateness p50", "p50_us", unit(".2f", " µs"), LOWER),
            ("lateness p99", "p99_us", unit(",.1f", " µs"), LOWER),
            ("lateness p99.9", "p999_us", unit(",.1f", " µs"), LOWER),
            ("lateness max", "max_us", unit(",.1f", " µs"), LOWER),
            ("skipped ticks per 1,000", "skipped_per_1000", unit(".2f", ""), ("fewer", "more")),
            ("loop CPU (100% = a core)", "cpu_percent", unit(".1f", "%"), LESS_CPU),
        ],
        ours,
        peers,
        notes,
    )
    lines += versus_table(rows)
    other = results.get("corral_other")
    said = []
    if other is not None and "error" not in other:
        said.append(
            f"corral with `priority=0` ({other['policy']}): p99 {other['p99_us']:.1f} µs, "
            f"{other['skipped_per_1000']:.2f} skipped per 1,000."
        )
    targets = figures.get("targets", [])
    met = [t for t in targets if t["verdict"] == "met"]
    missed = [t["target"] for t in targets if t["verdict"] == "MISSED"]
    if targets:
        said.append(
            f"Targets: {len(met)} of {len(targets)} met"
            + (f" (missed: {'; '.join(missed)})." if missed else ".")
        )
    busy = [
        f"{CONTROL_NAMES.get(variant, variant)} ({r['foreign_cpu_percent']:.0f}% of a core)"
        for variant, r in results.items()
        if r.get("foreign_cpu_percent", 0) > 5.0
    ]
    if busy:
        said.append(f"Other processes on the machine used CPU during: {', '.join(busy)}.")
    if said:
        lines += ["", " ".join(said)]
    p99 = [row for row in rows if row.measure == "lateness p99"]
    return lines, "p99 lateness " + ", ".join(
        f"{verdict(row)} than {row.peer.split()[0]}" for row in p99
    )


def process(figures: dict[str, Any], notes: list[str]) -> Section:
    results = figures["results"]
    rows = list(
        peer_rows(
            "start-to-result, median",
            get(results, "latency_corral", "median_ms"),
            [
                (
                    "suitkaise `p.start(); p.wait(); p.result()`",
                    results.get("latency_suitkaise"),
                    "suitkaise",
                ),
                (
                    "suitkaise `await p.result.asynced()()`",
                    results.get("latency_suitkaise_async"),
                    "suitkaise",
                ),
            ],
            pick("median_ms"),
            notes,
            show=MS,
        )
    )
    long = results.get("overhead_corral_long")
    ours = get(long, "per_run_us") or get(results, "overhead_corral", "per_run_us")
    rows += peer_rows(
        "per-run overhead (empty `run()`)",
        ours,
        [("suitkaise `SkEmpty(runs=n)`", results.get("overhead_suitkaise"), "suitkaise")],
        pick("per_run_us"),
        notes,
        show=unit(".2f", " µs"),
    )
    lines = [
        "`corral.Process` under a supervisor against suitkaise's `Skprocess`: a trivial "
        "process from the start call to its result, and the cost of each empty run.",
        "",
        *versus_table(rows),
    ]
    block = get(results, "latency_corral_block", "median_ms")
    if block is not None:
        lines += [
            "",
            f"Without a supervisor (`async with corral.start(...)`, a fresh interpreter each "
            f"time): {block:.1f} ms.",
        ]
    return lines, f"start-to-result {verdict(rows[0])}, per-run overhead {verdict(rows[-1])}"


POOL_PEERS = [  # variant suffix, label, package
    ("mp", "multiprocessing `Pool.map`", "multiprocessing"),
    ("ppe", "`ProcessPoolExecutor.map`", "ProcessPoolExecutor"),
    ("loky", "loky", "loky"),
    ("aiomp", "aiomultiprocess", "aiomultiprocess"),
    ("anyio", "anyio `to_process.run_sync` per item", "anyio"),
]


def pool(figures: dict[str, Any], notes: list[str]) -> Section:
    p, results = figures["params"], figures["results"]

    def peers(section: str) -> list[tuple[str, Any, str]]:
        return [
            (label, results.get(f"{section}_{suffix}"), package)
            for suffix, label, package in POOL_PEERS
            if f"{section}_{suffix}" in results or section in ("tiny", "ms")
        ]

    sections = {key.split("_", 1)[0] for key in results}
    rows: list[Versus] = []
    if "tiny" in sections:
        rows += peer_rows(
            f"tiny tasks (`x * 2`, {p['items']:,} items)",
            get(results, "tiny_corral_map", "tasks_per_s"),
            peers("tiny"),
            pick("tasks_per_s"),
            notes,
            show=per_s,
            lower=False,
        )
    if "ms" in sections:
        rows += peer_rows(
            "1 ms busy-spin tasks: efficiency",
            get(results, "ms_corral", "spin", "efficiency"),
            peers("ms"),
            pick("spin", "efficiency"),
            notes,
            show=PCT,
            lower=False,
            words=("better", "worse"),
        )
    if "lambda" in sections:
        wrote = get(results, "lambda_corral", "written_bytes")
        rows += peer_rows(
            "a closure over 1 MB, 10,000 items: wall",
            get(results, "lambda_corral", "wall_s"),
            [
                (
                    "multiprocessing (a `partial`: the lambda will not pickle)",
                    results.get("lambda_mp"),
                    "lambda_mp",
                ),
                ("loky", results.get("lambda_loky"), "loky"),
            ],
            pick("wall_s"),
            notes,
            note=lambda r: f", wrote {r['written_bytes'] / 1e6:.1f} MB",
            ours_note="" if wrote is None else f", wrote {wrote / 1e6:.1f} MB",
            show=milli,
        )
    lines = [
        f"`corral.Pool` against the process pools people use, {p['workers']} workers each.",
        "",
        *versus_table(rows),
    ]
    tiny = [row for row in rows if row.measure.startswith("tiny")]
    headline = "tiny tasks: " + ", ".join(f"{verdict(row)} than {row.peer}" for row in tiny[:3])
    if "sizes" in sections:
        lines += ["", *sizes_table(results)]
    crossover = next(
        (c for c in figures.get("checks", []) if str(c.get("check", "")).startswith("dask")),
        None,
    )
    if crossover is not None:
        lines += [
            "",
            "Dask: the `DaskBackend` on a `LocalCluster` reaches 90% of the local pool's "
            f"throughput from tasks of {crossover.get('shown', '-')} on.",
        ]
    return lines, headline if tiny else "-"


SIZES_PEERS = [
    ("sizes_mp", "multiprocessing"),
    ("sizes_ppe", "ProcessPoolExecutor"),
    ("sizes_loky", "loky"),
    ("sizes_aiomp", "aiomultiprocess"),
]


def sizes_table(results: dict[str, Any]) -> list[str]:
    """Section 5 of pool.py: items/s at each task size, corral's against each pool's."""
    shown = [(v, name) for v, name in SIZES_PEERS if v in results]
    corral = results.get("sizes_corral")
    sizes = list(get(corral, "sizes") or {})
    for variant, _ in shown:
        sizes += [s for s in get(results[variant], "sizes") or {} if s not in sizes]
    rows = []
    for size in sorted(sizes, key=float):
        ours = get(corral, "sizes", size, "tasks_per_s")
        cells = [f"{size} ms", fmt_value(ours, per_s)]
        for variant, _ in shown:
            theirs = get(results[variant], "sizes", size, "tasks_per_s")
            if theirs is None:
                cells.append("-")
                continue
            row = Versus("", ours, "", theirs, per_s, lower=False)
            cells.append(f"{per_s(theirs)} ({verdict(row)})")
        rows.append(cells)
    return [
        "Throughput against the work of each item (busy spin), items/s of the median map; "
        "in brackets, how corral compares (its items/s over the pool's):",
        "",
        *table(["task", "corral", *(name for _, name in shown)], rows),
    ]


def soak(figures: dict[str, Any], notes: list[str]) -> Section:
    calls, rss = figures["calls"], figures["rss_mb"]
    by_kind = figures.get("recovery_by_kind_ms", {})
    rows = [
        ["calls made", f"{calls['calls']:,}"],
        ["ok", f"{calls['ok']:,}"],
        ["failed by a crash (`WorkerCrashed`)", f"{calls['crashed']:,}"],
        ["**lost**", f"**{calls['lost']:,}**"],
        ["raised something unexpected", f"{calls['unexpected']:,}"],
        ["kills, restarts", f"{figures['kills']:,}, {figures['restarts']:,}"],
        [
            "recovery after a kill: p50, p99, max",
            f"{fmt(figures['recovery_p50_ms'], '.0f')}, {fmt(figures['recovery_p99_ms'], '.0f')}"
            f", {fmt(figures['recovery_max_ms'], '.0f')} ms",
        ],
        *(
            [
                f"recovery of a {kind}: p50, max",
                f"{t['p50']:.0f}, {t['max']:.0f} ms ({t['count']} kill{'s' * (t['count'] != 1)})",
            ]
            for kind, t in by_kind.items()
        ),
        [
            "host RSS: baseline, last",
            f"{fmt(rss['first'])}, {fmt(rss['last'])} MB ({fmt(rss['growth_pct'], '+.1f')}%)",
        ],
        ["host fds: baseline, last", f"{figures['fds']['first']}, {figures['fds']['last']}"],
        ["processes left", f"{figures['processes_left']}"],
    ]
    problems = figures.get("problems", [])
    lines = [
        f"{fmt(figures['duration_s'], '.0f')} s of mixed load under one supervisor, a child "
        f"SIGKILLed every {figures['kill_every_s']:g} s (no peer: the count is the result).",
        "",
        *table(["", "count"], rows),
        "",
        f"Problems: {'; '.join(problems) if problems else 'none'} "
        f"(**{'FAIL' if problems else 'PASS'}**).",
    ]
    headline = (
        f"{calls['calls']:,} calls, {calls['lost']} lost, {figures['kills']} kills, "
        f"{'FAIL' if problems else 'PASS'}"
    )
    return lines, headline


RENDERERS: dict[str, Callable[[dict[str, Any], list[str]], Section]] = {
    "interval_workers": interval_workers,
    "rpc": rpc,
    "crash": crash,
    "control_loop": control_loop,
    "process": process,
    "pool": pool,
    "soak": soak,
}


# -- the whole section --------------------------------------------------------------------


def when(iso: str) -> str:
    """An ISO date and time, shorter: 2026-11-22 14:41 UTC."""
    try:
        return datetime.datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return iso


def duration(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def render(run: dict[str, Any], anchors: dict[str, str] | None = None) -> str:
    """The generated section (markers excluded) for ``run``; ``anchors``: name -> "#slug"
    of the hand-written section that says how each benchmark measures."""
    anchors = anchors or {}
    m = run["machine"]
    packages = m.get("packages", {})
    loop = f"uvloop {packages['uvloop']}" if "uvloop" in packages else "asyncio"
    only = f"--only {' '.join(run['only'])}" if run.get("only") else ""
    options = (" --quick" if run["quick"] else "") + (f" {only}" if only else "")
    lines = [
        "## Latest run",
        "",
        f"Generated by `python benchmarks/report.py{options}` (`make bench"
        + ("-quick" if run["quick"] else "")
        + (f" BENCH_ARGS='{only}'" if only else "")
        + "`); the sections after it are written by hand.",
        "",
        f"- **date**: {when(m['date'])}; {'a quick run' if run['quick'] else 'a full run'}, "
        f"{duration(run['wall_s'])}",
        f"- **machine**: {m['cores']} x {m['cpu_model'] or 'unknown CPU'}, Linux {m['kernel']}; "
        f"load average {run['load_average'][0]:.2f} at the start, "
        f"{run['load_average'][1]:.2f} at the end",
        f"- **Python**: {m['python']}; **event loop**: {loop} (asyncio where a row says so), "
        f"anyio {packages.get('anyio', '?')}",
        f"- **corral**: {m['corral']}, commit {m['corral_source']}",
        "",
        "Where a ratio is given, corral's figure is set against the peer's so that above 1x "
        "corral is ahead: the peer's time over corral's, or corral's rate over the peer's, "
        "named by what it means (faster, lower, fewer). Both are measured in the same run on "
        "the same machine.",
        "",
    ]
    summary = []
    sections = []
    for name, title in TITLES.items():
        bench = run["benchmarks"].get(name)
        if bench is None:
            continue
        body, headline = bench_section(name, bench, run.get("plots", {}).get(name, []))
        link = f"[{title}](#{slug(title)})"
        status = "ok" if bench["status"] == "ok" else f"**{bench['status']}**"
        summary.append([link, status, duration(bench["wall_s"]), headline])
        more = f" ([how it is measured]({anchors[name]}))" if name in anchors else ""
        sections += ["", f"### {title}", "", f"`benchmarks/{name}.py`{more}", "", *body]
    lines += table(["benchmark", "status", "time", "headline"], summary) + sections
    return "\n".join(lines).rstrip() + "\n"


def bench_section(name: str, bench: dict[str, Any], plots: list[list[str]]) -> Section:
    """One benchmark's lines: its failure if it failed, its figures if it wrote any."""
    lines: list[str] = []
    headline = "-"
    if bench["status"] != "ok":
        lines += [f"**{bench['status'].capitalize()}**: {bench['why']}."]
        tail = bench.get("stderr_tail", [])[-STDERR_LINES:]
        if tail:
            lines += ["", "The last lines of its error output:", "", "```text", *tail, "```"]
        lines.append("")
        headline = bench["why"]
    notes = list(bench.get("notes", []))
    figures = bench.get("figures")
    if figures is not None:
        notes += figures.get("notes", [])
        try:
            body, said = RENDERERS[name](figures, notes)
        except (KeyError, TypeError, ValueError, ZeroDivisionError, StopIteration) as error:
            body, said = [f"Its figures could not be read: {type(error).__name__}: {error}."], "-"
        lines += body
        if bench["status"] == "ok":
            headline = said
    for alt, path in plots:
        lines += ["", f"![{alt}]({path})"]
    if notes:
        lines += ["", *(f"- {note}" for note in condensed(notes))]
    return lines, headline


BUSY_NOTE = re.compile(r"^(\w+): the machine was (\d+)% busy \(all cores\) just before")


def condensed(notes: list[str]) -> list[str]:
    """``notes`` once each, the variants measured on a busy machine in one note."""
    busy = [match.groups() for note in notes if (match := BUSY_NOTE.match(note))]
    kept = [note for note in dict.fromkeys(notes) if not BUSY_NOTE.match(note)]
    if busy:
        kept.append(
            "measured just after the machine was busy (other work, over a quarter of its "
            "cores): " + ", ".join(f"{variant} ({pct}%)" for variant, pct in busy)
        )
    return kept


def slug(title: str) -> str:
    """The anchor Python-Markdown's toc gives a heading (its default slugify)."""
    text = re.sub(r"`([^`]*)`", r"\1", title)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors_of(document: str) -> dict[str, str]:
    """The hand-written section of each benchmark: name -> "#anchor" (its ``##`` heading
    names ``benchmarks/NAME.py``)."""
    found: dict[str, str] = {}
    for heading in re.findall(r"^## (.+)$", strip(document), re.MULTILINE):
        match = re.search(r"benchmarks/(\w+)\.py", heading)
        if match and match.group(1) in TITLES:
            found.setdefault(match.group(1), f"#{slug(heading)}")
    return found


# -- the page -----------------------------------------------------------------------------


def strip(document: str) -> str:
    """``document`` without its generated section."""
    start, end = document.find(BEGIN), document.find(END)
    if start < 0 or end < start:
        return document
    return document[:start] + document[end + len(END) :]


def splice(document: str, section: str) -> str:
    """``document`` with ``section`` between the markers; the markers are placed after the
    intro (before the first ``##`` heading) when it has none. Nothing else changes."""
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    start, end = document.find(BEGIN), document.find(END)
    if start >= 0 and end > start:
        return document[:start] + block + document[end + len(END) :]
    heading = re.search(r"^## ", document, re.MULTILINE)
    if heading is None:
        return document.rstrip() + "\n\n" + block + "\n"
    at = heading.start()
    return document[:at].rstrip() + "\n\n" + block + "\n\n" + document[at:]
