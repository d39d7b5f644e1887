"""Regression tests for supervision strategies: races between group restarts,
escalations, closes and shutdowns (one_for_all, rest_for_one, nested)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import corral
from tests.hosts import ROOT
from tests.services import Journal
from tests.test_strategies import entries, kill

pytestmark = [pytest.mark.anyio, pytest.mark.loops("uvloop", "trio")]

DEADLINE = 15  # seconds any one wait in these tests may take


def descendants() -> set[int]:
    """Pids of this process's live descendants (zombies excluded)."""
    alive = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.add(child.pid)
        except psutil.NoSuchProcess:
            pass
    return alive


async def none_left(before: set[int]) -> None:
    """Every process started since ``before`` is gone (give the kernel a moment)."""
    with anyio.fail_after(5):
        while descendants() - before:  # noqa: ASYNC110  (no event for a process's exit)
            await anyio.sleep(0.02)


async def pid_of(proxy: corral.Proxy[Any]) -> int:
    """The pid of the current child (calls that race a restart are retried)."""
    with anyio.fail_after(DEADLINE):
        while True:
            try:
                pid: int = await proxy.getpid()
            except (corral.WorkerCrashed, corral.WorkerStopped) as error:
                if proxy.statistics().state in ("closed", "failed"):
                    raise AssertionError(f"{proxy.statistics()} is gone") from error
                continue
            return pid


async def restarted(proxy: corral.Proxy[Any], old: int) -> int:
    """The pid of the child that replaced ``old``."""
    with anyio.fail_after(DEADLINE):
        while True:
            pid = await pid_of(proxy)
            if pid != old:
                return pid
            await anyio.sleep(0.01)  # (polling a restart that has not begun yet)


async def until(predicate: object, what: str) -> None:
    """Wait (polling) until ``predicate()`` is true."""
    assert callable(predicate)
    with anyio.fail_after(DEADLINE):
        while not predicate():  # noqa: ASYNC110  (statistics have no change event)
            await anyio.sleep(0.005)


async def spawn(
    sup: corral.Supervisor, path: Path, names: str, restart: str = "on-failure"
) -> list[corral.Proxy[Journal]]:
    return [
        await sup.spawn(Journal, str(path), name, name=name, restart=restart)  # type: ignore[arg-type]
        for name in names
    ]


# -- overlapping group restarts ------------------------------------------------------


# Was a bug: overlapping group restarts share one gate per child in Supervision._held; _hold()
# (_supervision.py:271) keeps the gate of the pending earlier group, so the later group's
# _restart_group (l.227) finds b and c already held, does not stop them, and the earlier group's
# _release (l.261) starts b and c before a: start order broken, b and c never restarted after a's
# crash (fixed: groups restart one at a time, each holding its group when it begins)
async def test_rest_for_one_earlier_crash_while_a_later_group_is_pending_keeps_order(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="rest_for_one", max_restarts=20, restart_window=60, backoff=0.2, max_backoff=2.0
    ) as sup:
        a, b, c = await spawn(sup, path, "abc")
        # a's own window: two restarts first, so that its next pause is long (0.4-0.8 s)
        for _ in range(2):
            old = await pid_of(a)
            kill(old)
            await restarted(a, old)
            await pid_of(b)
            await pid_of(c)
        before = [await pid_of(p) for p in (a, b, c)]
        path.write_text("")
        kill(before[1])  # b: its group (b, c) restarts after 0.1-0.2 s
        await until(lambda: sup.statistics().restarts == 3, "b's restart recorded")
        kill(before[0])  # a, while b's group is pending: a, b, c must start in order
        await until(lambda: sup.statistics().restarts == 4, "a's restart recorded")
        after = [await restarted(p, old) for p, old in zip((a, b, c), before, strict=True)]
        assert after
        await anyio.sleep(0.5)  # (let any late restart happen)
        starts = [line for line in entries(path) if line.startswith("start")]
        assert starts[-3:] == ["start a", "start b", "start c"], entries(path)


