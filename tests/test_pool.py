"""corral.Pool: the map family on worker processes, crashes, timeouts, backpressure."""

from __future__ import annotations

import functools
import io
import itertools
import operator
import threading
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest

import corral
from corral._progress import ProgressBar
from tests.pools import (
    Refuses,
    Square,
    Unloadable,
    adouble,
    crash_on,
    crash_once,
    double,
    fail_on,
    numbers,
    pid_of,
    sleep_on,
    slow,
    with_unloadable,
)

pytestmark = pytest.mark.anyio


async def test_the_map_family_gives_results_in_order_or_as_completed() -> None:
    async with corral.Pool(2) as pool:
        assert await pool.map(double, range(1000)) == [x * 2 for x in range(1000)]
        assert await pool.map(lambda x: x + 1, range(5)) == [1, 2, 3, 4, 5]  # a lambda
        assert [x async for x in pool.imap(double, range(50))] == [x * 2 for x in range(50)]
        unordered = [x async for x in pool.imap_unordered(double, range(50))]
        assert sorted(unordered) == [x * 2 for x in range(50)]
        assert await pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert await pool.star().map(pow, [(2, 5)]) == [32]
        assert await pool.submit(pow, 2, 10) == 1024
        awaited: list[int] = await pool.map(adouble, range(5))  # (typed: the awaited result)
        assert awaited == [0, 2, 4, 6, 8]
        processes: list[Any] = await pool.map(Square, range(5))
        assert processes == [0, 1, 4, 9, 16]


async def test_an_item_that_fails_raises_naming_it_or_is_collected() -> None:
    async with corral.Pool(2) as pool:
        with pytest.raises(KeyError) as caught:
            await pool.map(fail_on, range(10))
        assert "(item 5 of the map)" in caught.value.__notes__
        results: list[Any] = await pool.map(fail_on, range(10), return_exceptions=True)
        assert isinstance(results[5], KeyError)
        assert results[:5] == [0, 1, 2, 3, 4]


async def test_a_worker_killed_mid_map_fails_only_its_item_and_is_replaced() -> None:
    async with corral.Pool(2) as pool:
        with anyio.fail_after(30):
            results: list[Any] = await pool.map(crash_on, range(100), return_exceptions=True)
        assert isinstance(results[7], corral.WorkerCrashed)
        assert "(item 7 of the map)" in results[7].__notes__
        assert [r for i, r in enumerate(results) if i != 7] == [x for x in range(100) if x != 7]
        assert await pool.map(double, range(10)) == [x * 2 for x in range(10)]  # goes on
        assert pool.statistics().restarts >= 1


async def test_an_item_past_its_timeout_is_killed_with_its_worker() -> None:
    async with corral.Pool(2) as pool:
        with anyio.fail_after(30):
            results: list[Any] = await pool.map(
                sleep_on, range(6), timeout=0.5, return_exceptions=True
            )
        assert isinstance(results[3], corral.ProcessTimeout)
        assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5]
        assert pool.statistics().timeouts == 1


async def test_an_infinite_input_is_read_only_as_far_as_results_are_taken() -> None:
    async with corral.Pool(2) as pool:
        taken = []
        async for value in pool.imap(double, itertools.count()):
            taken.append(value)
            if len(taken) == 1000:
                break
        assert taken == [x * 2 for x in range(1000)]
        assert pool.statistics().submitted < 200_000  # read ahead within a window


async def test_leaving_the_block_leaves_no_process() -> None:
    async with corral.Pool(2) as pool:
        await pool.map(double, range(10))
        assert len(psutil.Process().children(recursive=True)) >= 2
    assert psutil.Process().children(recursive=True) == []


async def test_bad_input_is_refused_with_what_to_pass() -> None:
    with pytest.raises(ValueError, match="workers="):
        corral.Pool(0)
    async with corral.Pool(1) as pool:
        with pytest.raises(TypeError, match="iterable"):
            await pool.map(double, 5)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="tuples of arguments"):
            await pool.starmap(pow, [1, 2])  # type: ignore[list-item]
        with pytest.raises(ValueError, match="chunksize="):
            await pool.map(double, [1], chunksize=0)
        with pytest.raises(TypeError, match="unexpected keyword argument 'chunk'"):
            await pool.map(double, [1], chunk=3)  # type: ignore[call-overload]


async def test_a_supervisor_owns_a_pool_whose_workers_are_its_children() -> None:
    async with corral.Supervisor() as sup:
        pool = sup.pool(2)
        assert await pool.map(double, range(100)) == [x * 2 for x in range(100)]
        names = {child.name for child in sup.statistics().children}
        assert len(names) == 2
        assert {(c.name, c.pid) for c in sup.child_statistics()} == {
            (c.name, c.pid) for c in sup.statistics().children
        }
    assert psutil.Process().children(recursive=True) == []


