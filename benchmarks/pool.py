"""corral.Pool against the process pools people use: throughput, 1 ms tasks, a big closure.

All sections run in the same invocation on the same machine, every pool
with the same number of workers (``--workers``, 2), each variant in a fresh
interpreter of its own (its own session: whatever it leaves running is
killed with its process group). Absolute figures are noise on a shared
machine; the ratios are what count.

1. **Tiny tasks**: ``x * 2`` over ``--items`` (200,000) integers, a list.
   corral ``await pool.map(double, items)`` and ``async for r in
   pool.imap_unordered(double, items)`` (chunk sizes chosen by corral),
   against ``multiprocessing.Pool.map`` (its default chunksize,
   ceil(N / (4 x workers))), ``concurrent.futures.ProcessPoolExecutor.map``
   and ``loky.get_reusable_executor().map``, both with ``chunksize =
   N / (4 x workers)`` (what ``multiprocessing`` would choose; their own
   default is 1), ``aiomultiprocess.Pool.map`` (one item per task, fewer
   items with ``--quick``) and ``anyio.to_process.run_sync`` once per item
   (``--anyio-items``, 2,000: it is slow), all items started at once under a
   limiter of ``workers``. The timed part is the map alone (``--rounds``
   maps, 10; 5 with ``--quick``: the median and the best): each pool is
   first warmed with a small map. Start-up, from creating the pool to having
   the result of a one-item map in hand, is reported apart, and so is the
   CPU time a map costs the host process (with its threads) and the workers
   (all its descendants): the workers and the host share the machine's
   cores. ``multiprocessing.Pool.imap_unordered`` (the same chunksize) is
   shown beside corral's ``imap_unordered`` as context, not as a target.
2. **1 ms tasks**: ``--ms-items`` (2,000; 1,000 with ``--quick``) calls of a
   1 ms ``time.sleep`` and, separately, of a 1 ms busy spin, on every pool.
   Efficiency = ideal / wall, ideal = N x 1 ms / workers (the median wall of
   ``--ms-rounds`` maps, 3; 1 with ``--quick``). A 1 ms ``time.sleep``
   takes a little more than 1 ms (timer slack): what it takes here is shown.
3. **A closure over 1 MB**: ``big = bytes(1_000_000); fn = lambda x:
   len(big) + x`` over 10,000 items. corral pickles ``fn`` (cloudpickle)
   once per worker per map; ``multiprocessing`` pickles the function with
   every chunk and cannot pickle a lambda at all (the error is shown; it is
   then measured with ``functools.partial(len_plus, big)``, which pickles);
   loky pickles it (cloudpickle) with every chunk (chunksize as in 1). Wall
   time (median of 3 maps) and the bytes the host process wrote during the
   map (``wchar`` of ``/proc/self/io``: pipes and sockets written with
   ``write``, the way all of these send).
4. **Dask crossover**: items that each busy-spin 0.1, 1, 10 or 100 ms
   (``--dask-kind sleep``: ``time.sleep`` instead), as many as make ``N x
   size / workers`` = ``--dask-seconds`` (1 s; 0.5 s with ``--quick``):
   corral's local ``Pool(workers=2)`` against ``Pool(backend=DaskBackend(
   cluster))`` on a ``distributed.LocalCluster(n_workers=2,
   threads_per_worker=1, processes=True)`` (``--workers`` each; worker
   processes, as the local pool's; the scheduler runs in the host process,
   with the pool's own Dask client), and, for context, plain
   Dask ``client.gather(client.map(fn, items, pure=False))`` (one task per
   item, at most ``--dask-plain-items``, 1,000; 300 with ``--quick``; one
   map). Efficiency = ideal / wall, ideal = N x size / workers (the median
   wall of ``--dask-rounds`` maps, 3; 1 with ``--quick``, after a warm-up
   map of a tenth of the items), and the local pool's throughput over the
   DaskBackend's at each size. The crossover is the smallest size from
   which (at it and every larger size measured) the DaskBackend reaches 90%
   of the local pool's throughput. Start-up (creating the pool, and the
   cluster, to the first result) is reported apart, with the processes left
   once the cluster is closed (there should be none but multiprocessing's
   resource tracker, which ends by itself), and so is the CPU time per
   second of task work, in the host process (with Dask's scheduler) and in
   the workers, with the cores the rest of the machine kept busy meanwhile:
   a map during which other work kept more than a quarter of a core busy is
   measured again once the machine is quiet (6 such maps a variant at most).
5. **Task sizes**: throughput (items/s) against the work of an item: items
   that each busy-spin 0, 0.1, 1 or 10 ms, as many as make ``N x size /
   workers`` = 1 s (0.5 s with ``--quick``; 200,000 items of 0 ms, 50,000
   with ``--quick``; aiomultiprocess at most 10,000, 2,000 with ``--quick``),
   on corral's ``pool.map``, ``multiprocessing.Pool.map``,
   ``ProcessPoolExecutor.map`` and loky (chunksize as in 1) and
   aiomultiprocess (one item per task): the median of 3 maps (1 with
   ``--quick``) after a warm-up map, a noisy map measured again as in 4.

Targets (issue 6): on tiny tasks corral at least 1.0x
``multiprocessing.Pool.map`` and at least 2x ProcessPoolExecutor and loky;
on 1 ms tasks at least 90% efficiency; the Dask crossover is shown (no
target: an INFO line). loky and aiomultiprocess are installed into the
running interpreter's environment with pip when missing; Dask
(``distributed``, ``pip install 'corral[dask]'``) is not: without it
section 4 measures the local pool alone.
corral and the async peers run on ``corral.run`` (uvloop when installed);
``multiprocessing`` and ProcessPoolExecutor use the platform's default start
method (printed), loky its own.

    python benchmarks/pool.py                  # everything (~2 min; section 4 ~50 s)
    python benchmarks/pool.py --quick          # fewer rounds and items (~45 s)
    python benchmarks/pool.py --section tiny --json pool.json
    python benchmarks/pool.py --section dask --quick  # the Dask crossover alone (~15 s)
    python benchmarks/pool.py --section sizes --quick  # throughput against task size (~30 s)
    python benchmarks/pool.py --section tiny --profile /tmp/prof  # cProfile corral's maps
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import importlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import anyio
import anyio.to_process
import cloudpickle
import psutil

import corral
from _isolated import BUSY_PCT, run_variant, settle_budget
from _peers import corral_source, ensure, version
from _stats import fmt, rate, table

SECTIONS = ("tiny", "ms", "lambda", "dask", "sizes")
VARIANT_TIMEOUT = 240.0  # seconds after which a variant has hung
WARM_ITEMS = 2_000  # the small map that warms each pool before the timed ones
BIG = 1_000_000  # bytes the closure of section 3 holds
MP_TARGET = 1.0  # corral's tasks/s over multiprocessing.Pool.map's, at least
CHUNKED_TARGET = 2.0  # corral's tasks/s over ProcessPoolExecutor's and loky's, at least
EFFICIENCY_TARGET = 0.90  # corral's ideal / wall on 1 ms tasks, at least
DASK_SIZES_MS = (0.1, 1.0, 10.0, 100.0)  # section 4's task sizes
DASK_SHARE = 0.90  # the DaskBackend's share of the local pool's throughput: "crossed"
DASK_WORKERS_GONE = 5.0  # seconds the cluster's processes have to end once it is closed
DASK_NOISE = 0.25  # cores other work kept busy during a map above which it is measured again
DASK_REDOS = 6  # noisy maps measured again, at most, per variant
SIZES_MS = (0.0, 0.1, 1.0, 10.0)  # section 5's task sizes

#: variant -> (section, label in the tables)
VARIANTS: dict[str, tuple[str, str]] = {
    "tiny_corral_map": ("tiny", "corral           await pool.map(double, items)"),
    "tiny_corral_unordered": ("tiny", "corral           async for r in pool.imap_unordered(...)"),
    "tiny_corral_chunks": (
        "tiny",
        "corral           async for rs in imap_unordered().chunks()",
    ),
    "tiny_mp": ("tiny", "multiprocessing  Pool.map(double, items)"),
    "tiny_mp_unordered": ("tiny", "multiprocessing  for r in Pool.imap_unordered(..., chunksize)"),
    "tiny_ppe": ("tiny", "concurrent       ProcessPoolExecutor.map(..., chunksize)"),
    "tiny_loky": ("tiny", "loky             get_reusable_executor().map(..., chunksize)"),
    "tiny_aiomp": ("tiny", "aiomultiprocess  await Pool.map(adouble, items)"),
    "tiny_anyio": ("tiny", "anyio            to_process.run_sync(double, x) per item"),
    "ms_corral": ("ms", "corral           await pool.map(fn, items)"),
    "ms_mp": ("ms", "multiprocessing  Pool.map(fn, items)"),
    "ms_ppe": ("ms", "concurrent       ProcessPoolExecutor.map(..., chunksize)"),
    "ms_loky": ("ms", "loky             get_reusable_executor().map(..., chunksize)"),
    "ms_aiomp": ("ms", "aiomultiprocess  await Pool.map(async fn, items)"),
    "ms_anyio": ("ms", "anyio            to_process.run_sync(fn, x) per item"),
    "lambda_corral": ("lambda", "corral           await pool.map(fn, items)"),
    "lambda_mp": ("lambda", "multiprocessing  Pool.map(partial(len_plus, big), items)"),
    "lambda_loky": ("lambda", "loky             get_reusable_executor().map(fn, ..., chunksize)"),
    "dask_corral_local": ("dask", "corral  Pool(workers), local worker processes"),
    "dask_corral_backend": ("dask", "corral  Pool(backend=DaskBackend(LocalCluster))"),
    "dask_plain": ("dask", "dask    client.gather(client.map(fn, items, pure=False))"),
    "sizes_corral": ("sizes", "corral           await pool.map(fn, items)"),
    "sizes_mp": ("sizes", "multiprocessing  Pool.map(fn, items)"),
    "sizes_ppe": ("sizes", "concurrent       ProcessPoolExecutor.map(..., chunksize)"),
    "sizes_loky": ("sizes", "loky             get_reusable_executor().map(..., chunksize)"),
    "sizes_aiomp": ("sizes", "aiomultiprocess  await Pool.map(async fn, items)"),
}
DASK_VARIANTS = ("dask_corral_backend", "dask_plain")  # (need distributed)
PEER_PACKAGES = {"loky": "loky", "aiomp": "aiomultiprocess"}  # variant suffix -> package


# -- what the workers run (module level: multiprocessing pickles them by name) -------


def double(x: int) -> int:
    return x * 2


async def adouble(x: int) -> int:
    return x * 2


def sleep_1ms(x: int) -> int:
    time.sleep(0.001)
    return x


def spin_1ms(x: int) -> int:
    deadline = time.perf_counter() + 0.001
    while time.perf_counter() < deadline:
        pass
    return x


async def asleep_1ms(x: int) -> int:
    return sleep_1ms(x)  # blocking, as in the other pools: one call at a time per worker


async def aspin_1ms(x: int) -> int:
    return spin_1ms(x)


def len_plus(big: bytes, x: int) -> int:
    return len(big) + x


MS_KINDS: dict[str, tuple[Callable[[int], int], Callable[[int], Awaitable[int]]]] = {
    "sleep": (sleep_1ms, asleep_1ms),
    "spin": (spin_1ms, aspin_1ms),
}


def spin_for(seconds: float, x: int) -> int:
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        pass
    return x


def sleep_for(seconds: float, x: int) -> int:
    time.sleep(seconds)
    return x


async def aspin_for(seconds: float, x: int) -> int:
    return spin_for(seconds, x)


DASK_KINDS: dict[str, Callable[[float, int], int]] = {"spin": spin_for, "sleep": sleep_for}

# -- helpers in the children ------------------------------------------------------------

_profiler: list[cProfile.Profile] = []  # --profile: corral's timed maps only


@contextlib.contextmanager
def profiled() -> Iterator[None]:
    if not _profiler:
        yield
        return
    _profiler[0].enable()
    try:
        yield
    finally:
        _profiler[0].disable()


def written() -> int:
    """Bytes this process has written with write() so far (pipes, sockets, files)."""
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    raise RuntimeError("no wchar in /proc/self/io")


def expect(value: Any, wanted: Any, what: str) -> None:
    if value != wanted:
        raise AssertionError(f"{what}: got {repr(value)[:200]}, expected {repr(wanted)[:200]}")


def default_chunksize(items: int, workers: int) -> int:
    """multiprocessing.Pool.map's own choice: ceil(items / (4 x workers))."""
    return max(1, math.ceil(items / (4 * workers)))


