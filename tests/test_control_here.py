"""Control loops in-process (run_here), the tick engine's accounting, slots and statistics."""

from __future__ import annotations

import array
import gc
import logging
import os
import re
import struct
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import corral
from corral import _ticker
from corral._loopstats import Percentiles, summarize_copy
from corral._region import HEADER, Region, W
from corral._slots import Inputs, Layout, SlotWriter
from tests.loops import Counter, Slow

MS = 1_000_000


class FakeClock:
    """Time that moves only when the engine sleeps or a step works (and a little per read)."""

    def __init__(self, wake_latency: int) -> None:
        self.now = 10 * MS
        self.wake_latency = wake_latency

    def perf_counter_ns(self) -> int:
        self.now += 100  # each read costs 100 ns: the spin loop ends
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += int(seconds * 1e9) + self.wake_latency


class Scripted(corral.ControlLoop):
    """Each step takes the time the script gives its tick (on the fake clock)."""

    outputs = {"ran": 0}  # noqa: RUF012

    def __init__(self, clock: FakeClock, durations: dict[int, int]) -> None:
        self.clock = clock
        self.durations = durations
        self.ticks_run: list[int] = []
        self.overrun_reports: list[tuple[int, float]] = []

    def step(self) -> None:
        self.ticks_run.append(self.tick)
        self.clock.now += self.durations.get(self.tick, 10_000)

    def on_overrun(self, tick: int, late: float) -> None:
        self.overrun_reports.append((tick, late))


def run_scripted(
    monkeypatch: pytest.MonkeyPatch, durations: dict[int, int], overrun: str, ticks: int
) -> tuple[Scripted, corral.ControlLoopStatistics]:
    clock = FakeClock(wake_latency=20_000)
    monkeypatch.setattr(_ticker, "perf_counter_ns", clock.perf_counter_ns)
    monkeypatch.setattr(time, "sleep", clock.sleep)
    loop = Scripted(clock, durations)
    stats = loop.run_here(hz=200, ticks=ticks, overrun=overrun)  # type: ignore[arg-type]
    return loop, stats


def test_skip_accounting_on_a_synthetic_slow_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # 5 ms period; ticks 3 and 7 take 12 ms: each ends past two more deadlines
    loop, stats = run_scripted(monkeypatch, {3: 12 * MS, 7: 12 * MS}, "skip", ticks=10)
    assert loop.ticks_run == [0, 1, 2, 3, 6, 7, 10, 11, 12, 13]
    assert (stats.ticks, stats.skipped, stats.overruns) == (10, 4, 2)
    assert [tick for tick, _ in loop.overrun_reports] == [3, 7]
    for _, late in loop.overrun_reports:  # 12 ms step from ~0 lateness: ~7 ms past tick+1
        assert 0.0069 < late < 0.0071
    assert 0.0119 < stats.step.max < 0.0121
    assert stats.lateness.max < 0.0002  # every tick run was woken on time: none ran late
    assert stats.window == 10


def test_catch_up_runs_every_tick_late(monkeypatch: pytest.MonkeyPatch) -> None:
    loop, stats = run_scripted(monkeypatch, {3: 12 * MS}, "catch-up", ticks=8)
    assert loop.ticks_run == list(range(8))
    # tick 4 starts 7 ms late, so it too ends after the next deadline; tick 5 starts 2 ms
    # late and ends in time: the loop is back on its grid
    assert (stats.ticks, stats.skipped, stats.overruns) == (8, 0, 2)
    assert [tick for tick, _ in loop.overrun_reports] == [3, 4]
    assert 0.0069 < stats.lateness.max < 0.0071
    assert stats.lateness.p50 < 0.0001


