"""The live demo behind ``make demo``: a small plant run by one supervisor.

Sensors are polled at 10 Hz; readings go through a priority queue (alarms
first) to two processors; alarms trigger a dashboard refresh (coalesced); a
loop worker flushes batches to an archiver, a ``corral.Process`` in a child
told each batch (one of its runs fails and is retried); a flaky uplink fails
now and then and is handled by ``on_error``; a calibration service runs in a
child process behind a proxy, is killed half-way and restarted; a 1 kHz
control loop holds a simulated room at a setpoint on a core of its own; and
a fleet of interval workers shows what one shared timer does at scale; at
the end a pool of worker processes analyses windows of readings (one of
them kills its worker; the map goes on) with a progress bar. Every second a
status line; at the end, a summary of figures.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import threading
import time
from typing import Any

import anyio
import psutil

from . import (
    EventWorker,
    IntervalWorker,
    QueueWorker,
    Supervisor,
    Timer,
    WorkerCrashed,
    WorkerStatistics,
    catchtime,
    run,
)
from ._demo_loop import Stabilizer, loop_core, loop_line, loop_summary
from ._demo_pool import pool_demo, pool_line
from ._demo_process import Archiver, archive_summary, process_line
from ._run import uvloop_available


class Calibrator:
    """The demo's service: lives in a child process, reached through a proxy."""

    def __init__(self, gain: float) -> None:
        self.gain = gain
        self.corrected = 0

    def correct(self, value: float) -> float:
        self.corrected += 1
        return value * self.gain

    def echo(self, value: Any) -> Any:
        return value


def run_demo(*, duration: float, fleet: int, as_json: bool, control_loop: bool = True) -> int:
    """Run the demo for ``duration`` seconds; print a summary; return the exit status."""
    summary = run(_plant, duration, fleet, not as_json, control_loop)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        _print_summary(summary)
    left = summary["left_running"]
    return 0 if summary["all_stopped"] and left["threads"] == left["processes"] == 0 else 1


