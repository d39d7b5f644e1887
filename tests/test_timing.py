"""Timer and catchtime."""

from __future__ import annotations

import math
import statistics
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

import corral

samples = st.lists(
    st.floats(min_value=0, max_value=1e4, allow_nan=False), min_size=2, max_size=200
)


@given(samples)
def test_statistics_match_the_statistics_module(values: list[float]) -> None:
    timer = corral.Timer()
    for value in values:
        timer.record(value)
    assert timer.count == len(values)
    assert timer.mean == pytest.approx(statistics.fmean(values), rel=1e-9, abs=1e-9)
    assert timer.stdev == pytest.approx(statistics.stdev(values), rel=1e-6, abs=1e-6)
    assert timer.min == min(values)
    assert timer.max == max(values)
    assert timer.median == pytest.approx(statistics.median(values))
    assert timer.total == pytest.approx(math.fsum(values), rel=1e-9, abs=1e-9)
    inclusive = statistics.quantiles(values, n=100, method="inclusive")
    assert timer.percentile(90) == pytest.approx(inclusive[89], rel=1e-9, abs=1e-9)
    assert timer.percentile(0) == min(values)
    assert timer.percentile(100) == max(values)


@given(samples, st.integers(min_value=1, max_value=20))
def test_window_keeps_the_most_recent_samples(values: list[float], window: int) -> None:
    timer = corral.Timer(window=window)
    for value in values:
        timer.record(value)
    assert timer.samples() == values[-window:]
    assert timer.most_recent == values[-1]
    assert timer.count == len(values)
    assert timer.max == max(values)  # running figures cover every sample
    assert timer.median == pytest.approx(statistics.median(values[-window:]))


def test_empty_timer_answers_nan() -> None:
    timer = corral.Timer()
    summary = timer.summary()
    assert summary.count == 0
    assert all(math.isnan(x) for x in (summary.mean, summary.min, summary.max, summary.p50))
    assert math.isnan(timer.stdev)
    assert math.isnan(timer.most_recent)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="window must be a positive"):
        corral.Timer(window=0)
    with pytest.raises(ValueError, match="between 0 and 100"):
        corral.Timer().percentile(101)


def test_time_block_and_catchtime_measure_elapsed() -> None:
    timer = corral.Timer()
    with timer.time():
        time.sleep(0.01)
    with corral.catchtime(timer) as measured:
        time.sleep(0.01)
    assert 0.009 <= measured.elapsed < 1
    frozen = measured.elapsed
    assert measured.elapsed == frozen  # stops counting when the block ends
    assert timer.count == 2
    assert timer.min >= 0.009
    assert "elapsed=" in repr(measured)
    assert "Timer(count=2" in repr(timer)
