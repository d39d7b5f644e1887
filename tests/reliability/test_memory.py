"""A million calls leave memory and file descriptors flat.

Each test does its work in ten equal phases and samples after each one, with
``gc.collect()`` first: the host's RSS and open fds (``/proc/self/fd``), the
number of objects the garbage collector tracks, and the RSS and open fds of
the children doing the work. The sample after the first two phases (20% of
the work) is the baseline, once caches, buffers and allocator arenas have
grown to their working size; from there the RSS (host and children) must grow
by under 5% and no fd may be opened for good.

Sizes: a million pool items and a million runs of a Process always; calls,
streamed items, queue items and interval runs are fewer in ``make test`` (see
each test) and a million with ``CORRAL_RELIABILITY=full``.

One loop only: uvloop, the loop ``corral.run`` picks, and the fastest (the
most work per second of the suite's time budget). The code under test (the
messenger, proxies, pools, workers) is the same on every backend; what differs
is the transport underneath, which the other suites cover on all three loops.
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import psutil
import pytest

import corral
from tests.pools import double
from tests.reliability.conftest import scale
from tests.reliability.memory_children import Marked
from tests.services import Echo

pytestmark = pytest.mark.anyio

PHASES = 10
WARM = 2  # phases before the baseline sample
GROWTH = 0.05  # at most this much more RSS at the end than at the baseline
# At most this many more objects tracked by the gc at the end than at the baseline,
# besides the meter's own two per sample: a leak of one object per map, per stream or
# per call shows (the tests do hundreds of each after the baseline); 0 was measured.
OBJECTS = 100
CALLERS = 64
MB = 1e6


@pytest.fixture
def anyio_backend() -> Any:
    return ("asyncio", {"use_uvloop": True})


@dataclass(frozen=True)
class Sample:
    done: int
    rss: int
    fds: int
    objects: int
    children_rss: int
    children_fds: int
    children: frozenset[int]


@dataclass
class Meter:
    """Samples the host and ``children()`` (the processes doing the work)."""

    children: Callable[[], Sequence[psutil.Process]]
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def sample(self, done: int) -> None:
        gc.collect()
        children = self.children()
        self.samples.append(
            Sample(
                done=done,
                rss=psutil.Process().memory_info().rss,
                fds=len(os.listdir("/proc/self/fd")),
                objects=len(gc.get_objects()),
                children_rss=sum(child.memory_info().rss for child in children),
                children_fds=sum(child.num_fds() for child in children),
                children=frozenset(child.pid for child in children),
            )
        )

    def assert_flat(self, what: str) -> None:
        assert len(self.samples) == PHASES, f"{len(self.samples)} samples, not {PHASES}"
        base, last = self.samples[WARM - 1], self.samples[-1]
        after = self.samples[WARM - 1 :]
        seconds = time.perf_counter() - self.started
        growth = last.rss / base.rss - 1
        mine = 2 * (len(after) - 1)  # each Sample, and its frozenset
        objects = last.objects - base.objects - mine
        figures = (
            f"{what}: {last.done:,} in {seconds:.1f} s ({last.done / seconds:,.0f}/s);"
            f" host RSS {base.rss / MB:.2f} -> {last.rss / MB:.2f} MB ({growth:+.2%};"
            f" samples {_trend(s.rss for s in self.samples)});"
            f" host fds {base.fds} -> {last.fds} ({_trend(s.fds for s in self.samples)});"
            f" gc objects {base.objects:,} -> {last.objects:,} ({objects:+,} besides the"
            f" meter's {mine})"
        )
        children_growth = 0.0
        if base.children:
            children_growth = last.children_rss / base.children_rss - 1
            figures += (
                f"; {len(last.children)} children RSS {base.children_rss / MB:.2f} ->"
                f" {last.children_rss / MB:.2f} MB ({children_growth:+.2%};"
                f" samples {_trend(s.children_rss for s in self.samples)});"
                f" children fds {base.children_fds} -> {last.children_fds}"
            )
        print(figures)  # noqa: T201  (pytest -s shows the figures of passing tests too)
        assert growth < GROWTH, figures
        assert children_growth < GROWTH, figures
        assert objects < OBJECTS, figures
        assert all(s.fds == base.fds for s in after), figures
        assert all(s.children_fds == base.children_fds for s in after), figures
        assert all(s.children == base.children for s in after), (
            f"the children changed (a restart would reset their RSS): {figures}"
        )


def _trend(values: Iterable[int]) -> str:
    return " ".join(f"{v / MB:.1f}" if v > 100_000 else str(v) for v in values)


def _workers() -> list[psutil.Process]:
    """Every process below this one but the zygotes (idle: they only fork)."""
    me = os.getpid()
    return [
        p
        for p in psutil.Process().children(recursive=True)
        if not (p.ppid() == me and "corral._zygote" in p.cmdline())
    ]


def spread(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole numbers."""
    share, extra = divmod(total, parts)
    return [share + (1 if i < extra else 0) for i in range(parts)]


