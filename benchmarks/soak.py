"""A mixed-load soak under one supervisor, with a child SIGKILLed every 2 s.

One ``corral.Supervisor`` runs, for ``--duration`` seconds:

- **RPC**: 3 spawned services, each driven by 16 caller tasks making sync
  (``echo``) and async (``aecho``, sometimes with a few ms of delay) calls,
  one in 32 carrying 64 KiB;
- **pool**: ``sup.pool(2)`` mapping continuously, one task with
  ``await pool.map`` and one with ``pool.imap_unordered`` (items are clean:
  only the killer crashes workers);
- **in-process workers**: an interval worker at 100 Hz counting ticks, and a
  queue worker fed by another interval worker, checking that its items arrive
  in order;
- **control loop**: a 1 kHz ``ControlLoop`` (``realtime=False``), with 4
  tasks calling a method on it and one making round trips (``rt.set`` an
  input, ``rt.get`` it back, ``rt.watch`` the output the loop copies it to);
- **a killer**: every ``--kill-every`` seconds, SIGKILLs one child picked at
  random among the services, the control loop and the pool's workers (dealt
  from a shuffled deck: each child once per round, in a random order). The
  pool's workers' pids come from ``sup.statistics().children`` (public: one
  ``ProxyStatistics`` per child, pool workers included); the others' from
  ``proxy.pid``.

Every call has a 30 s deadline. A call that neither returns nor raises
within it, or returns a wrong value, is LOST; one that raises
``WorkerCrashed`` (``WorkerStopped`` while shutting down) failed by crash,
which is fine; any other error is unexpected. Recovery time per kill: from
the SIGKILL to the end of the first successful call on that child that was
made after the kill (for a pool worker: the first result computed by the
child that replaced it). At the end the killer stops, the soak waits (30 s
at most) for every kill to be recovered from, then the callers stop and the
block exits.

Host RSS, fds and threads are sampled just before each kill (the previous
kill's restart long done). The baseline is the first sample after the
warm-up (10% of the run, 5 to 60 s) and after every child has been killed
once: a child forked from the zygote holds one pidfd more than the first
ones, which were spawned. fds also must not grow from before ``corral.run``
to after it (after a first, empty ``corral.run``: uvloop opens a pipe once
per process; inside a run it also keeps one ``/dev/null`` open until the
loop closes, shown as "added by the block"). Processes left behind are
looked for after the block, among this process's descendants and every
child seen during the run (an orphan is no longer a descendant).

Exit status 1 if a call was lost, a call raised something unexpected, a kill
was not recovered from, restarts and kills differ, the queue lost or
reordered items, the supervisor failed, a process was left, or the host's
fds grew.

    python benchmarks/soak.py                 # 600 s
    python benchmarks/soak.py --quick         # 20 s
    python benchmarks/soak.py --duration 120 --kill-every 2 --json soak.json
    python benchmarks/soak.py --quick --loop asyncio --seed 7
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import anyio
import anyio.lowlevel
import psutil

import corral
from _stats import fmt, percentile, table
from soak_children import Mirror, SoakService, double

# -- restart options, in one place ---------------------------------------------------
# The supervisor counts every child's restarts together (the pool's workers are
# replaced by the pool, not counted): 3 within 5 s by default, which a kill every 2 s
# all but reaches. Within a 1 s window each restart waits the first backoff (10 ms).
SUPERVISOR_RESTART: Final[dict[str, Any]] = {"max_restarts": 100_000, "restart_window": 1.0}

SERVICES: Final = 3
CALLERS_PER_SERVICE: Final = 16
LOOP_CALLERS: Final = 4
LOOP_HZ: Final = 1000
POOL_WORKERS: Final = 2
POOL_MAPPERS: Final = 2  # the first with pool.map, the second with pool.imap_unordered
MAP_ITEMS: Final = 500
INTERVAL: Final = 0.01  # the ticker's period
FEED_EVERY: Final = 0.005  # the queue's feeder: FEED_BATCH items this often
FEED_BATCH: Final = 10
DEADLINE: Final = 30.0  # every call's
BIG: Final = bytes(range(256)) * 256  # 64 KiB, in 2 calls of 64 (a sync and an async one)
MAX_DETAILS: Final = 20  # lost or unexpected calls described in the report


@dataclass
class Tally:
    """One kind of call: how each ended."""

    calls: int = 0
    ok: int = 0
    crashed: int = 0  # raised WorkerCrashed (or WorkerStopped while shutting down): fine
    lost: int = 0  # no answer within the deadline, or a wrong one
    unexpected: int = 0  # raised anything else


@dataclass
class Soak:
    """Everything the tasks share, and the figures."""

    started: float = field(default_factory=time.perf_counter)
    stopping: bool = False
    tallies: dict[str, Tally] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    pending: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # kills
    recoveries: list[tuple[str, float]] = field(default_factory=list)  # (child, seconds)
    recovered: anyio.Event = field(default_factory=anyio.Event)
    kills: Counter[str] = field(default_factory=Counter)
    kill_log: list[tuple[float, str]] = field(default_factory=list)
    fd_lists: list[list[str]] = field(default_factory=list)  # per sample: what each fd is
    pool_names: dict[int, str] = field(default_factory=dict)  # pool worker pid -> name
    first_ok: dict[str, anyio.Event] = field(default_factory=dict)
    samples: list[dict[str, float]] = field(default_factory=list)
    seen: dict[int, float] = field(default_factory=dict)  # descendant pid -> create time
    loop_ticks: dict[int, tuple[int, int]] = field(default_factory=dict)  # restarts -> ticks
    rounds: int = 0  # of the killer's deck
    first_round_done: float | None = None  # when every child had been killed once
    fed: int = 0
    consumed: int = 0
    out_of_order: int = 0

    def tally(self, kind: str) -> Tally:
        return self.tallies.setdefault(kind, Tally())

    def note(self, text: str) -> None:
        if len(self.details) < MAX_DETAILS:
            self.details.append(f"{time.perf_counter() - self.started:8.3f}s {text}")

    def killed(self, name: str, pid: int) -> None:
        now = time.perf_counter()
        self.pending.setdefault(name, []).append((now, pid))
        self.kills[name] += 1
        self.kill_log.append((now - self.started, name))

    def served(self, name: str, *, since: float | None = None, pid: int | None = None) -> None:
        """A successful call on ``name``: made at ``since``, or computed by ``pid``."""
        now = time.perf_counter()
        if name in self.first_ok:
            self.first_ok[name].set()
        kills = self.pending.get(name)
        if not kills:
            return
        left = []
        for killed, old in kills:
            if (since is not None and since > killed) or (pid is not None and pid != old):
                self.recoveries.append((name, now - killed))
            else:
                left.append((killed, old))
        if left:
            self.pending[name] = left
        else:
            del self.pending[name]
            if not self.pending:
                self.recovered.set()
                self.recovered = anyio.Event()

    async def attempt(self, kind: str, target: str, call: Awaitable[Any], expected: Any) -> None:
        """Await one call (not yet sent) within the deadline; check its value; count it."""
        tally = self.tally(kind)
        tally.calls += 1
        made = time.perf_counter()
        with anyio.move_on_after(DEADLINE) as deadline:
            try:
                result = await call
            except corral.WorkerCrashed:
                tally.crashed += 1
                return
            except corral.WorkerStopped as error:
                if self.stopping:
                    tally.crashed += 1
                else:
                    tally.unexpected += 1
                    self.note(f"{kind} on {target}: WorkerStopped while running: {error}")
                return
            except Exception as error:
                tally.unexpected += 1
                self.note(f"{kind} on {target}: {type(error).__name__}: {error}")
                return
        if deadline.cancelled_caught:
            tally.lost += 1
            self.note(f"{kind} on {target}: LOST, no answer in {DEADLINE:g} s")
        elif result != expected:
            tally.lost += 1
            self.note(f"{kind} on {target}: LOST, wrong value {_short(result)}")
        else:
            tally.ok += 1
            self.served(target, since=made)


class LogCounter(logging.Handler):
    """Counts the warnings and errors logged (corral's restarts among them), by message
    (numbers left out)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = re.sub(r"\d+(\.\d+)?", "#", str(record.msg))  # (forwarded ones come formatted)
        self.counts[f"{record.levelname} {record.name}: {message}"] += 1


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) < 80 else text[:77] + "..."


