"""The ``corral`` command line: ``corral demo`` and ``corral bench``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

#: Where ``corral bench`` looks for the benchmarks: the current directory's
#: checkout first, then the one corral was imported from (an editable install).
BENCH_SCRIPT = Path("benchmarks") / "report.py"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``corral`` and ``python -m corral``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="corral", description="corral: supervised async workers")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the live demo, then print a summary of figures")
    demo.add_argument("--duration", type=float, default=20.0, help="seconds to run (default 20)")
    demo.add_argument("--fleet", type=int, default=2000, help="interval workers in the fleet")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON only")
    demo.add_argument("--no-rt", action="store_true", help="leave out the 1 kHz control loop")
    demo.add_argument(
        "--plain", action="store_true", help="log lines instead of the live dashboard"
    )
    demo.add_argument("--verbose", action="store_true", help="show corral's debug log")
    bench = commands.add_parser(
        "bench",
        help="run every benchmark of a corral checkout and write docs/benchmarks.md",
        description="Runs benchmarks/report.py of a corral checkout; the options go to it "
        "(--quick, --only NAME ..., --help for the rest).",
        add_help=False,
    )
    bench.add_argument("options", nargs=argparse.REMAINDER)
    args, extra = parser.parse_known_args(argv)
    if args.command == "bench":
        return _bench([*extra, *args.options])
    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not (math.isfinite(args.duration) and args.duration > 0) or args.fleet < 0:
        parser.error("--duration must be a positive number of seconds and --fleet 0 or more")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from ._demo import run_demo  # noqa: PLC0415  (keeps `corral --help` fast)

    try:
        return run_demo(
            duration=args.duration,
            fleet=args.fleet,
            as_json=args.json,
            control_loop=not args.no_rt,
            plain=args.plain,
        )
    except KeyboardInterrupt:  # a second Ctrl-C: the first ends the demo with its summary
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`corral demo | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _bench(options: list[str]) -> int:
    """Run the checkout's benchmarks/report.py with ``options``; its exit status."""
    checkout = Path(__file__).resolve().parents[2]
    for root in (Path.cwd(), checkout):
        script = root / BENCH_SCRIPT
        if script.is_file():
            return subprocess.run([sys.executable, str(script), *options], check=False).returncode
    print(
        f"corral bench: no {BENCH_SCRIPT} here ({Path.cwd()}) or in {checkout}; the benchmarks "
        "ship with corral's source: run it from a checkout (git clone, then `make bench`)",
        file=sys.stderr,
    )
    return 2
