"""A child SIGKILLed under 64-caller load, 100 times: every call returns or raises
WorkerCrashed, none hangs or is lost, each restart comes within the backoff bound,
and nothing (process, fd) is left behind."""

from __future__ import annotations

import logging
import os
import signal
import statistics

import anyio
import psutil
import pytest

import corral
from tests.reliability.conftest import scale
from tests.services import Echo

pytestmark = pytest.mark.anyio
logger = logging.getLogger(__name__)  # the figures: pytest --log-cli-level=INFO shows them

CALLERS = 64
MAX_BACKOFF = 0.05
CALL_DEADLINE = 10.0  # a call that neither returns nor raises within this is lost


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


class Load:
    """64 callers making echo calls, counting every outcome."""

    def __init__(self, proxy: corral.Proxy[Echo]) -> None:
        self.proxy = proxy
        self.ok = self.crashed = self.lost = self.wrong = 0
        self.ok_since_kill = 0
        self.recovered = anyio.Event()
        self.running = True

    async def caller(self, me: int) -> None:
        n = 0
        while self.running:
            n += 1
            value = (me, n)
            with anyio.move_on_after(CALL_DEADLINE) as scope:
                try:
                    got = await (self.proxy.aecho(value) if n % 2 else self.proxy.echo(value))
                except corral.WorkerCrashed:
                    self.crashed += 1
                    continue
                if got != value:
                    self.wrong += 1
                    continue
                self.ok += 1
                self.ok_since_kill += 1
                if self.ok_since_kill >= CALLERS:
                    self.recovered.set()
            if scope.cancelled_caught:
                self.lost += 1


async def replaced(proxy: corral.Proxy[Echo], pid: int) -> None:
    """Return once a new child answers in place of ``pid``."""
    while True:
        try:
            if await proxy.getpid() != pid:
                return
        except corral.WorkerCrashed:
            pass  # the call reached the child as it died; the next waits for the new one


@pytest.mark.loops("uvloop", "trio")
async def test_sigkill_under_64_callers_100_times_loses_no_call() -> None:
    kills = scale(100, 1000)
    async with corral.spawn(Echo) as warm:  # the loop's lazily opened fds, then measure
        await warm.echo(0)
    fds = open_fds()
    recoveries: list[float] = []
    async with corral.Supervisor(
        max_restarts=kills + 1, restart_window=3600, max_backoff=MAX_BACKOFF
    ) as sup:
        proxy = await sup.spawn(Echo, restart="on-failure", name="victim")
        load = Load(proxy)
        async with anyio.create_task_group() as callers:
            for me in range(CALLERS):
                callers.start_soon(load.caller, me)
            for _ in range(kills):
                with anyio.fail_after(30):
                    await load.recovered.wait()  # 64 answers from the current child
                pid = proxy.pid
                assert pid is not None
                killed = anyio.current_time()
                os.kill(pid, signal.SIGKILL)
                with anyio.fail_after(30):
                    await replaced(proxy, pid)
                    load.recovered = anyio.Event()  # (answers the old child sent count not)
                    load.ok_since_kill = 0
                    await load.recovered.wait()
                recoveries.append(anyio.current_time() - killed)
            load.running = False
        stats = sup.statistics()
    figures = (
        f"{load.ok} ok, {load.crashed} crashed, {load.lost} lost, {load.wrong} wrong; "
        f"recovery p50 {statistics.median(recoveries) * 1e3:.0f} ms, "
        f"max {max(recoveries) * 1e3:.0f} ms"
    )
    logger.info("crash x%d under %d callers: %s", kills, CALLERS, figures)
    assert load.lost == 0, figures
    assert load.wrong == 0, figures
    assert load.crashed > 0, figures  # the kills did land on calls in flight
    assert stats.restarts == kills, figures
    (child,) = stats.children
    assert child.restarts == kills
    assert all(event.delay <= MAX_BACKOFF for event in stats.restart_history), figures
    # each restart: the backoff (at most MAX_BACKOFF), a fork from the zygote and 64
    # answers; 2 s is far above that, and far below a hang
    assert max(recoveries) < MAX_BACKOFF + 2.0, figures
    assert psutil.Process().children(recursive=True) == []
    assert open_fds() <= fds, figures


async def test_pool_worker_sigkilled_under_load_loses_no_item() -> None:
    rounds = scale(20, 200)
    expected = [abs(x) for x in range(-2000, 2000)]
    results: list[list[int]] = []
    kills = 0
    async with corral.Supervisor() as sup:
        pool = sup.pool(2)
        assert await pool.map(abs, range(-100, 100), chunksize=1) == expected[1900:2100]

        async def mapped() -> None:
            results.append(await pool.map(abs, range(-2000, 2000), retries=3))

        for _ in range(rounds):
            async with anyio.create_task_group() as maps:
                for _ in range(4):
                    maps.start_soon(mapped)
                workers = [c.pid for c in sup.statistics().children if c.pid is not None]
                if workers:  # (both may be starting again after the last round's kill)
                    os.kill(workers[0], signal.SIGKILL)
                    kills += 1
        assert results == [expected] * 4 * rounds
        assert kills >= rounds // 2
        assert pool.statistics().completed == rounds * 4 * 4000 + 200
    assert psutil.Process().children(recursive=True) == []