async def _plant(  # noqa: PLR0915
    duration: float, fleet: int, live: bool, control_loop: bool
) -> dict[str, Any]:
    rng = random.Random(7)
    threads_before = threading.active_count()
    process = psutil.Process()
    cpu_before = sum(process.cpu_times()[:2])
    counts = {
        "readings": 0,
        "alarms": 0,
        "flushed": 0,
        "uplink_failures": 0,
        "fleet_ticks": 0,
        "calibrated": 0,
        "lost_to_crash": 0,
    }
    rpc = Timer()
    service: dict[str, Any] = {}
    batch: list[float] = []
    shutdown_log: list[str] = []

    async with Supervisor(name="plant", shutdown_timeout=2.0) as sup:

        async def fleet_tick() -> None:
            counts["fleet_ticks"] += 1

        # A fleet spreads its phases over one period: the load per tick stays
        # even, and no first tick falls due while this loop still holds the loop.
        with catchtime() as registering:
            fleet_workers = [
                sup.every(0.1, fleet_tick, name=f"fleet-{i}", delay_before=0.1 * (1 + i / fleet))
                for i in range(fleet)
            ]

        @sup.event_worker(name="refresh_dashboard")
        async def refresh() -> None:
            await anyio.sleep(0.15)  # a slow redraw: alarms meanwhile coalesce into one more

        async def handle(reading: float) -> None:
            counts["readings"] += 1
            batch.append(reading)
            if reading > 0.9:
                counts["alarms"] += 1
                refresh.trigger()

        processors = sup.queue_worker(
            handle, maxsize=1000, concurrency=2, priority=True, name="process_readings"
        )

        @sup.every(0.1, name="poll_sensors")
        async def poll() -> None:
            for _ in range(8):
                value = rng.random()
                await processors.put((0 if value > 0.9 else 5, value))

        @sup.every(1.0, name="heartbeat")
        def heartbeat() -> None:  # sync: runs in one of the supervisor's threads
            time.sleep(0.001)

        archiver = await sup.start(Archiver(), name="archiver")

        @sup.loop_worker(name="flush_batches")
        async def flush() -> None:
            await anyio.sleep(0.25)
            told = batch.copy()  # (readings keep coming while tell() waits)
            batch.clear()
            await archiver.tell(told)  # to the Process in its child
            counts["flushed"] += len(told)

        def uplink_failed(exc: Exception) -> None:
            counts["uplink_failures"] += 1

        @sup.every(0.2, name="uplink", on_error=uplink_failed)
        def uplink() -> None:
            if rng.random() < 0.2:
                raise ConnectionError("uplink dropped a packet")

        with catchtime() as spawning:
            calibrator = await sup.spawn(Calibrator, 1.02, restart="on-failure")
        service["spawn_ms"] = round(spawning.elapsed * 1000, 1)
        service["first_pid"] = calibrator.pid

        @sup.every(0.02, name="calibrate")
        async def calibrate() -> None:
            try:
                with catchtime() as call:
                    await calibrator.correct(rng.random())
            except WorkerCrashed:  # in flight when the child died: the next call goes on
                counts["lost_to_crash"] += 1
                return
            rpc.record(call.elapsed)
            counts["calibrated"] += 1

        stabilizer = None
        if control_loop:
            stabilizer = await sup.control_loop(
                Stabilizer(), hz=1000, cpu=loop_core(), name="stabilizer"
            )

            @sup.every(2.0, name="setpoints")
            async def setpoints() -> None:
                assert stabilizer is not None
                await stabilizer.set("setpoint", rng.choice((19.0, 21.0, 23.0)))

        sup.on_shutdown.register(lambda: shutdown_log.append("on_shutdown hook ran"))
        started = time.monotonic()
        for second in range(1, math.ceil(duration) + 1):
            await anyio.sleep(min(1.0, duration - (second - 1)))
            if second == math.ceil(duration / 2) and calibrator.pid is not None:
                os.kill(calibrator.pid, signal.SIGKILL)  # on purpose: watch it come back
                service["killed_at_s"] = second
                while True:  # a call sent before the death was seen fails; then it waits
                    with contextlib.suppress(WorkerCrashed):
                        await calibrator.echo(None)
                        break
            if live:  # (the workers shown, not sup.statistics(): that sorts every window)
                _status(second, counts, processors, refresh, fleet_workers)
                if stabilizer is not None:
                    loop = await stabilizer.statistics()
                    print(
                        f"       control loop: {loop.ticks:>6} ticks, lateness p99 "
                        f"{loop.lateness.p99 * 1e6:5.1f} us, max {loop.lateness.max * 1e6:6.1f} us"
                        f"; room {await stabilizer.get('temperature'):5.2f} C (setpoint "
                        f"{await stabilizer.get('setpoint'):.0f} C)",
                        flush=True,
                    )
        pool_figures = await pool_demo(sup, live)
        service["burst"] = await _burst(calibrator)
        flush.stop()  # the archiver's feed first, then the archiver
        await flush.wait_stopped()
        archived = await archive_summary(archiver)
        loop_figures = None
        if stabilizer is not None:
            temperature = await stabilizer.get("temperature")
            loop_figures = loop_summary(await stabilizer.statistics(), temperature)
        child = calibrator.statistics()
        service.update(
            last_pid=child.pid,
            restarts=child.restarts,
            calls=child.calls,
            errors=child.errors,
            rss_mb=round((child.rss or 0) / 2**20, 1),
            rpc_ms=_ms(rpc),
        )
        elapsed = time.monotonic() - started
    workers = sup.statistics().workers  # after the block: every worker's final state

    fleet_lateness = Timer()
    for worker in fleet_workers:
        for sample in worker.timers.lateness.samples():  # type: ignore[union-attr]
            fleet_lateness.record(sample)
    cpu = sum(process.cpu_times()[:2]) - cpu_before
    return {
        "duration_s": round(elapsed, 2),
        "loop": "uvloop" if uvloop_available() else "asyncio",
        "counts": counts,
        "workers": [_row(w) for w in workers if not w.name.startswith("fleet-")],
        "fleet": {
            "workers": fleet,
            "register_ms": round(registering.elapsed * 1000, 1),
            "ticks": counts["fleet_ticks"],
            "skipped": sum(w.skipped for w in workers if w.name.startswith("fleet-")),
            "lateness_ms": _ms(fleet_lateness),
        },
        "cpu_pct": round(100 * cpu / elapsed, 1),
        "rss_mb": round(process.memory_info().rss / 2**20, 1),
        "service": service,
        "control_loop": loop_figures,
        "process": archived,
        "pool": pool_figures,
        "all_stopped": all(w.state.value == "stopped" for w in workers),
        "shutdown": shutdown_log,
        "left_running": {
            "threads": threading.active_count() - threads_before,
            "processes": len(process.children()),
        },
    }


async def _burst(calibrator: Any, calls: int = 2000) -> dict[str, float]:
    """Back-to-back round trips through the proxy: the latency of one call."""
    timer = Timer(window=calls)
    for _ in range(calls):
        with catchtime() as call:
            await calibrator.echo(b"x" * 32)
        timer.record(call.elapsed)
    return {
        "calls": calls,
        "p50_us": round(timer.percentile(50) * 1e6, 1),
        "p99_us": round(timer.percentile(99) * 1e6, 1),
    }


