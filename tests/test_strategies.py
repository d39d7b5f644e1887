"""Supervision strategies (OTP): one_for_one, one_for_all, rest_for_one; restart
intensity and escalation; per-child policies; backoff; nested supervisors."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import anyio
import psutil
import pytest

import corral
from tests.services import Journal

pytestmark = [pytest.mark.anyio, pytest.mark.loops("uvloop", "trio")]


def entries(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


async def restarted(proxy: corral.Proxy[Journal], old: int) -> int:
    """The pid of the child that replaced ``old`` (calls wait through the restart)."""
    with anyio.fail_after(20):
        while True:
            try:
                pid: int = await proxy.getpid()
            except (corral.WorkerCrashed, corral.WorkerStopped):
                continue  # the call raced the restart; the next one waits for it
            if pid != old:
                return pid


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


async def spawn_three(
    sup: corral.Supervisor, path: Path
) -> tuple[corral.Proxy[Journal], corral.Proxy[Journal], corral.Proxy[Journal]]:
    a, b, c = [
        await sup.spawn(Journal, str(path), name, name=name, restart="on-failure")
        for name in "abc"
    ]
    return a, b, c


async def pids(*proxies: corral.Proxy[Journal]) -> list[int]:
    return [await p.getpid() for p in proxies]


async def test_one_for_one_restarts_only_the_child_that_crashed(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor() as sup:
        a, b, c = await spawn_three(sup, path)
        before = await pids(a, b, c)
        kill(before[1])
        new_b = await restarted(b, before[1])
        assert await pids(a, c) == [before[0], before[2]]
        assert new_b != before[1]
        stats = sup.statistics()
        assert stats.strategy == "one_for_one"
        assert stats.restarts == 1
        (event,) = stats.restart_history
        assert (event.child, event.siblings) == ("b", ())
        assert "SIGKILL" in event.reason
        by_name = {child.name: child for child in stats.children}
        assert by_name["b"].restarts == 1
        assert by_name["b"].last_exit_reason is not None
        assert "SIGKILL" in by_name["b"].last_exit_reason
        assert by_name["a"].restarts == 0
    assert entries(path)[:4] == ["start a", "start b", "start c", "start b"]


async def test_one_for_all_stops_the_others_last_first_and_starts_all_in_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(strategy="one_for_all") as sup:
        a, b, c = await spawn_three(sup, path)
        before = await pids(a, b, c)
        kill(before[1])
        after = [await restarted(p, old) for p, old in zip((a, b, c), before, strict=True)]
        assert not set(after) & set(before)
        (event,) = sup.statistics().restart_history
        assert event.child == "b"
        assert event.siblings == ("a", "c")
        assert {child.name: child.restarts for child in sup.statistics().children} == {
            "a": 1,
            "b": 1,
            "c": 1,
        }
        reasons = {child.name: child.last_exit_reason for child in sup.statistics().children}
        assert "restarted with 'b' (one_for_all)" in str(reasons["a"])
    assert entries(path)[3:8] == ["stop c", "stop a", "start a", "start b", "start c"]


async def test_rest_for_one_restarts_the_child_and_those_started_after_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(strategy="rest_for_one") as sup:
        a, b, c = await spawn_three(sup, path)
        before = await pids(a, b, c)
        kill(before[1])
        assert await restarted(c, before[2]) != before[2]
        assert await restarted(b, before[1]) != before[1]
        assert await a.getpid() == before[0]
        (event,) = sup.statistics().restart_history
        assert event.siblings == ("c",)
    assert entries(path)[3:6] == ["stop c", "start b", "start c"]


async def test_more_restarts_than_the_limit_escalate_with_the_history(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with pytest.raises(corral.WorkerFailed, match="'b'") as raised:
        async with corral.Supervisor(max_restarts=2, restart_window=60) as sup:
            a, b, _ = await spawn_three(sup, path)
            survivor = await a.getpid()
            for _ in range(3):
                old = await b.getpid()
                kill(old)
                if sup.statistics().restarts < 2:
                    await restarted(b, old)
            await anyio.sleep_forever()  # the supervisor cancels the body when it escalates
    failure = raised.value
    assert len(failure.history) == 2
    assert all(event.child == "b" for event in failure.history)
    notes = "\n".join(failure.error.__notes__)
    assert "max_restarts=2" in notes
    assert "SIGKILL" in notes
    assert not psutil.pid_exists(survivor) or psutil.Process(survivor).status() == "zombie"
    assert "stop a" in entries(path)  # the others were closed gracefully


async def test_the_limit_counts_restarts_of_all_children_together(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with pytest.raises(corral.WorkerFailed, match="'c'"):
        async with corral.Supervisor(max_restarts=2, restart_window=60) as sup:
            a, b, c = await spawn_three(sup, path)
            for proxy in (a, b):
                old = await proxy.getpid()
                kill(old)
                await restarted(proxy, old)
            kill(await c.getpid())  # the third restart of the supervisor's children
            await anyio.sleep_forever()


async def test_per_child_policies_always_on_failure_never(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor() as sup:
        always = await sup.spawn(Journal, str(path), "x", name="x", restart="always")
        transient = await sup.spawn(Journal, str(path), "y", name="y", restart="on-failure")
        old = await always.getpid()
        with pytest.raises(corral.WorkerCrashed):
            await always.exit_cleanly()
        assert await restarted(always, old) != old  # a clean exit restarts it too
        with pytest.raises(corral.WorkerCrashed):
            await transient.exit_cleanly()
        await transient.wait_closed()  # a clean exit of an on-failure child: it is done
        assert transient.statistics().state == "closed"
        assert transient.statistics().last_exit_reason == "exited cleanly"
        assert sup.statistics().restarts == 1
    # and leaving the block raised nothing: neither exit failed the supervisor


async def test_backoff_doubles_with_jitter_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        max_restarts=10, restart_window=60, backoff=0.2, max_backoff=0.3
    ) as sup:
        child = await sup.spawn(Journal, str(path), "x", restart="on-failure")
        for _ in range(3):
            old = await child.getpid()
            started = anyio.current_time()
            kill(old)
            await restarted(child, old)
            assert anyio.current_time() - started >= 0.1  # at least half the first bound
        delays = [event.delay for event in sup.statistics().restart_history]
    bounds = [0.2, 0.3, 0.3]  # min(0.2 * 2 ** (n - 1), 0.3)
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 <= delay <= bound


async def test_a_nested_supervisor_restarts_its_group_then_escalates_to_its_parent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(max_restarts=5, restart_window=60) as sup:
        outside = await sup.spawn(Journal, str(path), "o", name="o", restart="on-failure")
        cell = await sup.supervisor(
            name="cell", strategy="one_for_all", max_restarts=1, restart_window=60
        )
        x = await cell.spawn(Journal, str(path), "x", name="x", restart="on-failure")
        y = await cell.spawn(Journal, str(path), "y", name="y", restart="on-failure")
        keep = await outside.getpid()
        first = await pids(x, y)
        kill(first[0])  # the cell restarts x and y together (its 1 restart)
        second = [await restarted(p, old) for p, old in zip((x, y), first, strict=True)]
        assert cell.statistics().restarts == 1
        assert sup.statistics().restarts == 0
        kill(second[0])  # over the cell's limit: it escalates, and the parent restarts it
        third = [await restarted(p, old) for p, old in zip((x, y), second, strict=True)]
        assert not set(third) & set(second)
        assert await outside.getpid() == keep  # one_for_one at the top: untouched
        top = sup.statistics()
        assert top.restarts == 1
        assert top.restart_history[-1].child == "cell"
        assert [nested.name for nested in top.supervisors] == ["cell"]
        assert cell.statistics().state == "running"
        # the cell counts afresh after its restart: one more crash is within its limit
        kill(third[1])
        await restarted(y, third[1])
        assert sup.statistics().restarts == 1


async def test_a_nested_supervisor_that_may_not_restart_fails_its_parent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    with pytest.raises(corral.WorkerFailed, match="'cell'") as raised:
        async with corral.Supervisor() as sup:
            cell = await sup.supervisor(name="cell", restart="never", max_restarts=0)
            x = await cell.spawn(Journal, str(path), "x", restart="on-failure")
            kill(await x.getpid())
            await anyio.sleep_forever()
    assert isinstance(raised.value.error, corral.WorkerCrashed)
    assert any("max_restarts=0" in note for note in raised.value.error.__notes__)


async def test_a_nested_in_process_worker_failure_is_fatal_to_its_supervisor() -> None:
    def broken() -> None:
        raise RuntimeError("sensor unplugged")

    with pytest.raises(corral.WorkerFailed, match="'cell'") as raised:
        async with corral.Supervisor() as sup:
            cell = await sup.supervisor(name="cell")
            cell.every(0.01, broken, name="poll")
            await anyio.sleep_forever()
    inner = raised.value.error
    assert isinstance(inner, corral.WorkerFailed)
    assert inner.worker == "poll"


async def test_a_nested_supervisor_closed_early_stops_only_its_own(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor() as sup:
        outside = await sup.spawn(Journal, str(path), "o", name="o")
        cell = await sup.supervisor(name="cell")
        ticks = cell.every(0.001, lambda: None)
        x = await cell.spawn(Journal, str(path), "x", name="x")
        await ticks.wait_runs(3)
        await cell.aclose()
        assert cell.state == "stopped"
        assert x.statistics().state == "closed"
        assert ticks.state is corral.WorkerState.STOPPED
        assert await outside.getpid() > 0
        with pytest.raises(corral.SupervisorNotRunning):
            await cell.spawn(Journal, str(path), "z")
        await cell.aclose()  # again: nothing to do
    assert entries(path) == ["start o", "start x", "stop x", "stop o"]


async def test_calls_during_a_group_restart_return_or_raise(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(strategy="one_for_all", max_restarts=50) as sup:
        a, b, _ = await spawn_three(sup, path)
        outcomes: list[str] = []

        async def call_b() -> None:
            for _ in range(200):
                try:
                    await b.getpid()
                    outcomes.append("ok")
                except (corral.WorkerCrashed, corral.WorkerStopped):
                    outcomes.append("crashed")

        async with anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(call_b)
            for _ in range(3):
                old = await a.getpid()
                kill(old)
                await restarted(a, old)
        assert len(outcomes) == 1600
        assert outcomes.count("ok") > 0
        assert sup.statistics().restarts == 3


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"strategy": "all_for_one"}, "strategy= must be one of"),
        ({"max_restarts": -1}, "max_restarts="),
        ({"restart_window": 0}, "restart_window="),
        ({"backoff": -1}, "backoff="),
        ({"backoff": 1.0, "max_backoff": 0.5}, "max_backoff="),
    ],
)
def test_supervisor_strategy_options_are_checked(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        corral.Supervisor(**options)  # type: ignore[arg-type]


async def test_nested_supervisor_options_are_checked() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(ValueError, match="restart= must be one of"):
            await sup.supervisor(restart="always")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="strategy="):
            await sup.supervisor(strategy="none")  # type: ignore[arg-type]
        with pytest.raises(RuntimeError, match="not nested"):
            await sup.aclose()
