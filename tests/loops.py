"""Control loops the tests run in child processes (kept light: each child imports this)."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import corral

WIDE = 64  # elements in the tearing tests' tuples: 512 bytes, copied in many stores


class Counter(corral.ControlLoop):
    """Counts ticks; echoes its inputs; a few host-callable methods."""

    inputs = {"setpoint": 0.0, "gains": (1.0, 2.0, 3.0), "enabled": True}  # noqa: RUF012
    outputs = {"count": 0, "command": 0.0, "torn_down": False}  # noqa: RUF012

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at = fail_at
        self.calls = 0
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def step(self) -> None:
        if self.tick == self.fail_at:
            raise KeyError("sensor 7")
        if self.inputs["enabled"]:
            self.outputs["count"] += 1
        self.outputs["command"] = self.inputs["setpoint"] * self.inputs["gains"][1]

    def teardown(self) -> None:
        self.outputs["torn_down"] = True

    def add(self, a: int, b: int) -> int:
        self.calls += 1
        return a + b

    async def later(self, value: Any) -> Any:
        return value

    def facts(self) -> dict[str, Any]:
        """What the child's process looks like from inside."""
        return {
            "threads": threading.active_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "policy": os.sched_getscheduler(0),
            "gc_enabled": gc.isenabled(),
            "pid": os.getpid(),
            "calls": self.calls,
            "setups": self.setups,
        }


class FailsOnce(corral.ControlLoop):
    """Raises at tick 5 of its first run only (the marker file remembers)."""

    inputs = {"setpoint": 0.0}  # noqa: RUF012
    outputs = {"runs_seen": 0}  # noqa: RUF012

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def step(self) -> None:
        if self.tick == 5 and not os.path.exists(self.marker):
            with open(self.marker, "w"):
                pass
            raise RuntimeError("first run fails")
        self.outputs["runs_seen"] = 2 if os.path.exists(self.marker) else 1


class Wide(corral.ControlLoop):
    """Publishes an all-equal wide tuple each tick; counts torn reads of its wide input."""

    inputs = {"wide_in": (0,) * WIDE}  # noqa: RUF012
    outputs = {"wide_out": (0,) * WIDE, "torn": 0, "reads": 0}  # noqa: RUF012

    def setup(self) -> None:
        self.torn = 0
        self.reads = 0

    def step(self) -> None:
        self.outputs["wide_out"] = (self.tick,) * WIDE
        for _ in range(100):  # the host writes all the while: many reads race a write
            values = self.inputs["wide_in"]
            self.reads += 1
            if min(values) != max(values):
                self.torn += 1
        self.outputs["torn"] = self.torn
        self.outputs["reads"] = self.reads


class SetupFails(corral.ControlLoop):
    def setup(self) -> None:
        raise OSError("no such device: /dev/can0")

    def step(self) -> None:
        pass


class Slow(corral.ControlLoop):
    """A step that spins for ``spin`` seconds every ``every`` ticks."""

    def __init__(self, spin: float, every: int) -> None:
        self.spin = spin
        self.every = every

    def step(self) -> None:
        if self.tick % self.every == self.every - 1:
            end = time.perf_counter() + self.spin
            while time.perf_counter() < end:
                pass