async def _calls(proxy: corral.Proxy[Echo], total: int, method: str) -> Meter:
    """``total`` calls of ``method`` from CALLERS concurrent tasks, sampled per phase."""
    call = getattr(proxy, method)
    pid = proxy.pid
    assert pid is not None
    child = psutil.Process(pid)
    meter = Meter(lambda: [child])
    done = 0

    async def caller(n: int) -> None:
        for k in range(n):
            if await call(k) != k:
                raise AssertionError(f"{method}({k}) answered something else")

    for phase in spread(total, PHASES):
        async with anyio.create_task_group() as tg:
            for n in spread(phase, CALLERS):
                tg.start_soon(caller, n)
        done += phase
        meter.sample(done)
    stats = proxy.statistics()
    assert (stats.pid, stats.restarts, stats.errors) == (pid, 0, 0), stats
    return meter


@pytest.mark.timeout(scale(60, 600))
async def test_sync_method_calls_from_64_callers() -> None:
    total = scale(300_000, 1_000_000)  # 15,000 to 45,000 calls/s here (1M: 44 s, load 6)
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo)
        calls = echo.statistics().calls
        meter = await _calls(echo, total, "echo")
        assert echo.statistics().calls - calls == total
    meter.assert_flat("sync method calls, 64 callers")


@pytest.mark.timeout(scale(60, 600))
async def test_async_method_calls_from_64_callers() -> None:
    total = scale(50_000, 1_000_000)  # 5,000 to 15,000 calls/s: a task each in the child
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo)
        meter = await _calls(echo, total, "aecho")
    meter.assert_flat("async method calls, 64 callers")


@pytest.mark.timeout(scale(60, 600))
async def test_streamed_items_over_many_streams() -> None:
    total, length = scale(200_000, 1_000_000), 1_000
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo)
        pid = echo.pid
        assert pid is not None
        child = psutil.Process(pid)
        meter = Meter(lambda: [child])
        done = 0
        for phase in spread(total, PHASES):
            for i, n in enumerate(spread(phase, phase // length)):
                stream = echo.count(n) if i % 2 else echo.count_sync(n)
                received = [x async for x in stream]
                assert received == list(range(n))
            done += phase
            meter.sample(done)
        assert echo.statistics().restarts == 0
    meter.assert_flat(f"streamed items, {length:,} a stream, async and sync generators")


@pytest.mark.timeout(scale(60, 300))
async def test_a_million_pool_items_over_a_thousand_maps() -> None:
    total, size = 1_000_000, 1_000
    async with corral.Pool(2) as pool:
        meter = Meter(_workers)
        done = 0
        for phase in spread(total, PHASES):
            for i, n in enumerate(spread(phase, phase // size)):
                items = range(done, done + n)
                if i % 3 == 0:
                    results = await pool.map(double, items)
                elif i % 3 == 1:
                    results = [r async for r in pool.imap(double, items)]
                else:
                    results = [
                        r
                        async for chunk in pool.imap_unordered(double, items).chunks()
                        for r in chunk
                    ]
                    results.sort()
                assert results == [2 * x for x in items]
                done += n
            meter.sample(done)
        stats = pool.statistics()
        assert (stats.completed, stats.failed, stats.restarts) == (total, 0, 0), stats
    meter.assert_flat(f"pool items, {size:,} a map (map, imap, imap_unordered.chunks)")


@pytest.mark.timeout(scale(60, 300))
async def test_queue_worker_items() -> None:
    total = scale(200_000, 1_000_000)  # 20,000 to 65,000 items/s
    handled = 0

    async def handle(item: int) -> None:
        nonlocal handled
        if item == handled:  # they run one at a time, in order
            handled += 1

    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(handle, maxsize=1_000)
        meter = Meter(list)
        done = 0
        for phase in spread(total, PHASES):
            for item in range(done, done + phase):
                await worker.put(item)
            done += phase
            with anyio.fail_after(60):
                await worker.wait_runs(done)
            meter.sample(done)
        assert handled == total, f"{handled} of {total} items came in order"
        assert worker.statistics().errors == 0
    meter.assert_flat("queue worker items (async function, maxsize 1,000)")


@pytest.mark.timeout(scale(60, 600))
async def test_interval_worker_runs() -> None:
    total = scale(50_000, 1_000_000)  # ~10,000 runs/s: each run waits on a loop timer

    async def tick() -> None:
        pass

    async with corral.Supervisor() as sup:
        worker = sup.every(1e-6, tick, mode="delay")
        meter = Meter(list)
        done = 0
        for phase in spread(total, PHASES):
            done += phase
            with anyio.fail_after(120):
                await worker.wait_runs(done)
            meter.sample(done)
        worker.stop()
    meter.assert_flat("interval worker runs (async function, mode='delay', 1 us)")


@pytest.mark.timeout(scale(60, 300))
async def test_a_million_runs_of_a_process() -> None:
    total = 1_000_000
    async with corral.Supervisor() as sup:
        job = await sup.start(Marked(total // PHASES), runs=total)
        meter = Meter(_workers)
        for _ in range(PHASES):
            with anyio.fail_after(60):
                mark = await job.listen()
            assert isinstance(mark, int), f"the process told {mark!r}"
            meter.sample(mark)
        await job.tell("sampled")
        assert await job.result() == total
    meter.assert_flat("runs of a Process (sync run())")
