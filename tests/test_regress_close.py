"""Review regression tests: closing and killing are bounded the way the docs say."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

import corral
from tests.services import Echo

pytestmark = pytest.mark.anyio


# Review finding (fixed in 42287e4): Service.aclose() awaits messenger.request_close(),
# whose drain() waits for a child that does not read, before the grace period starts
async def test_aclose_grace_bounds_a_backed_up_close_request() -> None:
    async with corral.spawn(Echo, shutdown_timeout=0.2) as echo:
        try:
            echo.block.nowait(30)  # the child's loop is wedged in a sync method
            for _ in range(8):  # ...so the socket and the host's buffers fill up
                echo.record.nowait(b"x" * (1 << 20))
            with anyio.fail_after(10):
                await echo.aclose(grace=0.2)
            assert echo.statistics().last_exit == -9
        finally:
            echo.kill()


# Review finding (fixed in 42287e4): _serving.Server._track sets request.on_cancel only once
# the task runs; a CANCEL that arrives first is lost and the call runs on forever in the
# child
async def test_a_call_cancelled_before_its_task_starts_is_cancelled_in_the_child(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "closed"
    async with corral.spawn(Echo, closed_marker=str(marker), shutdown_timeout=0.2) as echo:
        for _ in range(5):
            with anyio.move_on_after(0):  # REQUEST and CANCEL leave back to back
                await echo.wait_forever()
        assert await echo.echo(1) == 1
        with anyio.fail_after(10):
            await echo.aclose(grace=1.0)
        # a graceful close: nothing left in flight, close() ran, exit status 0
        assert echo.statistics().last_exit == 0
        assert marker.read_text() == "closed"


class _SlowOnRestart:
    """Starts at once the first time; its replacement hangs in the constructor."""

    def __init__(self, marker: str) -> None:
        if os.path.exists(marker):
            logging.getLogger("tests.review.restart").warning("constructing the replacement")
            time.sleep(30)  # a constructor that hangs (the child is killed long before)
        Path(marker).write_text("started")

    def kill_self(self) -> None:
        os.kill(os.getpid(), 9)


# Review finding (fixed in 42287e4): Service.kill()/aclose() only signal the old child and
# the restart pause; a launch under way is not cancelled, so they wait for startup_timeout
async def test_kill_during_a_restart_does_not_wait_for_startup_timeout(
    tmp_path: Path,
) -> None:
    constructing = anyio.Event()

    class Seen(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            constructing.set()  # relogged on the host's loop thread

    seen = Seen()
    target = logging.getLogger("tests.review.restart")
    target.addHandler(seen)
    try:
        options: dict[str, Any] = {"restart": "on-failure", "startup_timeout": 6.0}
        async with corral.spawn(
            _SlowOnRestart, str(tmp_path / "m"), log_level=logging.WARNING, **options
        ) as proxy:
            with pytest.raises(corral.WorkerCrashed):
                await proxy.kill_self()
            with anyio.fail_after(10):
                await constructing.wait()  # the replacement is in its constructor
            proxy.kill()
            started = anyio.current_time()
            await proxy.aclose(grace=0.1)
            took = anyio.current_time() - started
        assert took < 3.0, f"kill() + aclose(grace=0.1) took {took:.2f}s (startup_timeout: 6 s)"
    finally:
        target.removeHandler(seen)
