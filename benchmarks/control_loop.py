"""A 1 kHz control loop on a busy machine: corral.ControlLoop against the loops people write.

Each variant runs a trivial ``step()`` 1,000 times a second for ``--duration``
seconds (60; 10 with ``--quick``) in a child process pinned to one core
(``--cpu``, the last one), one variant after the other, all in the same
invocation and under the same load, which runs throughout:

- the host (this process) drives 64 concurrent callers of ``await
  echo.echo(small)`` against a corral child pinned to another core;
- two processes burn CPU (``while True: pass``), not pinned.

The variants:

- **corral**: ``sup.control_loop(Controller(), hz=1000, cpu=CPU)`` with its
  defaults: SCHED_FIFO priority 50, mlockall, gc frozen, /dev/cpu_dma_latency
  held, sleep then a 150 µs spin to each absolute deadline;
- **(a) avena-style**: ``step(); time.sleep(period - elapsed)`` after each
  step. Its lateness is measured against the wake it intended (previous start
  + period); its real flaw is **drift**: the k-th step runs later and later
  behind ``t0 + k * period``, reported separately, and the ticks it never ran
  in the time given are its skipped ticks;
- **(b) absolute deadlines**: ``time.sleep(t0 + k * period - now)``, skipping
  a tick whose deadline passed by a whole period or more (as corral does);
- **corral, priority=0**: corral under SCHED_OTHER, as it runs where
  SCHED_FIFO is not permitted (best effort: a 1 ns timer slack and a 100 µs
  time slice; memory locked and DMA latency held as root), for the target
  without SCHED_FIFO.

(a) and (b) run in their own child with corral's recipe applied by hand:
pinned to the same core, SCHED_FIFO at the same priority, mlockall, the same
DMA latency hold (``--peers-sched-other`` also runs them without it). Their
loops allocate no containers, so the garbage collector, which corral
freezes, never runs in them either.

Lateness is how long after a tick's due time its step started, on
``time.perf_counter_ns`` (corral's figures are its own ``rt.statistics()``);
CPU % is the loop process's CPU time over wall time (100% = one core).

The machine may be shared: processes that are not this benchmark's are
watched, and a variant during which they used over 5% of a core, or one of
them ran under SCHED_FIFO/RR (another real-time loop), is measured again
once they are quiet (``--retries``, 1), and flagged if it still was.

    python benchmarks/control_loop.py                # 60 s per variant (~4.5 min if quiet)
    python benchmarks/control_loop.py --quick        # 10 s per variant (~1 min if quiet)
    python benchmarks/control_loop.py --json cl.json --no-plot

The plot (log-log histogram of lateness, docs/img/control_loop_lateness.png
by default) needs matplotlib: when it is missing it is installed into the
running interpreter's environment with pip first (``--no-plot`` to skip).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import importlib.metadata
import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psutil

import _peers
import corral
from _stats import percentile

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PLOT = ROOT / "docs" / "img" / "control_loop_lateness.png"
SMALL = bytes(range(32))  # the RPC load's argument
PRIORITY = 50  # corral's default SCHED_FIFO priority, given to the peers too
_MCL_CURRENT_FUTURE = 3
PEER_TIMEOUT = 120.0  # seconds past --duration after which a peer has hung
FOREIGN_PCT = 5.0  # % of a core used by other processes above which a variant is flagged
BUSY_PCT = 10.0  # machine-wide CPU % (of all cores) above which we wait before starting

#: variant -> its label in the table
LABELS: dict[str, str] = {
    "corral": "corral ControlLoop",
    "avena": "(a) sleep(period - elapsed)",
    "absolute": "(b) sleep to t0 + k*period",
    "corral_other": "corral, priority=0",
    "avena_other": "(a), SCHED_OTHER",
    "absolute_other": "(b), SCHED_OTHER",
}
#: the variants drawn in the plot (the main three, and corral without SCHED_FIFO dashed)
PLOTTED = ("corral", "avena", "absolute", "corral_other")

#: (name, figure, variant, bound): the issue's targets
TARGETS: list[tuple[str, str, str, float]] = [
    ("lateness p50 <= 5 us", "p50_us", "corral", 5.0),
    ("lateness p99 <= 50 us", "p99_us", "corral", 50.0),
    ("lateness p99.9 <= 250 us", "p999_us", "corral", 250.0),
    ("skipped <= 1 per 1,000 ticks", "skipped_per_1000", "corral", 1.0),
    ("loop CPU <= 25% of a core", "cpu_percent", "corral", 25.0),
    ("without SCHED_FIFO: lateness p99 <= 250 us", "p99_us", "corral_other", 250.0),
]


# -- what the children run ----------------------------------------------------------


class Controller(corral.ControlLoop):
    """corral's variant: the step of the issue's example."""

    inputs = {"setpoint": 1.0}  # noqa: RUF012
    outputs = {"command": 0.0}  # noqa: RUF012

    def step(self) -> None:
        self.outputs["command"] = self.inputs["setpoint"] * 0.5


class Echo:
    """The RPC load's target."""

    def echo(self, value: bytes) -> bytes:
        return value


