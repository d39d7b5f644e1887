"""Interval timing on trio's virtual clock: deterministic, no wall-clock flakiness.

The clock jumps ahead whenever every task is blocked, so these tests check the
schedule's arithmetic (no drift, skipping, delay mode) exactly and instantly.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest
import trio.testing

import corral

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> Any:
    return ("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)})


async def test_rate_mode_has_no_drift() -> None:
    starts: list[float] = []

    async def tick() -> None:
        starts.append(anyio.current_time())
        await anyio.sleep(0.003)  # a run that takes time must not push later ticks back

    async with corral.Supervisor() as sup:
        t0 = anyio.current_time()
        worker = sup.every(0.01, tick)
        await worker.wait_runs(100)
        worker.stop()
    for k, start in enumerate(starts[:100]):
        assert start == pytest.approx(t0 + k * 0.01, abs=0.0006), k
    stats = worker.statistics()
    assert stats.skipped == 0
    assert stats.lateness is not None
    assert abs(stats.lateness.max) <= 0.0005


async def test_late_ticks_are_skipped_and_counted_not_bunched() -> None:
    starts: list[float] = []

    async def slow() -> None:
        starts.append(anyio.current_time())
        await anyio.sleep(0.05)  # 2.5 intervals

    async with corral.Supervisor() as sup:
        t0 = anyio.current_time()
        worker = sup.every(0.02, slow)
        await worker.wait_runs(20)
        worker.stop()
        await worker.wait_stopped()
        end = anyio.current_time()
    stats = worker.statistics()
    assert stats.skipped > 0
    # every tick due before the last run started is either run or counted as skipped
    # (a run late by a hair under one interval still serves the earlier tick)
    last_tick = (starts[-1] - t0) / 0.02
    assert last_tick - 1 <= stats.runs + stats.skipped - 1 <= last_tick + 0.5
    assert stats.lateness is not None
    assert stats.lateness.max < 0.02 + 1e-9  # nothing runs more than an interval late
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.05 - 1e-9  # runs never overlap or bunch up
    assert end >= starts[-1]


async def test_delay_mode_waits_after_each_run() -> None:
    starts: list[float] = []

    async def slow() -> None:
        starts.append(anyio.current_time())
        await anyio.sleep(0.03)

    async with corral.Supervisor() as sup:
        worker = sup.every(0.02, slow, mode="delay")
        await worker.wait_runs(5)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(gap == pytest.approx(0.05, abs=0.0006) for gap in gaps), gaps
    assert worker.statistics().skipped == 0


async def test_delay_before_postpones_the_first_run() -> None:
    starts: list[float] = []

    async def tick() -> None:
        starts.append(anyio.current_time())

    async with corral.Supervisor() as sup:
        t0 = anyio.current_time()
        worker = sup.every(1.0, tick, delay_before=5.0)
        await worker.wait_runs(2)
    assert starts[0] - t0 == pytest.approx(5.0, abs=0.0006)
    assert starts[1] - t0 == pytest.approx(6.0, abs=0.0006)