def _row(w: WorkerStatistics) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": w.name,
        "kind": w.kind,
        "state": w.state.value,
        "runs": w.runs,
        "errors": w.errors,
        "skipped": w.skipped,
        "duration_ms": {
            "mean": round(w.duration.mean * 1000, 3),
            "max": round(w.duration.max * 1000, 3),
        },
    }
    if w.lateness is not None:
        row["lateness_ms"] = {
            "p50": round(w.lateness.p50 * 1000, 3),
            "p99": round(w.lateness.p99 * 1000, 3),
            "max": round(w.lateness.max * 1000, 3),
        }
    return row


def _ms(timer: Timer) -> dict[str, float]:
    return {
        "p50": round(timer.percentile(50) * 1000, 3),
        "p99": round(timer.percentile(99) * 1000, 3),
        "max": round(timer.max * 1000, 3),
    }


def _status(
    second: int,
    counts: dict[str, int],
    queue: QueueWorker,
    refresh: EventWorker,
    fleet_workers: list[IntervalWorker],
) -> None:
    worst = max((w._lateness.max for w in fleet_workers if w._lateness.count), default=0)
    print(
        f"[{second:>3}s] readings {counts['readings']:>6}  queued {queue.qsize():>4}  "
        f"alarms {counts['alarms']:>4} -> redraws {refresh.runs:>4}  "
        f"uplink errors {counts['uplink_failures']:>3}  fleet ticks {counts['fleet_ticks']:>8}  "
        f"worst fleet lateness {worst * 1000:6.2f} ms",
        flush=True,
    )


def _print_summary(s: dict[str, Any]) -> None:
    stopped = "every worker stopped cleanly" if s["all_stopped"] else "SOME WORKERS DID NOT STOP"
    print(f"\ncorral demo: {s['duration_s']} s on {s['loop']}; {stopped}.\n")
    head = f"{'worker':<20} {'kind':<9} {'state':<8} {'runs':>6} {'errors':>6} {'skipped':>7}"
    print(f"{head}  lateness p50/p99/max ms")
    for w in s["workers"]:
        late = w.get("lateness_ms")
        late_text = f"{late['p50']:.2f} / {late['p99']:.2f} / {late['max']:.2f}" if late else "-"
        print(
            f"{w['name']:<20} {w['kind']:<9} {w['state']:<8} {w['runs']:>6} {w['errors']:>6} "
            f"{w['skipped']:>7}  {late_text}"
        )
    f = s["fleet"]
    c = s["counts"]
    print(
        f"\nfleet: {f['workers']:,} interval workers at 10 Hz on one shared timer "
        f"(started in {f['register_ms']} ms): {f['ticks']:,} ticks, {f['skipped']} skipped, "
        f"lateness p50 {f['lateness_ms']['p50']:.2f} ms, p99 {f['lateness_ms']['p99']:.2f} ms, "
        f"max {f['lateness_ms']['max']:.2f} ms"
    )
    redraws = next(w["runs"] for w in s["workers"] if w["name"] == "refresh_dashboard")
    print(
        f"plant: {c['readings']:,} readings processed; {c['alarms']} alarms (served first) "
        f"coalesced into {redraws} redraws; {c['flushed']:,} flushed in batches; "
        f"{c['uplink_failures']} uplink failures handled by on_error"
    )
    v = s["service"]
    print(
        f"service: Calibrator in a child process (ready in {v['spawn_ms']} ms, RSS "
        f"{v['rss_mb']} MB): {v['calls']:,} calls; SIGKILLed at {v.get('killed_at_s')} s "
        f"(pid {v['first_pid']}), restarted as pid {v['last_pid']} "
        f"({v['restarts']} restart, {c['lost_to_crash']} call in flight lost to the crash); "
        f"round trip p50 {v['burst']['p50_us']} us, p99 {v['burst']['p99_us']} us "
        f"over {v['burst']['calls']:,} back-to-back calls"
    )
    if s["control_loop"]:
        print(loop_line(s["control_loop"]))
    print(process_line(s["process"]))
    print(pool_line(s["pool"]))
    print(f"process: CPU {s['cpu_pct']}% of one core, RSS {s['rss_mb']} MB")
    left = s["left_running"]
    print(
        f"shutdown: {'; '.join(s['shutdown'])}; threads left behind: {left['threads']}, "
        f"child processes left behind: {left['processes']}"
    )