def peer_recipe(cpu: int, fifo: bool) -> dict[str, Any]:
    """corral's real-time recipe, by hand: pin, SCHED_FIFO, mlockall, DMA latency 0."""
    os.sched_setaffinity(0, {cpu})
    facts: dict[str, Any] = {"policy": "SCHED_OTHER", "memory_locked": False, "dma_fd": -1}
    if not fifo:
        return facts
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(PRIORITY))
        facts["policy"] = "SCHED_FIFO"
    except OSError as error:
        print(f"peer: SCHED_FIFO not permitted ({error.strerror})", file=sys.stderr)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlockall(_MCL_CURRENT_FUTURE) == 0:
        facts["memory_locked"] = True
    else:
        print(f"peer: mlockall failed ({os.strerror(ctypes.get_errno())})", file=sys.stderr)
    with contextlib.suppress(OSError):
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY | os.O_CLOEXEC)
        os.write(fd, struct.pack("i", 0))
        facts["dma_fd"] = fd  # held open until the process exits
    return facts


def run_avena(period: int, duration: int, lateness: array[int]) -> dict[str, Any]:
    """(a): step, then ``sleep(period - elapsed)``: each wake is planned from the last."""
    clock, sleep = time.perf_counter_ns, time.sleep
    inputs, outputs = {"setpoint": 1.0}, {"command": 0.0}
    capacity = len(lateness)
    cpu0 = time.process_time_ns()
    t0 = intended = last = clock()
    n = 0
    while n < capacity:
        wake = clock()
        if wake - t0 >= duration:
            break
        lateness[n] = wake - intended
        n += 1
        last = wake
        outputs["command"] = inputs["setpoint"] * 0.5  # the step
        elapsed = clock() - wake
        if elapsed < period:
            sleep((period - elapsed) / 1e9)
        intended = wake + period
    wall = clock() - t0
    cpu = time.process_time_ns() - cpu0
    due = duration // period  # ticks due at t0 + k * period within the run
    return {
        "ticks": n,
        "due": due,
        "skipped": max(0, due - n),
        "drift_ns": last - (t0 + (n - 1) * period),
        "cpu_percent": 100 * cpu / wall,
        "wall_s": wall / 1e9,
    }