# -- the load --------------------------------------------------------------------------


async def rpc_caller(soak: Soak, service: corral.Proxy[SoakService], name: str, n: int) -> None:
    rng = random.Random(n)
    seq = 0
    while not soak.stopping:
        seq += 1
        value = (n, seq, BIG) if seq // 2 % 32 == 0 else (n, seq)  # both kinds carry BIG
        if seq % 2:
            await soak.attempt("service sync call", name, service.echo(value), value)
        else:
            delay = rng.choice((0.0, 0.0, 0.0, 0.001, 0.005))
            await soak.attempt(
                "service async call", name, service.aecho(value, delay=delay), value
            )


async def loop_caller(soak: Soak, rt: corral.ControlLoopProxy[Mirror], n: int) -> None:
    seq = 0
    while not soak.stopping:
        seq += 1
        value = (n, seq)
        await soak.attempt("control-loop method call", "loop", rt.echo(value), value)


async def loop_round_trips(soak: Soak, rt: corral.ControlLoopProxy[Mirror]) -> None:
    """Set the input, read it back, watch the loop copy it to its output."""
    watch = rt.watch("mirror")  # one watcher for the whole run: it follows restarts
    value = 0

    async def trip() -> Any:
        await rt.set("setpoint", value)
        if (back := await rt.get("setpoint")) != value:
            return f"input read back as {back}"
        while (seen := await anext(watch)) != value:
            if not isinstance(seen, int) or seen > value:
                return f"output {seen!r}"
        return seen

    while not soak.stopping:
        value += 1
        await soak.attempt("control-loop round trip", "loop round trip", trip(), value)


