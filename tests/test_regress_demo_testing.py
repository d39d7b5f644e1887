"""Regressions found reviewing corral.testing, the corral_supervisor fixture and `corral demo`.

Each was a bug; the comment above a test says what it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import pytest

from corral._demo_pool import pool_line
from corral.testing import VirtualClock, nothing_left_running, supervised, wait_for_runs
from tests.test_cli import demo_on_a_terminal
from tests.test_testing import Counter

pytestmark = pytest.mark.anyio

COMMAND = [sys.executable, "-m", "corral"]


@pytest.fixture
def anyio_backend() -> Any:  # the leftovers checks need one loop only (uvloop is tested alone)
    return "asyncio"


def _run_watched(clock: VirtualClock, main: Callable[[], Coroutine[Any, Any, float]]) -> float:
    """``clock.run(main)``, cancelled after 3 real seconds (a spinning loop fails, not hangs)."""

    async def watched() -> float:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def cancel() -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: it finished in time
                loop.call_soon_threadsafe(task.cancel)

        watchdog = threading.Timer(3.0, cancel)
        watchdog.start()
        try:
            return await main()
        finally:
            watchdog.cancel()

    try:
        return clock.run(watched)
    except asyncio.CancelledError:
        pytest.fail(f"still running after 3 s of real time (virtual time {clock.time():.6g} s)")


# -- corral.testing: nothing_left_running ----------------------------------------------------


# Was a bug: uvloop (libuv) opens a /dev/null fd (its EMFILE reserve, loop->emfile_fd) on the
# loop's first stream and keeps it until the loop closes: the first block that spawns a child on
# a uvloop loop is reported as leaking it, so the fixture fails on uvloop
def test_supervised_with_a_child_passes_on_a_fresh_uvloop_loop() -> None:
    async def main() -> int:
        async with supervised() as sup:
            proxy = await sup.spawn(Counter)
            bumped: int = await proxy.bump()
            return bumped

    assert anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True}) == 1


# Was a bug: threads are compared by ident, which the OS reuses: a thread that exited in the
# block frees its ident for the leaked thread started after it, which is then not seen
async def test_a_leaked_thread_that_reuses_an_ended_threads_ident_is_reported() -> None:
    done = threading.Event()
    old = threading.Thread(target=done.wait, name="old")
    old.start()
    release = threading.Event()
    leaked = threading.Thread(target=release.wait, name="leaked", daemon=True)
    try:
        with pytest.raises(AssertionError, match="thread 'leaked'"):
            async with nothing_left_running(timeout=0.05):
                done.set()
                old.join()
                leaked.start()
                if leaked.ident != old.ident:
                    pytest.skip("the thread ident was not reused here")
    finally:
        release.set()
        leaked.join(5)


# Was a bug: file descriptors are compared by number only: a new fd that takes the number of one
# closed in the block (the lowest free number) is not reported
async def test_a_leaked_fd_that_reuses_a_closed_fds_number_is_reported() -> None:
    read_end, write_end = os.pipe()
    leaked: int | None = None
    try:
        with pytest.raises(AssertionError, match="file descriptor"):
            async with nothing_left_running(timeout=0.05):
                os.close(read_end)  # (opened before the block: its own business)
                leaked = os.open(os.devnull, os.O_RDONLY)  # left open by the block
                if leaked != read_end:
                    pytest.skip("the fd number was not reused here")
    finally:
        os.close(write_end)
        if leaked is not None:
            os.close(leaked)


# Was a bug: the check runs only when the block ends normally: a block that raises (a failing
# assert) leaves its processes running, unreported and unkilled, into the next test
async def test_a_block_that_raises_still_kills_the_processes_it_left() -> None:
    child: subprocess.Popen[bytes] | None = None
    try:
        with pytest.raises(ValueError, match="the test failed"):
            async with nothing_left_running(timeout=0.05):
                child = subprocess.Popen(  # noqa: ASYNC220  (left running on purpose)
                    [sys.executable, "-c", "import time; time.sleep(60)"]
                )
                raise ValueError("the test failed")
        assert child is not None
        try:
            child.wait(timeout=1)  # killed by the check: it ends at once
        except subprocess.TimeoutExpired:
            pytest.fail(f"process {child.pid} still running after the block raised")
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()


# -- corral.testing: VirtualClock --------------------------------------------------------------


# Was a bug: past 2**24 virtual seconds (~194 days) now + clock resolution (1e-9) rounds to now,
# so asyncio never runs a timer due exactly now: the loop spins at 100% CPU forever
def test_the_virtual_clock_runs_a_sleep_of_more_than_194_days() -> None:
    clock = VirtualClock()

    async def main() -> float:
        await anyio.sleep(400 * 86_400.0)  # (a daily worker's 195th run hangs the same way)
        return anyio.current_time()

    assert _run_watched(clock, main) == pytest.approx(400 * 86_400.0)


# Was a bug: the selector jumps towards a timer at infinity (anyio.sleep_forever, as the
# supervisor's own task does) by asyncio's 1-day select cap each idle turn: waiting 50 ms for a
# thread runs the clock decades ahead (and then into the spin above)
def test_the_virtual_clock_does_not_jump_towards_a_timer_at_infinity() -> None:
    clock = VirtualClock()

    async def main() -> float:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep_forever)
            await anyio.to_thread.run_sync(time.sleep, 0.05)
            tg.cancel_scope.cancel()
        return anyio.current_time()

    assert _run_watched(clock, main) < 1.0


# Was a bug: wait_for_runs' default deadline (5 s) is virtual on a VirtualClock and only interval
# workers get n intervals added: a loop/queue/event worker whose run sleeps longer than 5 virtual
# s times out at once ('made 0 of 3 runs within 5 s')
def test_wait_for_runs_on_a_virtual_clock_with_a_loop_worker_that_sleeps_an_hour() -> None:
    clock = VirtualClock()

    async def main() -> float:
        async with supervised() as sup:

            async def hourly() -> None:
                await anyio.sleep(3600.0)

            worker = sup.loop_worker(hourly)
            await wait_for_runs(worker, 3)
            worker.stop()
        return anyio.current_time()

    assert _run_watched(clock, main) >= 3 * 3600.0


# Was a bug: nothing_left_running's grace period is measured on the loop's clock: on a
# VirtualClock its 'timeout' seconds pass in a few real milliseconds (a child being reaped gets
# none), yet the message says 'left running 1 s after the block ended'
def test_nothing_left_running_gives_real_seconds_on_a_virtual_clock() -> None:
    clock = VirtualClock()
    release = threading.Event()
    left = threading.Thread(target=release.wait, name="left")

    async def main() -> float:
        async with nothing_left_running(timeout=1.0, fds=False):
            left.start()
        return 0.0

    began = time.monotonic()
    try:
        with pytest.raises(AssertionError, match="left running 1 s after"):
            _run_watched(clock, main)
        assert time.monotonic() - began >= 1.0, "gave up before 1 s of real time"
    finally:
        release.set()
        left.join(5)


# -- corral demo ---------------------------------------------------------------------------------


def _demo(*args: str, **options: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "demo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        **options,
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"not JSON (RFC 8259): {name}")


# Was a bug: --fleet 0: the fleet's lateness timer is empty and ms() gives NaN, which json.dumps
# writes as a bare NaN: the --json output is not JSON (JSON.parse, strict parsers reject it)
def test_demo_json_with_no_fleet_is_valid_json() -> None:
    done = _demo("--duration", "0.1", "--fleet", "0", "--no-rt", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout, parse_constant=_reject_constant)
    assert summary["fleet"]["workers"] == 0


# Was a bug: --duration nan or inf passes the '<= 0' check; Analysis then does round(nan/inf)
# after everything has started: a traceback (exit 1) instead of a usage error (exit 2)
@pytest.mark.parametrize("duration", ["nan", "inf"])
def test_demo_refuses_a_duration_that_is_not_finite(duration: str) -> None:
    done = _demo("--duration", duration, "--fleet", "0", "--no-rt", "--json")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "--duration" in done.stderr
    assert "Traceback" not in done.stderr


# Was a bug: with stdout closed sys.stdout is None: make_view calls sys.stdout.isatty()
# (AttributeError traceback); with --json (or --plain) a socket takes fd 1 and uvloop aborts the
# process (libuv assertion 'fd > STDERR_FILENO' in uv__close, SIGABRT)
@pytest.mark.parametrize("mode", [(), ("--json",)], ids=["dashboard", "json"])
def test_demo_with_stdout_closed_ends_without_a_crash(mode: tuple[str, ...]) -> None:
    command = [*COMMAND, "demo", "--duration", "0.2", "--fleet", "0", "--no-rt", *mode]
    done = subprocess.run(
        ["sh", "-c", 'exec "$@" >&-', "sh", *command],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode >= 0, f"killed by signal {-done.returncode}: {done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "Assertion" not in done.stderr, done.stderr[-2000:]


#: Runs the demo with a Ctrl-C (SIGINT to itself) as the summary's figures are being gathered.
CTRL_C_DURING_SUMMARY = """
import os, signal, sys
import corral._demo_plant as plant
from corral._cli import main

