"""Shared fixtures: every async test runs on uvloop, stock asyncio and trio."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sniffio


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def live_tasks() -> int:
    """How many tasks exist on the running loop right now."""
    if sniffio.current_async_library() == "asyncio":
        import asyncio  # noqa: PLC0415

        return len(asyncio.all_tasks())
    import trio  # noqa: PLC0415

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return count(root)


def thread_idents() -> set[int | None]:
    """Threads alive now, less trio's own I/O thread: anyio's pytest plugin runs trio
    in guest mode, which waits for I/O in a thread of trio's cache ("Trio thread N")."""
    return {t.ident for t in threading.enumerate() if not t.name.startswith("Trio thread")}