async def pool_mapper(soak: Soak, sup: corral.Supervisor, pool: corral.Pool, n: int) -> None:
    """Map MAP_ITEMS items at a time, in order (n == 0) or as they complete (n == 1)."""
    kind = "pool item (map)" if n == 0 else "pool item (imap_unordered)"
    tally = soak.tally(kind)
    base = 0
    while not soak.stopping:
        items = range(base, base + MAP_ITEMS)
        base += MAP_ITEMS
        tally.calls += MAP_ITEMS
        left = set(items)  # items without a result yet
        failed = 0  # results that are errors (crashed, or unexpected)
        with anyio.move_on_after(DEADLINE) as deadline:
            if n == 0:
                results = await pool.map(double, items, return_exceptions=True)
                for x, result in zip(items, results, strict=True):
                    if isinstance(result, BaseException) or result[0] == x:
                        failed += _pool_result(soak, sup, kind, result, left)
                    else:
                        soak.note(f"{kind}: item {x} answered {_short(result)}")
            else:
                with pool.imap_unordered(double, items, return_exceptions=True) as them:
                    async for result in them:
                        failed += _pool_result(soak, sup, kind, result, left)
        if len(left) > failed:  # no answer (in time), or a wrong one
            tally.lost += len(left) - failed
            why = f"not done in {DEADLINE:g} s" if deadline.cancelled_caught else "done"
            soak.note(f"{kind}: LOST, map {why} with {len(left) - failed} items unanswered")


