"""The ``corral`` command line: ``corral demo`` for now."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``corral`` and ``python -m corral``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="corral", description="corral: supervised async workers")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run the live demo, then print a summary of figures")
    demo.add_argument("--duration", type=float, default=8.0, help="seconds to run (default 8)")
    demo.add_argument("--fleet", type=int, default=2000, help="interval workers in the fleet")
    demo.add_argument("--json", action="store_true", help="print the summary as JSON only")
    demo.add_argument("--no-rt", action="store_true", help="leave out the 1 kHz control loop")
    demo.add_argument("--verbose", action="store_true", help="show corral's debug log")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.fleet < 0:
        parser.error("--duration must be positive and --fleet 0 or more")
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
        )
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`corral demo | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
