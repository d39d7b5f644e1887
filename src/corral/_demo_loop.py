"""The demo's control loop: a heater held at a setpoint at 1 kHz on a core of its own."""

from __future__ import annotations

import os
from typing import Any

from . import ControlLoop, ControlLoopStatistics


class Stabilizer(ControlLoop):
    """A PI controller driving a simulated room heater (first-order plant)."""

    inputs = {"setpoint": 21.0}  # noqa: RUF012
    outputs = {"temperature": 15.0, "heater": 0.0}  # noqa: RUF012

    def setup(self) -> None:
        self.temperature = 15.0
        self.integral = 0.0
        self.dt = 1e-3

    def step(self) -> None:
        error = self.inputs["setpoint"] - self.temperature
        self.integral = min(max(self.integral + error * self.dt, -50.0), 50.0)
        heater = min(max(8.0 * error + 4.0 * self.integral, 0.0), 100.0)
        # the room: heated by the heater, cooled towards 10 degrees outside
        self.temperature += (0.5 * heater - 0.8 * (self.temperature - 10.0)) * self.dt
        self.outputs["temperature"] = round(self.temperature, 2)
        self.outputs["heater"] = round(heater, 1)


def loop_core() -> int | None:
    """The last core, if there is another one left for the host."""
    cores = sorted(os.sched_getaffinity(0))
    return cores[-1] if len(cores) > 1 else None


def loop_summary(stats: ControlLoopStatistics, temperature: float) -> dict[str, Any]:
    """The figures of the demo's loop, in microseconds."""

    def us(value: float) -> float:
        return round(value * 1e6, 1)

    return {
        "hz": stats.hz,
        "ticks": stats.ticks,
        "skipped": stats.skipped,
        "overruns": stats.overruns,
        "lateness_us": {
            "p50": us(stats.lateness.p50),
            "p99": us(stats.lateness.p99),
            "p99.9": us(stats.lateness.p999),
            "max": us(stats.lateness.max),
        },
        "step_p50_us": us(stats.step.p50),
        "cpu_pct": round(stats.cpu_percent, 1),
        "policy": stats.policy,
        "memory_locked": stats.memory_locked,
        "pinned": stats.pinned,
        "temperature": temperature,
    }


def loop_line(loop: dict[str, Any]) -> str:
    """The summary's line about the loop."""
    late = loop["lateness_us"]
    where = "a child pinned to a core" if loop["pinned"] else "a child"
    return (
        f"control loop: {loop['hz']:g} Hz in {where}"
        f" ({loop['policy']}{', memory locked' if loop['memory_locked'] else ''}): "
        f"{loop['ticks']:,} ticks, {loop['skipped']} skipped, {loop['overruns']} overruns; "
        f"lateness p50 {late['p50']} / p99 {late['p99']} / p99.9 {late['p99.9']} / max "
        f"{late['max']} us; step p50 {loop['step_p50_us']} us; CPU {loop['cpu_pct']}%; "
        f"room held at {loop['temperature']} C"
    )
