"""The live demo behind ``make demo``: a small plant run by one supervisor.

Sensors are polled at 10 Hz; readings go through a priority queue (alarms
first) to two processors; alarms trigger a dashboard refresh (coalesced); a
loop worker flushes batches to an archiver, a ``corral.Process`` in a child
told each batch (one of its runs fails and is retried); a flaky uplink fails
now and then and is handled by ``on_error``; a calibration service runs in a
child process behind a proxy, is killed half-way and restarted; a 1 kHz
control loop holds a simulated room at a setpoint on a core of its own; a
fleet of interval workers shows what one shared timer does at scale; and a
pool of worker processes analyses windows of readings as they arrive (one of
them kills its worker; the map goes on). A live dashboard (or a status line
every second without a terminal) shows it all; at the end, a summary.
"""

from __future__ import annotations

import contextlib
import json
import math
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

import anyio
import psutil

from . import Supervisor, Timer, Worker, run
from ._demo_loop import loop_line, loop_summary
from ._demo_plant import Plant
from ._demo_process import archive_summary
from ._demo_summary import ms, print_summary, worker_row
from ._demo_view import Frame, Row, View, make_view
from ._eventloop import LoopHandle
from ._run import STOP_SIGNALS, handling, uvloop_available

__all__ = ["run_demo"]


def run_demo(
    *, duration: float, fleet: int, as_json: bool, control_loop: bool = True, plain: bool = False
) -> int:
    """Run the demo for ``duration`` seconds; print a summary; return the exit status."""
    view = make_view(quiet=as_json, plain=plain)
    summary = run(_demo, duration, fleet, view, control_loop)
    if as_json:
        print(json.dumps(summary, indent=2, allow_nan=False))
    else:
        print_summary(summary)
    left = summary["left_running"]
    return 0 if summary["all_stopped"] and left["threads"] == left["processes"] == 0 else 1


async def _demo(duration: float, fleet: int, view: View, control_loop: bool) -> dict[str, Any]:
    threads_before = threading.active_count()
    me = psutil.Process()
    cpu_before = sum(me.cpu_times()[:2])
    interrupt = _FirstInterrupt()
    with interrupt.installed():
        async with Supervisor(name="plant", shutdown_timeout=2.0) as sup:
            plant = Plant(sup, fleet)
            await plant.start(control_loop, analyse_for=duration * 0.8)
            started = plant.started = time.monotonic()  # (events are timed from here too)
            with view:
                await _timeline(plant, view, duration, interrupt)
            if not interrupt.name:  # the last windows arrived: let their analysis finish
                with anyio.move_on_after(10.0):
                    await _either(plant.analysis.finished, interrupt.event)
            plant.analysis_task.cancel()
            pool_figures = await plant.analysis.summary()
            service = await plant.service_summary()
            plant.flush.stop()  # the archiver's feed first, then the archiver
            await plant.flush.wait_stopped()
            archived = await archive_summary(plant.archiver)
            loop_figures = None
            if plant.stabilizer is not None:
                temperature = await plant.stabilizer.get("temperature")
                loop_figures = loop_summary(await plant.stabilizer.statistics(), temperature)
            elapsed = time.monotonic() - started
    workers = sup.statistics().workers  # after the block: every worker's final state
    fleet_lateness = Timer()
    for worker in plant.fleet_workers:
        for sample in worker.timers.lateness.samples():  # type: ignore[union-attr]
            fleet_lateness.record(sample)
    cpu = sum(me.cpu_times()[:2]) - cpu_before
    return {
        "duration_s": round(elapsed, 2),
        "ended_early": interrupt.name,
        "loop": "uvloop" if uvloop_available() else "asyncio",
        "counts": plant.counts,
        "workers": [worker_row(w) for w in workers if not w.name.startswith("fleet-")],
        "fleet": {
            "workers": fleet,
            "register_ms": plant.register_ms,
            "ticks": plant.counts["fleet_ticks"],
            "skipped": sum(w.skipped for w in workers if w.name.startswith("fleet-")),
            "lateness_ms": ms(fleet_lateness),
        },
        "cpu_pct": round(100 * cpu / elapsed, 1),
        "rss_mb": round(me.memory_info().rss / 2**20, 1),
        "service": service,
        "control_loop": loop_figures,
        "process": archived,
        "pool": pool_figures,
        "events": plant.events,
        "all_stopped": all(w.state.value == "stopped" for w in workers),
        "shutdown": plant.shutdown_log,
        "left_running": {
            "threads": threading.active_count() - threads_before,
            "processes": len(me.children()),
        },
    }


