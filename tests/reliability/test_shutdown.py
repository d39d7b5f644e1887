"""SIGINT and SIGTERM in an app run by ``corral.run``: a graceful stop within
``shutdown_timeout``, then kills; a second Ctrl-C kills at once; nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import anyio
import psutil
import pytest

import corral
from tests.hosts import ROOT
from tests.services import Echo

HOST = textwrap.dedent(
    """
    import logging, os, sys, time
    import anyio, psutil
    import corral
    from tests.services import Echo, doubler

    class Stubborn(Echo):
        def close(self):
            time.sleep(60)  # a close that never ends: it must be killed

    async def main(shutdown_timeout, marker, stubborn):
        async with corral.Supervisor(shutdown_timeout=shutdown_timeout) as sup:
            ticks = sup.every(0.01, lambda: None)
            polite = await sup.spawn(Echo, 0, marker)
            other = await sup.spawn(Stubborn if stubborn else Echo)
            pool = sup.pool(2)
            assert await pool.map(abs, range(-50, 50)) == [abs(x) for x in range(-50, 50)]
            await ticks.wait_runs(2)
            await polite.echo(1)
            await other.echo(2)
            pids = [p.pid for p in psutil.Process().children(recursive=True)]
            print(*pids, flush=True)
            await anyio.sleep_forever()

    logging.basicConfig(level=logging.WARNING)
    try:
        corral.run(main, float(sys.argv[1]), sys.argv[2], sys.argv[3] == "1")
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


def start_host(
    tmp_path: Path, *, shutdown_timeout: float, stubborn: bool
) -> tuple[subprocess.Popen[str], list[psutil.Process], Path]:
    marker = tmp_path / "closed"
    process = subprocess.Popen(
        [sys.executable, "-c", HOST, str(shutdown_timeout), str(marker), "1" if stubborn else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    pids = [int(pid) for pid in line.split()]
    assert len(pids) >= 4, f"the host did not start: {line!r}"
    return process, [psutil.Process(pid) for pid in pids], marker


def reap(process: subprocess.Popen[str]) -> None:
    """Kill the host if the test left it running; close its pipes."""
    process.kill()
    process.communicate(timeout=10)


def gone_within(children: list[psutil.Process], seconds: float) -> list[int]:
    _, alive = psutil.wait_procs(children, timeout=seconds)
    return [p.pid for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


def finish(process: subprocess.Popen[str], seconds: float) -> tuple[int, str, float]:
    """Wait for the host to exit: its status, what it printed (out and err), how long."""
    started = time.monotonic()
    out, err = process.communicate(timeout=seconds)
    return process.returncode, out + err, time.monotonic() - started


@pytest.mark.parametrize(
    ("signum", "code", "said"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "")],
)
def test_a_stop_signal_stops_everything_gracefully(
    tmp_path: Path, signum: signal.Signals, code: int, said: str
) -> None:
    process, children, marker = start_host(tmp_path, shutdown_timeout=10, stubborn=False)
    try:
        process.send_signal(signum)
        returncode, out, took = finish(process, 20)
    finally:
        reap(process)
    assert returncode == code, out
    assert said in out
    assert marker.read_text() == "closed"  # closed, not killed: its close() ran
    assert took < 10, f"a graceful stop of idle children took {took:.2f}s"
    assert gone_within(children, 1) == []


def test_a_stop_that_overruns_shutdown_timeout_kills(tmp_path: Path) -> None:
    process, children, _ = start_host(tmp_path, shutdown_timeout=1, stubborn=True)
    try:
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        returncode, out, _ = finish(process, 30)
        took = time.monotonic() - started
    finally:
        reap(process)
    assert returncode == 130, out
    assert took < 1 + 5, f"shutdown_timeout=1 but the stop took {took:.2f}s"
    assert gone_within(children, 1) == []


def test_a_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    process, children, _ = start_host(tmp_path, shutdown_timeout=60, stubborn=True)
    try:
        process.send_signal(signal.SIGINT)
        assert process.stderr is not None
        said = process.stderr.readline()  # the first is taken: the graceful stop is under way
        assert "stopping gracefully" in said
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        returncode, _, _ = finish(process, 10)
        took = time.monotonic() - started
    finally:
        reap(process)
    assert returncode == 130
    assert took < 3, f"the second Ctrl-C took {took:.2f}s to end the host"
    assert gone_within(children, 1) == []


def test_nothing_is_left_after_a_signal_in_this_process() -> None:
    async def main() -> None:
        async with corral.Supervisor(shutdown_timeout=5) as sup:
            echo = await sup.spawn(Echo)
            sup.every(0.01, lambda: None)
            assert await echo.echo(5) == 5
            signal.raise_signal(signal.SIGINT)
            await anyio.sleep_forever()

    handler = signal.getsignal(signal.SIGINT)
    for _ in range(2):  # the first opens what the loop keeps for the process (uvloop)
        threads_before = {t.ident for t in threading.enumerate()}
        fds_before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(KeyboardInterrupt):
            corral.run(main)
        assert psutil.Process().children(recursive=True) == []
        assert signal.getsignal(signal.SIGINT) is handler  # restored
    assert {t.ident for t in threading.enumerate()} <= threads_before
    assert set(os.listdir("/proc/self/fd")) <= fds_before
