"""The demo's plant: every worker, child and map the supervisor runs, and their counts."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import time
from typing import Any

import anyio
import psutil

from . import (
    ControlLoopProxy,
    IntervalWorker,
    Job,
    LoopWorker,
    Proxy,
    Supervisor,
    Timer,
    Worker,
    WorkerCrashed,
    catchtime,
)
from ._demo_loop import Stabilizer, loop_core
from ._demo_pool import Analysis
from ._demo_process import Archiver
from ._demo_summary import ms
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


class Plant:
    """Starts the plant's workers and children under ``sup``; keeps what the views show."""

    calibrator: Proxy[Calibrator]
    archiver: Job[Archiver]
    flush: LoopWorker
    analysis: Analysis
    analysis_task: anyio.CancelScope

    def __init__(self, sup: Supervisor, fleet: int) -> None:
        self.sup = sup
        self.fleet = fleet
        self.rng = random.Random(7)
        self.counts = {
            "readings": 0,
            "alarms": 0,
            "flushed": 0,
            "batches_told": 0,
            "uplink_failures": 0,
            "fleet_ticks": 0,
            "calibrated": 0,
            "lost_to_crash": 0,
        }
        self.rpc = Timer()  # the calibrate worker's round trips
        self.batch: list[float] = []
        self.events: list[str] = []
        self.shutdown_log: list[str] = []
        self.shown: list[Worker] = []  # the workers with a row of their own
        self.fleet_workers: list[IntervalWorker] = []
        self.kinds: dict[str, str] = {}  # child name -> its kind on the dashboard
        self.stabilizer: ControlLoopProxy[Stabilizer] | None = None
        self.service: dict[str, Any] = {}
        self.register_ms = 0.0
        self.me = psutil.Process()
        self.me.cpu_percent(None)
        self.loop_name = "uvloop" if uvloop_available() else "asyncio"
        self.started = time.monotonic()

    def event(self, text: str) -> None:
        """Note something that happened, with the time since the start."""
        self.events.append(f"{time.monotonic() - self.started:5.1f} s  {text}")
        if len(self.events) > 100:
            del self.events[0]

    async def start(self, control_loop: bool, analyse_for: float) -> None:  # noqa: PLR0915
        """Start everything: workers, the fleet, the archiver, the service, the loop, the pool."""
        sup, rng, counts = self.sup, self.rng, self.counts

        async def fleet_tick() -> None:
            counts["fleet_ticks"] += 1

        # A fleet spreads its phases over one period: the load per tick stays
        # even, and no first tick falls due while this loop still holds the loop.
        with catchtime() as registering:
            self.fleet_workers = [
                sup.every(
                    0.1, fleet_tick, name=f"fleet-{i}", delay_before=0.1 * (1 + i / self.fleet)
                )
                for i in range(self.fleet)
            ]
        self.register_ms = round(registering.elapsed * 1000, 1)

        @sup.event_worker(name="refresh_dashboard")
        async def refresh() -> None:
            await anyio.sleep(0.15)  # a slow redraw: alarms meanwhile coalesce into one more

        async def handle(reading: float) -> None:
            counts["readings"] += 1
            self.batch.append(reading)
            if reading > 0.9:
                counts["alarms"] += 1
                refresh.trigger()

        self.processors = sup.queue_worker(
            handle, maxsize=1000, concurrency=2, priority=True, name="process_readings"
        )

        @sup.every(0.1, name="poll_sensors")
        async def poll() -> None:
            for _ in range(8):
                value = rng.random()
                await self.processors.put((0 if value > 0.9 else 5, value))

        @sup.every(1.0, name="heartbeat")
        def heartbeat() -> None:  # sync: runs in one of the supervisor's threads
            time.sleep(0.001)

        self.archiver = await sup.start(Archiver(), name="archiver")
        self.kinds["archiver"] = "process"

        @sup.loop_worker(name="flush_batches")
        async def flush() -> None:
            await anyio.sleep(0.25)
            told = self.batch.copy()  # (readings keep coming while tell() waits)
            self.batch.clear()
            await self.archiver.tell(told)  # to the Process in its child
            counts["flushed"] += len(told)
            counts["batches_told"] += 1

        def uplink_failed(exc: Exception) -> None:
            counts["uplink_failures"] += 1

        @sup.every(0.2, name="uplink", on_error=uplink_failed)
        def uplink() -> None:
            if rng.random() < 0.2:
                raise ConnectionError("uplink dropped a packet")

        with catchtime() as spawning:
            self.calibrator = await sup.spawn(Calibrator, 1.02, restart="on-failure")
        self.kinds["Calibrator"] = "service"
        self.service.update(
            spawn_ms=round(spawning.elapsed * 1000, 1), first_pid=self.calibrator.pid
        )

        @sup.every(0.02, name="calibrate")
        async def calibrate() -> None:
            try:
                with catchtime() as call:
                    await self.calibrator.correct(rng.random())
            except WorkerCrashed:  # in flight when the child died: the next call goes on
                counts["lost_to_crash"] += 1
                return
            self.rpc.record(call.elapsed)
            counts["calibrated"] += 1

        self.flush = flush
        self.shown = [poll, self.processors, refresh, heartbeat, flush, uplink, calibrate]
        if control_loop:
            self.stabilizer = stabilizer = await sup.control_loop(
                Stabilizer(), hz=1000, cpu=loop_core(), name="stabilizer"
            )
            self.kinds["stabilizer"] = "control"

            @sup.every(2.0, name="setpoints")
            async def setpoints() -> None:
                await stabilizer.set("setpoint", rng.choice((19.0, 21.0, 23.0)))

            self.shown.append(setpoints)

        self.analysis = Analysis(sup.pool(2, name="analysts"), analyse_for, self.event)
        self.analysis_task = await _start_task(sup, self.analysis.run)
        sup.on_shutdown.register(lambda: self.shutdown_log.append("on_shutdown hook ran"))

    async def kill_service(self) -> None:
        """SIGKILL the Calibrator's child on purpose; return once its restart answers."""
        pid = self.calibrator.pid
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        self.service["killed_at_s"] = round(time.monotonic() - self.started, 1)
        self.event(f"SIGKILL to the Calibrator's child (pid {pid}), on purpose")
        with catchtime() as back:
            while True:  # a call sent before the death was seen fails; then it waits
                with contextlib.suppress(WorkerCrashed):
                    await self.calibrator.echo(None)
                    break
        self.event(
            f"Calibrator back as pid {self.calibrator.pid} in {back.elapsed * 1000:.0f} ms "
            '(restart="on-failure"); calls in flight raised WorkerCrashed'
        )

    def worst_fleet_lateness(self) -> float:
        """The fleet's worst lateness so far, in seconds (its workers' maxima: cheap)."""
        return max((w._lateness.max for w in self.fleet_workers if w._lateness.count), default=0)

    def status(self, worst: float) -> str:
        """The plant's counts, in one line (``worst``: the fleet's worst lateness)."""
        c = self.counts
        return (
            f"readings {c['readings']:>6}  queued {self.processors.qsize():>4}  "
            f"alarms {c['alarms']:>4} -> redraws {self.shown[2].runs:>4}  "
            f"uplink errors {c['uplink_failures']:>3}  fleet ticks {c['fleet_ticks']:>8}  "
            f"worst fleet lateness {worst * 1000:6.2f} ms"
        )

    async def service_summary(self) -> dict[str, Any]:
        """The Calibrator's figures, after a burst of back-to-back calls."""
        self.service["burst"] = await _burst(self.calibrator)
        child = self.calibrator.statistics()
        self.service.update(
            last_pid=child.pid,
            restarts=child.restarts,
            calls=child.calls,
            errors=child.errors,
            rss_mb=round((child.rss or 0) / 2**20, 1),
            rpc_ms=ms(self.rpc),
        )
        return self.service


async def _start_task(sup: Supervisor, fn: Any) -> anyio.CancelScope:
    """Run ``fn()`` as a loop worker that runs once; its cancel scope ends it early."""
    scope = anyio.CancelScope()

    async def once() -> bool:
        with scope:
            await fn()
        return False

    sup.loop_worker(once, name="analyse_windows")
    return scope


async def _burst(calibrator: Proxy[Calibrator], calls: int = 2000) -> dict[str, float]:
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