async def test_max_tasks_per_worker_recycles_workers() -> None:
    async with corral.Pool(1, max_tasks_per_worker=10) as pool:
        pids = await pool.map(pid_of, range(40), chunksize=5)
    assert len(set(pids)) >= 4  # a new worker every 10 tasks
    assert pids[:10] == [pids[0]] * 10


async def test_an_item_that_will_not_pickle_is_named() -> None:
    async with corral.Pool(1) as pool:
        with pytest.raises(corral.SerializationError) as caught:
            await pool.map(double, [1, 2, threading.Lock(), 4])
        assert "(item 2 of the map)" in caught.value.__notes__
        with pytest.raises(corral.SerializationError, match="function will not pickle"):
            lock = threading.Lock()
            await pool.map(lambda x: lock, [1])


async def test_an_async_iterable_is_mapped() -> None:
    async with corral.Pool(2) as pool:
        assert await pool.map(double, numbers(100)) == [x * 2 for x in range(100)]


async def test_a_cancelled_map_stops_reading_and_the_pool_goes_on() -> None:
    async with corral.Pool(2) as pool:
        with anyio.move_on_after(0.3):
            await pool.map(slow, itertools.count())
        submitted = pool.statistics().submitted
        assert submitted < 1000  # it stopped reading the endless input
        assert await pool.map(double, range(10)) == [x * 2 for x in range(10)]
    assert psutil.Process().children(recursive=True) == []


def test_the_progress_bar_shows_done_total_rate_and_eta() -> None:
    stream = io.StringIO()
    bar = ProgressBar("pool", 200, stream)
    bar.advance(50)
    line = bar.line()
    assert "50/200" in line
    assert "25.0%" in line
    assert "ETA" in line
    assert "/s" in line
    assert stream.getvalue() == ""  # not a terminal: nothing drawn
    bar.advance(150)
    assert "in 0:0" in bar.line()  # done: the time it took


async def test_progress_on_a_map_changes_nothing_without_a_terminal() -> None:
    async with corral.Pool(2) as pool:
        assert await pool.map(double, range(100), progress=True) == [x * 2 for x in range(100)]


async def test_a_process_class_whose_constructor_raises_names_the_item() -> None:
    async with corral.Pool(1) as pool:
        with pytest.raises(ValueError, match="no 3") as caught:
            await pool.map(Refuses, range(6))
        assert "(item 3 of the map)" in caught.value.__notes__
        results: list[Any] = await pool.map(Refuses, range(5), return_exceptions=True)
        assert results[:3] == [0, 1, 2]
        assert isinstance(results[3], ValueError)
        assert results[4] == 4


async def test_an_item_lost_to_a_crash_is_retried(tmp_path: Path) -> None:
    marker = str(tmp_path / "crashed")
    async with corral.Pool(2) as pool:
        with anyio.fail_after(30):
            results = await pool.map(functools.partial(crash_once, marker), range(10), retries=1)
        assert results == list(range(10))
        stats = pool.statistics()
    assert stats.crashes >= 1
    assert stats.retried == 1
    assert stats.failed == 0
    assert stats.completed == 10


async def test_concurrent_maps_keep_their_own_results() -> None:
    async with corral.Pool(2) as pool:
        got: dict[int, list[int]] = {}

        async def one(k: int) -> None:
            got[k] = await pool.map(functools.partial(operator.add, k * 1000), range(300))

        async with anyio.create_task_group() as maps:
            for k in range(5):
                maps.start_soon(one, k)
    assert got == {k: [k * 1000 + x for x in range(300)] for k in range(5)}


async def test_results_by_chunk_and_a_loop_left_early_stops_the_map() -> None:
    async with corral.Pool(2) as pool:
        taken = [len(c) async for c in pool.imap_unordered(double, range(5000)).chunks()]
        assert sum(taken) == 5000
        with pool.imap(double, itertools.count()) as results:
            async for value in results:
                if value == 200:
                    break
        read = pool.statistics().submitted
        assert await pool.map(double, range(3)) == [0, 2, 4]  # goes on
        assert pool.statistics().submitted == read + 3  # the endless map read no more


async def test_functions_a_worker_forgot_are_sent_again() -> None:
    async with corral.Pool(1) as pool:
        first = functools.partial(operator.add, -1)
        assert await pool.map(first, [1]) == [0]
        for k in range(70):  # more than a worker keeps
            assert await pool.map(functools.partial(operator.add, k), [1]) == [1 + k]
        assert await pool.map(first, [5]) == [4]


async def test_a_function_that_cannot_be_loaded_in_a_worker_fails_its_map() -> None:
    async with corral.Pool(1) as pool:
        with pytest.raises(ValueError, match="cannot be loaded"):
            await pool.map(functools.partial(with_unloadable, Unloadable()), range(3))
        assert await pool.map(double, [2]) == [4]