def cpu_now() -> tuple[float, float]:
    """CPU seconds (user + system) so far: this process (all its threads), its descendants."""
    workers = 0.0
    for process in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            workers += times.user + times.system
    return time.process_time(), workers


class Clock:
    """Times a pool: start-up (creation to first result), then each timed map.

    Each timed map's CPU time is taken too, outside the timed part: the host
    process's (with its threads: the peers pickle on threads of their own)
    and that of all its descendants (the workers; corral's zygote, idle).
    """

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.startup = 0.0
        self.seconds: list[float] = []
        self.host_cpu: list[float] = []
        self.workers_cpu: list[float] = []

    def started(self) -> None:
        self.startup = time.perf_counter() - self.t0

    @contextlib.contextmanager
    def lap(self) -> Iterator[None]:
        host0, workers0 = cpu_now()
        t0 = time.perf_counter()
        yield
        self.seconds.append(time.perf_counter() - t0)
        host1, workers1 = cpu_now()
        self.host_cpu.append(host1 - host0)
        self.workers_cpu.append(workers1 - workers0)

    def figures(self, items: int, **extra: Any) -> dict[str, Any]:
        """Throughput: tasks/s (the median map, the best), start-up, CPU per map."""
        rates = [items / s for s in self.seconds]
        return {
            "startup_ms": 1000 * self.startup,
            "items": items,
            "rounds": len(self.seconds),
            "seconds": self.seconds,
            "tasks_per_s": statistics.median(rates),
            "best_tasks_per_s": max(rates),
            # per map, over all the timed maps (a child's CPU time comes in 10 ms ticks)
            "host_cpu_ms": 1000 * sum(self.host_cpu) / len(self.host_cpu),
            "workers_cpu_ms": 1000 * sum(self.workers_cpu) / len(self.workers_cpu),
            **extra,
        }


def loky_executor(workers: int) -> Any:
    loky: Any = importlib.import_module("loky")
    return loky.get_reusable_executor(max_workers=workers)


def aiomp_pool(workers: int) -> Any:
    aiomultiprocess: Any = importlib.import_module("aiomultiprocess")
    return aiomultiprocess.Pool(processes=workers)


async def anyio_map(fn: Callable[[int], int], items: list[int], workers: int) -> list[int]:
    """``fn(x)`` for every item through anyio.to_process, all started at once."""
    limiter = anyio.CapacityLimiter(workers)
    results = [0] * len(items)

    async def one(index: int, item: int) -> None:
        results[index] = await anyio.to_process.run_sync(fn, item, limiter=limiter)

    async with anyio.create_task_group() as tasks:
        for index, item in enumerate(items):
            tasks.start_soon(one, index, item)
    return results


# -- section 1: tiny tasks --------------------------------------------------------------


async def tiny_corral_map(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["items"]))
    clock = Clock()
    async with corral.Pool(workers=p["workers"]) as pool:
        expect(await pool.map(double, [1]), [2], "first result")
        clock.started()
        await pool.map(double, range(WARM_ITEMS))
        before = pool.statistics().chunks
        for _ in range(p["rounds"]):
            with clock.lap(), profiled():
                results = await pool.map(double, items)
            expect(results == [x * 2 for x in items], True, "corral's map (results right)")
        chunks = (pool.statistics().chunks - before) / p["rounds"]
    return clock.figures(len(items), chunks_per_map=chunks)


async def tiny_corral_unordered(p: dict[str, Any]) -> dict[str, Any]:
    return await _corral_unordered(p, by_chunk=False)


async def tiny_corral_chunks(p: dict[str, Any]) -> dict[str, Any]:
    return await _corral_unordered(p, by_chunk=True)


