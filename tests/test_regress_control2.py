"""Regression tests from a second review of the control loop (each comment names the bug).

The loops run in children import this module, so it stays light at import.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import time
import types
from collections.abc import Iterator
from time import perf_counter_ns
from typing import Any, cast

import anyio
import pytest

import corral
from corral._region import HEADER
from corral._ticker import LoopSelector

pytestmark = pytest.mark.anyio


def busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# -- loops (imported by the children) ---------------------------------------------------


class Hoggy(corral.ControlLoop):
    """A quick step; host methods that take longer than a period, or wait, or stream."""

    outputs = {"started": 0, "cancelled": 0}  # noqa: RUF012

    def step(self) -> None:
        pass

    def hog(self, seconds: float) -> None:
        busy(seconds)

    async def slow(self) -> None:
        self.outputs["started"] = cast(int, self.outputs["started"]) + 1
        try:
            await anyio.sleep(0.5)
        except BaseException:
            self.outputs["cancelled"] = cast(int, self.outputs["cancelled"]) + 1
            raise

    def numbers(self) -> Iterator[int]:
        number = 0
        while True:
            yield number
            number += 1


class Idle(corral.ControlLoop):
    def step(self) -> None:
        pass


# -- host calls waiting for room --------------------------------------------------------


# Regression: Server._drain dispatches a request the host cancelled while it sat in _waiting:
# Request._cancel() found no on_cancel yet, and _start never looks at request.cancelled, so the
# method runs uncancelled (an async one to its end, holding close() until it returns)
# Regression: a cancelled waiting call still runs, uncancelled.
async def test_a_call_cancelled_while_it_waits_for_room_is_not_run_uncancelled() -> None:
    with anyio.fail_after(5):
        async with corral.control_loop(Hoggy(), hz=100, shutdown_timeout=1) as rt:
            rt.hog.nowait(0.05)  # past a deadline: what is read next waits for room
            await anyio.sleep(0.01)
            for _ in range(3):  # read together after the tick: the 2nd and 3rd wait
                rt.hog.nowait(0.015)
            with anyio.move_on_after(0.005):  # waits behind them; cancelled meanwhile
                await rt.slow()
            await anyio.sleep(0.15)  # the hogs are done
            started, cancelled = await rt.get("started"), await rt.get("cancelled")
            assert started == cancelled  # never started, or started and cancelled


# Regression: Server.serve ends the streams in _streams at close, but a stream still in
# _waiting is dispatched after that by _drain and never ended: close waits for it until the
# shutdown timeout kills the child (teardown() never runs)
# Regression: a stream admitted after close is never ended.
async def test_a_stream_waiting_for_room_does_not_hold_close() -> None:
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            async with corral.control_loop(Hoggy(), hz=100, shutdown_timeout=1) as rt:
                rt.hog.nowait(0.05)
                await anyio.sleep(0.01)
                rt.hog.nowait(0.015)

                async def consume() -> None:
                    with contextlib.suppress(Exception):
                        async for _ in rt.numbers():
                            pass

                tasks.start_soon(consume)
                await anyio.sleep(0.001)  # the stream's request is sent
                closing = time.perf_counter()
            assert time.perf_counter() - closing < 0.5


# -- LoopSelector.select ------------------------------------------------------------------

_PERIOD = 1_000_000
_SPIN = 150_000
_BUDGET = 200_000
_SHORT = 20_000  # each step ends this long before the host's room closes
_TICKS = 400


class _EdgeTicker:
    """Stands in for a Ticker whose step always ends just before the room closes."""

    def __init__(self) -> None:
        self.region = types.SimpleNamespace(words=[0] * HEADER)
        self.spin = _SPIN
        self.running = True
        self.ticks = 0
        self.deadline = perf_counter_ns() + _BUDGET + _SHORT

    def active(self) -> bool:
        return self.running

    def idle(self) -> None:
        pass

    def sleep_until_due(self) -> None:
        pass

    def tick(self) -> None:
        self.ticks += 1
        if self.ticks >= _TICKS:
            self.running = False
            return
        self.deadline += _PERIOD
        busy((self.deadline - _BUDGET - _SHORT - perf_counter_ns()) / 1e9)


# Regression: LoopSelector.select sets _last_turn = now whenever now < room, then throws away
# the events when select() itself returned past the room: a step that ends a few microseconds
# before the room closes (seen at 1 kHz with a step of ~79% of the period: every host call and
# close waited forever) gets neither a turn nor a forced one
# Regression: a turn counted as given is never given.
def test_a_step_ending_just_before_the_room_closes_does_not_starve_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plain = selectors.SelectSelector.select

    def slow_select(self: Any, timeout: float | None = None) -> Any:
        events = plain(self, timeout)
        busy(50e-6)  # a loaded machine: select() and the calls around it take 50 us
        return events

    monkeypatch.setattr(selectors.SelectSelector, "select", slow_select)
    reader, writer = socket.socketpair()
    selector = LoopSelector()
    try:
        selector.register(reader, selectors.EVENT_READ)
        writer.send(b"x")  # a host call is waiting
        ticker = _EdgeTicker()
        selector.attach(cast(Any, ticker), _BUDGET)
        events = selector.select(None)
        assert events
        assert ticker.ticks < _TICKS  # a turn came while still ticking (within ~100 ms)
    finally:
        selector.close()
        reader.close()
        writer.close()


# -- the real-time recipe -------------------------------------------------------------------


# Regression: _realtime._best_effort sets SCHED_OTHER with sched_setattr, and its undo sets
# SCHED_OTHER again: run_here(priority=0), or a failed SCHED_FIFO, leaves a SCHED_BATCH,
# SCHED_IDLE or SCHED_FIFO thread SCHED_OTHER for good
# Regression: run_here does not give the policy back.
@pytest.mark.parametrize("policy", ["SCHED_BATCH", "SCHED_FIFO"])
def test_run_here_best_effort_gives_the_policy_back(policy: str) -> None:
    before = os.sched_getscheduler(0), os.sched_getparam(0)
    wanted = getattr(os, policy)
    try:
        os.sched_setscheduler(0, wanted, os.sched_param(10 if wanted == os.SCHED_FIFO else 0))
    except PermissionError:
        pytest.skip(f"{policy} is not permitted here")
    try:
        Idle().run_here(hz=1000, ticks=5, realtime=True, priority=0)
        assert os.sched_getscheduler(0) == wanted
    finally:
        os.sched_setscheduler(0, *before)
