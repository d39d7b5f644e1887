"""The command line: `corral demo` runs, reports, and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
import sys


def corral(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "corral", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_demo_json_summary_shows_every_worker_stopped() -> None:
    done = corral("demo", "--duration", "1", "--fleet", "200", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["all_stopped"] is True
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
    pool = summary["pool"]  # a map with one item that kills its worker, then tiny calls
    assert pool["crashed_items"] == [123]
    assert pool["analysed"] == pool["windows"] - 1
    assert pool["restarts"] >= 1
    assert pool["conversions_per_s"] > 0


def test_demo_prints_status_lines_and_a_summary() -> None:
    done = corral("demo", "--duration", "1", "--fleet", "10")
    assert done.returncode == 0, done.stderr
    assert "[  1s] readings" in done.stdout
    assert "every worker stopped cleanly" in done.stdout
    assert "window 123 killed its worker" in done.stdout
    assert "threads left behind: 0" in done.stdout


def test_bad_arguments_are_refused_with_usage() -> None:
    done = corral("demo", "--duration", "0")
    assert done.returncode == 2
    assert "--duration must be positive" in done.stderr
    assert corral().returncode == 2