async def _corral_unordered(p: dict[str, Any], *, by_chunk: bool) -> dict[str, Any]:
    """imap_unordered, taken one result at a time or a chunk (a list) at a time."""
    items = list(range(p["items"]))
    clock = Clock()
    async with corral.Pool(workers=p["workers"]) as pool:
        expect(await pool.map(double, [1]), [2], "first result")
        clock.started()
        await pool.map(double, range(WARM_ITEMS))
        before = pool.statistics().chunks
        for _ in range(p["rounds"]):
            count = total = 0
            with clock.lap(), profiled():
                if by_chunk:
                    async for results in pool.imap_unordered(double, items).chunks():
                        count += len(results)
                        total += sum(results)
                else:
                    async for result in pool.imap_unordered(double, items):
                        count += 1
                        total += result
            expect((count, total), (len(items), 2 * sum(items)), "corral's imap_unordered")
        chunks = (pool.statistics().chunks - before) / p["rounds"]
    return clock.figures(len(items), chunks_per_map=chunks)


def tiny_mp(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["items"]))
    clock = Clock()
    with multiprocessing.Pool(p["workers"]) as pool:
        expect(pool.map(double, [1]), [2], "first result")
        clock.started()
        pool.map(double, range(WARM_ITEMS))
        for _ in range(p["rounds"]):
            with clock.lap():
                results = pool.map(double, items)
            expect(
                results == [x * 2 for x in items], True, "multiprocessing's map (results right)"
            )
    chunksize = default_chunksize(len(items), p["workers"])
    return clock.figures(len(items), chunksize=chunksize)


def tiny_mp_unordered(p: dict[str, Any]) -> dict[str, Any]:
    """Context for corral's imap_unordered (not a target): the same, one result at a time."""
    items = list(range(p["items"]))
    chunksize = default_chunksize(len(items), p["workers"])  # (its default is 1)
    clock = Clock()
    with multiprocessing.Pool(p["workers"]) as pool:
        expect(pool.map(double, [1]), [2], "first result")
        clock.started()
        pool.map(double, range(WARM_ITEMS))
        for _ in range(p["rounds"]):
            count = total = 0
            with clock.lap():
                for result in pool.imap_unordered(double, items, chunksize=chunksize):
                    count += 1
                    total += result
            expect((count, total), (len(items), 2 * sum(items)), "imap_unordered")
    return clock.figures(len(items), chunksize=chunksize)


def tiny_ppe(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["items"]))
    chunksize = default_chunksize(len(items), p["workers"])
    clock = Clock()
    with ProcessPoolExecutor(p["workers"]) as pool:
        expect(list(pool.map(double, [1])), [2], "first result")
        clock.started()
        list(pool.map(double, range(WARM_ITEMS), chunksize=chunksize))
        for _ in range(p["rounds"]):
            with clock.lap():
                results = list(pool.map(double, items, chunksize=chunksize))
            expect(
                results == [x * 2 for x in items],
                True,
                "ProcessPoolExecutor's map (results right)",
            )
    return clock.figures(len(items), chunksize=chunksize)


def tiny_loky(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["items"]))
    chunksize = default_chunksize(len(items), p["workers"])
    clock = Clock()
    pool = loky_executor(p["workers"])
    try:
        expect(list(pool.map(double, [1])), [2], "first result")
        clock.started()
        list(pool.map(double, range(WARM_ITEMS), chunksize=chunksize))
        for _ in range(p["rounds"]):
            with clock.lap():
                results = list(pool.map(double, items, chunksize=chunksize))
            expect(results == [x * 2 for x in items], True, "loky's map (results right)")
    finally:
        pool.shutdown(wait=True)
    return clock.figures(len(items), chunksize=chunksize)


async def tiny_aiomp(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["aiomp_items"]))
    clock = Clock()
    async with aiomp_pool(p["workers"]) as pool:
        expect(await pool.map(adouble, [1]), [2], "first result")
        clock.started()
        await pool.map(adouble, range(min(WARM_ITEMS, len(items))))
        for _ in range(p["slow_rounds"]):
            with clock.lap():
                results = await pool.map(adouble, items)
            expect(
                results == [x * 2 for x in items], True, "aiomultiprocess's map (results right)"
            )
    return clock.figures(len(items))


async def tiny_anyio(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["anyio_items"]))
    clock = Clock()
    limiter = anyio.CapacityLimiter(p["workers"])
    expect(await anyio.to_process.run_sync(double, 1, limiter=limiter), 2, "first result")
    clock.started()  # (one worker; the second starts under the warm-up)
    await anyio_map(double, list(range(4 * p["workers"])), p["workers"])
    for _ in range(p["slow_rounds"]):
        with clock.lap():
            results = await anyio_map(double, items, p["workers"])
        expect(results == [x * 2 for x in items], True, "anyio's results (results right)")
    return clock.figures(len(items))


# -- section 2: 1 ms tasks ---------------------------------------------------------------


def efficiency(items: int, workers: int, walls: dict[str, list[float]]) -> dict[str, Any]:
    ideal = items * 0.001 / workers
    out: dict[str, Any] = {"items": items, "ideal_s": ideal}
    for kind, seconds in walls.items():
        wall = statistics.median(seconds)
        out[kind] = {"walls_s": seconds, "wall_s": wall, "efficiency": ideal / wall}
    return out


async def ms_corral(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["ms_items"]))
    walls: dict[str, list[float]] = {}
    chunks: dict[str, float] = {}
    async with corral.Pool(workers=p["workers"]) as pool:
        await pool.map(double, range(WARM_ITEMS))
        for kind, (fn, _) in MS_KINDS.items():
            clock = Clock()
            before = pool.statistics().chunks
            for _ in range(p["ms_rounds"]):
                with clock.lap(), profiled():
                    results = await pool.map(fn, items)
                expect(results == items, True, f"corral's {kind} map (results right)")
            walls[kind] = clock.seconds
            chunks[kind] = (pool.statistics().chunks - before) / p["ms_rounds"]
    out = efficiency(len(items), p["workers"], walls)
    for kind, count in chunks.items():
        out[kind]["chunks_per_map"] = count
    return out


def ms_sync(p: dict[str, Any], pool: Any, chunked: bool) -> dict[str, Any]:
    items = list(range(p["ms_items"]))
    extra = {"chunksize": default_chunksize(len(items), p["workers"])} if chunked else {}
    list(pool.map(double, range(WARM_ITEMS), **extra))
    walls: dict[str, list[float]] = {}
    for kind, (fn, _) in MS_KINDS.items():
        clock = Clock()
        for _ in range(p["ms_rounds"]):
            with clock.lap():
                results = list(pool.map(fn, items, **extra))
            expect(results == items, True, f"{kind} map (results right)")
        walls[kind] = clock.seconds
    out = efficiency(len(items), p["workers"], walls)
    out["chunksize"] = default_chunksize(len(items), p["workers"])
    return out


def ms_mp(p: dict[str, Any]) -> dict[str, Any]:
    with multiprocessing.Pool(p["workers"]) as pool:
        return ms_sync(p, pool, chunked=False)  # (its default chunksize: the same figure)


def ms_ppe(p: dict[str, Any]) -> dict[str, Any]:
    with ProcessPoolExecutor(p["workers"]) as pool:
        return ms_sync(p, pool, chunked=True)


def ms_loky(p: dict[str, Any]) -> dict[str, Any]:
    pool = loky_executor(p["workers"])
    try:
        return ms_sync(p, pool, chunked=True)
    finally:
        pool.shutdown(wait=True)


async def ms_aiomp(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["ms_items"]))
    walls: dict[str, list[float]] = {}
    async with aiomp_pool(p["workers"]) as pool:
        await pool.map(adouble, range(WARM_ITEMS))
        for kind, (_, afn) in MS_KINDS.items():
            clock = Clock()
            for _ in range(p["ms_rounds"]):
                with clock.lap():
                    results = await pool.map(afn, items)
                expect(results == items, True, f"aiomultiprocess's {kind} map (results right)")
            walls[kind] = clock.seconds
    return efficiency(len(items), p["workers"], walls)