# Was a bug: group 2's _hold (_supervision.py:271) reuses group 1's gates for x and y; group 1's
# _release pops them (l.266) and starts x and y; group 2 then recycles them while running and not
# held: their graceful exit (status 0) goes through after_exit (l.142) -> _child_ended as a clean
# exit -> give_up(None) (l.165): closed for good (fixed: groups restart one at a time, each
# holding its group when it begins)
async def test_one_for_all_overlapping_restarts_do_not_close_children_for_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="one_for_all", max_restarts=20, restart_window=60, backoff=1.0, max_backoff=2.0
    ) as sup:
        x, y = await spawn(sup, path, "xy")
        kill(await pid_of(x))  # group 1 (x, y): held for 0.5-1 s
        await until(lambda: sup.statistics().restarts == 1, "x's restart recorded")
        # two children started while group 1 waits; w closes slowly
        w = await sup.spawn(SlowClose, str(path), "w", name="w", restart="on-failure")
        v = await sup.spawn(Journal, str(path), "v", name="v", restart="on-failure")
        kill(await pid_of(v))  # group 2 (x, y, w, v): it stops w (1.5 s), then y and x
        await until(lambda: sup.statistics().restarts == 2, "v's restart recorded")
        for proxy in (x, y, w, v):  # every child comes back: on-failure, none exited by itself
            await pid_of(proxy)
        states = {child.name: child.state for child in sup.statistics().children}
        assert states == dict.fromkeys("xywv", "running"), states


async def test_one_for_all_children_killed_together_restart_once(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(strategy="one_for_all", max_restarts=1, restart_window=60) as sup:
        proxies = await spawn(sup, path, "abc")
        before = [await pid_of(p) for p in proxies]
        for pid in before:
            kill(pid)
        after = [await restarted(p, old) for p, old in zip(proxies, before, strict=True)]
        assert not set(after) & set(before)
        stats = sup.statistics()
        assert stats.restarts == 1, stats.restart_history  # one group: within max_restarts=1
        assert {c.name: (c.state, c.restarts) for c in stats.children} == dict.fromkeys(
            "abc", ("running", 1)
        )


@pytest.mark.parametrize("how", ["kill", "aclose"])
async def test_a_child_closed_while_held_for_a_group_restart(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="one_for_all", max_restarts=5, restart_window=60, backoff=0.5
    ) as sup:
        a, b, c = await spawn(sup, path, "abc")
        before = [await pid_of(p) for p in (a, b, c)]
        kill(before[0])
        await until(lambda: b.statistics().state == "restarting", "b held")
        with anyio.fail_after(DEADLINE):
            if how == "kill":
                b.kill()
                await b.wait_closed()
            else:
                await b.aclose()
        assert b.statistics().state == "closed"
        assert await restarted(a, before[0]) != before[0]
        assert await restarted(c, before[2]) != before[2]
        with pytest.raises(corral.WorkerStopped), anyio.fail_after(DEADLINE):
            await b.getpid()
        assert sup.statistics().restarts == 1
    assert "start b" not in entries(path)[3:]


async def test_the_culprit_closed_during_its_group_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="rest_for_one", max_restarts=5, restart_window=60, backoff=0.5
    ) as sup:
        a, b, c = await spawn(sup, path, "abc")
        before = [await pid_of(p) for p in (a, b, c)]
        kill(before[1])
        await until(lambda: c.statistics().state == "restarting", "c held")
        with anyio.fail_after(DEADLINE):
            await b.aclose()
        assert await restarted(c, before[2]) != before[2]
        assert await a.getpid() == before[0]
        states = {child.name: child.state for child in sup.statistics().children}
        assert states == {"a": "running", "b": "closed", "c": "running"}


