"""``corral.run``: the entry point that picks the fastest event loop available."""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def uvloop_available() -> bool:
    """True when uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def run(
    main: Callable[[*Ts], Awaitable[T]],
    *args: *Ts,
    backend: Literal["asyncio", "trio"] = "asyncio",
    use_uvloop: bool | None = None,
) -> T:
    """Run ``await main(*args)`` on a new event loop and return its result.

    On asyncio, uvloop is used when it is installed (``use_uvloop=None``);
    pass ``use_uvloop=False`` for the stock loop. ``backend="trio"`` runs on
    trio, if installed.
    """
    if backend == "trio":
        if use_uvloop:
            raise ValueError("use_uvloop applies only to backend='asyncio'")
        return anyio.run(main, *args, backend="trio")
    if backend != "asyncio":
        raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
    if use_uvloop is None:
        use_uvloop = uvloop_available()
    elif use_uvloop and not uvloop_available():
        raise RuntimeError(
            "uvloop is not installed: `pip install uvloop`, or pass use_uvloop=False"
        )
    return anyio.run(main, *args, backend="asyncio", backend_options={"use_uvloop": use_uvloop})
