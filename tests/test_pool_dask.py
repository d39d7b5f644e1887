"""corral.Pool(backend=corral.DaskBackend(...)): the same API on a real Dask LocalCluster.

Most tests use an in-process cluster (worker threads: fast to start); one
module-wide cluster of worker processes shows the real path, a crash
included. Dask's client is asyncio-only, so these run on uvloop and asyncio.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import AsyncIterator
from multiprocessing import resource_tracker
from typing import Any

import anyio
import psutil
import pytest

import corral
from tests.pools import Square, adouble, crash_on, double, fail_on, nap, pid_of

distributed = pytest.importorskip("distributed")

pytestmark = pytest.mark.anyio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def cluster_options(**options: Any) -> dict[str, Any]:
    return {
        "n_workers": 2,
        "threads_per_worker": 1,
        "dashboard_address": None,
        "asynchronous": True,
        **options,
    }


@pytest.fixture
async def threads_cluster() -> AsyncIterator[Any]:
    async with distributed.LocalCluster(**cluster_options(processes=False)) as cluster:
        yield cluster


async def test_the_map_family_runs_on_the_cluster(threads_cluster: Any) -> None:
    big = bytes(100_000)
    async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
        assert pool.workers == 2  # the cluster's threads
        assert await pool.map(double, range(500)) == [x * 2 for x in range(500)]
        assert await pool.map(lambda x: len(big) + x, [1, 2]) == [100_001, 100_002]
        assert [x async for x in pool.imap(double, range(30))] == [x * 2 for x in range(30)]
        assert sorted([x async for x in pool.imap_unordered(double, range(30))]) == [
            x * 2 for x in range(30)
        ]
        assert await pool.starmap(pow, [(2, 3), (3, 2)]) == [8, 9]
        assert await pool.submit(functools.partial(pow, 2), 10) == 1024
        assert await pool.map(adouble, range(5)) == [0, 2, 4, 6, 8]  # awaited there
        assert await pool.map(Square, [3, 4]) == [9, 16]  # a Process run to its result
        stats = pool.statistics()
        assert stats.completed == stats.submitted
        assert stats.failed == 0


async def test_errors_name_their_item_and_can_be_collected(threads_cluster: Any) -> None:
    async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
        with pytest.raises(KeyError) as caught:
            await pool.map(fail_on, range(10))
        assert "(item 5 of the map)" in caught.value.__notes__
        results = await pool.map(fail_on, range(7), return_exceptions=True)
        assert isinstance(results[5], KeyError)
        assert results[:5] == [0, 1, 2, 3, 4]
        with pytest.raises(corral.SerializationError) as unpicklable:
            await pool.map(double, [1, 2, threading_lock(), 4], chunksize=4)
        assert "(item 2 of the map)" in unpicklable.value.__notes__
        assert await pool.map(double, [1]) == [2]  # still usable


def threading_lock() -> Any:
    return threading.Lock()


async def test_a_timed_out_item_raises_process_timeout(threads_cluster: Any) -> None:
    async with corral.Pool(backend=corral.DaskBackend(threads_cluster)) as pool:
        with anyio.fail_after(20):  # (Dask cannot stop the 2 s nap: it goes on there)
            results = await pool.map(nap, [0, 2, 0.1], timeout=0.5, return_exceptions=True)
        assert results[0] == 0
        assert results[2] == 0.1
        assert isinstance(results[1], corral.ProcessTimeout)
        assert pool.statistics().timeouts == 1


async def test_a_supervisor_owns_a_dask_pool(threads_cluster: Any) -> None:
    async with corral.Supervisor() as sup:
        pool = sup.pool(backend=corral.DaskBackend(threads_cluster))
        assert await pool.map(double, range(10)) == [x * 2 for x in range(10)]
    with pytest.raises(corral.WorkerStopped):
        await pool.map(double, [1])


async def test_a_scheduler_that_cannot_be_reached_is_a_clear_error() -> None:
    with socket_nobody_listens_on() as address:
        backend = corral.DaskBackend(address, timeout=1)
        with anyio.fail_after(20), pytest.raises((corral.WorkerStopped, OSError)) as caught:
            async with corral.Pool(backend=backend):
                pass
    assert "127.0.0.1" in str(caught.value)


class socket_nobody_listens_on:
    def __enter__(self) -> str:
        import socket  # noqa: PLC0415

        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))  # bound, never listening: connections refused
        return f"tcp://127.0.0.1:{self._sock.getsockname()[1]}"

    def __exit__(self, *exc_info: object) -> None:
        self._sock.close()


def test_bad_backend_input_says_what_to_pass() -> None:
    with pytest.raises(TypeError, match="scheduler address"):
        corral.DaskBackend(42)
    with pytest.raises(ValueError, match="target_seconds"):
        corral.DaskBackend("tcp://x:1", target_seconds=0)
    with pytest.raises(ValueError, match="cluster's workers"):
        corral.Pool(2, backend=corral.DaskBackend("tcp://x:1"))
    with pytest.raises(TypeError, match="DaskBackend"):
        corral.Pool(backend="tcp://x:1")  # type: ignore[arg-type]


@pytest.mark.parametrize("anyio_backend", [pytest.param(("trio", {}), id="trio")])
async def test_under_trio_the_backend_says_it_needs_asyncio() -> None:
    with pytest.raises(RuntimeError, match="asyncio"):
        async with corral.Pool(backend=corral.DaskBackend("tcp://127.0.0.1:1")):
            pass


@pytest.mark.slow
@pytest.mark.loops("uvloop")
async def test_on_worker_processes_a_crash_names_its_item_and_the_map_goes_on() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    async with (
        distributed.LocalCluster(**cluster_options(processes=True)) as cluster,
        corral.Pool(backend=corral.DaskBackend(cluster)) as pool,
    ):
        pids = set(await pool.map(pid_of, range(20), chunksize=1))
        assert os.getpid() not in pids  # run in the cluster's worker processes
        # Dask tries a task on 4 workers (its allowed-failures, 3) before it gives up on
        # it: an item merely queued on a worker that died is tried again, not blamed.
        with anyio.fail_after(60):
            results = await pool.map(crash_on, range(10), return_exceptions=True)
        assert isinstance(results[7], corral.WorkerCrashed)
        assert "(item 7 of the map)" in results[7].__notes__
        assert [r for i, r in enumerate(results) if i != 7] == [0, 1, 2, 3, 4, 5, 6, 8, 9]
        assert pool.statistics().crashes >= 1
    # Dask's nannies start their workers with multiprocessing, whose resource tracker
    # lives as long as this interpreter unless stopped: stopped, so later tests see
    # this process with no children at all.
    resource_tracker._resource_tracker._stop()  # type: ignore[attr-defined]
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    assert not [(p.pid, p.cmdline()) for p in left if p.is_running()]
