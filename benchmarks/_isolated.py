"""Run a benchmark variant in a fresh interpreter of its own, on a quiet machine.

Each variant is the benchmark script run again with ``--child VARIANT
--params JSON --out FILE``: it writes its figures to FILE as JSON. It gets a
session of its own, so whatever it leaves running is killed with its process
group (and named in the result).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import psutil

BUSY_PCT = 25.0  # machine-wide CPU % (of all cores) above which we wait before measuring
settle_budget = [60.0]  # seconds of waiting for a quiet machine left in this run


def settle(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s, within the run's budget) for the machine to quiet down.

    Returns the machine-wide CPU % (of all cores) seen just before measuring.
    """
    t0 = time.monotonic()
    deadline = t0 + min(max_wait, settle_budget[0])
    busy = psutil.cpu_percent(interval=0.25)
    while busy > BUSY_PCT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=0.25)
    settle_budget[0] = max(0.0, settle_budget[0] - (time.monotonic() - t0))
    return busy


def run_variant(
    script: str,
    variant: str,
    params: dict[str, Any],
    *,
    timeout: float,
    label: str | None = None,
) -> dict[str, Any]:
    """Run ``variant`` of ``script`` in a fresh interpreter; its figures, or {"error": ...}.

    Waits first (``params["settle"]`` seconds at most) for the machine to quiet down.
    """
    busy = settle(params["settle"])
    note = f" (machine {busy:.0f}% busy)" if busy > BUSY_PCT else ""
    print(f"  measuring {label or variant}{note} ...", file=sys.stderr, flush=True)
    fd, out = tempfile.mkstemp(prefix="corral-bench-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, script, "--child", variant, "--params", json.dumps(params)]
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(
            [*cmd, "--out", out],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            text=True,
            start_new_session=True,
        )
        try:
            try:
                proc.wait(timeout=timeout)
                hung = False
            except subprocess.TimeoutExpired:
                hung = True
            lingered = kill_group(proc.pid)
            proc.wait()
            log.seek(0)
            output = log.read()
            if hung:
                return {"error": f"hung: no result after {timeout:g} s", "stderr": output}
            if proc.returncode != 0:
                return {"error": f"exit status {proc.returncode}", "stderr": output}
            with open(out) as f:
                result: dict[str, Any] = json.load(f)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            os.unlink(out)
    result["variant_wall_s"] = time.perf_counter() - t0
    result["busy_before_pct"] = busy
    if lingered:
        result["lingered"] = lingered
    if output.strip():
        result["stderr"] = output
    return result


def kill_group(pgid: int) -> list[str]:
    """SIGKILL what is left of process group ``pgid``; what was left running, by name."""
    left = []
    for process in psutil.process_iter(["pid", "name", "status", "cmdline"]):
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if (
                process.pid != pgid
                and process.info["status"] != psutil.STATUS_ZOMBIE
                and os.getpgid(process.pid) == pgid
            ):
                command = " ".join(process.info["cmdline"] or [])
                what = " (a resource tracker)" if "resource_tracker" in command else ""
                left.append(f"{process.info['name']} (pid {process.pid}){what}")
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    return left
