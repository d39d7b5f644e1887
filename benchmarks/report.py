"""Every benchmark in one go: run them, then write the report into docs/benchmarks.md.

First the peers each benchmark measures against (and matplotlib, for the
plots) are installed into this interpreter's environment with pip when
missing (``--no-install``: not; a peer that is missing is then reported as
not measured). Then each benchmark runs as ``python benchmarks/NAME.py
[--quick] --json FILE``, one after the other, its output streamed here under
a header; one that fails (an exit status other than 0, no figures, or no end
within its time limit) is recorded as failed with the last lines of its
error output, and the others still run. Last, the report is written between
the markers ``<!-- report:begin -->`` and ``<!-- report:end -->`` of
``--out`` (placed after its intro when it has none; the rest of the page is
left as it is), with its plots under ``--img-dir``: the RPC round trip's
latency distribution, the control loop's lateness histogram (drawn by
control_loop.py) and the pool's throughput against task size.

Exit status 1 when a benchmark failed, else 0.

    python benchmarks/report.py --quick              # every benchmark, short (~8 min)
    python benchmarks/report.py                      # every benchmark, full (~30 min)
    python benchmarks/report.py --quick --only rpc pool
    python benchmarks/report.py --quick --json-dir /tmp/bench   # keep the figures
    python benchmarks/report.py --json-dir /tmp/bench --render-only  # write the report again

``make bench`` and ``make bench-quick`` run it (``BENCH_ARGS`` for more options).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import IO, Any

import psutil

import _plots
import _render
from _peers import NO_INSTALL, ensure, machine
from _stats import table

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STDERR_KEPT = 40  # lines of a benchmark's error output kept for the report


@dataclass(frozen=True)
class Benchmark:
    """What a benchmark needs: the packages of its peers, its time limits (s)."""

    peers: tuple[str, ...]
    quick_timeout: float
    full_timeout: float


BENCHMARKS: dict[str, Benchmark] = {
    "interval_workers": Benchmark((), 300, 900),
    "rpc": Benchmark(("aiomultiprocess",), 900, 1800),
    "crash": Benchmark((), 300, 600),
    "control_loop": Benchmark((), 900, 2400),
    "process": Benchmark(("suitkaise",), 600, 1200),
    "pool": Benchmark(("loky", "aiomultiprocess", "distributed"), 1200, 2400),
    "soak": Benchmark((), 600, 1800),
}
PLOTTED = ("rpc", "control_loop", "pool")  # the benchmarks with a plot (matplotlib)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/report.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="each benchmark's short run")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        choices=list(BENCHMARKS),
        help=f"run only these benchmarks (of {', '.join(BENCHMARKS)})",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "docs" / "benchmarks.md",
        help="the page the report is written into (default: the repo's docs/benchmarks.md)",
    )
    parser.add_argument(
        "--img-dir",
        type=Path,
        default=ROOT / "docs" / "img",
        help="where the plots go (default: the repo's docs/img)",
    )
    parser.add_argument(
        "--no-install", action="store_true", help="install no peer: a missing one is not measured"
    )
    parser.add_argument(
        "--timeout", type=float, help="seconds each benchmark may take (default: its own)"
    )
    parser.add_argument(
        "--json-dir",
        type=Path,
        help="keep each benchmark's figures (NAME.json) and the run's (run.json) here",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="run nothing: write the report again from --json-dir's run.json",
    )
    args = parser.parse_args(argv)
    if args.render_only and args.json_dir is None:
        parser.error("--render-only reads the figures of an earlier run: give --json-dir")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    json_dir = args.json_dir or Path(tempfile.mkdtemp(prefix="corral-report-"))
    try:
        if args.render_only:
            run: dict[str, Any] = json.loads((json_dir / "run.json").read_text())
        else:
            json_dir.mkdir(parents=True, exist_ok=True)
            run = run_all(args, json_dir)
            (json_dir / "run.json").write_text(json.dumps(run, indent=2))
        write_report(run, args.out, args.img_dir)
    finally:
        if args.json_dir is None:
            shutil.rmtree(json_dir, ignore_errors=True)
    failed = [name for name, bench in run["benchmarks"].items() if bench["status"] != "ok"]
    print(f"\nreport written into {args.out}" + (f"; FAILED: {', '.join(failed)}" * bool(failed)))
    return 1 if failed else 0


# -- running ---------------------------------------------------------------------------------


def run_all(args: argparse.Namespace, json_dir: Path) -> dict[str, Any]:
    """Install the peers, run every benchmark chosen; the run, as plain data."""
    names = args.only or list(BENCHMARKS)
    names = [name for name in BENCHMARKS if name in names]  # in their own order
    started = time.time()
    facts = machine()
    load = os.getloadavg()[0]
    if args.no_install:
        os.environ[NO_INSTALL] = "1"  # the benchmarks' own ensure() too
    notes = install(names)
    benchmarks = {}
    for name in names:
        timeout = args.timeout or (
            BENCHMARKS[name].quick_timeout if args.quick else BENCHMARKS[name].full_timeout
        )
        extra = []
        if name == "control_loop":  # it draws its own histogram, where the report's plots go
            extra = ["--plot", str((args.img_dir / _plots.CONTROL_LOOP_PNG).resolve())]
        result = run_one(name, args.quick, json_dir / f"{name}.json", timeout, extra)
        result["notes"] = notes.get(name, [])
        benchmarks[name] = result
    wall = time.time() - started
    print(
        "\n== Summary: "
        + ("quick" if args.quick else "full")
        + f" run, {_render.duration(wall)}, load average {load:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end\n",
        flush=True,
    )
    table(
        ["benchmark", "status", "time", "why"],
        [
            [name, b["status"], _render.duration(b["wall_s"]), b.get("why", "")]
            for name, b in benchmarks.items()
        ],
    )
    return {
        "quick": args.quick,
        "only": args.only,
        "started_at": started,
        "wall_s": wall,
        "load_average": [load, os.getloadavg()[0]],
        "machine": facts,
        "benchmarks": benchmarks,
    }


def install(names: list[str]) -> dict[str, list[str]]:
    """Every peer the benchmarks ``names`` use, and matplotlib; name -> what is missing."""
    notes: dict[str, list[str]] = {}
    wanted: dict[str, list[str]] = {}
    for name in names:
        for package in BENCHMARKS[name].peers:
            wanted.setdefault(package, []).append(name)
    if any(name in PLOTTED for name in names):
        wanted["matplotlib"] = [name for name in names if name in PLOTTED]
    for package, users in wanted.items():
        why = ensure(package)
        if why is None:
            continue
        said = "no plot" if package == "matplotlib" else f"{package} not measured"
        print(f"  {said}: {why}", file=sys.stderr, flush=True)
        for name in users:
            notes.setdefault(name, []).append(f"{said}: {why}")
    return notes


def run_one(
    name: str, quick: bool, json_path: Path, timeout: float, extra: list[str]
) -> dict[str, Any]:
    """Run ``benchmarks/NAME.py`` with its output streamed here; its status and figures."""
    command = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] * quick)]
    command += ["--json", str(json_path), *extra]
    shown = " ".join(["python", f"benchmarks/{name}.py", *command[2:]])
    print(f"\n{'=' * 78}\n== {name}: {shown}\n{'=' * 78}", flush=True)
    json_path.unlink(missing_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_KEPT)
    t0 = time.monotonic()
    proc = subprocess.Popen(
        command,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,  # its own group: a hung one is killed with its children
    )
    assert proc.stderr is not None
    reader = threading.Thread(target=tee, args=(proc.stderr, tail), daemon=True)
    reader.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if proc.poll() is None:  # timed out, or this process was interrupted
            kill_tree(proc)
        reader.join(5)
        proc.stderr.close()
    wall = time.monotonic() - t0
    result: dict[str, Any] = {"status": "ok", "wall_s": wall, "exit_status": proc.returncode}
    figures = None
    with contextlib.suppress(OSError, ValueError):
        figures = json.loads(json_path.read_text())
    if timed_out:
        why = f"no end after {timeout:g} s: killed"
    elif proc.returncode < 0:
        why = f"killed by {signal.Signals(-proc.returncode).name} after {wall:.0f} s"
    elif proc.returncode != 0:
        why = f"exit status {proc.returncode} after {wall:.0f} s"
    elif figures is None:
        why = f"exit status 0, but it wrote no figures to {json_path.name}"
    else:
        why = ""
    if why:
        result.update(status="failed", why=why, stderr_tail=[line.rstrip() for line in tail])
        print(f"\n!! {name} FAILED: {why}", file=sys.stderr, flush=True)
    result["figures"] = figures
    return result


def tee(stream: IO[str], tail: collections.deque[str]) -> None:
    """Copy ``stream`` to this process's stderr line by line, keeping the last lines."""
    for line in stream:
        sys.stderr.write(line)
        sys.stderr.flush()
        tail.append(line)