def test_a_whole_period_of_wake_lateness_skips_to_the_latest_due_tick(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = FakeClock(wake_latency=11 * MS)  # every sleep oversleeps by more than 2 periods
    monkeypatch.setattr(_ticker, "perf_counter_ns", clock.perf_counter_ns)
    monkeypatch.setattr(time, "sleep", clock.sleep)
    loop = Scripted(clock, {})
    stats = loop.run_here(hz=200, ticks=3)
    # each wake is ~2.2 periods late: the two ticks that passed are skipped, not run late
    assert loop.ticks_run == [2, 5, 8]
    assert stats.skipped == 6
    assert 0.0008 < stats.lateness.max < 0.0009


def test_slow_step_on_the_real_clock() -> None:
    # every 5th step spins 3 periods: an overrun however loaded the machine is
    loop = Slow(spin=0.015, every=5)
    stats = loop.run_here(hz=200, ticks=20, overrun="catch-up")
    assert stats.ticks == 20
    assert stats.overruns >= 4
    assert stats.skipped == 0
    assert stats.step.max >= 0.015
    skipping = Slow(spin=0.015, every=5).run_here(hz=200, ticks=20)
    assert skipping.overruns >= 4
    assert skipping.skipped >= 4 * 3


def test_run_here_counts_reads_inputs_and_leaves_plain_dicts() -> None:
    loop = Counter()
    loop.inputs = {"setpoint": 2.0, "gains": (1.0, 4.0, 0.0), "enabled": True}
    stats = loop.run_here(hz=2000, ticks=50)
    assert loop.outputs == {"count": 50, "command": 8.0, "torn_down": True}
    assert isinstance(loop.inputs, dict)
    assert loop.setups == 1
    assert stats.ticks == 50
    assert not stats.running
    assert stats.policy == "SCHED_OTHER"
    assert stats.hz == 2000
    assert stats.cpu_percent >= 0


def test_stop_from_step_and_duration() -> None:
    class Stops(corral.ControlLoop):
        def step(self) -> None:
            if self.tick >= 9:  # (a loaded machine may make it skip tick 9 itself)
                self.stop()

    stats = Stops().run_here(hz=1000)
    assert stats.ticks + stats.skipped == 10
    assert 10 <= Slow(spin=0, every=1).run_here(hz=1000, duration=0.05).ticks <= 51


def test_a_raising_step_raises_step_failed_after_teardown() -> None:
    loop = Counter(fail_at=7)
    with pytest.raises(corral.StepFailed) as caught:
        loop.run_here(hz=1000, ticks=100)
    assert caught.value.tick == 7
    assert caught.value.name == "Counter"
    assert isinstance(caught.value.original_error, KeyError)
    assert caught.value.__cause__ is caught.value.original_error
    assert loop.outputs["torn_down"] is True


def test_realtime_run_here_gives_the_thread_back() -> None:
    before = (os.sched_getscheduler(0), os.sched_getaffinity(0), gc.isenabled())
    cpu = max(os.sched_getaffinity(0))
    stats = Counter().run_here(hz=1000, ticks=20, cpu=cpu, realtime=True, gc_freeze=True)
    assert stats.policy == "SCHED_FIFO"
    assert stats.pinned
    assert stats.gc_frozen
    assert (os.sched_getscheduler(0), os.sched_getaffinity(0), gc.isenabled()) == before
    assert gc.get_freeze_count() == 0
    best_effort = Counter().run_here(hz=1000, ticks=20, realtime=True, priority=0)
    assert best_effort.policy == "SCHED_OTHER"
    assert best_effort.memory_locked


def test_without_privileges_the_recipe_degrades_with_warnings() -> None:
    # a child that drops CAP_SYS_NICE and CAP_IPC_LOCK, as an unprivileged user has neither
    script = textwrap.dedent(
        """
        import ctypes, logging, os, sys
        sys.path[:0] = [os.getcwd()]
        libc = ctypes.CDLL(None, use_errno=True)
        header = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        assert libc.capget(header, data) == 0
        for bit in (23, 14):  # CAP_SYS_NICE, CAP_IPC_LOCK
            data[0] &= ~(1 << bit); data[1] &= ~(1 << bit)
        assert libc.capset(header, data) == 0, ctypes.get_errno()
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
        from tests.loops import Counter
        stats = Counter().run_here(hz=1000, ticks=50, realtime=True)
        print("RESULT", stats.ticks, stats.policy, stats.memory_locked)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "RESULT 50 SCHED_OTHER False" in done.stdout
    assert "WARNING Counter: SCHED_FIFO is not permitted here" in done.stderr
    assert "1 ns timer slack" in done.stderr
    assert "WARNING Counter: memory not locked" in done.stderr


@pytest.mark.parametrize(
    ("declare", "error", "match"),
    [
        ({"x": "fast"}, TypeError, "slot 'x': declare a float, int or bool"),
        ({"x": ()}, TypeError, "slot 'x': declare"),
        ({"x": (1.0, True)}, TypeError, "slot 'x': declare"),
        ({"x": [None]}, TypeError, "slot 'x': declare"),
        ({1: 2.0}, TypeError, "slot names must be identifiers"),
        ([1.0], TypeError, "must be a dict of slot names"),
    ],
)
def test_bad_declarations(declare: Any, error: type[Exception], match: str) -> None:
    loop = Counter()
    loop.inputs = declare
    with pytest.raises(error, match=match):
        loop.run_here(hz=100, ticks=1)


def test_bad_loops_and_options() -> None:
    class NoStep(corral.ControlLoop):
        pass

    with pytest.raises(TypeError, match="must define step"):
        NoStep().run_here(hz=100, ticks=1)
    both = Counter()
    both.outputs = {"setpoint": 1.0}
    with pytest.raises(ValueError, match="both an input and an output"):
        both.run_here(hz=100, ticks=1)
    with pytest.raises(ValueError, match="hz= must be a rate"):
        Counter().run_here(hz=0)
    with pytest.raises(ValueError, match="priority= is a SCHED_FIFO priority"):
        Counter().run_here(hz=10, priority=100)
    with pytest.raises(ValueError, match="duration="):
        Counter().run_here(hz=10, duration=-1)


def test_bad_values_in_step_name_the_slot() -> None:
    class Writes(corral.ControlLoop):
        outputs = {"level": 0.0}  # noqa: RUF012

        def step(self) -> None:
            self.outputs["level"] = "high"

    with pytest.raises(corral.StepFailed) as caught:
        Writes().run_here(hz=100, ticks=1)
    assert isinstance(caught.value.original_error, TypeError)
    assert "slot 'level' holds float; got 'high'" in str(caught.value)

    class Reads(corral.ControlLoop):
        def step(self) -> None:
            self.inputs["missing"]

    with pytest.raises(corral.StepFailed, match="no input slot named 'missing'"):
        Reads().run_here(hz=100, ticks=1)


def test_a_reader_never_waits_on_a_write_under_way() -> None:
    layout = Layout({"x": (0.0, 0.0)}, {}, HEADER)
    region = Region.create(layout, 4, shared=False)
    slots = SlotWriter(layout, region.view)
    inputs = Inputs(slots)
    slots.write(layout.specs["x"], (1.0, 1.0))
    assert inputs["x"] == (1.0, 1.0)
    words = region.view.cast("q")
    word = layout.specs["x"].word
    words[word] += 1  # a writer stopped half way: odd sequence, value half written
    offset = layout.specs["x"].offset
    region.view[offset : offset + 8] = struct.pack("d", 9.0)
    assert inputs["x"] == (1.0, 1.0)  # the last good value, at once
    words[word] += 1  # the write completes
    assert inputs["x"] == (9.0, 1.0)
    words.release()


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(-(2**62), 2**62), min_size=1, max_size=40), st.integers(1, 64))
def test_seqlock_reads_are_never_torn_under_a_concurrent_writer(
    values: list[int], width: int
) -> None:
    layout = Layout({"x": (0,) * width}, {}, HEADER)
    region = Region.create(layout, 4, shared=False)
    slots = SlotWriter(layout, region.view)
    spec = layout.specs["x"]
    written = {(0,) * width} | {(v,) * width for v in values}
    done = threading.Event()
    seen: list[Any] = []

    def writer() -> None:
        for _ in range(200):
            for value in values:
                slots.write(spec, (value,) * width)
        done.set()

    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads between nearly every bytecode
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not done.is_set():
            read = slots.read(spec)
            if read is not None:
                seen.append(read[1])
    finally:
        thread.join()
        sys.setswitchinterval(switch)
    assert all(value in written for value in seen)  # a mix of two writes would not be
    final = slots.read(spec)
    assert final is not None
    assert final[1] == (values[-1],) * width


def test_percentiles_and_summary_from_a_known_ring() -> None:
    assert Percentiles.of([]).p50 != Percentiles.of([]).p50  # nan
    p = Percentiles.of(list(range(1, 1001)), maximum_ns=5000)
    assert p.p50 == pytest.approx(500.5e-9)
    assert p.max == 5000e-9
    period = MS
    ring: list[int] = []
    for k in range(100):
        deadline = k * period
        wake = deadline + (50_000 if k == 99 else 1_000)
        ring += [deadline, wake, wake + 20_000]
    words = [0] * HEADER
    words[W.PERIOD], words[W.TICKS], words[W.MAX_LATE] = period, 100, 50_000
    words[W.CPU0], words[W.CPU_NOW], words[W.WALL0], words[W.WALL_NOW] = 0, 25, 0, 100
    raw = array.array("q", ring).tobytes()
    stats = summarize_copy((raw, 100, 0, 100, 100), words, "known", 0)
    assert stats.lateness.p50 == pytest.approx(1e-6)
    assert stats.lateness.max == 50e-6
    assert stats.step.p50 == pytest.approx(20e-6)
    assert stats.period_error.max == pytest.approx(49e-6)
    assert stats.period_error.p50 == 0
    assert stats.cpu_percent == 25
    assert stats.hz == 1000
    assert stats.window == 100
    assert "100 ticks at 1000 Hz" in str(stats)


def test_overruns_warn_overtime_at_most_once_a_second(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="corral._control")
    stats = Slow(spin=0.003, every=1).run_here(hz=500, ticks=20)  # every step overruns
    assert stats.overruns == 20
    warnings = [r.getMessage() for r in caplog.records if "OVERTIME" in r.getMessage()]
    assert len(warnings) == 1
    # (tick 0, or on a loaded machine the next: one that started late enough)
    assert re.match(r"Slow OVERTIME: tick [01] ended", warnings[0])
