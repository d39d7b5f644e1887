"""Review regression tests for the zygote (a supervisor's children forked from it).

Each test states what the docs (docs/connectors.md, "How a child starts")
promise, or what a spawned child does, and fails today; the reason on each
xfail names the bug. The services and processes are in
tests/processes_regress2.py, which the children import.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import anyio
import anyio.lowlevel
import psutil
import pytest

import corral
from tests.processes_regress2 import Probe, RaisesBase
from tests.zygotes import zygote_ready

pytestmark = pytest.mark.anyio

SOON = 3.0  # seconds: what takes milliseconds when it works


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


async def test_a_fork_request_too_big_to_send_does_not_kill_the_forked_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Probe)
        forker = await zygote_ready(sup)
        forked = await sup.spawn(Probe, name="forked")
        assert psutil.Process(forked.pid).ppid() == forker._pid
        # two variables under the kernel's 128 KiB limit for one: a spawned child gets them
        monkeypatch.setenv("CORRAL_BIG_1", "x" * 120_000)
        monkeypatch.setenv("CORRAL_BIG_2", "y" * 120_000)
        later = await sup.spawn(Probe, name="later")  # spawned instead of forked: fine
        monkeypatch.delenv("CORRAL_BIG_1")
        monkeypatch.delenv("CORRAL_BIG_2")
        assert await later.getpid() == later.pid
        assert await forked.getpid() == forked.pid  # and the forked child is still there


async def test_startup_timeout_bounds_a_start_when_the_zygote_does_not_answer() -> None:
    async with corral.Supervisor(shutdown_timeout=1) as sup:
        await sup.spawn(Probe)
        forker = await zygote_ready(sup)
        os.kill(forker._pid, signal.SIGSTOP)
        try:
            with anyio.fail_after(SOON):
                try:
                    later = await sup.spawn(Probe, name="later", startup_timeout=1)
                except corral.StartupError:
                    pass  # bounded by startup_timeout: fine
                else:  # or spawned instead: fine too
                    assert await later.getpid() == later.pid
        finally:
            _resume(forker._pid)


async def test_leaving_the_block_is_bounded_when_the_zygote_does_not_answer() -> None:
    zygote = 0
    left = 0.0
    try:
        # (a safety net: cancelling the block's task group ends the zygote's reader, and
        # with it the wait; on asyncio the block then returns without a TimeoutError)
        with anyio.move_on_after(SOON):
            async with corral.Supervisor(shutdown_timeout=0.5) as sup:
                await sup.spawn(Probe)
                zygote = (await zygote_ready(sup))._pid
                await sup.spawn(Probe, name="forked")
                os.kill(zygote, signal.SIGSTOP)  # (or hung: it reaps and reports no more)
                left = anyio.current_time()
    finally:
        if zygote:
            _resume(zygote)
    assert anyio.current_time() - left < 2.0  # shutdown_timeout=0.5, then a kill


async def test_a_start_the_zygote_died_during_is_spawned_on_a_socket_of_its_own() -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Probe)
        forker = await zygote_ready(sup)
        outcome: list[object] = []

        async def start() -> None:
            try:
                outcome.append(await sup.spawn(Probe, name="a", startup_timeout=2))
            except corral.StartupError as error:
                outcome.append(error)

        os.kill(forker._pid, signal.SIGSTOP)
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(start)
                with anyio.fail_after(SOON):
                    while not forker._pending:  # its fork request is on its way
                        await anyio.lowlevel.checkpoint()
                # The zygote's answer will not reach the host: as when it dies (OOM killer,
                # a signal) between its fork and its answer. The host spawns instead.
                assert forker._sock is not None
                forker._sock.shutdown(socket.SHUT_RD)
                _resume(forker._pid)  # it forks, cannot answer, and exits
        finally:
            _resume(forker._pid)
        [child] = outcome
        assert isinstance(child, corral.Proxy), child
        assert await child.getpid() == child.pid


async def test_a_forked_child_that_dies_of_an_uncaught_exception_says_why() -> None:
    async with corral.start(RaisesBase("interrupt")) as job:  # spawned
        with anyio.fail_after(SOON), pytest.raises(corral.WorkerCrashed) as spawned:
            await job.result()
    assert "KeyboardInterrupt" in str(spawned.value)  # the traceback's last lines
    async with corral.Supervisor() as sup:
        await sup.spawn(Probe)
        await zygote_ready(sup)
        job = await sup.start(RaisesBase("interrupt"))  # forked
        with anyio.fail_after(SOON), pytest.raises(corral.WorkerCrashed) as forked:
            await job.result()
    assert "KeyboardInterrupt" in str(forked.value)


async def test_a_forked_child_gets_the_hosts_current_umask() -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Probe)
        await zygote_ready(sup)
        old = os.umask(0o077)
        try:
            child = await sup.spawn(Probe)
        finally:
            os.umask(old)
        assert await child.umask() == 0o077


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores")
async def test_a_forked_child_gets_the_hosts_current_cpu_affinity() -> None:
    cores = sorted(os.sched_getaffinity(0))
    async with corral.Supervisor() as sup:
        await sup.spawn(Probe)
        await zygote_ready(sup)
        os.sched_setaffinity(0, cores[:1])
        try:
            child = await sup.spawn(Probe)
        finally:
            os.sched_setaffinity(0, cores)
        assert await child.affinity() == cores[:1]