gather = plant.Plant.service_summary

async def interrupted(self):
    os.kill(os.getpid(), signal.SIGINT)  # the user's first Ctrl-C, after the live part
    return await gather(self)

plant.Plant.service_summary = interrupted
sys.exit(main(sys.argv[1:]))
"""


# Was a bug: the first Ctrl-C is caught only while the dashboard shows (_first_interrupt_sets
# ends with the view); one while the summary is gathered (up to 10 s waiting for the analysis,
# then bursts) cancels everything: 'interrupted', exit 130, no summary
def test_the_first_ctrl_c_while_the_summary_is_gathered_still_prints_it() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            CTRL_C_DURING_SUMMARY,
            *("demo", "--duration", "0.2", "--fleet", "10", "--no-rt", "--plain"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "corral demo: " in done.stdout


# Was a bug: the live panel is ~30 rows tall and rich's Live crops it to the terminal with '...':
# on an 80x24 terminal the pool's progress, the events and the 'x s to go; Ctrl-C ends it'
# subtitle are never shown while the demo runs (only in the final frame)
def test_the_live_dashboard_shows_its_bottom_on_an_80x24_terminal() -> None:
    text = demo_on_a_terminal("--duration", "1.5", "--fleet", "20", rows=24, columns=80)
    assert "every worker stopped cleanly" in text
    to_go = [float(left) for left in re.findall(r"(\d+\.\d) s to go", text)]
    assert any(left > 0 for left in to_go), f"subtitle seen only as {to_go}"


# Was a bug: pool_line assumes the faulty window was reached: ended early by Ctrl-C it says
# 'window none killed its worker: that item raised WorkerCrashed, the worker was replaced'
def test_the_pool_line_does_not_claim_a_crash_that_did_not_happen() -> None:
    line = pool_line(
        {
            "windows": 100,
            "analysed": 26,
            "crashed_items": [],
            "peak_c": 23.2,
            "analyse_s": 1.0,
            "conversions": 200_000,
            "conversions_per_s": 2_000_000,
            "restarts": 0,
            "crashes": 0,
            "chunks": 26,
        }
    )
    assert "raised WorkerCrashed" not in line, line
