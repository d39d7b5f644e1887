"""Spawned objects behind proxies: calls, attributes, streams, errors, lifetimes."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import corral
from tests.services import Echo, Failing, SlowStart, doubler

pytestmark = pytest.mark.anyio


async def test_calls_properties_and_attributes() -> None:
    async with corral.spawn(Echo, 5) as echo:
        assert await echo.echo({"a": [1, 2]}) == {"a": [1, 2]}
        assert await echo.aecho("x") == "x"
        assert await echo.state == "value=5"
        assert await echo.value == 5
        assert await echo.tag == "echo"
        assert await echo.getpid() == echo.pid != os.getpid()
        await echo.set_attr("settable", 9)
        assert await echo.value == 9
        assert await echo.call("echo", 3) == 3
        assert await echo.get_attr("value") == 9


async def test_attribute_errors_name_the_class() -> None:
    async with corral.spawn(Echo) as echo:
        with pytest.raises(AttributeError, match="'Echo' object has no attribute 'missing'"):
            await echo.missing()
        with pytest.raises(AttributeError, match="missing"):
            await echo.missing
        with pytest.raises(AttributeError, match="setter"):
            await echo.set_attr("state", "x")
        with pytest.raises(AttributeError, match="private"):
            await echo._hidden
        with pytest.raises(AttributeError, match="set_attr"):
            echo.value = 3
        with pytest.raises(TypeError, match="is a method; call it"):
            await echo.echo
        assert await echo.echo(1) == 1  # still usable


async def test_streams_async_and_sync_generators() -> None:
    async with corral.spawn(Echo) as echo:
        assert [i async for i in echo.count(200)] == list(range(200))
        assert [i async for i in echo.count_sync(5)] == list(range(5))
        async with anyio.create_task_group():  # an early break leaves the proxy usable
            async for i in echo.count(10_000):
                if i == 3:
                    break
        assert await echo.echo("after") == "after"


async def test_remote_exceptions_keep_their_type_and_traceback() -> None:
    async with corral.spawn(Echo) as echo:
        with pytest.raises(ValueError, match="kaboom") as raised:
            await echo.boom("kaboom")
        assert any("Remote traceback" in note for note in raised.value.__notes__)
        assert any("def boom" in note or "boom" in note for note in raised.value.__notes__)
        with pytest.raises(corral.RemoteError) as remote:
            await echo.boom_unpicklable()
        assert remote.value.type_name.endswith("Unpicklable")
        assert "nope" in remote.value.message
        assert "boom_unpicklable" in remote.value.traceback
        with pytest.raises(corral.SerializationError, match="cannot pickle"):
            await echo.unpicklable_result()
        assert await echo.echo(2) == 2
        stats = echo.statistics()
        assert stats.errors == 3
        assert stats.calls == 4
        assert stats.in_flight == 0


async def test_unpicklable_argument_names_it_and_proxy_stays_usable() -> None:
    async with corral.spawn(Echo) as echo:
        lock = threading.Lock()
        with pytest.raises(corral.SerializationError, match="argument 1") as raised:
            await echo.aecho("fine", lock)
        assert raised.value.argument == "1"
        with pytest.raises(corral.SerializationError, match="delay="):
            await echo.aecho("fine", delay=lock)
        with pytest.raises(corral.SerializationError):
            echo.record.nowait(lock)
        assert await echo.echo("still here") == "still here"


async def test_nowait_runs_in_order_and_logs_failures(caplog: pytest.LogCaptureFixture) -> None:
    async with corral.spawn(Echo) as echo:
        for i in range(5):
            echo.record.nowait(i)
        echo.boom.nowait("quiet failure")
        assert await echo.recorded() == [0, 1, 2, 3, 4]  # sync calls run in arrival order
    assert any("nowait() call failed" in r.getMessage() for r in caplog.records)


async def test_classes_lambdas_and_closures_defined_here_cross() -> None:
    class Local:
        def __init__(self, base: int) -> None:
            self.base = base

        def add(self, x: int) -> int:
            return self.base + x

    offset = 7
    async with corral.spawn(lambda: Local(offset)) as local:
        assert await local.add(1) == 8
        assert await local.add.__call__(2) == 9
    async with corral.spawn(Echo) as echo:
        assert (await echo.echo(lambda x: x * offset))(2) == 14


async def test_constructor_failure_is_a_startup_error_with_traceback() -> None:
    before = {p.pid for p in psutil.Process().children()}
    with pytest.raises(corral.StartupError, match="RuntimeError: no camera") as raised:
        async with corral.spawn(Failing, "no camera"):
            pytest.fail("should not start")
    assert "services.py" in raised.value.traceback
    assert "__init__" in raised.value.traceback
    assert {p.pid for p in psutil.Process().children()} <= before


async def test_startup_timeout_kills_the_child() -> None:
    with pytest.raises(corral.StartupError, match="not ready within"):
        async with corral.spawn(SlowStart, 30, startup_timeout=0.5):
            pytest.fail("should not start")


async def test_cpu_pins_the_child() -> None:
    cores = sorted(os.sched_getaffinity(0))
    async with corral.spawn(Echo, cpu=cores[-1]) as echo:
        assert await echo.affinity() == [cores[-1]]
        assert psutil.Process(echo.pid).cpu_affinity() == [cores[-1]]


async def test_child_logging_is_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with corral.spawn(Echo, name="logger-child") as echo:
        await echo.log("hello")
    records = [r for r in caplog.records if r.name == "tests.services"]
    assert [r.getMessage() for r in records] == ["child says hello"]
    assert records[0].processName == "logger-child"
    assert records[0].levelno == logging.WARNING


async def test_messages_published_by_the_child() -> None:
    async with corral.spawn(Echo) as echo:
        await echo.publish("events", [1, 2, 3])
        received = []
        async for value in echo.messages("events"):
            received.append(value)
            if len(received) == 3:
                break
        assert received == [1, 2, 3]


async def test_aclose_runs_the_close_hook(tmp_path: Path) -> None:
    marker = tmp_path / "closed"
    async with corral.spawn(Echo, closed_marker=str(marker)) as echo:
        await echo.echo(1)
    assert marker.read_text() == "closed"
    with pytest.raises(corral.WorkerStopped):
        await echo.echo(1)
    assert echo.pid is None


async def test_aclose_kills_a_child_that_will_not_finish() -> None:
    async with corral.spawn(Echo) as echo:
        echo.block.nowait(60)  # the child's main thread is stuck: it cannot see the close
        await echo.aclose(grace=0.2)
        assert echo.statistics().last_exit == -9
        assert echo.statistics().state == "closed"


async def test_threaded_method_does_not_hold_up_others() -> None:
    async with corral.spawn(Echo) as echo, anyio.create_task_group() as tg:
        results: list[str] = []

        async def waiter() -> None:
            results.append(await echo.wait_gate())

        tg.start_soon(waiter)
        assert await echo.echo("not blocked") == "not blocked"
        await echo.open_gate()
    assert results == ["opened"]


async def test_open_worker_runs_a_function_with_a_messenger() -> None:
    async with corral.open_worker(doubler, factor=3) as worker:
        assert await worker.request(14) == 42
        assert worker.remaining() == 0
    with pytest.raises(TypeError, match="async function"):
        async with corral.open_worker(print):  # type: ignore[arg-type]
            pass


async def test_supervisor_spawn_and_statistics() -> None:
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo, 1, name="svc")
        assert await echo.echo("x") == "x"
        (child,) = sup.statistics().children
        assert child.name == "svc"
        assert child.state == "running"
        assert child.calls == 1
        assert child.rss is not None
        assert child.rss > 1_000_000
        with pytest.raises(ValueError, match="already has a worker named 'svc'"):
            await sup.spawn(Echo, name="svc")
        pid = echo.pid
    assert pid is not None
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"restart": "sometimes"}, ValueError, "restart= must be one of"),
        ({"max_restarts": -1}, ValueError, "max_restarts="),
        ({"restart_window": 0}, ValueError, "restart_window="),
        ({"startup_timeout": "soon"}, ValueError, "startup_timeout="),
        ({"cpu": 10_000}, ValueError, "not a core this process may run on"),
        ({"cpu": "1"}, TypeError, "cpu="),
    ],
)
async def test_bad_options(options: dict[str, Any], error: type[Exception], match: str) -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(error, match=match):
            await sup.spawn(Echo, **options)
        with pytest.raises(TypeError, match="takes a class or a callable"):
            await sup.spawn(42)  # type: ignore[arg-type]
    with pytest.raises(corral.SupervisorNotRunning):
        await sup.spawn(Echo)


async def test_async_methods_run_concurrently() -> None:
    async with corral.spawn(Echo) as echo, anyio.create_task_group() as tg:
        results: list[str] = []

        async def meet() -> None:
            results.append(await echo.meet())

        tg.start_soon(meet)
        tg.start_soon(meet)
    assert sorted(results) == ["first", "second"]


async def test_child_stdout_and_stderr_reach_the_user(capfd: pytest.CaptureFixture[str]) -> None:
    async with corral.spawn(Echo) as echo:
        await echo.say("hello from the child")
    out, err = capfd.readouterr()
    assert "hello from the child" in out
    assert "hello from the child" in err


async def test_restart_always_brings_back_a_child_that_exits_cleanly() -> None:
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo, restart="always")
        with pytest.raises(corral.WorkerCrashed, match="exited with code 0"):
            await echo.stderr_then_exit("bye", 0)
        assert await echo.echo("back") == "back"
        assert echo.statistics().restarts == 1


SCRIPT = """
import corral

