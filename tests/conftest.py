"""Shared fixtures: every async test runs on uvloop, stock asyncio and trio.

A test (or module) marked ``@pytest.mark.loops("uvloop", "trio")`` runs on
those loops only: the others are deselected (for the slow tests whose subject
does not depend on the loop, to keep the suite within its time budget).
"""

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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        marker = item.get_closest_marker("loops")
        params = getattr(item, "callspec", None)
        backend = params.params.get("anyio_backend") if params is not None else None
        if marker is None or not isinstance(backend, tuple):
            kept.append(item)
            continue
        uvloop = backend[1].get("use_uvloop")
        name = "trio" if backend[0] == "trio" else "uvloop" if uvloop else "asyncio"
        (kept if name in marker.args else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


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
