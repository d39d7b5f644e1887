"""The demo's summary: the figures as a dict (``--json``), and printed as text."""

from __future__ import annotations

from typing import Any

from ._demo_loop import loop_line
from ._demo_pool import pool_line
from ._demo_process import process_line
from ._timing import Timer
from ._worker import WorkerStatistics


def worker_row(w: WorkerStatistics) -> dict[str, Any]:
    """One worker's final figures, for the summary."""
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
    if w.lateness is not None and w.lateness.count:
        row["lateness_ms"] = {
            "p50": round(w.lateness.p50 * 1000, 3),
            "p99": round(w.lateness.p99 * 1000, 3),
            "max": round(w.lateness.max * 1000, 3),
        }
    return row


def ms(timer: Timer) -> dict[str, float] | None:
    """A timer's p50, p99 and max, in milliseconds (None when it has no samples)."""
    if not timer.count:
        return None
    return {
        "p50": round(timer.percentile(50) * 1000, 3),
        "p99": round(timer.percentile(99) * 1000, 3),
        "max": round(timer.max * 1000, 3),
    }


def print_summary(s: dict[str, Any]) -> None:
    """The summary as text, on stdout."""
    stopped = "every worker stopped cleanly" if s["all_stopped"] else "SOME WORKERS DID NOT STOP"
    early = f" (ended early by {s['ended_early']})" if s["ended_early"] else ""
    print(f"\ncorral demo: {s['duration_s']} s on {s['loop']}{early}; {stopped}.\n")
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
    late = f["lateness_ms"]
    lateness = (
        f"lateness p50 {late['p50']:.2f} ms, p99 {late['p99']:.2f} ms, max {late['max']:.2f} ms"
        if late
        else "no lateness measured"
    )
    print(
        f"\nfleet: {f['workers']:,} interval workers at 10 Hz on one shared timer "
        f"(started in {f['register_ms']} ms): {f['ticks']:,} ticks, {f['skipped']} skipped, "
        f"{lateness}"
    )
    redraws = next(w["runs"] for w in s["workers"] if w["name"] == "refresh_dashboard")
    print(
        f"plant: {c['readings']:,} readings processed; {c['alarms']} alarms (served first) "
        f"coalesced into {redraws} redraws; {c['flushed']:,} flushed in batches; "
        f"{c['uplink_failures']} uplink failures handled by on_error"
    )
    v = s["service"]
    killed = (
        f"SIGKILLed at {v['killed_at_s']} s (pid {v['first_pid']}), restarted as pid "
        f"{v['last_pid']} ({v['restarts']} restart, {c['lost_to_crash']} call in flight lost "
        "to the crash)"
        if "killed_at_s" in v
        else "not killed (the demo ended before half-way)"
    )
    print(
        f"service: Calibrator in a child process (ready in {v['spawn_ms']} ms, RSS "
        f"{v['rss_mb']} MB): {v['calls']:,} calls; {killed}; round trip p50 "
        f"{v['burst']['p50_us']} us, p99 {v['burst']['p99_us']} us over "
        f"{v['burst']['calls']:,} back-to-back calls"
    )
    if s["control_loop"]:
        print(loop_line(s["control_loop"]))
    print(process_line(s["process"]))
    print(pool_line(s["pool"]))
    print(f"process: CPU {s['cpu_pct']}% of one core, RSS {s['rss_mb']} MB")
    print("what happened:")
    for event in s["events"]:
        print(f"  {event}")
    left = s["left_running"]
    print(
        f"shutdown: {'; '.join(s['shutdown'])}; threads left behind: {left['threads']}, "
        f"child processes left behind: {left['processes']}"
    )