@pytest.mark.parametrize("how", ["normally", "by error", "by cancellation"])
async def test_leaving_the_block_during_a_group_restart(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal"
    before = descendants()
    started = anyio.current_time()
    with anyio.CancelScope() as outer:
        try:
            async with corral.Supervisor(
                strategy="one_for_all", max_restarts=5, restart_window=60, backoff=0.3
            ) as sup:
                proxies = await spawn(sup, path, "abcd")
                kill(await pid_of(proxies[1]))
                await until(lambda: sup.statistics().restarts == 1, "the restart recorded")
                await anyio.sleep(0.1)  # (into the group restart: the others being stopped)
                if how == "by error":
                    raise LookupError("the body failed")
                if how == "by cancellation":
                    outer.cancel()
                    await anyio.sleep_forever()
        except LookupError:
            assert how == "by error"
    assert anyio.current_time() - started < 10
    assert not outer.cancelled_caught or how == "by cancellation"
    states = {child.name: child.state for child in sup.statistics().children}
    assert set(states.values()) == {"closed"}, states
    await none_left(before)


async def test_escalation_while_a_group_restart_is_starting_children(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    before = descendants()
    calls: list[str] = []

    async def call_forever(proxy: corral.Proxy[Journal]) -> None:
        while True:
            try:
                await proxy.getpid()
                calls.append("ok")
            except (corral.WorkerCrashed, corral.WorkerStopped):
                calls.append("raised")
                await anyio.sleep(0.001)

    with pytest.raises(corral.WorkerFailed, match="'a'") as raised:
        with anyio.fail_after(DEADLINE):
            async with corral.Supervisor(
                strategy="one_for_all", max_restarts=1, restart_window=60
            ) as sup:
                a, b, c = await spawn(sup, path, "abc")
                sup_tasks = anyio.create_task_group()
                async with sup_tasks:
                    for proxy in (a, b, c):
                        sup_tasks.start_soon(call_forever, proxy)
                    old = await pid_of(a)
                    kill(old)
                    new = await restarted(a, old)
                    kill(new)  # the group restart may still be starting b and c
                    await anyio.sleep_forever()
    assert isinstance(raised.value.error, corral.WorkerCrashed)
    assert len(raised.value.history) == 1
    stats = sup.statistics()
    assert {c.name: c.state for c in stats.children} == {
        "a": "failed",
        "b": "closed",
        "c": "closed",
    }
    assert "raised" in calls
    await none_left(before)


async def test_always_children_that_exit_cleanly_in_a_loop_escalate(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with pytest.raises(corral.WorkerFailed, match="'x'") as raised:
        with anyio.fail_after(DEADLINE):
            async with corral.Supervisor(
                strategy="one_for_all", max_restarts=3, restart_window=60
            ) as sup:
                await sup.spawn(Journal, str(path), "o", name="o", restart="always")
                await sup.spawn(ExitSoon, str(path), "x", name="x", restart="always")
                await anyio.sleep_forever()
    assert len(raised.value.history) == 3
    assert all(event.child == "x" for event in raised.value.history)
    assert all(event.reason == "exited cleanly" for event in raised.value.history)
    assert entries(path).count("start x") == 4
    stats = sup.statistics()
    by_name = {c.name: c for c in stats.children}
    assert by_name["x"].state == "failed"
    assert by_name["x"].restarts == 3
    assert by_name["o"].restarts == 3
    assert by_name["o"].state == "closed"


async def test_group_restart_backoff_stays_within_its_bound(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="one_for_all", max_restarts=10, restart_window=60, backoff=0.05, max_backoff=0.1
    ) as sup:
        a, b = await spawn(sup, path, "ab")
        for _ in range(4):
            old = [await pid_of(p) for p in (a, b)]
            started = anyio.current_time()
            kill(old[0])
            await restarted(a, old[0])
            await restarted(b, old[1])
            assert anyio.current_time() - started >= 0.025
        delays = [event.delay for event in sup.statistics().restart_history]
    bounds = [0.05, 0.1, 0.1, 0.1]
    for delay, bound in zip(delays, bounds, strict=True):
        assert bound / 2 <= delay <= bound


# -- nested supervisors --------------------------------------------------------------


async def test_nested_escalation_while_the_parent_restarts_it(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(
        strategy="one_for_all", max_restarts=10, restart_window=60
    ) as sup:
        (s,) = await spawn(sup, path, "s")
        cell = await sup.supervisor(name="cell", max_restarts=0, restart_window=60)
        x, y = await spawn(cell, path, "xy")
        before = [await pid_of(p) for p in (s, x, y)]
        kill(before[1])  # the cell escalates...
        kill(before[0])  # ...as its parent starts a group restart of s and the cell
        after = [await restarted(p, old) for p, old in zip((s, x, y), before, strict=True)]
        assert after
        await anyio.sleep(0.3)  # (let a late restart begin)
        for proxy in (s, x, y):
            await pid_of(proxy)
        assert {c.name: c.state for c in cell.statistics().children} == {
            "x": "running",
            "y": "running",
        }
        assert s.statistics().state == "running"
        top = sup.statistics()
        assert 1 <= top.restarts <= 2
        assert cell.statistics().state == "running"


async def test_nested_closed_while_its_parent_waits_to_restart_it(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(max_restarts=10, restart_window=60, backoff=0.5) as sup:
        (o,) = await spawn(sup, path, "o")
        cell = await sup.supervisor(name="cell", max_restarts=0, restart_window=60)
        x, _ = await spawn(cell, path, "xy")
        kill(await pid_of(x))  # the cell escalates; its parent restarts it in 0.25-0.5 s
        await until(lambda: sup.statistics().restarts == 1, "the cell's restart recorded")
        with anyio.fail_after(DEADLINE):
            await cell.aclose()
        assert cell.state == "stopped"
        await anyio.sleep(0.6)  # (past the parent's pause: it must not start them again)
        assert {c.name: c.state for c in cell.statistics().children} == {
            "x": "closed",
            "y": "closed",
        }
        with pytest.raises(corral.WorkerStopped), anyio.fail_after(DEADLINE):
            await x.getpid()
        await pid_of(o)
    assert entries(path).count("start x") == 1


async def test_nested_closed_during_its_own_group_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    before = descendants()
    async with corral.Supervisor() as sup:
        cell = await sup.supervisor(name="cell", strategy="one_for_all", backoff=0.5)
        x, y = await spawn(cell, path, "xy")
        kill(await pid_of(x))
        await until(lambda: y.statistics().state == "restarting", "y held")
        with anyio.fail_after(DEADLINE):
            await cell.aclose()
        assert {c.name: c.state for c in cell.statistics().children} == {
            "x": "closed",
            "y": "closed",
        }
        assert sup.statistics().restarts == 0
    await none_left(before)


async def test_two_levels_escalate_step_by_step(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(max_restarts=5, restart_window=60) as sup:
        mid = await sup.supervisor(name="mid", max_restarts=1, restart_window=60)
        inner = await mid.supervisor(name="inner", max_restarts=0, restart_window=60)
        (x,) = await spawn(inner, path, "x")
        first = await pid_of(x)
        kill(first)  # inner escalates; mid restarts it (mid's 1 restart)
        second = await restarted(x, first)
        assert (mid.statistics().restarts, sup.statistics().restarts) == (1, 0)
        kill(second)  # inner escalates again; over mid's limit: mid escalates, sup restarts it
        third = await restarted(x, second)
        assert third not in (first, second)
        assert (mid.statistics().restarts, sup.statistics().restarts) == (1, 1)
        assert sup.statistics().restart_history[-1].child == "mid"
        kill(third)  # mid counts afresh: inner escalates and mid restarts it
        await restarted(x, third)
        assert (mid.statistics().restarts, sup.statistics().restarts) == (2, 1)
        assert inner.statistics().state == mid.statistics().state == "running"


async def test_two_levels_with_restart_never_restart_the_subtree(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(max_restarts=5, restart_window=60) as sup:
        mid = await sup.supervisor(name="mid", max_restarts=5, restart_window=60)
        inner = await mid.supervisor(name="inner", max_restarts=0, restart="never")
        (x,) = await spawn(inner, path, "x")
        (m,) = await spawn(mid, path, "m")
        first = [await pid_of(x), await pid_of(m)]
        kill(first[0])  # inner fails for good: mid escalates in turn; sup restarts mid
        after = [await restarted(x, first[0]), await restarted(m, first[1])]
        assert after
        assert sup.statistics().restarts == 1
        assert sup.statistics().restart_history[-1].child == "mid"


async def test_two_levels_never_at_the_top_fails_and_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    before = descendants()
    with pytest.raises(corral.WorkerFailed, match="'mid'"), anyio.fail_after(DEADLINE):
        async with corral.Supervisor() as sup:
            mid = await sup.supervisor(name="mid", restart="never", max_restarts=0)
            inner = await mid.supervisor(name="inner", max_restarts=0)
            (x,) = await spawn(inner, path, "x")
            await spawn(mid, path, "m")
            await spawn(sup, path, "o")
            kill(await pid_of(x))
            await anyio.sleep_forever()
    await none_left(before)
    assert {c.name: c.state for c in sup.statistics().children} == {"o": "closed"}


# Was a bug (on trio, where scheduling order exposed it): when the second group restart
# (f's failed start) stopped b after the first had released it, b's exit was taken for a
# clean one and b was closed for good. Groups now restart one at a time.
async def test_a_sibling_failing_its_restart_does_not_close_the_others_for_good(
    tmp_path: Path,
) -> None:
    path = tmp_path / "journal"
    marker = tmp_path / "fail-once"
    async with corral.Supervisor(
        strategy="one_for_all", max_restarts=10, restart_window=60
    ) as sup:
        f = await sup.spawn(FailOnce, str(path), "f", str(marker), name="f", restart="on-failure")
        b, c = await spawn(sup, path, "bc")
        old = await pid_of(c)
        marker.write_text("")  # f's next start fails (once): a second group restart
        kill(old)
        await until(lambda: sup.statistics().restarts == 2, "f's failed start recorded")
        for proxy in (f, b, c):
            await pid_of(proxy)
        await anyio.sleep(0.3)  # (let a late restart begin)
        states = {child.name: child.state for child in sup.statistics().children}
        assert states == dict.fromkeys("fbc", "running"), states


# Was a bug: when a nested supervisor is restarted by its parent (escalation, then resume() at
# _supervision.py:248), its children start again but their ProxyStatistics.restarts stay 0:
# _record (l.301) counts only the parent's direct children, and _escalate never records the
# culprit's restart
async def test_a_subtree_restart_counts_in_its_childrens_restarts(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    async with corral.Supervisor(max_restarts=5, restart_window=60) as sup:
        cell = await sup.supervisor(name="cell", max_restarts=0, restart_window=60)
        x, y = await spawn(cell, path, "xy")
        before = [await pid_of(x), await pid_of(y)]
        kill(before[0])  # the cell escalates; sup restarts it, and so x and y
        after = [await restarted(p, old) for p, old in zip((x, y), before, strict=True)]
        assert after
        assert sup.statistics().restarts == 1
        stats = {c.name: c for c in cell.statistics().children}
        assert stats["y"].last_exit_reason == "stopped: supervisor 'cell' escalated"
        assert (stats["x"].restarts, stats["y"].restarts) == (1, 1)


@pytest.mark.parametrize("how", ["normally", "by error", "by cancellation"])
async def test_leaving_the_block_during_a_nested_escalation(tmp_path: Path, how: str) -> None:
    path = tmp_path / "journal"
    before = descendants()
    started = anyio.current_time()
    with anyio.CancelScope() as outer:
        try:
            async with corral.Supervisor(max_restarts=5, restart_window=60) as sup:
                cell = await sup.supervisor(name="cell", max_restarts=0)
                await cell.spawn(SlowClose, str(path), "w", name="w", restart="on-failure")
                (x,) = await spawn(cell, path, "x")
                kill(await pid_of(x))  # the cell escalates: stopping w takes 1.5 s
                await anyio.sleep(0.2)  # (into the escalation: w's close under way)
                if how == "by error":
                    raise LookupError("the body failed")
                if how == "by cancellation":
                    outer.cancel()
                    await anyio.sleep_forever()
        except LookupError:
            assert how == "by error"
    assert anyio.current_time() - started < 10
    assert {c.name: c.state for c in cell.statistics().children} == {
        "w": "closed",
        "x": "closed",
    }
    await none_left(before)


# -- corral.run and stop signals -----------------------------------------------------

SIGNAL_HOST = textwrap.dedent(
    """
    import sys
    import anyio
    import corral
    from tests.services import Journal
    from tests.test_regress_strategies import SlowClose

    async def main(path, scenario):
        async with corral.Supervisor(shutdown_timeout=3, max_restarts=5) as sup:
            if scenario == "startup":
                print("ready", flush=True)
                for i in range(40):
                    await sup.spawn(Journal, path, str(i), restart="on-failure")
            else:
                cell = await sup.supervisor(name="cell", max_restarts=0)
                await cell.spawn(SlowClose, path, "w", name="w", restart="on-failure")
                x = await cell.spawn(Journal, path, "x", name="x", restart="on-failure")
                try:
                    await x.kill_self()  # the cell escalates: stopping w takes 1.5 s
                except corral.WorkerCrashed:
                    pass
            print("ready", flush=True)
            await anyio.sleep_forever()

    try:
        corral.run(main, sys.argv[1], sys.argv[2])
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(130)
    """
)


def tokened(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries ``token``."""
    found = []
    for process in psutil.process_iter():
        try:
            mine = process.environ().get("REGRESS_TOKEN") == token
            if mine and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
        except psutil.Error:
            pass
    return found


@pytest.mark.parametrize(
    ("scenario", "wait"),
    [("startup", 0.0), ("startup", 0.15), ("startup", 0.4), ("escalation", 0.1)],
)
def test_a_stop_signal_during_startup_or_an_escalation(
    tmp_path: Path, scenario: str, wait: float
) -> None:
    token = f"{os.getpid()}-{time.monotonic_ns()}"
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_HOST, str(tmp_path / "journal"), scenario],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        text=True,
        env={**os.environ, "REGRESS_TOKEN": token},
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "ready"
        time.sleep(wait)  # (the point: the signal lands at this moment of the start or stop)
        process.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = process.communicate(timeout=15)
        took = time.monotonic() - started
    finally:
        process.kill()
        process.communicate(timeout=10)
    assert process.returncode == 130, out
    assert "interrupted" in out
    assert took < 8, f"the stop took {took:.2f}s"
    _, alive = psutil.wait_procs(tokened(token), timeout=2)
    assert [p.pid for p in alive if p.is_running() and p.status() != "zombie"] == []


class SlowClose(Journal):
    """A Journal whose close takes 1.5 s (a child a group restart waits for)."""

    def close(self) -> None:
        time.sleep(1.5)
        super().close()


class ExitSoon(Journal):
    """A Journal that exits cleanly (status 0) 0.2 s after it starts."""

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path, name)
        timer = threading.Timer(0.2, os._exit, (0,))
        timer.daemon = True
        timer.start()


class FailOnce(Journal):
    """A Journal whose start fails once ``marker`` exists (it removes it)."""

    def __init__(self, path: str, name: str, marker: str) -> None:
        if os.path.exists(marker):
            os.remove(marker)
            raise RuntimeError("a start that fails")
        super().__init__(path, name)
