"""Review regression tests for corral.Pool (issue 6).

Each xfail is a bug still open; the plain tests guard bugs found in the same
review and fixed while it went on.

The functions the workers run are defined here at module level (the workers
import them from ``tests.test_regress_pool``).
"""

from __future__ import annotations

import functools
import gc
import itertools
import os
import sys
import threading
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import corral
from tests.pools import Square, double, nap, pid_of, slow

pytestmark = pytest.mark.anyio

ASYNCIO_ONLY = pytest.mark.parametrize(
    "anyio_backend",
    [
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
    ],
)


# -- run by the workers ----------------------------------------------------------------


def sleeps_on_2(x: int) -> int:
    if x == 2:
        time.sleep(30)
    return x


def fail_on_5(x: int) -> int:
    if x == 5:
        raise KeyError(x)
    return x


def slow_the_first_time(path: str, x: int) -> int:
    """Item 1 sleeps past any timeout the first time it runs (a file remembers), then answers."""
    if x == 1 and not os.path.exists(path):
        with open(path, "w"):
            pass
        time.sleep(30)
    return x


async def crash_1_while_0_runs(x: int) -> int:
    """Item 1 kills its worker while item 0 (run beside it on the worker's loop) waits."""
    if x == 1:
        await anyio.sleep(0.2)
        os._exit(3)
    await anyio.sleep(1.0)
    return x


def three_then_broken() -> Iterator[int]:
    yield from range(3)
    raise RuntimeError("the input broke")


def tiny(x: int) -> int:
    time.sleep(0.002)
    return x


class Counting:
    """An endless async iterable that counts the items taken from it."""

    def __init__(self) -> None:
        self.pulled = 0

    def __aiter__(self) -> Counting:
        return self

    async def __anext__(self) -> int:
        await anyio.lowlevel.checkpoint()
        self.pulled += 1
        return self.pulled - 1


class Meeting:
    barrier = threading.Barrier(1)  # (set by the test that uses it: the Dask threads share it)


def meet(x: int) -> int:
    """Returns once every thread the test expects runs an item at the same time."""
    Meeting.barrier.wait()
    return x


# -- the local worker processes ---------------------------------------------------------


# Was a bug (fixed during the review): a chunk from an async iterable waits to be full (sized
# from item time) before it is sent: imap over a stream fed as results come back hangs
async def test_imap_over_a_slow_async_stream_answers_each_item_as_it_arrives() -> None:
    async with corral.Pool(1) as pool:
        send, receive = anyio.create_memory_object_stream[int](100)
        with pool.imap(double, receive) as results, send, receive:
            with anyio.fail_after(3):
                for i in range(10):  # a request-response stream: the next item needs the result
                    await send.send(i)
                    assert await anext(results) == i * 2


# Was a bug (fixed during the review): after a timeout kill the retried chunk is sent to the
# dead worker's messenger and blamed for that crash: the retry is spent and the item fails with
# WorkerCrashed
async def test_an_item_that_timed_out_is_retried(tmp_path: Path) -> None:
    fn = functools.partial(slow_the_first_time, str(tmp_path / "slow"))
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20):
            results = await pool.map(fn, range(4), timeout=0.5, retries=1)
        stats = pool.statistics()
    assert results == [0, 1, 2, 3]
    assert (stats.timeouts, stats.crashes, stats.retried) == (1, 0, 1)


# Was a bug (fixed during the review): with chunksize= and timeout= the whole chunk is timed
# (timeout * len) and every item of it raises ProcessTimeout, not just the one that overran
async def test_with_a_chunksize_a_timeout_blames_only_the_item_that_overran() -> None:
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20):
            results = await pool.map(
                sleeps_on_2, range(4), chunksize=4, timeout=0.5, return_exceptions=True
            )
    assert isinstance(results[2], corral.ProcessTimeout)
    assert [results[0], results[1], results[3]] == [0, 1, 3]


# Was a bug (fixed during the review): submit() sends mode 'apply', which never runs a Process
# class: it returns the constructed, unrun Process instead of its result
async def test_submit_runs_a_process_class_to_its_result() -> None:
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20):
            result: Any = await pool.submit(Square, 3)
    assert result == 9


