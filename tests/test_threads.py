"""The supervisor's thread pool: every job runs, threads come and go as needed."""

from __future__ import annotations

import threading

import anyio
import pytest

from corral._eventloop import LoopHandle
from corral._threads import ThreadPool

from .conftest import thread_idents

pytestmark = pytest.mark.anyio


async def test_more_jobs_than_threads_all_run_and_threads_exit_on_close() -> None:
    pool = ThreadPool(LoopHandle(), max_threads=3, name="t")
    before = thread_idents()
    results = await _gather(pool, range(200))
    assert sorted(results) == [i * i for i in range(200)]
    await pool.aclose(timeout=5)
    assert thread_idents() == before


async def test_idle_threads_leave_and_later_jobs_still_run() -> None:
    pool = ThreadPool(LoopHandle(), max_threads=2, name="t", idle_timeout=0.01)
    assert await _gather(pool, range(4)) == [0, 1, 4, 9]
    with anyio.fail_after(5):  # both threads time out and leave while idle
        while pool._threads:  # noqa: ASYNC110  (private state; there is no event for it)
            await anyio.sleep(0.01)
    assert await _gather(pool, range(4)) == [0, 1, 4, 9]
    await pool.aclose(timeout=5)


async def test_errors_reach_the_caller_and_system_exit_is_contained() -> None:
    pool = ThreadPool(LoopHandle(), max_threads=1, name="t")

    def fail(exc: BaseException) -> None:
        raise exc

    with pytest.raises(KeyError):
        await pool.run(fail, KeyError("k"))
    with pytest.raises(RuntimeError, match="SystemExit") as info:
        await pool.run(fail, SystemExit(3))
    assert isinstance(info.value.__cause__, SystemExit)
    assert await pool.run(lambda: "still works") == "still works"
    await pool.aclose(timeout=5)
    with pytest.raises(RuntimeError, match="closed"):
        await pool.run(lambda: None)


async def _gather(pool: ThreadPool, items: range) -> list[int]:
    results: list[int] = [0] * len(items)

    def square(x: int) -> int:
        return x * x

    async def one(i: int) -> None:
        result = await pool.run(square, i)
        assert isinstance(result, int)
        results[i] = result

    async with anyio.create_task_group() as tg:
        for i in items:
            tg.start_soon(one, i)
    return results


async def test_a_call_still_queued_when_the_pool_closes_is_answered() -> None:
    pool = ThreadPool(LoopHandle(), max_threads=1, name="t")
    release = threading.Event()
    outcome: list[BaseException] = []

    async def queued() -> None:
        try:
            await pool.run(lambda: "never runs")
        except RuntimeError as error:
            outcome.append(error)

    async with anyio.create_task_group() as tg:
        tg.start_soon(pool.run, release.wait, 5)  # holds the only thread
        with anyio.fail_after(5):
            while not pool.busy():
                await anyio.lowlevel.checkpoint()
        tg.start_soon(queued)  # waits behind it
        with anyio.fail_after(5):
            while not pool._backlog:
                await anyio.lowlevel.checkpoint()
        await pool.aclose(timeout=0)  # gives up on the busy thread at once
        release.set()
    assert len(outcome) == 1
    assert "closed before this call could start" in str(outcome[0])