async def ms_anyio(p: dict[str, Any]) -> dict[str, Any]:
    items = list(range(p["ms_items"]))
    await anyio_map(double, list(range(4 * p["workers"])), p["workers"])
    walls: dict[str, list[float]] = {}
    for kind, (fn, _) in MS_KINDS.items():
        clock = Clock()
        for _ in range(p["ms_rounds"]):
            with clock.lap():
                results = await anyio_map(fn, items, p["workers"])
            expect(results == items, True, f"anyio's {kind} results (results right)")
        walls[kind] = clock.seconds
    return efficiency(len(items), p["workers"], walls)


# -- section 3: a closure over 1 MB ------------------------------------------------------


def closure_figures(
    fn: Any, items: int, seconds: list[float], written_bytes: list[int], **extra: Any
) -> dict[str, Any]:
    return {
        "items": items,
        "pickled_fn_bytes": len(cloudpickle.dumps(fn)),
        "walls_s": seconds,
        "wall_s": statistics.median(seconds),
        "written_bytes": statistics.median(written_bytes),
        **extra,
    }


async def lambda_corral(p: dict[str, Any]) -> dict[str, Any]:
    big = bytes(BIG)
    fn = lambda x: len(big) + x  # noqa: E731  # the point: a closure over a big object
    items = list(range(p["lambda_items"]))
    wanted = [BIG + x for x in items]
    clock, sent = Clock(), []
    async with corral.Pool(workers=p["workers"]) as pool:
        await pool.map(double, range(WARM_ITEMS))
        for _ in range(p["lambda_rounds"]):
            w0 = written()
            with clock.lap(), profiled():
                results = await pool.map(fn, items)
            sent.append(written() - w0)
            expect(results == wanted, True, "corral's map (results right)")
    return closure_figures(fn, len(items), clock.seconds, sent, sends_per_map=p["workers"])


def lambda_mp(p: dict[str, Any]) -> dict[str, Any]:
    big = bytes(BIG)
    fn = lambda x: len(big) + x  # noqa: E731
    stand_in = functools.partial(len_plus, big)
    items = list(range(p["lambda_items"]))
    wanted = [BIG + x for x in items]
    clock, sent = Clock(), []
    with multiprocessing.Pool(p["workers"]) as pool:
        pool.map(double, range(WARM_ITEMS))
        try:
            pool.map(fn, items)
            lambda_error = None
        except Exception as error:  # the stdlib pickler: no lambdas
            lambda_error = f"{type(error).__name__}: {error}"
        for _ in range(p["lambda_rounds"]):
            w0 = written()
            with clock.lap():
                results = pool.map(stand_in, items)
            sent.append(written() - w0)
            expect(results == wanted, True, "multiprocessing's map (results right)")
    chunksize = default_chunksize(len(items), p["workers"])
    return closure_figures(
        stand_in,
        len(items),
        clock.seconds,
        sent,
        lambda_error=lambda_error,
        chunksize=chunksize,
        sends_per_map=math.ceil(len(items) / chunksize),
    )


def lambda_loky(p: dict[str, Any]) -> dict[str, Any]:
    big = bytes(BIG)
    fn = lambda x: len(big) + x  # noqa: E731
    items = list(range(p["lambda_items"]))
    wanted = [BIG + x for x in items]
    chunksize = default_chunksize(len(items), p["workers"])
    clock, sent = Clock(), []
    pool = loky_executor(p["workers"])
    try:
        list(pool.map(double, range(WARM_ITEMS), chunksize=chunksize))
        for _ in range(p["lambda_rounds"]):
            w0 = written()
            with clock.lap():
                results = list(pool.map(fn, items, chunksize=chunksize))
            sent.append(written() - w0)
            expect(results == wanted, True, "loky's map (results right)")
    finally:
        pool.shutdown(wait=True)
    return closure_figures(
        fn,
        len(items),
        clock.seconds,
        sent,
        chunksize=chunksize,
        sends_per_map=math.ceil(len(items) / chunksize),
    )


# -- section 4: the Dask crossover -------------------------------------------------------

MapRunner = Callable[[Callable[[int], Any], list[int]], Awaitable[list[int]]]


def items_for(p: dict[str, Any], size_ms: float, seconds: float, cap: int | None = None) -> int:
    """Items of a map of ``size_ms`` tasks: ``seconds`` of ideal wall, at most ``cap``.

    0 ms tasks (no ideal wall): ``p["sizes_zero_items"]``.
    """
    workers = int(p["workers"])
    if size_ms > 0:
        items = max(2 * workers, round(seconds * workers * 1000 / size_ms))
    else:
        items = int(p["sizes_zero_items"])
    return items if cap is None else min(items, cap)


def dask_items(p: dict[str, Any], size_ms: float, *, plain: bool = False) -> int:
    """Items of a map of ``size_ms`` tasks: ``--dask-seconds`` of ideal wall (plain: capped)."""
    return items_for(p, size_ms, p["dask_seconds"], p["dask_plain_items"] if plain else None)


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy so far (all cores, every process)."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


async def quiet(max_wait: float = 3.0) -> None:
    """Wait (up to ``max_wait`` s) for the machine to be under ``BUSY_PCT`` busy."""
    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        busy, t0 = machine_busy(), time.monotonic()
        await anyio.sleep(0.25)
        cores = psutil.cpu_count() or 1
        if 100 * (machine_busy() - busy) / ((time.monotonic() - t0) * cores) < BUSY_PCT:
            return


def dask_sizes(
    p: dict[str, Any],
    run_map: MapRunner,
    chunks: Callable[[], int] | None = None,
    *,
    plain: bool = False,
) -> Awaitable[dict[str, Any]]:
    """Section 4's sweep (see :func:`sweep`): DASK_SIZES_MS, ``--dask-kind`` tasks."""
    return sweep(
        p,
        run_map,
        DASK_SIZES_MS,
        functools.partial(dask_items, p, plain=plain),
        1 if plain else p["dask_rounds"],
        DASK_KINDS[p["dask_kind"]],
        chunks,
    )