# Was a bug (fixed during the review): max_tasks_per_worker= is checked only after a whole
# chunk, and chunks are sized without it: a worker runs many more items than the limit
async def test_max_tasks_per_worker_bounds_the_items_each_worker_runs() -> None:
    async with corral.Pool(1, max_tasks_per_worker=1) as pool:
        with anyio.fail_after(30):
            pids = await pool.map(pid_of, range(12))
    assert len(set(pids)) == 12


# Was a bug (fixed during the review): leaving the pool's block cancels a map's reader without
# ending its batch: a map running in another task (return_exceptions=True) waits forever
async def test_closing_the_pool_ends_a_map_running_in_another_task() -> None:
    ended = anyio.Event()
    async with anyio.create_task_group() as outside:
        async with corral.Pool(1) as pool:
            started = anyio.Event()

            async def consume() -> None:
                try:
                    with pool.imap(slow, range(1000), return_exceptions=True) as results:
                        async for _ in results:
                            started.set()
                except Exception:  # (an error is fine: the map must end)
                    pass
                ended.set()

            outside.start_soon(consume)
            with anyio.fail_after(20):
                await started.wait()
        with anyio.move_on_after(5):
            await ended.wait()
        outside.cancel_scope.cancel()
    assert ended.is_set()


# Was a bug (fixed during the review): async calls of two chunks run at once on a worker, yet a
# crash is blamed on the first chunk in flight: an innocent item raises WorkerCrashed
async def test_an_async_function_crash_is_blamed_on_its_own_item() -> None:
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20):
            await pool.map(double, [0])  # (the worker is up: item 0 is sent first, then 1)
            results = await pool.map(
                crash_1_while_0_runs, range(2), chunksize=1, return_exceptions=True
            )
    assert isinstance(results[1], corral.WorkerCrashed)
    assert results[0] == 0


# Was a bug (fixed during the review): imap raises a chunk's first error before yielding the
# results that precede it in that chunk: they are lost
async def test_imap_yields_the_results_before_a_failed_item() -> None:
    got: list[int] = []
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20), pytest.raises(KeyError):
            async for value in pool.imap(fail_on_5, range(10), chunksize=10):
                got.append(value)
    assert got == [0, 1, 2, 3, 4]


# Was a bug (fixed during the review): an input that raises closes the batch at once: results
# of the items read before it are dropped, imap raises without yielding them
async def test_imap_yields_the_items_read_before_the_input_broke() -> None:
    got: list[int] = []
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20), pytest.raises(RuntimeError, match="the input broke"):
            async for value in pool.imap(double, three_then_broken(), chunksize=1):
                got.append(value)
    assert got == [0, 2, 4]


@pytest.mark.parametrize("anyio_backend", [pytest.param(("trio", {}), id="trio")])
# Was a bug (fixed during the review): MapIterator.chunks() is an async generator: a loop left
# by break makes trio warn (ResourceWarning), which __aiter__ avoids on trio
async def test_leaving_chunks_early_on_trio_does_not_warn() -> None:
    async with corral.Pool(1) as pool:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            async for _ in pool.imap(double, range(10_000)).chunks():
                break
            gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


# Was a bug (fixed during the review): MapIterator.__del__ cancels the reader's CancelScope,
# which on asyncio needs a running loop: an unfinished iterator collected after the run raises
# RuntimeError
def test_an_unfinished_iterator_collected_after_the_run_is_quiet() -> None:
    kept: list[corral.MapIterator[int]] = []

    async def main() -> None:
        async with corral.Pool(1) as pool:
            kept.append(pool.imap(double, range(100)))

    anyio.run(main, backend="asyncio")
    unraisable: list[Any] = []
    previous, sys.unraisablehook = sys.unraisablehook, unraisable.append
    try:
        kept.clear()
        gc.collect()
    finally:
        sys.unraisablehook = previous
    assert [u.exc_value for u in unraisable if u.exc_value is not None] == []