def run_absolute(period: int, duration: int, lateness: array[int]) -> dict[str, Any]:
    """(b): sleep to ``t0 + k * period``; a tick a whole period late or more is skipped."""
    clock, sleep = time.perf_counter_ns, time.sleep
    inputs, outputs = {"setpoint": 1.0}, {"command": 0.0}
    capacity = len(lateness)
    cpu0 = time.process_time_ns()
    start = clock()
    t0 = start + period
    end_at = t0 + duration
    k = n = skipped = 0
    while n < capacity:
        deadline = t0 + k * period
        if deadline >= end_at:
            break
        now = clock()
        if now < deadline:
            sleep((deadline - now) / 1e9)
        wake = clock()
        late = wake - deadline
        if late >= period:  # the latest due tick runs; the ones before it are skipped
            missed = late // period
            skipped += missed
            k += missed
            late -= missed * period
        lateness[n] = late
        n += 1
        outputs["command"] = inputs["setpoint"] * 0.5  # the step
        k += 1
    wall = clock() - start
    cpu = time.process_time_ns() - cpu0
    return {
        "ticks": n,
        "due": k,
        "skipped": skipped,
        "cpu_percent": 100 * cpu / wall,
        "wall_s": wall / 1e9,
    }


def peer_main(style: str, params: dict[str, Any], out: str) -> None:
    """A peer's child: the recipe, then its loop; the figures and samples to ``out``."""
    period = round(1e9 / params["hz"])
    duration = round(params["duration"] * 1e9)
    lateness = array("q", bytes(8 * (duration // period + 16)))  # touched before mlockall
    facts = peer_recipe(params["cpu"], params["fifo"])
    run = run_avena if style == "avena" else run_absolute
    result = run(period, duration, lateness)
    result.update(policy=facts["policy"], memory_locked=facts["memory_locked"])
    result["dma_latency"] = facts["dma_fd"] >= 0
    result["lateness_ns"] = lateness[: result["ticks"]].tolist()
    with open(out, "w") as f:
        json.dump(result, f)


# -- the host -----------------------------------------------------------------------


class Load:
    """``callers`` tasks calling ``echo.echo(SMALL)`` back to back; counts the calls."""

    def __init__(self, echo: Any, callers: int) -> None:
        self.echo = echo
        self.callers = callers
        self.calls = 0

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(self.callers):
                tg.start_soon(self._caller)

    async def _caller(self) -> None:
        echo = self.echo.echo
        while True:
            await echo(SMALL)
            self.calls += 1


def figures(lateness_ns: list[int]) -> dict[str, float]:
    """p50/p99/p99.9/max/mean lateness in µs, interpolated as corral's statistics are."""
    us = [v / 1000 for v in lateness_ns]
    return {
        "p50_us": percentile(us, 50),
        "p99_us": percentile(us, 99),
        "p999_us": percentile(us, 99.9),
        "max_us": max(us),
        "mean_us": sum(us) / len(us),
    }


async def corral_variant(
    sup: corral.Supervisor, p: dict[str, Any], priority: int
) -> dict[str, Any]:
    """corral's loop for ``p["duration"]`` s; its statistics and the raw lateness."""
    ticks = round(p["duration"] * p["hz"])
    started = time.perf_counter()
    rt = await sup.control_loop(
        Controller(),
        hz=p["hz"],
        cpu=p["cpu"],
        priority=priority,  # 0: SCHED_OTHER, best effort
        history=ticks + ticks // 4 + 1000,  # the percentiles cover the whole run
        name=None,  # the supervisor numbers them: names stay taken after a close
    )
    start_s = time.perf_counter() - started
    try:
        await anyio.sleep(p["duration"])
        stats = await rt.statistics()
        # The raw (deadline, wake, end) ring, for the histogram only: not public API.
        ring: list[int] = rt._host.region.ring()
    finally:
        closing = time.perf_counter()
        await rt.aclose()
        close_s = time.perf_counter() - closing
    deadlines = ring[0::3]
    lateness_ns = [w - d for d, w in zip(deadlines, ring[1::3], strict=True)]
    total = stats.ticks + stats.skipped
    result: dict[str, Any] = {
        "policy": stats.policy,
        "memory_locked": stats.memory_locked,
        "gc_frozen": stats.gc_frozen,
        "dma_latency": stats.dma_latency,
        "pinned": stats.pinned,
        "ticks": stats.ticks,
        "due": total,
        "skipped": stats.skipped,
        "skipped_per_1000": 1000 * stats.skipped / total if total else math.nan,
        "overruns": stats.overruns,
        "starved": stats.starved,
        "window": stats.window,
        "p50_us": stats.lateness.p50 * 1e6,
        "p99_us": stats.lateness.p99 * 1e6,
        "p999_us": stats.lateness.p999 * 1e6,
        "max_us": stats.lateness.max * 1e6,
        "mean_us": stats.lateness.mean * 1e6,
        "step_p50_us": stats.step.p50 * 1e6,
        "step_max_us": stats.step.max * 1e6,
        "period_error_p99_us": stats.period_error.p99 * 1e6,
        "cpu_percent": stats.cpu_percent,
        "start_s": start_s,
        "close_s": close_s,
        "worst": worst(lateness_ns, [(d - deadlines[0]) / 1e9 for d in deadlines]),
        "lateness_ns": lateness_ns,
    }
    return result


def worst(lateness_ns: list[int], at_s: list[float], count: int = 5) -> list[list[float]]:
    """The ``count`` latest ticks: [seconds into the run, lateness µs], latest first."""
    order = sorted(range(len(lateness_ns)), key=lateness_ns.__getitem__, reverse=True)
    return [[round(at_s[i], 4), lateness_ns[i] / 1000] for i in order[:count]]


async def peer_variant(style: str, p: dict[str, Any], fifo: bool) -> dict[str, Any]:
    """A peer's loop in its own child (this file with ``--peer``); its figures."""
    with tempfile.TemporaryDirectory(prefix="corral-cl-") as tmp:
        out = Path(tmp) / "peer.json"
        params = {"hz": p["hz"], "duration": p["duration"], "cpu": p["cpu"], "fifo": fifo}
        cmd = [sys.executable, __file__, "--peer", style, "--params", json.dumps(params)]
        with anyio.fail_after(p["duration"] + PEER_TIMEOUT):
            done = await anyio.run_process([*cmd, "--out", str(out)], check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"peer {style} exited with {done.returncode}: {done.stderr.decode()[-2000:]}"
            )
        if done.stderr:
            print(done.stderr.decode().rstrip(), file=sys.stderr)
        result: dict[str, Any] = json.loads(out.read_text())
    result.update(figures(result["lateness_ns"]))
    period_s = 1 / p["hz"]  # (b)'s skipped ticks shift this a little; (a) drifts from it
    at_s = [i * period_s for i in range(len(result["lateness_ns"]))]
    result["worst"] = worst(result["lateness_ns"], at_s)
    result["skipped_per_1000"] = 1000 * result["skipped"] / result["due"]
    return result


def plan(args: argparse.Namespace) -> list[str]:
    if args.variants:
        return [v for v in args.variants.split(",") if v in LABELS]
    variants = ["corral", "avena", "absolute", "corral_other"]
    if args.peers_sched_other:
        variants += ["avena_other", "absolute_other"]
    return variants


class Neighbours:
    """Other work on this (shared) machine: processes that are not this benchmark's.

    Their CPU use is the machine's (user + system time of all cores) less
    ours (this process, its descendants and the children they reaped), read
    at the start and end of each variant; every half second, any process not
    ours under SCHED_FIFO or SCHED_RR is noted (another real-time loop on
    the same core delays ours by whole steps).
    """

    def __init__(self) -> None:
        self.realtime: set[str] = set()

    @staticmethod
    def snapshot() -> tuple[float, set[str]]:
        """CPU seconds used so far by processes not ours; the real-time ones among them."""
        procs = list(psutil.process_iter(["ppid", "name", "cpu_times"]))
        parent = {proc.pid: proc.info["ppid"] for proc in procs}
        me = os.getpid()

        def ours(pid: int) -> bool:  # descended from this process, by this one listing
            for _ in range(64):  # (a listing taken while pids are reused may have a cycle)
                if pid == me or pid not in parent:
                    break
                pid = parent[pid]
            return pid == me

        machine = psutil.cpu_times()
        used = machine.user + machine.nice + machine.system
        realtime: set[str] = set()
        for proc in procs:
            info = proc.info
            if ours(proc.pid):
                if (t := info["cpu_times"]) is not None:
                    used -= t.user + t.system + t.children_user + t.children_system
                continue
            if proc.pid in (0, 2) or info["ppid"] == 2:  # the kernel's threads
                continue
            with contextlib.suppress(OSError):
                if os.sched_getscheduler(proc.pid) in (os.SCHED_FIFO, os.SCHED_RR):
                    cpus = ",".join(map(str, sorted(os.sched_getaffinity(proc.pid))))
                    realtime.add(f"{info['name']}[{proc.pid}] on cpu {cpus}")
        return used, realtime

    async def quiet(self, max_wait: float) -> None:
        """Wait (up to ``max_wait`` s) for 3 s in a row without foreign real-time processes
        or more than FOREIGN_PCT % of a core of foreign CPU use."""
        deadline = time.monotonic() + max_wait
        calm_since = time.monotonic()
        before, _ = await anyio.to_thread.run_sync(self.snapshot)
        while time.monotonic() < deadline and time.monotonic() - calm_since < 3.0:
            await anyio.sleep(0.5)
            now, realtime = await anyio.to_thread.run_sync(self.snapshot)
            if realtime or 100 * (now - before) / 0.5 > FOREIGN_PCT:
                calm_since = time.monotonic()
            before = now

    async def watch(self) -> None:
        while True:
            _, realtime = await anyio.to_thread.run_sync(self.snapshot)
            self.realtime |= realtime
            await anyio.sleep(0.5)


async def measure_all(p: dict[str, Any], variants: list[str]) -> dict[str, dict[str, Any]]:
    """Start the RPC load, run every variant one after the other, stop the load.

    A variant disturbed by other work on the machine (see :class:`Neighbours`)
    is run again, up to ``p["retries"]`` times, once the others are quiet.
    """
    results: dict[str, dict[str, Any]] = {}
    async with corral.Supervisor() as sup:
        echo = await sup.spawn(Echo, cpu=p["load_cpu"], name="echo-load")
        load = Load(echo, p["callers"])
        neighbours = Neighbours()
        async with anyio.create_task_group() as tg:
            tg.start_soon(load.run)
            tg.start_soon(neighbours.watch)
            await anyio.sleep(p["warmup"])  # the load is at full speed
            for variant in variants:
                for attempt in range(p["retries"] + 1):
                    result = await measure_one(sup, p, variant, load, neighbours)
                    result["attempt"] = attempt + 1
                    results[variant] = result
                    if not disturbed(result) or attempt == p["retries"]:
                        break
                    print(
                        f"  ... disturbed by other work on the machine ({describe(result)}): "
                        "waiting for it to stop, then measuring again",
                        flush=True,
                    )
                    await neighbours.quiet(p["quiet_wait"])
            tg.cancel_scope.cancel()
    return results


async def measure_one(
    sup: corral.Supervisor, p: dict[str, Any], variant: str, load: Load, neighbours: Neighbours
) -> dict[str, Any]:
    """One variant under the load, with what else the machine was doing meanwhile."""
    print(f"  measuring {LABELS[variant]} for {p['duration']:g} s ...", flush=True)
    calls, started = load.calls, time.perf_counter()
    psutil.cpu_percent(percpu=True)
    times = psutil.cpu_times(percpu=True)
    irqs = interrupts(p["cpu"])
    foreign, _ = await anyio.to_thread.run_sync(neighbours.snapshot)
    neighbours.realtime.clear()
    if variant.startswith("corral"):
        result = await corral_variant(sup, p, priority=PRIORITY if variant == "corral" else 0)
    else:
        style, _, other = variant.partition("_")
        result = await peer_variant(style, p, fifo=not other)
    busy = psutil.cpu_percent(percpu=True)
    elapsed = time.perf_counter() - started
    result["irq_per_s"] = {
        name: round((count - irqs.get(name, 0)) / elapsed)
        for name, count in interrupts(p["cpu"]).items()
        if count - irqs.get(name, 0) >= elapsed  # at least one a second
    }
    now, _ = await anyio.to_thread.run_sync(neighbours.snapshot)
    result["foreign_cpu_percent"] = max(0.0, 100 * (now - foreign) / elapsed)
    result["foreign_realtime"] = sorted(neighbours.realtime)
    result["load_calls_per_s"] = (load.calls - calls) / elapsed
    result["cores_busy_percent"] = busy
    result["steal_ms"] = [
        round(1000 * (after.steal - before.steal))
        for before, after in zip(times, psutil.cpu_times(percpu=True), strict=True)
    ]
    return result


def interrupts(cpu: int) -> dict[str, int]:
    """Interrupts taken by ``cpu`` so far, by /proc/interrupts line (LOC: local timer,
    RES: rescheduling IPI, CAL: function-call IPI, ...)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/interrupts") as f:
        columns = f.readline().split()
        column = columns.index(f"CPU{cpu}") + 1
        for line in f:
            fields = line.split()
            if len(fields) > column and fields[column].isdigit():
                name = fields[0].rstrip(":")
                label = fields[-1] if not name.isalpha() else name  # a device's name
                counts[label] = counts.get(label, 0) + int(fields[column])
    return counts


def disturbed(result: dict[str, Any]) -> bool:
    return bool(result["foreign_realtime"]) or result["foreign_cpu_percent"] > FOREIGN_PCT


def describe(result: dict[str, Any]) -> str:
    """What else the machine ran during a variant, in a few words."""
    realtime = result["foreign_realtime"]
    shown = ", ".join(realtime[:3]) + (
        f" and {len(realtime) - 3} more" if len(realtime) > 3 else ""
    )
    return f"{result['foreign_cpu_percent']:.0f}% of a core" + (
        f", real-time: {shown}" if realtime else ""
    )


@contextlib.contextmanager
def burners(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """``count`` processes running ``while True: pass``; killed on the way out, always."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL
                )
            )
        yield procs
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        for proc in procs:
            proc.wait()


def settle(max_wait: float) -> float:
    """Wait up to ``max_wait`` s for the machine to be under BUSY_PCT busy; the last figure."""
    deadline = time.monotonic() + max_wait
    busy = psutil.cpu_percent(interval=0.5)
    while busy > BUSY_PCT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=0.5)
    return busy