class Counter:  # defined in __main__, and no `if __name__ == "__main__"` guard
    def __init__(self):
        self.n = 0

    def bump(self, by):
        self.n += by
        return self.n

async def main():
    async with corral.spawn(Counter) as counter:
        await counter.bump(2)
        print(await counter.bump(3), await counter.n)

corral.run(main)
"""


def test_a_script_without_a_main_guard_spawns_its_own_classes(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "5"]


async def test_closing_ends_a_stream_still_held_by_the_caller() -> None:
    async with corral.spawn(Echo) as echo:
        stream = echo.count(1_000_000)
        async for i in stream:
            if i == 3:
                break
        with anyio.fail_after(3):  # not the 5 s grace: the child ends the stream itself
            await echo.aclose()
        assert echo.statistics().last_exit == 0


async def test_set_attr_refuses_private_names_and_nowait_refuses_generators() -> None:
    async with corral.spawn(Echo) as echo:
        with pytest.raises(AttributeError, match="private"):
            await echo.set_attr("_hidden", 1)
        with pytest.raises(TypeError, match="generator method"):
            echo.count.nowait(3)
        await echo.set_attr("echo", 5)  # a method replaced by a value is a value now
        assert await echo.echo == 5


async def failing_worker(messenger: corral.Messenger) -> None:
    await messenger.receive()
    raise RuntimeError("worker gave up")


async def returning_worker(messenger: corral.Messenger) -> None:
    await messenger.receive()


async def test_open_worker_failure_shows_its_traceback_and_a_return_stops_it() -> None:
    async with corral.open_worker(failing_worker) as worker:
        await worker.send("go")
        with pytest.raises(corral.WorkerCrashed, match="worker gave up"):
            await worker.request("anything")
    async with corral.open_worker(returning_worker) as worker:
        await worker.send("go")
        with pytest.raises(corral.WorkerStopped):
            await worker.request("anything")
