"""The command line: `corral demo` runs, shows, reports, and leaves nothing behind."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

COMMAND = [sys.executable, "-m", "corral"]


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_demo_json_summary_shows_every_worker_stopped() -> None:
    done = corral("demo", "--duration", "1", "--fleet", "200", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["all_stopped"] is True
    assert summary["ended_early"] is None
    assert summary["left_running"] == {"threads": 0, "processes": 0}
    service = summary["service"]
    assert service["restarts"] == 1  # killed half-way on purpose, and back
    assert service["first_pid"] != service["last_pid"]
    assert service["burst"]["p50_us"] > 0
    assert summary["shutdown"] == ["on_shutdown hook ran"]
    kinds = {w["kind"] for w in summary["workers"]}
    assert kinds == {"interval", "queue", "event", "loop"}
    assert summary["fleet"]["workers"] == 200
    assert summary["fleet"]["ticks"] > 0
    assert summary["counts"]["readings"] > 0
    job = summary["process"]  # the archiver: a Process told every batch
    assert job["readings"] == summary["counts"]["flushed"]  # none lost
    assert job["closed"] is True  # stop() -> on_finish() -> result()
    pool = summary["pool"]  # windows as they arrive, one of which kills its worker
    assert pool["crashed_items"] == [pool["windows"] // 2]
    assert pool["analysed"] == pool["windows"] - 1
    assert pool["restarts"] >= 1
    assert pool["conversions_per_s"] > 0
    assert summary["control_loop"]["ticks"] > 0
    assert any("SIGKILL to the Calibrator" in e for e in summary["events"])


def test_demo_without_a_terminal_prints_log_lines_and_a_summary() -> None:
    done = corral("demo", "--duration", "1", "--fleet", "10", "--no-rt")
    assert done.returncode == 0, done.stderr
    assert "[  1s] readings" in done.stdout
    assert "pool: " in done.stdout
    assert "control loop" not in done.stdout  # --no-rt
    assert "every worker stopped cleanly" in done.stdout
    assert "killed its worker" in done.stdout
    assert "threads left behind: 0, child processes left behind: 0" in done.stdout


def demo_on_a_terminal(*args: str, rows: int, columns: int) -> str:
    """Run ``corral demo ARGS`` on a pseudo-terminal of that size; all it drew (exit 0)."""
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": str(rows), "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    process = subprocess.Popen(
        [*COMMAND, "demo", *args],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(child)
    screen = bytearray()
    try:
        while True:
            try:
                chunk = os.read(parent, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            screen += chunk
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    finally:
        os.close(parent)
        if process.stderr:
            process.stderr.close()
    return screen.decode(errors="replace")


def test_demo_on_a_terminal_draws_the_live_dashboard() -> None:
    text = demo_on_a_terminal("--duration", "1.5", "--fleet", "20", rows=50, columns=100)
    assert "corral demo: supervisor 'plant'" in text  # the panel's title
    for row in ("poll_sensors", "Calibrator", "stabilizer", "analysts-1", "host (this process)"):
        assert row in text
    assert "pool map" in text
    assert "\x1b[" in text  # drawn in place, with escape codes
    assert "every worker stopped cleanly" in text  # then the summary


def test_the_first_ctrl_c_ends_the_demo_early_with_its_summary() -> None:
    process = subprocess.Popen(
        [*COMMAND, "demo", "--duration", "60", "--fleet", "10", "--no-rt", "--plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    for line in process.stdout:  # the first status line: everything has started
        if line.startswith("[  0s]") or time.monotonic() > deadline:
            break
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "(ended early by Ctrl-C); every worker stopped cleanly" in out
    assert "child processes left behind: 0" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--duration", "0"], "--duration must be a positive number"),
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        ([], "the following arguments are required"),
    ],
)
def test_bad_arguments_are_refused_with_usage(args: list[str], message: str) -> None:
    done = corral(*args)
    assert done.returncode == 2
    assert message in done.stderr


def test_bench_hands_its_options_to_the_checkouts_report() -> None:
    done = corral("bench", "--help")
    assert done.returncode == 0, done.stderr
    assert "report.py" in done.stdout
    assert "--quick" in done.stdout