def plot(results: dict[str, dict[str, Any]], path: Path, p: dict[str, Any]) -> None:
    """A log-log histogram of each variant's lateness (µs), with the targets marked."""
    plt: Any = importlib.import_module("matplotlib.pyplot")
    floor = 0.03  # µs: lateness below 30 ns is drawn in the first bin
    drawn = {v: results[v] for v in PLOTTED if v in results and results[v].get("lateness_ns")}
    top = max(max(r["lateness_ns"]) / 1000 for r in drawn.values())
    low, high = math.log10(floor), math.log10(max(top, 1.0) * 1.5)
    edges = [10 ** (low + (high - low) * i / 120) for i in range(121)]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    styles = {
        "corral": ("C0", "-"),
        "avena": ("C3", "-"),
        "absolute": ("C1", "-"),
        "corral_other": ("C0", "--"),
    }
    for variant, result in drawn.items():
        color, line = styles[variant]
        values = [max(v / 1000, floor) for v in result["lateness_ns"]]
        label = (
            f"{LABELS[variant]} ({result['policy']}): p99 {result['p99_us']:.1f} µs, "
            f"max {result['max_us']:.0f} µs"
        )
        if variant == "avena":
            label += " (vs its intended wake)"
        ax.hist(values, bins=edges, histtype="step", color=color, linestyle=line, label=label)
    for bound in (5, 50, 250):
        ax.axvline(bound, color="grey", linestyle=":", linewidth=0.8)
        ax.text(bound, 0.98, f" {bound} µs", transform=ax.get_xaxis_transform(), color="grey")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("lateness: step start after its due time (µs)")
    ax.set_ylabel("ticks")
    ax.set_title(
        f"{p['hz']:g} Hz loop on cpu {p['cpu']}, {p['duration']:g} s each, with "
        f"{p['callers']} RPC callers and {p['burners']} CPU burners running"
    )
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- the report ---------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """The run's facts (see _peers.machine), with the kernel's real-time settings."""
    return {
        **_peers.machine(),
        "sched_rt_runtime_us": _read("/proc/sys/kernel/sched_rt_runtime_us"),
        "cpuidle_driver": _read("/sys/devices/system/cpu/cpuidle/current_driver"),
    }


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return "?"


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None or math.isnan(value) else format(value, spec)