async def _timeline(plant: Plant, view: View, duration: float, interrupt: _FirstInterrupt) -> None:
    """Show frames until ``duration`` has passed (or an interrupt); kill the service half-way."""
    kill_at = duration / 2  # the service's child, on purpose
    while (elapsed := time.monotonic() - plant.started) < duration:
        if elapsed >= kill_at:
            await plant.kill_service()
            kill_at = math.inf
        view.show(await _frame(plant, elapsed, duration))
        next_frame = (elapsed // view.interval + 1) * view.interval
        with anyio.move_on_after(min(next_frame, kill_at, duration) - elapsed):
            await interrupt.event.wait()
        if interrupt.name:
            plant.event(f"{interrupt.name}: ending early, gracefully")
            break
    view.show(await _frame(plant, time.monotonic() - plant.started, duration))


async def _either(*events: anyio.Event) -> None:
    """Return once one of ``events`` is set."""
    async with anyio.create_task_group() as group:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            group.cancel_scope.cancel()

        for event in events:
            group.start_soon(wait, event)


async def _frame(plant: Plant, elapsed: float, duration: float) -> Frame:
    """What the dashboard shows now."""
    rows = [_worker_row(w) for w in plant.shown]
    worst = plant.worst_fleet_lateness()
    rows.append(
        Row(
            f"fleet ({len(plant.fleet_workers):,} workers)",
            "interval",
            "running" if plant.fleet_workers else "-",
            plant.counts["fleet_ticks"],
            0,
            None,
            f"max {worst * 1e3:.3g} ms",
        )
    )
    control = None
    loop_stats = None
    if plant.stabilizer is not None:
        loop_stats = await plant.stabilizer.statistics()
        temperature = await plant.stabilizer.get("temperature")
        setpoint = await plant.stabilizer.get("setpoint")
        control = f"{loop_line(loop_summary(loop_stats, temperature))} (setpoint {setpoint:.0f} C)"
    for child in plant.sup.child_statistics():
        kind = plant.kinds.get(child.name, "pool")
        calls: int | None = child.calls if kind == "service" else None
        latency = "-"
        if kind == "service" and plant.rpc.count:
            latency = _pair(plant.rpc.percentile(50), plant.rpc.percentile(99))
        elif kind == "control" and loop_stats is not None:
            calls = loop_stats.ticks
            latency = _pair(loop_stats.lateness.p50, loop_stats.lateness.p99)
        elif kind == "process":
            calls = plant.counts["batches_told"]
        rows.append(
            Row(
                child.name,
                kind,
                child.state,
                calls,
                child.errors if calls else None,
                child.restarts,
                latency,
                child.cpu_percent,
                child.rss,
            )
        )
    rows.append(
        Row(
            "host (this process)",
            "host",
            "running",
            None,
            None,
            None,
            "-",
            plant.me.cpu_percent(None),
            plant.me.memory_info().rss,
        )
    )
    return Frame(
        elapsed=elapsed,
        duration=duration,
        title=f"corral demo: supervisor 'plant' on {plant.loop_name}",
        rows=rows,
        status=plant.status(worst),
        control=control,
        pool_done=plant.analysis.done,
        pool_total=plant.analysis.total,
        pool_note=plant.analysis.note(),
        events=list(plant.events),
    )


def _worker_row(worker: Worker) -> Row:
    s = worker.statistics()
    timing = s.lateness if s.lateness is not None else s.duration
    return Row(
        s.name, s.kind, s.state.value, s.runs, s.errors, None, _pair(timing.p50, timing.p99)
    )


def _pair(p50: float, p99: float) -> str:
    """Two durations (seconds), in the unit that suits the larger."""
    scale, unit = (1e6, "us") if p99 < 1e-3 else (1e3, "ms")
    return f"{_figure(p50 * scale)}/{_figure(p99 * scale)} {unit}"


def _figure(value: float) -> str:
    """Three significant digits, without an exponent."""
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


class _FirstInterrupt:
    """The first Ctrl-C (or SIGTERM) ends the demo early, with its summary.

    The next goes to ``corral.run``'s handler: a graceful stop without the
    summary (then a third kills at once).
    """

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.name: str | None = None  # what ended the demo early

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT and SIGTERM in the block (from the main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        loop = LoopHandle()

        def handle(signum: int, frame: FrameType | None) -> None:
            for number, handler in previous.items():  # the next one: corral.run's
                signal.signal(number, handler)
            self.name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            loop.call_soon_threadsafe(self.event.set)

        with handling(STOP_SIGNALS, handle) as previous:
            yield
