"""Children forked from a supervisor's zygote: fast, and the same as spawned ones otherwise."""

from __future__ import annotations

import os
import random
import signal
import sys
import textwrap
from pathlib import Path

import anyio
import psutil
import pytest

import corral
from tests.hosts import host, outliving
from tests.services import Echo
from tests.zygotes import zygote_ready

pytestmark = pytest.mark.anyio


async def test_children_after_the_first_are_forked_from_the_zygote() -> None:
    async with corral.Supervisor() as sup:
        first = await sup.spawn(Echo)
        assert psutil.Process(first.pid).ppid() == os.getpid()  # spawned
        forker = await zygote_ready(sup)
        second = await sup.spawn(Echo, 2)
        assert psutil.Process(second.pid).ppid() == forker._pid  # forked
        assert await second.echo("hi") == "hi"
        assert await second.state == "value=2"  # built from its own arguments
        zygote = psutil.Process(forker._pid)
    assert not zygote.is_running() or zygote.status() == psutil.STATUS_ZOMBIE
    assert psutil.Process().children() == []


async def test_a_forked_child_gets_the_hosts_environment_directory_and_stdio_now(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Echo)
        await zygote_ready(sup)
        monkeypatch.setenv("CORRAL_ZYGOTE_TEST", "set after the zygote started")
        monkeypatch.chdir(tmp_path)
        child = await sup.spawn(Environment, restart="on-failure")  # it will exit: not a failure
        assert await child.getenv("CORRAL_ZYGOTE_TEST") == "set after the zygote started"
        assert await child.getcwd() == str(tmp_path)
        assert await child.stdin_is_null()
        with pytest.raises(corral.WorkerCrashed) as caught:
            await child.stderr_then_exit("the last words of a forked child", 3)
    assert "the last words of a forked child" in str(caught.value)
    assert caught.value.exit_code == 3


async def test_forked_children_do_not_share_random_state() -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Echo)
        await zygote_ready(sup)
        children = [await sup.spawn(Environment) for _ in range(2)]
        draws = [await child.draw() for child in children]
    assert draws[0] != draws[1]


async def test_a_dead_zygote_takes_its_children_and_later_ones_are_spawned(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with corral.Supervisor() as sup:
        await sup.spawn(Echo)
        forker = await zygote_ready(sup)
        forked = await sup.spawn(Echo, name="forked", restart="on-failure")
        os.kill(forker._pid, signal.SIGKILL)
        with anyio.fail_after(10), pytest.raises(corral.WorkerCrashed):
            await forked.wait_forever()
        with anyio.fail_after(10):
            assert await forked.echo(1) == 1  # restarted: spawned
        assert psutil.Process(forked.pid).ppid() == os.getpid()
        assert forker._failed
        later = await sup.spawn(Echo, name="later")
        assert psutil.Process(later.pid).ppid() == os.getpid()
        assert await later.echo(5) == 5
    assert "the zygote exited" in caplog.text


HOST = textwrap.dedent(
    """
    import anyio
    import corral
    from tests.services import Echo

    async def main():
        async with corral.Supervisor() as sup:
            first = await sup.spawn(Echo)
            with anyio.fail_after(30):
                await sup._forker._ready.wait()
            proxies = [first] + [await sup.spawn(Echo) for _ in range(3)]
            pids = [p.pid for p in proxies] + [sup._forker._pid]
            print(" ".join(map(str, pids)), flush=True)
            await anyio.sleep_forever()

    corral.run(main)
    """
)


def test_a_killed_host_takes_the_zygote_and_its_children() -> None:
    with host(HOST) as (process, pids):
        assert len(pids) == 5
        forked = [psutil.Process(pid).ppid() for pid in pids[1:4]]
        assert forked == [pids[4]] * 3  # (the last pid is the zygote's)
        running = outliving(process, pids, 2.0)
        assert not running, f"outlived the host: {running}"


class Environment:
    """What a child sees of its environment."""

    def getenv(self, name: str) -> str | None:
        return os.environ.get(name)

    def getcwd(self) -> str:
        return os.getcwd()

    def stdin_is_null(self) -> bool:
        return os.path.samestat(os.fstat(0), os.stat(os.devnull))

    def draw(self) -> float:
        return random.random()

    def stderr_then_exit(self, line: str, code: int) -> None:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
        os._exit(code)