def _pool_result(
    soak: Soak,
    sup: corral.Supervisor,
    kind: str,
    result: tuple[int, int, int] | BaseException,
    left: set[int],
) -> int:
    """Count one result; 1 if it is an error (its item stays in ``left``), else 0."""
    tally = soak.tally(kind)
    if isinstance(result, corral.WorkerCrashed) or (
        soak.stopping and isinstance(result, corral.WorkerStopped)
    ):
        tally.crashed += 1
        return 1
    if isinstance(result, BaseException):
        tally.unexpected += 1
        soak.note(f"{kind}: {type(result).__name__}: {result}")
        return 1
    x, doubled, pid = result
    if x not in left:  # an item answered twice, or one never asked for
        tally.lost += 1
        soak.note(f"{kind}: LOST, a result for an item answered already: {result}")
        return 0
    if doubled != 2 * x:  # (its item stays in left: counted lost with the map)
        soak.note(f"{kind}: LOST, wrong result {result}")
        return 0
    left.discard(x)
    tally.ok += 1
    name = soak.pool_names.get(pid)
    if name is None:  # a worker not seen yet: which one is it?
        for child in sup.statistics().children:
            if child.pid == pid:
                name = soak.pool_names[pid] = child.name
    if name is not None:
        soak.served(name, pid=pid)
    soak.served("pool")
    return 0


def tick() -> None:
    """The interval worker's function (sync: it runs in the supervisor's threads)."""


def start_queue(soak: Soak, sup: corral.Supervisor) -> None:
    """A queue worker checking its items' order, fed by an interval worker."""

    async def consume(item: int) -> None:
        if item != soak.consumed:
            soak.out_of_order += 1
            soak.note(f"queue: item {item} arrived where {soak.consumed} was due")
        soak.consumed = item + 1

    queue = sup.queue_worker(consume, maxsize=1000, name="queue")

    async def feed() -> None:
        for _ in range(FEED_BATCH):
            try:
                queue.put_nowait(soak.fed)  # (no turn of the busy event loop per item)
            except corral.QueueFull:
                await queue.put(soak.fed)
            soak.fed += 1

    sup.every(FEED_EVERY, feed, name="feeder")


# -- the killer, and what it samples -----------------------------------------------------


async def killer(
    soak: Soak,
    sup: corral.Supervisor,
    targets: dict[str, corral.Proxy[SoakService] | corral.ControlLoopProxy[Mirror]],
    rt: corral.ControlLoopProxy[Mirror],
    every: float,
    seed: int,
) -> None:
    """Every ``every`` seconds: sample, then SIGKILL a child.

    The children are dealt from a shuffled deck, so each is killed once per
    round, in a random order.
    """
    rng = random.Random(seed)
    me = psutil.Process()
    deck: list[str] = []
    while True:
        await anyio.sleep(every)  # the killer's period
        await take_sample(soak, me, rt)
        pids = {name: proxy.pid for name, proxy in targets.items()}
        for child in sup.statistics().children:
            if child.name not in targets:  # a pool worker
                pids[child.name] = child.pid
        if not deck:
            if soak.rounds == 1:
                soak.first_round_done = time.perf_counter() - soak.started
            soak.rounds += 1
            deck = sorted(pids)
            rng.shuffle(deck)
        name = deck.pop()
        pid = pids[name]
        if pid is None:  # (not restarted yet: skipped this round)
            continue
        soak.killed(name, pid)
        os.kill(pid, signal.SIGKILL)


async def take_sample(soak: Soak, me: psutil.Process, rt: corral.ControlLoopProxy[Mirror]) -> None:
    for child in me.children(recursive=True):
        try:
            soak.seen[child.pid] = child.create_time()
        except psutil.Error:
            continue
    soak.fd_lists.append(open_fds())
    soak.samples.append(
        {
            "t": time.perf_counter() - soak.started,
            "rss_mb": me.memory_info().rss / 2**20,
            "fds": me.num_fds(),
            "threads": me.num_threads(),
        }
    )
    loop = await rt.statistics()
    ticks, skipped = soak.loop_ticks.get(loop.restarts, (0, 0))
    soak.loop_ticks[loop.restarts] = (max(ticks, loop.ticks), max(skipped, loop.skipped))


