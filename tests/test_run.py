"""corral.run picks the event loop."""

from __future__ import annotations

import asyncio

import pytest
import sniffio

import corral


async def which_loop(tag: str) -> tuple[str, str, str]:
    library = sniffio.current_async_library()
    loop = type(asyncio.get_running_loop()).__module__ if library == "asyncio" else "-"
    return tag, library, loop


def test_uses_uvloop_when_installed() -> None:
    assert corral.run(which_loop, "x") == ("x", "asyncio", "uvloop")


def test_stock_asyncio_on_request() -> None:
    assert corral.run(which_loop, "y", use_uvloop=False)[2].startswith("asyncio")


def test_trio_backend() -> None:
    assert corral.run(which_loop, "z", backend="trio")[:2] == ("z", "trio")


def test_bad_backend_options() -> None:
    with pytest.raises(ValueError, match="must be 'asyncio' or 'trio'"):
        corral.run(which_loop, "x", backend="curio")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only to backend='asyncio'"):
        corral.run(which_loop, "x", backend="trio", use_uvloop=True)