async def sweep(
    p: dict[str, Any],
    run_map: MapRunner,
    sizes: tuple[float, ...],
    items_of: Callable[[float], int],
    rounds: int,
    kind: Callable[[float, int], Any],
    chunks: Callable[[], int] | None = None,
) -> dict[str, Any]:
    """Each task size: a warm-up map, then ``rounds`` timed ones; walls, efficiency, CPU.

    An item of ``size_ms`` is ``kind(size_ms / 1000, x)``; a map of it has
    ``items_of(size_ms)`` items.

    The CPU the rest of the machine used meanwhile (other work: the noise) is
    what it was busy with beyond this process and its descendants; a map during
    which it kept more than ``DASK_NOISE`` cores busy is measured again (once
    the machine is quiet, ``DASK_REDOS`` times at most in a variant).
    """
    redos = [DASK_REDOS]
    out: dict[str, Any] = {}
    for size_ms in sizes:
        fn = functools.partial(kind, size_ms / 1000)
        items = list(range(items_of(size_ms)))
        warm = items[: max(2 * p["workers"], len(items) // 10)]
        expect(await run_map(fn, warm), warm, f"{size_ms:g} ms warm-up map")
        clock = Clock()
        others: list[float] = []
        counts: list[int] = []
        redone = 0
        while len(clock.seconds) < rounds:
            before = chunks() if chunks else 0
            busy = machine_busy()
            with clock.lap(), profiled():
                results = await run_map(fn, items)
            ours = clock.host_cpu[-1] + clock.workers_cpu[-1]
            noise = max(0.0, machine_busy() - busy - ours) / clock.seconds[-1]
            expect(results == items, True, f"{size_ms:g} ms map (results right)")
            if noise > DASK_NOISE and redos[0] > 0:  # other work got in the way: again
                redos[0] -= 1
                redone += 1
                for laps in (clock.seconds, clock.host_cpu, clock.workers_cpu):
                    laps.pop()
                await quiet()
                continue
            others.append(noise)
            counts.append(chunks() - before if chunks else len(items))
        ideal = len(items) * size_ms / 1000 / p["workers"]
        wall, best = statistics.median(clock.seconds), min(clock.seconds)
        out[f"{size_ms:g}"] = {
            "size_ms": size_ms,
            "items": len(items),
            "ideal_s": ideal,
            "walls_s": clock.seconds,
            "wall_s": wall,
            "efficiency": ideal / wall if ideal else None,
            "tasks_per_s": len(items) / wall,
            "best_wall_s": best,
            "best_tasks_per_s": len(items) / best,
            "others_cores": statistics.mean(others),
            "redone": redone,
            "host_cpu_s": statistics.mean(clock.host_cpu),
            "workers_cpu_s": statistics.mean(clock.workers_cpu),
            "chunks_per_map": statistics.mean(counts),
        }
    return out


def dask_cluster(workers: int) -> Any:
    """The cluster of section 4: worker processes of 1 thread (asyncio), no dashboard."""
    warnings.filterwarnings("ignore", message="Port .* is already in use")  # (its HTTP server)
    distributed: Any = importlib.import_module("distributed")
    return distributed.LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        asynchronous=True,
    )


async def processes_left() -> list[str]:
    """This process's descendants still running (the closed cluster's), once they had time."""
    deadline = time.monotonic() + DASK_WORKERS_GONE
    while True:
        left = []
        for process in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if process.status() == psutil.STATUS_ZOMBIE:
                    continue
                command = " ".join(process.cmdline())
                tracker = "resource_tracker" in command
                left.append(
                    f"{process.name()} (pid {process.pid})" + " (a resource tracker)" * tracker
                )
        if all("resource tracker" in what for what in left) or time.monotonic() > deadline:
            return left
        await anyio.sleep(0.1)


async def dask_corral_local(p: dict[str, Any]) -> dict[str, Any]:
    clock = Clock()
    async with corral.Pool(workers=p["workers"]) as pool:
        expect(await pool.map(double, [1]), [2], "first result")
        clock.started()
        await pool.map(double, range(WARM_ITEMS))
        sizes = await dask_sizes(p, pool.map, lambda: pool.statistics().chunks)
    return {"startup_ms": 1000 * clock.startup, "sizes": sizes, "left": await processes_left()}


async def dask_corral_backend(p: dict[str, Any]) -> dict[str, Any]:
    clock = Clock()
    async with dask_cluster(p["workers"]) as cluster:
        cluster_ms = 1000 * (time.perf_counter() - clock.t0)
        backend = corral.DaskBackend(cluster)
        async with corral.Pool(backend=backend) as pool:
            expect(await pool.map(double, [1]), [2], "first result")
            clock.started()
            threads = pool.workers
            await pool.map(double, range(WARM_ITEMS))
            sizes = await dask_sizes(p, pool.map, lambda: pool.statistics().chunks)
    return {
        "startup_ms": 1000 * clock.startup,
        "cluster_ms": cluster_ms,
        "threads": threads,
        "target_seconds": backend.target_seconds,
        "sizes": sizes,
        "left": await processes_left(),
    }


async def dask_plain(p: dict[str, Any]) -> dict[str, Any]:
    distributed: Any = importlib.import_module("distributed")
    clock = Clock()
    async with dask_cluster(p["workers"]) as cluster:
        cluster_ms = 1000 * (time.perf_counter() - clock.t0)
        async with distributed.Client(cluster, asynchronous=True) as client:
            expect(await client.submit(double, 1, pure=False), 2, "first result")
            clock.started()

            async def run_map(fn: Callable[[int], int], items: list[int]) -> list[int]:
                results: list[int] = await client.gather(client.map(fn, items, pure=False))
                return results

            await run_map(double, list(range(100)))
            sizes = await dask_sizes(p, run_map, plain=True)
    return {
        "startup_ms": 1000 * clock.startup,
        "cluster_ms": cluster_ms,
        "sizes": sizes,
        "left": await processes_left(),
    }


# -- section 5: throughput against task size ---------------------------------------------


def sizes_sweep(
    p: dict[str, Any],
    run_map: MapRunner,
    chunks: Callable[[], int] | None = None,
    *,
    cap: int | None = None,
    kind: Callable[[float, int], Any] = spin_for,
) -> Awaitable[dict[str, Any]]:
    """Section 5's sweep (see :func:`sweep`): SIZES_MS, busy-spinning tasks."""

    def items_of(size_ms: float) -> int:
        return items_for(p, size_ms, p["sizes_seconds"], cap)

    return sweep(p, run_map, SIZES_MS, items_of, p["sizes_rounds"], kind, chunks)


async def sizes_corral(p: dict[str, Any]) -> dict[str, Any]:
    async with corral.Pool(workers=p["workers"]) as pool:
        await pool.map(double, range(WARM_ITEMS))
        sizes = await sizes_sweep(p, pool.map, lambda: pool.statistics().chunks)
    return {"sizes": sizes}


async def sizes_sync(p: dict[str, Any], pool: Any, *, chunked: bool) -> dict[str, Any]:
    """A blocking pool's sweep (nothing else runs on this loop: blocking it is fine)."""

    async def run_map(fn: Callable[[int], Any], items: list[int]) -> list[int]:
        extra = {"chunksize": default_chunksize(len(items), p["workers"])} if chunked else {}
        return list(pool.map(fn, items, **extra))

    await run_map(double, list(range(WARM_ITEMS)))
    return {"sizes": await sizes_sweep(p, run_map), "chunked": chunked}


async def sizes_mp(p: dict[str, Any]) -> dict[str, Any]:
    with multiprocessing.Pool(p["workers"]) as pool:
        return await sizes_sync(p, pool, chunked=False)  # (its default: the same chunksize)


async def sizes_ppe(p: dict[str, Any]) -> dict[str, Any]:
    with ProcessPoolExecutor(p["workers"]) as pool:
        return await sizes_sync(p, pool, chunked=True)


async def sizes_loky(p: dict[str, Any]) -> dict[str, Any]:
    pool = loky_executor(p["workers"])
    try:
        return await sizes_sync(p, pool, chunked=True)
    finally:
        pool.shutdown(wait=True)


async def sizes_aiomp(p: dict[str, Any]) -> dict[str, Any]:
    async with aiomp_pool(p["workers"]) as pool:
        await pool.map(adouble, range(WARM_ITEMS))
        sizes = await sizes_sweep(p, pool.map, cap=p["sizes_aiomp_items"], kind=aspin_for)
    return {"sizes": sizes}


ASYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "tiny_corral_map": tiny_corral_map,
    "tiny_corral_unordered": tiny_corral_unordered,
    "tiny_corral_chunks": tiny_corral_chunks,
    "tiny_aiomp": tiny_aiomp,
    "tiny_anyio": tiny_anyio,
    "ms_corral": ms_corral,
    "ms_aiomp": ms_aiomp,
    "ms_anyio": ms_anyio,
    "lambda_corral": lambda_corral,
    "dask_corral_local": dask_corral_local,
    "dask_corral_backend": dask_corral_backend,
    "dask_plain": dask_plain,
    "sizes_corral": sizes_corral,
    "sizes_mp": sizes_mp,
    "sizes_ppe": sizes_ppe,
    "sizes_loky": sizes_loky,
    "sizes_aiomp": sizes_aiomp,
}
SYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "tiny_mp": tiny_mp,
    "tiny_mp_unordered": tiny_mp_unordered,
    "tiny_ppe": tiny_ppe,
    "tiny_loky": tiny_loky,
    "ms_mp": ms_mp,
    "ms_ppe": ms_ppe,
    "ms_loky": ms_loky,
    "lambda_mp": lambda_mp,
    "lambda_loky": lambda_loky,
}


def child(variant: str, params: dict[str, Any], out: str) -> None:
    if params.get("profile") and "corral" in variant:
        _profiler.append(cProfile.Profile())
    if variant in SYNC_VARIANTS:
        result = SYNC_VARIANTS[variant](params)
    else:
        result = corral.run(ASYNC_VARIANTS[variant], params)
    if _profiler:
        path = os.path.join(params["profile"], f"{variant}.prof")
        _profiler[0].dump_stats(path)
        result["profile"] = path
    with open(out, "w") as f:
        json.dump(result, f)


# -- the host: run each variant in a fresh interpreter, then report --------------------


