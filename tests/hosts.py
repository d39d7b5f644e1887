"""A host process the tests kill: it prints the pids it wants checked, then waits."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def host(code: str) -> Iterator[tuple[subprocess.Popen[str], list[int]]]:
    """Run ``code`` in a new interpreter; yields it and the pids of its first line."""
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, cwd=ROOT, text=True
    )
    try:
        assert process.stdout is not None
        yield process, [int(pid) for pid in process.stdout.readline().split()]
    finally:
        process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


def outliving(process: subprocess.Popen[str], pids: list[int], seconds: float) -> list[int]:
    """SIGKILL the host; the pids still running (not zombies) ``seconds`` later."""
    watched = [psutil.Process(pid) for pid in pids]
    process.kill()
    process.wait(10)
    _, alive = psutil.wait_procs(watched, timeout=seconds)
    # dead but not reaped: their new parent (pid 1 in a container) may not reap
    return [p.pid for p in alive if _running(p)]


def _running(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