def report(results: dict[str, dict[str, Any]], p: dict[str, Any]) -> list[dict[str, Any]]:
    print(
        f"\n== Lateness of a {p['hz']:g} Hz loop on cpu {p['cpu']}, {p['duration']:g} s per "
        f"variant, under load ({p['callers']} RPC callers, {p['burners']} CPU burners)\n"
    )
    ours = results.get("corral", {})
    header = ["variant", "policy", "ticks", "p50 us", "p99 us", "p99.9 us", "max us"]
    header += ["skip/1000", "CPU %", "p99 vs corral"]
    rows = []
    for variant, r in results.items():
        ratio = r["p99_us"] / ours["p99_us"] if ours.get("p99_us") else math.nan
        rows.append(
            [
                LABELS[variant],
                r["policy"],
                f"{r['ticks']:,}",
                fmt(r["p50_us"], ".2f"),
                fmt(r["p99_us"]),
                fmt(r["p999_us"]),
                fmt(r["max_us"]),
                fmt(r["skipped_per_1000"], ".2f"),
                fmt(r["cpu_percent"]),
                "-" if variant == "corral" else f"{fmt(ratio, '.1f')}x",
            ]
        )
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, ["-" * w for w in widths], *rows]:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
    print()
    for variant, r in results.items():
        cores = ", ".join(
            f"cpu{i} {busy:.0f}% (steal {steal:.0f} ms)"
            for i, (busy, steal) in enumerate(
                zip(r["cores_busy_percent"], r["steal_ms"], strict=True)
            )
        )
        extra = ""
        if variant.startswith("corral"):
            extra = (
                f"; started in {r['start_s']:.2f} s, closed in {r['close_s']:.2f} s"
                f"; {r['skipped']} skipped, {r['overruns']} overruns, {r['starved']} starved; "
                f"step p50 {r['step_p50_us']:.1f} us, max {r['step_max_us']:.0f} us"
                f"; memory locked {r['memory_locked']}, gc frozen {r['gc_frozen']}"
            )
        elif variant.startswith("avena"):
            extra = (
                f"; drift: its last step ran {r['drift_ns'] / 1e6:.1f} ms after t0 + k*period "
                f"({r['skipped']:,} of {r['due']:,} ticks never run)"
            )
        else:
            extra = f"; {r['skipped']} skipped of {r['due']:,}"
        latest = ", ".join(f"{late:.0f} us at {at:.3f} s" for at, late in r["worst"][:3])
        irqs = ", ".join(f"{name} {rate:,}" for name, rate in r["irq_per_s"].items())
        print(
            f"  {LABELS[variant]}: load {r['load_calls_per_s']:,.0f} calls/s, {cores}{extra}"
            f"; latest ticks: {latest}; interrupts on cpu {p['cpu']}/s: {irqs}"
            f"; processes not ours: {describe(r)}"
            + (f" (attempt {r['attempt']})" if r["attempt"] > 1 else "")
        )
    spoiled = [LABELS[v] for v, r in results.items() if disturbed(r)]
    if spoiled:
        print(
            f"\nOther work on the machine (over {FOREIGN_PCT:g}% of a core, or a real-time "
            f"process) during: {'; '.join(spoiled)}. Their tails are not this benchmark's "
            "load alone: run again on a quiet machine."
        )
    print("\nTargets (corral, host busy):")
    checks = []
    for name, key, variant, bound in TARGETS:
        value = results.get(variant, {}).get(key)
        verdict = "-" if value is None else ("met" if value <= bound else "MISSED")
        checks.append(
            {
                "target": name,
                "variant": variant,
                "value": value,
                "bound": bound,
                "verdict": verdict,
            }
        )
        print(f"  {name:<44} {fmt(value, '.2f'):>9}  {verdict}")
    return checks


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="10 s per variant")
    parser.add_argument("--duration", type=float, help="seconds per variant (default 60)")
    parser.add_argument("--hz", type=float, default=1000.0)
    parser.add_argument(
        "--cpu", type=int, default=max(os.sched_getaffinity(0)), help="the loop's core"
    )
    parser.add_argument("--callers", type=int, default=64, help="concurrent RPC callers")
    parser.add_argument("--burners", type=int, default=2, help="CPU-burning processes")
    parser.add_argument(
        "--peers-sched-other", action="store_true", help="also run (a) and (b) without SCHED_FIFO"
    )
    parser.add_argument(
        "--variants",
        help=f"comma-separated, in the order to run (default the four; of {', '.join(LABELS)})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a variant again (up to this many times) when other work on the machine "
        "disturbed it (a foreign real-time process, or other processes over 5%% of a core)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument("--plot", metavar="PNG", type=Path, default=DEFAULT_PLOT)
    parser.add_argument("--no-plot", action="store_true", help="write no histogram")
    parser.add_argument("--peer", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.peer:
        peer_main(args.peer, json.loads(args.params), args.out)
        return
    others = sorted(set(os.sched_getaffinity(0)) - {args.cpu})
    p: dict[str, Any] = {
        "hz": args.hz,
        "cpu": args.cpu,
        "load_cpu": others[0] if others else None,
        "duration": args.duration or (10.0 if args.quick else 60.0),
        "warmup": 1.0 if args.quick else 2.0,
        "callers": args.callers,
        "burners": args.burners,
        "retries": args.retries,
        "quiet_wait": 60.0,
    }
    notes: list[str] = []
    if not args.no_plot and (note := _peers.ensure_matplotlib()):
        note += ": no plot"
        notes.append(note)
        print(note, file=sys.stderr)
    facts = machine()
    print(
        f"corral control-loop benchmark, {facts['date']}: {facts['cores']} x {facts['cpu_model']}"
        f", Linux {facts['kernel']}, Python {facts['python']}, corral {facts['corral']}"
        f" ({facts['corral_source']})"
        f"\nloop on cpu {p['cpu']}; the echo child on cpu {p['load_cpu']}; host and burners "
        f"unpinned; load average at start {facts['load_average_at_start']:.2f}",
        flush=True,
    )
    if os.geteuid() != 0:
        print("not root: SCHED_FIFO and mlockall may be refused (see the policy column)")
    variants = plan(args)
    busy = settle(30.0)
    if busy > BUSY_PCT:
        print(f"the machine is {busy:.0f}% busy before starting (other work): figures may suffer")
    started = time.perf_counter()
    with burners(args.burners):
        results = corral.run(measure_all, p, variants)
    checks = report(results, p)
    if not args.no_plot and not notes:
        plot(results, args.plot, p)
        print(f"\nhistogram written to {args.plot}")
    print(f"(total {time.perf_counter() - started:.0f} s)")
    if args.json:
        for r in results.values():
            del r["lateness_ns"]
        with open(args.json, "w") as f:
            json.dump(
                {
                    "machine": facts,
                    "params": p,
                    "results": results,
                    "targets": checks,
                    "notes": notes,
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")


if __name__ == "__main__":
    main()