def measure(variant: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its figures, or {"error": ...}.

    The interpreter gets a session of its own: whatever it leaves running
    (a worker, loky's or anyio's processes) is killed with its process group.
    """
    return run_variant(__file__, variant, params, timeout=VARIANT_TIMEOUT)


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b <= 0 else a / b


def figure(results: dict[str, dict[str, Any]], variant: str, *keys: str) -> float | None:
    value: Any = results.get(variant)
    if value is None or "error" in value:
        return None
    for key in keys:
        value = value[key]
    return float(value)


def check(checks: list[dict[str, Any]], what: str, value: float | None, bound: float) -> list[str]:
    verdict = "n/a" if value is None else ("PASS" if value >= bound else "MISS")
    checks.append({"check": what, "value": value, "target": f">= {bound:g}", "verdict": verdict})
    return [what, fmt(value, ".2f"), f">= {bound:g}", verdict]


def variants_of(section: str, results: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str]]:
    for variant, (at, label) in VARIANTS.items():
        if at == section and variant in results:
            yield variant, label


def report_tiny(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    workers, items = params["workers"], params["items"]
    print(
        f"\n== 1. Tiny tasks: x * 2 over {items:,} items, {workers} workers; the median of "
        f"{params['rounds']} maps after a warm-up map (aiomultiprocess: {params['aiomp_items']:,}"
        f" items, anyio: {params['anyio_items']:,}, {params['slow_rounds']} maps)"
    )
    base = figure(results, "tiny_corral_map", "tasks_per_s")
    rows = []
    for variant, label in variants_of("tiny", results):
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", "", "", "", "", "", ""])
            continue
        tasks = float(result["tasks_per_s"])
        if "chunksize" in result:
            chunks = f"{result['chunksize']:,}"
        elif "chunks_per_map" in result:
            chunks = f"auto ({result['chunks_per_map']:.0f}/map)"
        else:
            chunks = "1"
        per_100k = 100_000 / float(result["items"])
        rows.append(
            [
                label,
                f"{result['items']:,}",
                chunks,
                rate(tasks) + "/s",
                rate(float(result["best_tasks_per_s"])) + "/s",
                fmt(per_100k * result["host_cpu_ms"], ".1f"),
                fmt(per_100k * result["workers_cpu_ms"], ".1f"),
                fmt(result["startup_ms"], ".0f"),
                fmt(ratio(base, tasks), ".2f", "x"),
            ]
        )
    table(
        [
            "variant",
            "items",
            "chunksize",
            "tasks/s",
            "best",
            "host CPU",
            "workers CPU",
            "start-up ms",
            "corral map is",
        ],
        rows,
    )
    print(
        "(chunksize: multiprocessing's Pool.map default, and the same figure passed to the\n"
        f"others: ceil(N / (4 x {workers})); corral chooses its own.\n"
        "host CPU, workers CPU: ms of CPU per 100,000 items, the mean of the timed maps, in "
        "the host\nprocess (all its threads) and in its descendants (10 ms ticks each); "
        f"{workers} workers and the host\nshare {psutil.cpu_count()} cores. "
        "start-up: from creating the pool to the result of a one-item map.\n"
        "multiprocessing's imap_unordered is context for corral's, not a target)\n"
    )
    unordered = figure(results, "tiny_corral_unordered", "tasks_per_s")
    rows = []
    by_chunk = figure(results, "tiny_corral_chunks", "tasks_per_s")
    for name, ours in (
        ("map", base),
        ("imap_unordered", unordered),
        ("imap_unordered().chunks()", by_chunk),
    ):
        for peer, label, bound in (
            ("tiny_mp", "multiprocessing.Pool.map", MP_TARGET),
            ("tiny_ppe", "ProcessPoolExecutor.map", CHUNKED_TARGET),
            ("tiny_loky", "loky map", CHUNKED_TARGET),
        ):
            theirs = figure(results, peer, "tasks_per_s")
            rows.append(
                check(checks, f"tiny: corral {name} / {label}", ratio(ours, theirs), bound)
            )
    table(["check", "value", "target", "verdict"], rows)


def report_ms(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    workers, items = params["workers"], params["ms_items"]
    ideal = items * 0.001 / workers
    print(
        f"\n== 2. 1 ms tasks: {items:,} calls, {workers} workers; ideal = {items:,} x 1 ms / "
        f"{workers} = {1000 * ideal:.0f} ms; the median wall of {params['ms_rounds']} maps"
    )
    if params.get("sleep_ms"):
        print(
            f"(a 1 ms time.sleep takes {params['sleep_ms']:.3f} ms here, the median of 200 in "
            f"this process: at best {1 / params['sleep_ms']:.0%} of the 1 ms ideal)"
        )
    rows = []
    for variant, label in variants_of("ms", results):
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", "", ""])
            continue
        cells = [label]
        for kind in MS_KINDS:
            cells += [
                fmt(1000 * result[kind]["wall_s"], ".0f"),
                fmt(result[kind]["efficiency"], ".0%"),
            ]
        rows.append(cells)
    table(["variant", "sleep wall ms", "efficiency", "spin wall ms", "efficiency"], rows)
    corral_chunks = results.get("ms_corral", {})
    if "error" not in corral_chunks and corral_chunks:
        print(
            "(corral's chunks per map: "
            + ", ".join(f"{kind} {corral_chunks[kind]['chunks_per_map']:.0f}" for kind in MS_KINDS)
            + f"; the peers' chunksize: {default_chunksize(items, workers):,} for multiprocessing,"
            " ProcessPoolExecutor and loky, 1 for aiomultiprocess and anyio)\n"
        )
    rows = [
        check(
            checks,
            f"1 ms {kind}: corral efficiency",
            figure(results, "ms_corral", kind, "efficiency"),
            EFFICIENCY_TARGET,
        )
        for kind in MS_KINDS
    ]
    table(["check", "value", "target", "verdict"], rows)


def report_lambda(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    print(
        f"\n== 3. A closure over {BIG:,} bytes: fn = lambda x: len(big) + x over "
        f"{params['lambda_items']:,} items, {params['workers']} workers; the median of "
        f"{params['lambda_rounds']} maps"
    )
    mp = results.get("lambda_mp", {})
    if mp.get("lambda_error"):
        print(f"multiprocessing.Pool.map(fn, items) with the lambda: {mp['lambda_error']}")
        print("(measured instead with functools.partial(len_plus, big), which pickles)")
    elif mp and "error" not in mp:
        print("multiprocessing.Pool.map pickled the lambda (unexpected); partial measured")
    base = figure(results, "lambda_corral", "wall_s")
    rows = []
    for variant, label in variants_of("lambda", results):
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", "", "", ""])
            continue
        wall = float(result["wall_s"])
        rows.append(
            [
                label,
                fmt(result["pickled_fn_bytes"] / 1e6, ".2f", " MB"),
                f"{result['sends_per_map']}",
                fmt(1000 * wall, ".1f"),
                fmt(result["written_bytes"] / 1e6, ".1f", " MB"),
                fmt(ratio(wall, base), ".2f", "x"),
            ]
        )
    table(
        ["variant", "fn pickled", "fn sent", "wall ms", "host wrote", "vs corral (wall)"],
        rows,
    )
    print(
        "(fn sent: times the function goes to a worker in one map: corral once per worker,"
        " the others\nonce per chunk; host wrote: bytes the host process wrote during the map,"
        " /proc/self/io wchar)"
    )


def size_label(size_ms: float) -> str:
    return f"{size_ms:g} ms"


def dask_figure(results: dict[str, dict[str, Any]], variant: str, size_ms: float) -> Any:
    """One size's figures of one variant, or None (not measured, or failed)."""
    result = results.get(variant)
    if result is None or "error" in result:
        return None
    return result["sizes"].get(f"{size_ms:g}")


def crossover(
    results: dict[str, dict[str, Any]], key: str = "tasks_per_s"
) -> tuple[float | None, bool]:
    """The smallest size from which the DaskBackend keeps >= 90% of the local throughput.

    Returns (the size or None, whether every size was measured); ``key``: the
    median map's throughput, or the best map's.
    """
    found: float | None = None
    complete = True
    for size_ms in reversed(DASK_SIZES_MS):
        local = dask_figure(results, "dask_corral_local", size_ms)
        dask = dask_figure(results, "dask_corral_backend", size_ms)
        if local is None or dask is None:
            complete = False
            break
        if dask[key] < DASK_SHARE * local[key]:
            break
        found = size_ms
    return found, complete


def report_dask(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    workers = params["workers"]
    kind = "busy spin" if params["dask_kind"] == "spin" else "time.sleep"
    rounds = params["dask_rounds"]
    print(
        f"\n== 4. Dask crossover: items that each {kind} 0.1 to 100 ms, {workers} workers "
        f"(local worker processes;\na LocalCluster of {workers} worker processes x 1 thread); "
        f"N x size / {workers} = {params['dask_seconds']:g} s of ideal wall per map;\nthe "
        f"median wall of {rounds} map{'s' * (rounds != 1)} after a warm-up map (plain Dask: "
        f"at most {params['dask_plain_items']:,} items, 1 map)"
    )
    rows = []
    for size_ms in DASK_SIZES_MS:
        local = dask_figure(results, "dask_corral_local", size_ms)
        dask = dask_figure(results, "dask_corral_backend", size_ms)
        plain = dask_figure(results, "dask_plain", size_ms)
        cells = [size_label(size_ms), f"{dask_items(params, size_ms):,}"]
        for figures in (local, dask):
            cells += (
                ["-", "-", "-"]
                if figures is None
                else [
                    fmt(1000 * figures["wall_s"], ".0f"),
                    fmt(figures["efficiency"], ".0%"),
                    f"{figures['chunks_per_map']:.0f}",
                ]
            )
        share = ratio(dask and dask["tasks_per_s"], local and local["tasks_per_s"])
        best = ratio(dask and dask["best_tasks_per_s"], local and local["best_tasks_per_s"])
        cells += [fmt(ratio(1.0, share), ".2f", "x"), fmt(share, ".0%"), fmt(best, ".0%")]
        cells += (
            ["-", "-", "-"]
            if plain is None
            else [
                f"{plain['items']:,}",
                fmt(1000 * plain["wall_s"], ".0f"),
                fmt(plain["efficiency"], ".0%"),
            ]
        )
        rows.append(cells)
    table(
        [
            "task",
            "items",
            "local ms",
            "eff",
            "chunks",
            "DaskBackend ms",
            "eff",
            "chunks",
            "local/dask",
            "dask share",
            "(best)",
            "plain items",
            "plain ms",
            "eff",
        ],
        rows,
    )
    print(
        "(ms: the wall of one map; eff: ideal / wall, ideal = N x size / "
        f"{workers}; chunks: per map, chosen by corral;\nlocal/dask: the local pool's "
        "throughput over the DaskBackend's, dask share its inverse ((best): of the best maps);"
        "\nplain: Dask's own client.map, one task per item: context, not a target)\n"
    )
    rows = []
    for variant, label in variants_of("dask", results):
        result = results[variant]
        if "error" in result:
            rows.append([label, "error", "", ""])
            continue
        left = [what for what in result["left"] if "resource tracker" not in what]
        rows.append(
            [
                label,
                fmt(result["startup_ms"], ".0f"),
                fmt(result.get("cluster_ms"), ".0f"),
                ", ".join(left) or "none",
            ]
        )
    table(["variant", "start-up ms", "of it the cluster", "left after close"], rows)
    print(
        "(start-up: from creating the pool (the cluster first) to the result of a one-item"
        " map; left after\nclose: processes still running once the pool and the cluster closed"
        f" (given {DASK_WORKERS_GONE:g} s), multiprocessing's\nresource tracker not counted)\n"
    )
    rows = []
    for size_ms in DASK_SIZES_MS:
        cells = [size_label(size_ms)]
        for variant in ("dask_corral_local", "dask_corral_backend", "dask_plain"):
            figures = dask_figure(results, variant, size_ms)
            work = None if figures is None else figures["items"] * size_ms / 1000
            cells += [
                fmt(ratio(figures and figures["host_cpu_s"], work), ".2f"),
                fmt(ratio(figures and figures["workers_cpu_s"], work), ".2f"),
                fmt(figures and figures["others_cores"], ".2f"),
            ]
        rows.append(cells)
    table(
        [
            "task",
            "local host",
            "workers",
            "others",
            "DaskBackend host",
            "workers",
            "others",
            "plain host",
            "workers",
            "others",
        ],
        rows,
    )
    print(
        "(host, workers: CPU seconds per second of task work (N x size), the mean of the timed"
        " maps: the host\nprocess (with Dask's scheduler and client) and its descendants (the"
        " worker processes; corral's\nzygote); a spin descheduled by other work takes less CPU"
        " than its wall. others: the cores the\nrest of the machine kept busy during the maps"
        f" (of {psutil.cpu_count()}): the noise in the walls above;\na map with more than "
        f"{DASK_NOISE:g} was measured again (at most {DASK_REDOS} times a variant): "
        + ", ".join(
            f"{name} {sum(size['redone'] for size in results[variant]['sizes'].values())}"
            for variant, name in (
                ("dask_corral_local", "local"),
                ("dask_corral_backend", "DaskBackend"),
                ("dask_plain", "plain"),
            )
            if variant in results and "error" not in results[variant]
        )
        + " maps)\n"
    )
    found, complete = crossover(results)
    if found is not None:
        shown = f"{found:g} ms"
        said = (
            f"from {shown} tasks on, corral's DaskBackend reaches >= {DASK_SHARE:.0%} of the "
            "local pool's throughput"
        )
    elif complete:
        shown = "not within 0.1-100 ms"
        said = (
            f"the DaskBackend does not reach {DASK_SHARE:.0%} of the local pool's throughput "
            "at 100 ms: no crossover within the sizes measured"
        )
    else:
        shown = "-"
        said = "not known: a variant failed or was not measured"
    best, _ = crossover(results, "best_tasks_per_s")
    if best != found:
        said += (
            "\n(from the best map of each size instead of the median: "
            + ("none within 0.1-100 ms" if best is None else f"{best:g} ms")
            + "; the machine's other work moves it)"
        )
    print(f"Crossover: {said}")
    checks.append(
        {
            "check": f"dask: crossover (DaskBackend >= {DASK_SHARE:.0%} of local throughput)",
            "value": found,
            "shown": shown,
            "from_best_maps": best,
            "target": "(info)",
            "verdict": "INFO" if complete else "n/a",
        }
    )


def report_sizes(
    results: dict[str, dict[str, Any]], params: dict[str, Any], checks: list[dict[str, Any]]
) -> None:
    workers = params["workers"]
    rounds = params["sizes_rounds"]
    print(
        f"\n== 5. Task sizes: items that each busy-spin 0 to 10 ms, {workers} workers; N x size /"
        f" {workers} = {params['sizes_seconds']:g} s of ideal wall per map "
        f"({params['sizes_zero_items']:,} items of 0 ms; aiomultiprocess at most "
        f"{params['sizes_aiomp_items']:,});\nthe median of {rounds} map{'s' * (rounds != 1)} "
        "after a warm-up map"
    )
    shown = [(v, label.split()[0]) for v, label in variants_of("sizes", results)]
    rows = []
    for size_ms in SIZES_MS:
        ours = figure(results, "sizes_corral", "sizes", f"{size_ms:g}", "tasks_per_s")
        cells = [size_label(size_ms)]
        for variant, _ in shown:
            figures = dask_figure(results, variant, size_ms)
            if figures is None:
                cells.append("-")
                continue
            efficiency = figures["efficiency"]
            cells.append(
                f"{rate(figures['tasks_per_s'])}/s"
                + ("" if efficiency is None else f" {efficiency:.0%}")
                + (
                    ""
                    if variant == "sizes_corral"
                    else f" ({fmt(ratio(ours, figures['tasks_per_s']), '.2f', 'x')})"
                )
            )
        rows.append(cells)
    table(["task", *(name for _, name in shown)], rows)
    print(
        "(items/s of the median map, its efficiency (ideal / wall, ideal = N x size / "
        f"{workers}) and, in brackets,\ncorral's items/s over the pool's: above 1x corral is "
        "faster; chunksize: multiprocessing's default, the\nsame for ProcessPoolExecutor and "
        "loky, 1 for aiomultiprocess, corral's own)\n"
    )


REPORTERS: dict[str, Callable[[dict[str, dict[str, Any]], dict[str, Any], Any], None]] = {
    "tiny": report_tiny,
    "ms": report_ms,
    "lambda": report_lambda,
    "dask": report_dask,
    "sizes": report_sizes,
}


def sleep_time() -> float:
    """What a 1 ms time.sleep takes here, ms (the median of 200)."""
    samples = []
    for _ in range(200):
        t0 = time.perf_counter()
        time.sleep(0.001)
        samples.append(time.perf_counter() - t0)
    return 1000 * statistics.median(samples)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and items")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default all)",
    )
    parser.add_argument("--workers", type=int, default=2, help="workers of every pool (2)")
    parser.add_argument("--items", type=int, default=200_000, help="tiny tasks (200,000)")
    parser.add_argument("--rounds", type=int, help="timed tiny maps per variant (10; 5 --quick)")
    parser.add_argument(
        "--aiomp-items", type=int, help="aiomultiprocess's tiny tasks (200,000; 10,000 --quick)"
    )
    parser.add_argument("--anyio-items", type=int, help="anyio's tiny tasks (2,000; 500 --quick)")
    parser.add_argument("--ms-items", type=int, help="1 ms tasks (2,000; 1,000 --quick)")
    parser.add_argument("--ms-rounds", type=int, help="timed 1 ms maps per kind (3; 1 --quick)")
    parser.add_argument(
        "--dask-seconds",
        type=float,
        help="section 4: ideal wall of a map, N x size / workers (1; 0.5 --quick)",
    )
    parser.add_argument(
        "--dask-rounds", type=int, help="section 4: timed maps per size (3; 1 --quick)"
    )
    parser.add_argument(
        "--dask-plain-items",
        type=int,
        help="section 4: plain Dask's items per map, at most (1,000; 300 --quick)",
    )
    parser.add_argument(
        "--dask-kind",
        choices=tuple(DASK_KINDS),
        default="spin",
        help="section 4: what a task does for its time (spin)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="cProfile corral's timed maps (host side) into DIR/<variant>.prof",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help=f"before each variant, wait up to this many seconds for the machine to be\n"
        f"under {BUSY_PCT:g}%% busy (default 3; 1 with --quick; at most 30 s in all,\n"
        "10 s with --quick)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, json.loads(args.params), args.out)
        return
    quick = args.quick
    params: dict[str, Any] = {
        "quick": quick,
        "workers": args.workers,
        "items": args.items,
        "rounds": args.rounds or (5 if quick else 10),
        "slow_rounds": 1,
        "aiomp_items": args.aiomp_items or (10_000 if quick else 200_000),
        "anyio_items": args.anyio_items or (500 if quick else 2_000),
        "ms_items": args.ms_items or (1_000 if quick else 2_000),
        "ms_rounds": args.ms_rounds or (1 if quick else 3),
        "lambda_items": 10_000,
        "lambda_rounds": 3,
        "dask_seconds": args.dask_seconds or (0.5 if quick else 1.0),
        "dask_rounds": args.dask_rounds or (1 if quick else 3),
        "dask_plain_items": args.dask_plain_items or (300 if quick else 1_000),
        "dask_kind": args.dask_kind,
        "sizes_seconds": 0.5 if quick else 1.0,
        "sizes_rounds": 1 if quick else 3,
        "sizes_zero_items": 50_000 if quick else 200_000,
        "sizes_aiomp_items": 2_000 if quick else 10_000,
        "settle": args.settle if args.settle is not None else (1.0 if quick else 3.0),
        "profile": os.path.abspath(args.profile) if args.profile else None,
    }
    if min(params["workers"], params["items"], params["rounds"], params["ms_items"]) < 1:
        sys.exit("--workers, --items, --rounds and --ms-items are at least 1")
    if min(params["dask_seconds"], params["dask_rounds"], params["dask_plain_items"]) <= 0:
        sys.exit("--dask-seconds, --dask-rounds and --dask-plain-items are above 0")
    if params["profile"]:
        os.makedirs(params["profile"], exist_ok=True)
    settle_budget[0] = 10.0 if quick else 30.0
    sections = args.section or list(SECTIONS)
    notes = []
    missing = set()
    for suffix, package in PEER_PACKAGES.items():
        problem = ensure(package)
        if problem:
            missing.add(suffix)
            notes.append(f"{package} not measured: {problem}")
            print(f"  {notes[-1]}", file=sys.stderr)
    if "ms" in sections:
        params["sleep_ms"] = sleep_time()
    skipped: set[str] = set()
    if "dask" in sections and importlib.util.find_spec("distributed") is None:
        skipped.update(DASK_VARIANTS)
        notes.append(
            "Dask not measured: distributed is not installed (pip install 'corral[dask]'); "
            "section 4 has the local pool alone"
        )
        print(f"  {notes[-1]}", file=sys.stderr)
    print(
        f"corral.Pool against process pools: Python {sys.version.split()[0]}, "
        f"{platform.machine()}, {psutil.cpu_count()} cores, {params['workers']} workers "
        f"everywhere{' (quick)' if quick else ''}"
        f"\ncorral {corral.__version__} from {corral_source()}"
        f"\nloky {version('loky')}; aiomultiprocess {version('aiomultiprocess')}; anyio "
        f"{version('anyio')}; uvloop {version('uvloop')}; distributed "
        f"{version('distributed')}; multiprocessing start method "
        f"{multiprocessing.get_start_method()}"
        f"\nload average at start {os.getloadavg()[0]:.2f} (other work on the machine skews "
        "every figure; the ratios less so)",
        flush=True,
    )
    if params["profile"]:
        print(
            f"PROFILING corral's timed maps into {params['profile']}: cProfile slows corral"
            " (imap_unordered most),\nso its figures here are not comparable with the peers'"
        )
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    checks: list[dict[str, Any]] = []
    for section in sections:
        for variant, (at, _) in VARIANTS.items():
            if (
                at == section
                and variant.rsplit("_", 1)[-1] not in missing
                and variant not in skipped
            ):
                results[variant] = measure(variant, params)
        REPORTERS[section](results, params, checks)
        sys.stdout.flush()
    summarize(results, checks, notes, started)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": sys.version,
                    "corral": corral_source(),
                    "peers": {
                        p: version(p) for p in ("loky", "aiomultiprocess", "anyio", "distributed")
                    },
                    "cores": psutil.cpu_count(),
                    "params": params,
                    "results": results,
                    "checks": checks,
                    "notes": notes,
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")


def summarize(
    results: dict[str, dict[str, Any]],
    checks: list[dict[str, Any]],
    notes: list[str],
    started: float,
) -> None:
    for variant, result in results.items():
        if result.get("lingered"):
            trackers = all("resource tracker" in what for what in result["lingered"])
            why = " (they end by themselves once their pipe closes)" if trackers else ""
            notes.append(f"{variant} left processes running (killed): {result['lingered']}{why}")
        if result.get("busy_before_pct", 0) > BUSY_PCT:
            notes.append(
                f"{variant}: the machine was {result['busy_before_pct']:.0f}% busy (all cores) "
                "just before it was measured"
            )
    problems = [(v, r) for v, r in results.items() if "error" in r or r.get("stderr")]
    if problems or notes:
        print("\n== Problems and notes")
        for note in notes:
            print(f"- {note}")
        for variant, result in problems:
            print(f"- {variant}: {result.get('error', 'ran, but wrote to stderr')}")
            for line in result.get("stderr", "").strip().splitlines()[-15:]:
                print(f"    {line}")
    if checks:
        print("\n== Targets")
        table(
            ["check", "value", "target", "verdict"],
            [
                [c["check"], c.get("shown") or fmt(c["value"], ".2f"), c["target"], c["verdict"]]
                for c in checks
            ],
        )
    passed = sum(c["verdict"] == "PASS" for c in checks)
    missed = [c["check"] for c in checks if c["verdict"] == "MISS"]
    print(
        f"\n{passed} targets met, {len(missed)} missed"
        + "".join(f"\n  MISS {what}" for what in missed)
        + f"\n(total {time.perf_counter() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