def open_fds() -> list[str]:
    """What each of this process's fds is, by kind ("socket", "pipe", "anon_inode:[eventfd]")."""
    kinds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # (the one listdir used)
            continue
        kinds.append(re.sub(r":\[\d+\]$", "", link))
    return kinds


def fds_added(before: list[str], after: list[str]) -> dict[str, int]:
    """The kinds of fds there are more of ``after`` than ``before``, and how many more."""
    return dict(Counter(after) - Counter(before))


def leftovers(soak: Soak, me: psutil.Process) -> list[str]:
    """Processes still there: descendants, and children seen during the run (orphans)."""
    left: dict[int, str] = {}
    candidates = list(me.children(recursive=True))
    for pid, created in soak.seen.items():
        try:
            process = psutil.Process(pid)
            if process.create_time() == created:
                candidates.append(process)
        except psutil.Error:
            continue
    for process in candidates:
        try:
            command = " ".join(process.cmdline())[:80]
            left[process.pid] = f"pid {process.pid} ({process.status()}): {command}"
        except psutil.Error:
            continue
    return sorted(left.values())


# -- the run -----------------------------------------------------------------------------


async def soak_run(duration: float, kill_every: float, seed: int) -> tuple[Soak, dict[str, Any]]:
    """Run the soak; what it counted, and the figures taken at the end."""
    soak = Soak()
    logs = LogCounter()
    logging.getLogger().addHandler(logs)
    me = psutil.Process()
    fds_before = me.num_fds()
    fd_list_before = open_fds()
    failure: str | None = None
    figures: dict[str, Any] = {}
    try:
        async with corral.Supervisor(
            name="soak", shutdown_timeout=10.0, **SUPERVISOR_RESTART
        ) as sup:
            figures = await drive(soak, sup, duration, kill_every, seed)
    except corral.WorkerFailed as error:
        failure = f"the supervisor failed: {error}"
    figures["fds_before_block"] = fds_before
    figures["fds_after_block"] = me.num_fds()
    figures["fds_added_by_block"] = fds_added(fd_list_before, open_fds())
    figures["left"] = leftovers(soak, me)
    figures["failure"] = failure
    logging.getLogger().removeHandler(logs)
    figures["logged"] = dict(logs.counts.most_common())
    return soak, figures


async def drive(
    soak: Soak, sup: corral.Supervisor, duration: float, kill_every: float, seed: int
) -> dict[str, Any]:
    services = {}
    for i in range(SERVICES):
        name = f"service-{i + 1}"
        services[name] = await sup.spawn(SoakService, i, name=name, restart="on-failure")
    rt = await sup.control_loop(
        Mirror(), hz=LOOP_HZ, name="loop", realtime=False, restart="on-failure"
    )
    loop_started = time.perf_counter()
    pool = sup.pool(POOL_WORKERS, name="pool")
    ticker = sup.every(INTERVAL, tick, name="ticker")
    start_queue(soak, sup)
    targets: dict[str, corral.Proxy[SoakService] | corral.ControlLoopProxy[Mirror]] = {
        **services,
        "loop": rt,
    }
    for name in [*targets, "loop round trip", "pool"]:
        soak.first_ok[name] = anyio.Event()
    async with anyio.create_task_group() as load:
        for name, service in services.items():
            for n in range(CALLERS_PER_SERVICE):
                load.start_soon(rpc_caller, soak, service, name, n)
        for n in range(LOOP_CALLERS):
            load.start_soon(loop_caller, soak, rt, n)
        load.start_soon(loop_round_trips, soak, rt)
        for n in range(POOL_MAPPERS):
            load.start_soon(pool_mapper, soak, sup, pool, n)
        with anyio.fail_after(60):  # everything answers before the first kill
            for ready in soak.first_ok.values():
                await ready.wait()
        soak.first_ok.clear()
        soak.started = time.perf_counter()
        ticks = ticker.statistics()
        async with anyio.create_task_group() as killing:
            killing.start_soon(killer, soak, sup, targets, rt, kill_every, seed)
            await anyio.sleep(duration)  # the soak's length
            killing.cancel_scope.cancel()
        with anyio.move_on_after(DEADLINE):
            if soak.pending:
                await soak.recovered.wait()
        soak.stopping = True  # each caller finishes its call in hand, within its deadline
    end = time.perf_counter()
    await take_sample(soak, psutil.Process(), rt)
    statistics = sup.statistics()
    ticked = ticker.statistics()
    return {
        "elapsed_s": end - soak.started,
        "restarts": {c.name: c.restarts for c in statistics.children},
        "supervisor_restarts": getattr(statistics, "restarts", None),  # (where it counts them)
        "supervisor_restart_options": SUPERVISOR_RESTART,
        "pool": asdict(pool.statistics()),
        "interval": {
            "ticks": ticked.runs - ticks.runs,
            "skipped": ticked.skipped - ticks.skipped,
            "due": (end - soak.started) / INTERVAL,
        },
        "loop_due": (end - loop_started) * LOOP_HZ,
    }


