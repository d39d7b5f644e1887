"""Review tests: the error model in a few faults."""

from __future__ import annotations

import logging
import os
import select
from typing import Any

import anyio
import pytest

import corral
from tests.services import Echo

pytestmark = pytest.mark.anyio


class _BadStr(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no str for this exception")


# Review finding (fixed in 42287e4): failure_payload() calls str(error) unguarded; in
# Server._track the error escapes request.fail() into the child's task group and kills the
# child
async def test_an_exception_whose_str_fails_does_not_kill_the_child() -> None:
    class Service:
        async def abad(self) -> None:
            raise _BadStr

        def echo(self, value: int) -> int:
            return value

    async with corral.spawn(Service) as service:
        with pytest.raises(Exception) as raised:  # noqa: PT011  (the type is the point)
            await service.abad()
        assert type(raised.value).__name__ in ("_BadStr", "RemoteError"), type(raised.value)
        assert await service.echo(1) == 1  # the child is still there


# Review finding (fixed in 42287e4): _service._until_exit fails the calls of a function that
# returned with _stopped_error() while state is still 'running': 'child ... is running; it
# takes no more calls'
async def test_open_worker_function_returning_says_what_happened() -> None:
    async def quick(messenger: corral.Messenger) -> None:
        await messenger.receive("go")  # returns once the host is surely attached

    async with corral.open_worker(quick) as worker:
        await worker.send(None, channel="go")
        with (
            anyio.fail_after(10),
            pytest.raises((corral.WorkerCrashed, corral.WorkerStopped)) as raised,
        ):
            await worker.receive()
        assert "is running" not in str(raised.value)


# Review finding (fixed in 42287e4): Proxy._receive asks service.connected() first, which
# raises WorkerStopped as soon as aclose() is called: values already in the host's inbox are
# dropped
async def test_messages_already_received_survive_aclose() -> None:
    async with corral.spawn(Echo) as echo:
        received: list[int] = []

        async def read() -> None:
            async for value in echo.messages("values"):
                received.append(value)
                await anyio.lowlevel.checkpoint()  # any consumer awaits something

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            # all 100 are in the host's inbox when this returns (the reply comes after them)
            await echo.publish("values", list(range(100)))
            with anyio.fail_after(10):
                await echo.aclose()
        assert received == list(range(100))


class _SayUnpickled:
    """Logs a warning in the child while its target is unpickled: before the boot reply."""

    def __reduce__(self) -> Any:
        return (logging.getLogger("tests.review.race").warning, ("target unpickled",))


class _UntilTheChildHasExited(logging.Handler):
    """Holds the host's loop in the record's handler until the child has exited
    (waiting on a pidfd, without reaping it): its last frames and its end of file
    then arrive together."""

    def emit(self, record: logging.LogRecord) -> None:
        pidfd = os.pidfd_open(record.process or 0)
        try:
            select.select([pidfd], [], [], 1.5)
        finally:
            os.close(pidfd)


@pytest.mark.parametrize(
    "anyio_backend", [pytest.param(("trio", {}), id="trio")]
)  # on asyncio the waiting task runs before the end of file is seen
async def test_a_child_that_exits_right_after_starting_raises_a_corral_error() -> None:
    async def quick(messenger: corral.Messenger, **_: Any) -> None:
        return None

    holder = _UntilTheChildHasExited()
    target = logging.getLogger("tests.review.race")
    target.addHandler(holder)
    try:
        async with corral.open_worker(
            quick, log_level=logging.WARNING, note=_SayUnpickled()
        ) as worker:
            with anyio.fail_after(10), pytest.raises(corral.CorralError):
                await worker.receive()
    finally:
        target.removeHandler(holder)


async def test_messages_started_during_a_restart_read_the_new_child() -> None:
    async with corral.spawn(Echo, restart="on-failure") as echo:
        with pytest.raises(corral.WorkerCrashed):
            await echo.kill_self()
        received: list[str] = []

        async def read() -> None:
            async for value in echo.messages("values"):
                received.append(value)
                return

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)  # starts while the child is being restarted
                await echo.publish("values", ["from the new child"])  # waits for it
        assert received == ["from the new child"]
