"""What benchmarks/soak.py runs in child processes (kept light: each child imports this)."""

from __future__ import annotations

import os
from typing import Any

import anyio

import corral


class SoakService:
    """A spawned service: a sync and an async echo."""

    def __init__(self, index: int) -> None:
        self.index = index

    def echo(self, value: Any) -> Any:  # sync: inline, in call order
        return value

    async def aecho(self, value: Any, delay: float = 0.0) -> Any:  # async: concurrently
        if delay:
            await anyio.sleep(delay)
        return value


class Mirror(corral.ControlLoop):
    """Copies its input to its output every tick; a host-callable echo."""

    inputs = {"setpoint": 0}  # noqa: RUF012
    outputs = {"mirror": 0}  # noqa: RUF012

    def step(self) -> None:
        self.outputs["mirror"] = self.inputs["setpoint"]

    def echo(self, value: Any) -> Any:
        return value


def double(x: int) -> tuple[int, int, int]:
    """A pool item: the item, its double, and the worker that computed it."""
    return x, 2 * x, os.getpid()