# Was a bug (fixed during the review): a worker recycled by max_tasks_per_worker= is restarted
# as a crash: logged as 'crashed' and slowed by the restart back-off (10 ms doubling to 2 s)
async def test_recycling_a_worker_is_not_treated_as_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with corral.Pool(1, max_tasks_per_worker=2) as pool:
        with anyio.fail_after(30):
            await pool.map(double, range(12), chunksize=2)
    assert [r.getMessage() for r in caplog.records if "crashed" in r.getMessage()] == []


# -- open: the local worker processes ----------------------------------------------------


# Was a bug: with max_tasks_per_worker= a chunk that fills a child's share but ends in
# SerializationError (or UnknownFunction, or a load error) never recycles it: the slot waits
# forever for a new child
async def test_max_tasks_per_worker_with_an_unpicklable_item_does_not_hang() -> None:
    items: list[Any] = [0, 1, 2, threading.Lock(), 4, 5]
    async with corral.Pool(1, max_tasks_per_worker=2) as pool:
        with anyio.fail_after(5):
            results = await pool.map(double, items, chunksize=2, return_exceptions=True)
    assert isinstance(results[3], corral.SerializationError)
    assert [results[i] for i in (0, 1, 2, 4, 5)] == [0, 2, 4, 8, 10]


# Was a bug: read_items builds a chunk with list(islice(...)): when the iterator raises in the
# middle of a chunk, the items it yielded for that chunk are dropped, never run
async def test_imap_yields_the_items_of_a_partly_read_chunk_before_the_input_broke() -> None:
    got: list[int] = []
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20), pytest.raises(RuntimeError, match="the input broke"):
            async for value in pool.imap(double, three_then_broken(), chunksize=10):
                got.append(value)
    assert got == [0, 2, 4]


# Was a bug: a sync input is read on the event loop a chunk at a time, chunks sized from the
# workers' item time (up to 100,000 items): a slow generator blocks the loop for all of it
async def test_a_slow_generator_does_not_block_the_loop_for_a_whole_chunk() -> None:
    async with corral.Pool(1) as pool:
        seen: list[int] = []  # results completed, as each item is read

        def slowly_read() -> Iterator[int]:
            for i in range(200):
                time.sleep(0.005)  # (1 s of reading in all)
                seen.append(pool.statistics().completed)
                yield i

        with anyio.fail_after(20):
            await pool.map(double, [0])  # (the worker is up)
            async for _ in pool.imap(double, slowly_read()):
                pass
    assert seen[-1] >= 50  # results came back while the input was read


# Was a bug: _read_async's pump pulls up to ASYNC_READ_AHEAD (1000) items from an async iterable
# whatever the window: items are taken far ahead, and dropped when the map is left
async def test_an_async_input_is_read_only_as_far_as_the_window() -> None:
    source = Counting()
    async with corral.Pool(1) as pool:
        with anyio.fail_after(20), pool.imap(slow, source, chunksize=1) as results:
            for _ in range(3):  # (items of 50 ms: plenty of time to read ahead)
                await anext(results)
    assert source.pulled <= 20  # the window is 4 chunks of 1 item


# Was a bug: a chunk that must run alone (timeout=, a suspect) waits for its worker to be idle
# while the slot's other driver keeps sending another map's chunks: it starves
async def test_a_timed_map_is_not_starved_by_a_busy_map_beside_it() -> None:
    async with corral.Pool(1) as pool, anyio.create_task_group() as maps:
        await pool.map(double, [0])  # (the worker is up)

        async def busy() -> None:
            with pool.imap(tiny, itertools.count(), chunksize=1) as results:
                async for _ in results:
                    pass

        maps.start_soon(busy)
        with anyio.move_on_after(3) as waited:
            assert await pool.map(double, range(3), timeout=5) == [0, 2, 4]
        maps.cancel_scope.cancel()
    assert not waited.cancelled_caught


# -- the Dask backend (an in-process cluster) ---------------------------------------------


@pytest.fixture
async def threads_cluster() -> AsyncIterator[Any]:
    distributed = pytest.importorskip("distributed")
    async with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        dashboard_address=":0",  # (any free port: another cluster may hold 8787)
        asynchronous=True,
    ) as cluster:
        yield cluster