def kill_tree(proc: subprocess.Popen[str]) -> None:
    """SIGKILL ``proc`` and every process below it (the variants run in sessions of their
    own, so its process group alone would not do)."""
    with contextlib.suppress(psutil.Error):
        family = [*psutil.Process(proc.pid).children(recursive=True)]
        for process in family:
            with contextlib.suppress(psutil.Error):
                process.kill()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


# -- writing ---------------------------------------------------------------------------------


def write_report(run: dict[str, Any], out: Path, img_dir: Path) -> None:
    """Draw the plots, then splice the report into ``out`` (created when missing)."""
    run["plots"] = draw(run, img_dir, out.parent)
    document = out.read_text() if out.exists() else "# Benchmarks\n"
    section = _render.render(run, _render.anchors_of(document))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_render.splice(document, section))


def draw(run: dict[str, Any], img_dir: Path, page_dir: Path) -> dict[str, list[list[str]]]:
    """Each benchmark's plots: name -> [[alt text, path relative to the page], ...].

    A plot that cannot be drawn is a note of its benchmark's, never an error.
    """
    drawers = {
        "rpc": (_plots.RPC_PNG, "RPC round-trip latency, CDF", _plots.rpc_latency),
        "pool": (_plots.POOL_PNG, "pool throughput against task size", _plots.pool_throughput),
    }
    plots: dict[str, list[list[str]]] = {}
    for name, bench in run["benchmarks"].items():
        figures = bench.get("figures")
        path: Path | None = None
        if name == "control_loop":  # drawn by the benchmark: shown if this run drew it
            drawn = img_dir / _plots.CONTROL_LOOP_PNG
            if drawn.exists() and drawn.stat().st_mtime >= run.get("started_at", 0):
                path, alt = drawn, "control-loop lateness histograms"
        elif name in drawers and figures is not None and find_spec("matplotlib") is not None:
            png, alt, drawer = drawers[name]
            try:
                if drawer(figures, img_dir / png):
                    path = img_dir / png
            except Exception as error:  # a plot is never worth the report
                bench.setdefault("notes", []).append(f"no plot: {type(error).__name__}: {error}")
        if path is not None:
            plots[name] = [[alt, os.path.relpath(path, page_dir)]]
    return plots


if __name__ == "__main__":
    sys.exit(main())