def summarize(figures: dict[str, Any], soak: Soak, duration: float) -> dict[str, Any]:
    """The report, as plain data."""
    total = Tally()
    for tally in soak.tallies.values():
        for key in asdict(total):
            setattr(total, key, getattr(total, key) + getattr(tally, key))
    samples = soak.samples
    # The baseline: after a warm-up, and after every child has been killed once (a child
    # forked from the zygote holds a pidfd more than the first ones, spawned).
    warm_up = max(min(60.0, max(5.0, duration / 10)), soak.first_round_done or duration)
    at = next((i for i, s in enumerate(samples) if s["t"] > warm_up), len(samples) - 1)
    first, last = (samples[at], samples[-1]) if samples else ({}, {})
    fd_growth = fds_added(soak.fd_lists[at], soak.fd_lists[-1]) if samples else {}

    def growth(key: str) -> float | None:
        return 100 * (last[key] / first[key] - 1) if first else None

    fds_grew = bool(first) and (
        last["fds"] > first["fds"] or figures["fds_after_run"] > figures["fds_before_run"]
    )
    recoveries = [seconds for _, seconds in soak.recoveries]
    by_kind: dict[str, list[float]] = {}
    for name, seconds in soak.recoveries:
        by_kind.setdefault(name.split("-")[0], []).append(seconds)
    restarts = figures.get("restarts", {})
    report: dict[str, Any] = {
        "duration_s": figures.get("elapsed_s"),
        "calls": asdict(total),
        "by_kind": {kind: asdict(t) for kind, t in sorted(soak.tallies.items())},
        "kills": sum(soak.kills.values()),
        "kills_by_child": dict(sorted(soak.kills.items())),
        "restarts": sum(restarts.values()),
        "restarts_by_child": restarts,
        "supervisor_restarts": figures.get("supervisor_restarts"),
        "supervisor_restart_options": figures.get("supervisor_restart_options"),
        "not_recovered": sum(len(k) for k in soak.pending.values()),
        "recovery_max_ms": max(recoveries) * 1000 if recoveries else None,
        "recovery_p50_ms": percentile(recoveries, 50) * 1000 if recoveries else None,
        "recovery_p99_ms": percentile(recoveries, 99) * 1000 if recoveries else None,
        "recovery_by_kind_ms": {
            kind: {
                "p50": percentile(times, 50) * 1000,
                "max": max(times) * 1000,
                "count": len(times),
            }
            for kind, times in sorted(by_kind.items())
        },
        "kill_log": [(round(t, 3), name) for t, name in soak.kill_log],
        "pool_items_mapped": soak.tally("pool item (map)").ok
        + soak.tally("pool item (imap_unordered)").ok,
        "pool_statistics": figures.get("pool"),
        "interval_ticks": figures.get("interval", {}).get("ticks"),
        "interval_skipped": figures.get("interval", {}).get("skipped"),
        "interval_due": figures.get("interval", {}).get("due"),
        "control_loop_due": figures.get("loop_due"),
        "queue_items": {
            "fed": soak.fed,
            "consumed": soak.consumed,
            "out_of_order": soak.out_of_order,
        },
        "control_loop_ticks": sum(t for t, _ in soak.loop_ticks.values()),
        "control_loop_skipped": sum(s for _, s in soak.loop_ticks.values()),
        "rss_mb": {
            "first": first.get("rss_mb"),
            "last": last.get("rss_mb"),
            "growth_pct": growth("rss_mb"),
        },
        "fds": {
            "first": first.get("fds"),
            "last": last.get("fds"),
            "growth_pct": growth("fds"),
            "before_block": figures["fds_before_block"],
            "after_block": figures["fds_after_block"],
            "before_run": figures["fds_before_run"],
            "after_run": figures["fds_after_run"],
            "added_during_run": fd_growth,
            "added_by_block": figures["fds_added_by_block"],
        },
        "threads": {"first": first.get("threads"), "last": last.get("threads")},
        "baseline_s": first.get("t"),
        "samples": samples,
        "processes_left": len(figures["left"]),
        "left": figures["left"],
        "supervisor_failure": figures["failure"],
        "logged": figures["logged"],
        "details": soak.details,
    }
    problems = []
    if total.lost:
        problems.append(f"{total.lost} calls lost")
    if total.unexpected:
        problems.append(f"{total.unexpected} calls raised an unexpected error")
    if report["not_recovered"]:
        problems.append(f"{report['not_recovered']} kills not recovered from")
    if figures["left"]:
        problems.append(f"{len(figures['left'])} processes left")
    if fds_grew:
        problems.append("fds grew")
    if figures["failure"]:
        problems.append(figures["failure"])
    if soak.out_of_order or soak.consumed != soak.fed:
        problems.append("the queue lost or reordered items")
    if report["restarts"] != report["kills"]:
        problems.append(f"{report['restarts']} restarts for {report['kills']} kills")
    report["problems"] = problems
    return report