@ASYNCIO_ONLY
# Was a bug (fixed during the review): DaskBackend times a chunk from its submission, with
# DEPTH chunks per thread in flight: time queued behind other items counts, items within their
# limit time out
async def test_dask_a_timeout_counts_only_the_item_s_own_run(threads_cluster: Any) -> None:
    async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
        with anyio.fail_after(30):  # 2 threads: 4 chunks sent, 2 wait 0.6 s before they run
            results = await pool.map(nap, [0.6] * 4, timeout=1.0, return_exceptions=True)
    assert results == [0.6] * 4


@ASYNCIO_ONLY
# Was a bug (fixed during the review): a Dask pool closed mid-map submits to its closed client
# (ClosedClientError out of the block's exit) and the map in another task never ends
async def test_dask_closing_the_pool_mid_map_is_clean_and_ends_the_map(
    threads_cluster: Any,
) -> None:
    ended = anyio.Event()
    exit_error: BaseException | None = None
    async with anyio.create_task_group() as outside:
        try:
            async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
                started = anyio.Event()

                async def consume() -> None:
                    try:
                        with pool.imap(nap, [0.05] * 100, return_exceptions=True) as results:
                            async for _ in results:
                                started.set()
                    except Exception:  # (an error is fine: the map must end)
                        pass
                    ended.set()

                outside.start_soon(consume)
                with anyio.fail_after(20):
                    await started.wait()
        except BaseException as error:  # (what leaving the block raised)
            exit_error = error
        with anyio.move_on_after(5):
            await ended.wait()
        outside.cancel_scope.cancel()
    assert exit_error is None
    assert ended.is_set()


# -- open: the Dask backend -----------------------------------------------------------------


@ASYNCIO_ONLY
# Was a bug: a timed-out Dask task keeps its thread (Dask cannot stop it) but no longer counts in
# flight: the next items queue behind it and time out though they are quick
async def test_dask_items_after_a_timed_out_one_are_not_blamed(threads_cluster: Any) -> None:
    async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
        with anyio.fail_after(30):  # 2 threads, both held 2 s by items past their limit
            results = await pool.map(nap, [2, 2, 0.01], timeout=0.5, return_exceptions=True)
    assert isinstance(results[0], corral.ProcessTimeout)
    assert isinstance(results[1], corral.ProcessTimeout)
    assert results[2] == 0.01


@ASYNCIO_ONLY
# Was a bug: a map's window (4 chunks per worker) is fixed at its start: on sup.pool(backend=
# DaskBackend) before the client connects workers is 1, so the map never uses more than 4 threads
async def test_dask_a_map_started_before_the_client_connects_uses_every_thread() -> None:
    distributed = pytest.importorskip("distributed")
    Meeting.barrier = threading.Barrier(8, timeout=3)
    async with (
        distributed.LocalCluster(
            n_workers=1,
            threads_per_worker=8,
            processes=False,
            dashboard_address=":0",  # (any free port: another cluster may hold 8787)
            asynchronous=True,
        ) as cluster,
        corral.Supervisor() as sup,
    ):
        pool = sup.pool(backend=corral.DaskBackend(cluster))
        with anyio.fail_after(30):
            results = await pool.map(meet, range(8), chunksize=1, return_exceptions=True)
    assert results == list(range(8))  # (8 items at once: else the barrier breaks)


@ASYNCIO_ONLY
# Was a bug: when the Dask client cannot connect every chunk fails with the one error object
# (Batch.fail reuses it for 1-item chunks): items share it, and its notes pile up across items and
# maps
async def test_dask_an_unreachable_scheduler_fails_each_item_with_its_own_error() -> None:
    pytest.importorskip("distributed")
    import socket  # noqa: PLC0415

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
        address = f"tcp://127.0.0.1:{unused.getsockname()[1]}"
        async with corral.Supervisor() as sup:
            pool = sup.pool(backend=corral.DaskBackend(address, timeout=1))
            with anyio.fail_after(20):
                first = await pool.map(double, range(2), chunksize=1, return_exceptions=True)
                second = await pool.map(double, range(2), chunksize=1, return_exceptions=True)
    assert first[0] is not first[1]
    assert getattr(second[1], "__notes__", None) == ["(item 1 of the map)"]
