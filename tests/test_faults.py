"""Faults: a child killed mid-call, restarts, garbage on the pipe, a killed host, leaks."""

from __future__ import annotations

import os
import random
import signal
import textwrap

import anyio
import psutil
import pytest

import corral
from tests.hosts import host, outliving
from tests.services import Echo

pytestmark = pytest.mark.anyio


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def _warm_up() -> None:
    """One spawn first: libuv keeps a spare fd per loop (on /dev/null), opened lazily."""
    async with corral.spawn(Echo) as echo:
        await echo.echo(0)


def _children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True) if p.status() != "zombie"}


async def test_kill_with_1000_calls_in_flight_fails_each_with_worker_crashed() -> None:
    async with corral.spawn(Echo) as echo:
        errors: list[corral.WorkerCrashed] = []
        gone = anyio.Event()

        async def call(i: int) -> None:
            try:
                await echo.aecho(i, delay=60)
            except corral.WorkerCrashed as error:
                errors.append(error)
                if len(errors) == 1000:
                    gone.set()

        async with anyio.create_task_group() as tg:
            for i in range(1000):
                tg.start_soon(call, i)
            with anyio.fail_after(10):
                while echo.statistics().in_flight < 1000:
                    await anyio.lowlevel.checkpoint()
            pid = echo.pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            with anyio.fail_after(2):  # the issue asks for 100 ms; CI machines are noisy
                await gone.wait()
        assert len(errors) == 1000
        assert all(e.signal_name == "SIGKILL" for e in errors)
        assert "SIGKILL" in str(errors[0])
        with pytest.raises(corral.WorkerCrashed):  # restart="never": later calls too
            await echo.echo(1)


async def test_on_failure_restart_reconnects_to_a_new_child() -> None:
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo, 3, restart="on-failure")
        first = echo.pid
        with pytest.raises(corral.WorkerCrashed, match="SIGKILL"):
            await echo.kill_self()
        assert await echo.value == 3  # waits for the new child, constructed the same way
        assert echo.pid not in (None, first)
        stats = echo.statistics()
        assert stats.restarts == 1
        assert stats.last_exit == -signal.SIGKILL


async def test_restarts_beyond_the_limit_fail_the_supervisor() -> None:
    with pytest.raises(corral.WorkerFailed, match="'flaky'") as raised:
        async with corral.Supervisor() as sup:
            echo = await sup.spawn(
                Echo, restart="on-failure", max_restarts=2, restart_window=60, name="flaky"
            )
            for _ in range(3):
                with pytest.raises(corral.WorkerCrashed):
                    await echo.kill_self()
            await anyio.sleep_forever()  # the supervisor cancels the body when it gives up
    assert isinstance(raised.value.__cause__, corral.WorkerCrashed)
    assert any("max_restarts=2" in note for note in raised.value.__cause__.__notes__)


async def test_a_crash_without_restart_fails_the_supervisor() -> None:
    with pytest.raises(corral.WorkerFailed) as raised:
        async with corral.Supervisor() as sup:
            echo = await sup.spawn(Echo, name="fragile")
            with pytest.raises(corral.WorkerCrashed):
                await echo.stderr_then_exit("last words", 3)
            await anyio.sleep_forever()
    crash = raised.value.__cause__
    assert isinstance(crash, corral.WorkerCrashed)
    assert crash.exit_code == 3
    assert "last words" in crash.stderr


async def test_kill_and_aclose_do_not_fail_the_supervisor() -> None:
    async with corral.Supervisor() as sup:
        killed = await sup.spawn(Echo, restart="always")
        closed = await sup.spawn(Echo, restart="always")
        killed.kill()
        await closed.aclose()
        await killed.wait_closed()
        assert killed.statistics().state == "closed"
        assert closed.statistics().last_exit == 0
        assert killed.statistics().restarts == closed.statistics().restarts == 0


async def test_garbage_on_the_pipe_breaks_the_connector_with_a_clear_error() -> None:
    async with corral.spawn(Echo) as echo:
        with pytest.raises(corral.ProtocolError, match=r"corrupt|exceeds"):
            await echo.garbage()
        await echo.wait_closed()
        with pytest.raises(corral.ProtocolError):
            await echo.echo(1)
        assert echo.pid is None


async def test_cancelled_callers_never_desynchronise_the_stream() -> None:
    rng = random.Random(1234)
    async with corral.spawn(Echo) as echo:
        answered = 0
        for i in range(300):
            delay = rng.choice([0.0, 0.0, 0.001])
            with anyio.move_on_after(rng.choice([0.0, 0.0005, 0.002, 1.0])):
                if rng.random() < 0.5:
                    assert await echo.aecho(i, delay=delay) == i
                else:
                    assert await echo.echo(i) == i
                answered += 1
        assert answered > 50
        for i in range(50):  # afterwards, every call gets its own reply
            assert await echo.echo(("after", i)) == ("after", i)
        assert echo.statistics().in_flight == 0


async def test_leaving_the_block_leaves_no_process_and_no_fd() -> None:
    await _warm_up()
    fds, children = _open_fds(), _children()
    async with corral.Supervisor() as sup:
        for _ in range(3):
            echo = await sup.spawn(Echo)
            await echo.echo(1)
        crashed = await sup.spawn(Echo, restart="on-failure")
        with pytest.raises(corral.WorkerCrashed):
            await crashed.kill_self()
        await crashed.echo(2)
    assert _children() == children
    assert _open_fds() == fds


async def test_a_cancelled_supervisor_block_still_closes_its_children() -> None:
    await _warm_up()
    fds, children = _open_fds(), _children()
    with anyio.move_on_after(0.5):
        async with corral.Supervisor() as sup:
            echo = await sup.spawn(Echo)
            await echo.wait_forever()
    assert _children() == children
    assert _open_fds() == fds


HOST = textwrap.dedent(
    """
    import sys
    import anyio
    import corral
    from tests.services import Echo

    async def main():
        async with corral.Supervisor() as sup:
            proxies = [await sup.spawn(Echo) for _ in range(4)]
            print(" ".join(str(p.pid) for p in proxies), flush=True)
            await anyio.sleep_forever()

    corral.run(main)
    """
)


def test_a_killed_host_leaves_no_orphans() -> None:
    with host(HOST) as (process, pids):
        assert len(pids) == 4
        running = outliving(process, pids, 1.0)
        assert not running, f"children outlived the host: {running}"


async def test_closing_while_a_restart_is_under_way_does_not_hang() -> None:
    children = _children()
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo, restart="on-failure")
        with pytest.raises(corral.WorkerCrashed):
            await echo.kill_self()
        with anyio.fail_after(10):
            await echo.aclose()
        assert echo.statistics().state == "closed"
        with pytest.raises(corral.WorkerStopped):
            await echo.echo(1)
    assert _children() == children