def show(report: dict[str, Any], options: argparse.Namespace) -> None:
    calls = report["calls"]
    print(
        f"\nSoak: {fmt(report['duration_s'])} s on {options.loop}, a child SIGKILLed every "
        f"{options.kill_every:g} s (--seed {options.seed}), every call within {DEADLINE:g} s\n"
    )
    rows = [
        [
            kind,
            f"{t['calls']:,}",
            f"{t['ok']:,}",
            f"{t['crashed']:,}",
            f"{t['lost']:,}",
            f"{t['unexpected']:,}",
        ]
        for kind, t in report["by_kind"].items()
    ]
    rows.append(
        [
            "total",
            f"{calls['calls']:,}",
            f"{calls['ok']:,}",
            f"{calls['crashed']:,}",
            f"{calls['lost']:,}",
            f"{calls['unexpected']:,}",
        ]
    )
    table(["calls", "made", "ok", "failed by crash", "LOST", "unexpected"], rows)
    kills = ", ".join(f"{n} {k}" for n, k in report["kills_by_child"].items())
    restarts = ", ".join(f"{n} {r}" for n, r in report["restarts_by_child"].items())
    rss, fds, queue = report["rss_mb"], report["fds"], report["queue_items"]
    print(f"\nkills: {report['kills']} ({kills})")
    print(f"restarts: {report['restarts']} ({restarts})", end="")
    if report["supervisor_restarts"] is not None:
        print(
            f"; the supervisor counted {report['supervisor_restarts']} "
            f"(with {report['supervisor_restart_options']})",
            end="",
        )
    print()
    print(
        f"recovery after a kill: p50 {fmt(report['recovery_p50_ms'])} ms, "
        f"p99 {fmt(report['recovery_p99_ms'])} ms, max {fmt(report['recovery_max_ms'])} ms; "
        f"not recovered: {report['not_recovered']}"
    )
    for kind, times in report["recovery_by_kind_ms"].items():
        count, p50, worst = times["count"], times["p50"], times["max"]
        print(f"  {kind}: {count} kills, p50 {p50:.1f} ms, max {worst:.1f} ms")
    print(f"pool items mapped: {report['pool_items_mapped']:,}  ({report['pool_statistics']})")
    print(
        f"interval ticks: {fmt(report['interval_ticks'], ',')} and "
        f"{fmt(report['interval_skipped'], ',')} skipped of "
        f"{fmt(report['interval_due'], ',.0f')} due at {1 / INTERVAL:g} Hz"
    )
    print(
        f"queue items: {queue['fed']:,} fed, {queue['consumed']:,} consumed, "
        f"{queue['out_of_order']} out of order"
    )
    print(
        f"control-loop ticks: {report['control_loop_ticks']:,} and "
        f"{report['control_loop_skipped']:,} skipped of {fmt(report['control_loop_due'], ',.0f')} "
        f"due at {LOOP_HZ:,} Hz (its restarts included)"
    )
    print(
        f"host RSS: {fmt(rss['first'])} MB at the baseline (t = {fmt(report['baseline_s'])} s: "
        f"after the warm-up and a kill of each child), {fmt(rss['last'])} MB last "
        f"({fmt(rss['growth_pct'], '+.1f')}%)"
    )
    print(
        f"host fds: {fds['first']} at the baseline, {fds['last']} last "
        f"({fmt(fds['growth_pct'], '+.1f')}%); {fds['before_block']} before the supervisor "
        f"block, {fds['after_block']} after; {fds['before_run']} before corral.run, "
        f"{fds['after_run']} after"
    )
    if fds["added_during_run"] or fds["added_by_block"]:
        print(f"  fds added since the baseline: {fds['added_during_run']}")
        print(f"  fds added by the block: {fds['added_by_block']}")
    print(
        f"threads: {report['threads']['first']} at the baseline, {report['threads']['last']} last"
    )
    print(f"processes left after the supervisor block: {report['processes_left']}")
    for line in report["left"]:
        print(f"  {line}")
    if report["logged"]:
        print("\nlogged (warnings and errors, by message):")
        for message, count in report["logged"].items():
            print(f"  {count:>6,}  {message[:100]}")
    if report["supervisor_failure"]:
        print(f"\n{report['supervisor_failure']}")
    if report["details"]:
        print("\nwhat went wrong (first ones):")
        for line in report["details"]:
            print(f"  {line}")
    verdict = "; ".join(report["problems"]) or "none"
    print(f"\nproblems: {verdict}  {'FAIL' if report['problems'] else 'PASS'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--quick", action="store_true", help="20 s")
    parser.add_argument("--kill-every", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--seed", type=int, help="of the killer's choices (default: random)")
    options = parser.parse_args()
    duration = 20.0 if options.quick else options.duration
    if options.seed is None:
        options.seed = random.randrange(1_000_000)
    uvloop = options.loop == "uvloop"
    corral.run(anyio.lowlevel.checkpoint, use_uvloop=uvloop)  # its once-per-process fds
    fds_before = psutil.Process().num_fds()
    soak, figures = corral.run(
        soak_run, duration, options.kill_every, options.seed, use_uvloop=uvloop
    )
    figures["fds_before_run"] = fds_before
    figures["fds_after_run"] = psutil.Process().num_fds()  # (the event loop closed)
    report = summarize(figures, soak, duration)
    report |= {"kill_every_s": options.kill_every, "seed": options.seed, "loop": options.loop}
    show(report, options)
    if options.json:
        with open(options.json, "w") as f:
            json.dump(report, f, indent=2)
    sys.exit(1 if report["problems"] else 0)


if __name__ == "__main__":
    main()
