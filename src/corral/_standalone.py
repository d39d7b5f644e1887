"""Children without a supervisor: ``spawn``, ``open_worker`` and ``control_loop``.

Each is an ``async with`` block that starts one child, hands over its proxy
(or its messenger), and closes it when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar, Unpack

import anyio

from ._control import ControlLoop
from ._job import Job, new_job
from ._lifetime import RestartPolicy
from ._loophost import ControlLoopProxy, LoopKeywords, open_loop
from ._messenger import Messenger
from ._process import UNSET, Process, Timeouts
from ._proxy import Proxy
from ._service import Service
from ._worker import is_async_callable

T = TypeVar("T")
L = TypeVar("L", bound=ControlLoop)
P = TypeVar("P", bound=Process)


def _qualname(target: Any) -> str:
    return getattr(target, "__qualname__", None) or type(target).__name__


@contextlib.asynccontextmanager
async def spawn(
    target: Callable[..., T],
    /,
    *args: Any,
    name: str | None = None,
    cpu: int | tuple[int, ...] | list[int] | None = None,
    restart: RestartPolicy = "never",
    max_restarts: int = 3,
    restart_window: float = 5.0,
    startup_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    log_level: int | None = None,
    **kwargs: Any,
) -> AsyncIterator[Proxy[T]]:
    """Run ``target(*args, **kwargs)`` in a child process for the length of the block.

    >>> async def main() -> None:
    ...     async with corral.spawn(Camera, "/dev/video0", cpu=1) as cam:
    ...         await cam.start_capture(fps=30)

    The same as :meth:`Supervisor.spawn <corral.Supervisor.spawn>` without a
    supervisor: leaving the block closes the child (gracefully, then killed
    after ``shutdown_timeout``). A child that dies raises
    :class:`~corral.WorkerCrashed` from the calls it was serving, and from
    later calls unless ``restart=`` brings it back. The option names above are
    taken; to pass a constructor argument with one of those names, bind it
    with :func:`functools.partial`.
    """
    service = Service(
        "service",
        target,
        args,
        kwargs,
        name=name or _qualname(target),
        cpu=cpu,
        restart=restart,
        max_restarts=max_restarts,
        restart_window=restart_window,
        startup_timeout=startup_timeout,
        log_level=log_level,
    )
    async with _running(service, shutdown_timeout):
        yield Proxy(service)


@contextlib.asynccontextmanager
async def open_worker(
    fn: Callable[..., Awaitable[Any]],
    /,
    *,
    name: str | None = None,
    cpu: int | tuple[int, ...] | list[int] | None = None,
    startup_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    log_level: int | None = None,
    **kwargs: Any,
) -> AsyncIterator[Messenger]:
    """Run ``await fn(messenger, **kwargs)`` in a child; the block gets the host's messenger.

    >>> async def doubler(messenger):
    ...     while True:
    ...         request = await messenger.receive_request()
    ...         request.reply(request.value * 2)
    >>> async def main() -> None:
    ...     async with corral.open_worker(doubler) as worker:
    ...         assert await worker.request(21) == 42

    Leaving the block asks the child to close (its pending ``receive`` raises
    :class:`~corral.CloseRequested`, which ends ``fn`` quietly if not caught),
    then kills it after ``shutdown_timeout`` seconds.
    """
    if not is_async_callable(fn):
        raise TypeError(
            f"open_worker() runs an async function fn(messenger, **kwargs); got {fn!r}"
        )
    service = Service(
        "function",
        fn,
        (),
        kwargs,
        name=name or _qualname(fn),
        cpu=cpu,
        startup_timeout=startup_timeout,
        log_level=log_level,
    )
    async with _running(service, shutdown_timeout):
        assert service.messenger is not None
        yield service.messenger


@contextlib.asynccontextmanager
async def control_loop(
    loop: L, /, hz: float, *, shutdown_timeout: float = 5.0, **options: Unpack[LoopKeywords]
) -> AsyncIterator[ControlLoopProxy[L]]:
    """Run a :class:`~corral.ControlLoop` in a child for the length of the block.

    >>> async def main() -> None:
    ...     async with corral.control_loop(Controller(), hz=1000, cpu=1) as rt:
    ...         await rt.set("setpoint", 3.0)

    The same as :meth:`Supervisor.control_loop <corral.Supervisor.control_loop>`
    (which documents the options) without a supervisor: leaving the block
    closes the loop (teardown() runs), killing it after ``shutdown_timeout``.
    """
    service, host = open_loop(loop, hz, options)
    async with _running(service, shutdown_timeout):
        yield ControlLoopProxy(service, host)


@contextlib.asynccontextmanager
async def start(
    process: P,
    /,
    *,
    runs: int | Any | None = UNSET,
    join_in: float | Any | None = UNSET,
    lives: int | Any = UNSET,
    timeouts: Timeouts | Any = UNSET,
    name: str | None = None,
    cpu: int | tuple[int, ...] | list[int] | None = None,
    startup_timeout: float = 30.0,
    shutdown_timeout: float = 5.0,
    log_level: int | None = None,
) -> AsyncIterator[Job[P]]:
    """Run a :class:`~corral.Process` in a child for the length of the block.

    >>> async def main() -> None:
    ...     async with corral.start(Upscale(image)) as job:
    ...         upscaled = await job.result()

    As :meth:`Supervisor.start <corral.Supervisor.start>`, without a
    supervisor: the block gets the job at once; leaving it stops a job still
    running (its current run finishes, then on_finish() and result()),
    killing it after ``shutdown_timeout``.
    """
    job = new_job(
        process,
        config={"runs": runs, "join_in": join_in, "lives": lives, "timeouts": timeouts},
        name=name or _qualname(type(process)),
        cpu=cpu,
        startup_timeout=startup_timeout,
        log_level=log_level,
    )
    async with _running(job._service, shutdown_timeout, wait=False):
        yield job


@contextlib.asynccontextmanager
async def _running(service: Service, grace: float, *, wait: bool = True) -> AsyncIterator[None]:
    """Run ``service`` for the block, then close it (waiting at most ``grace`` to kill).

    The manager task's group is entered by hand rather than with ``async with``
    around the ``yield``: the block's own exception must come out unchanged,
    not wrapped in an exception group.
    """
    task_group = anyio.create_task_group()
    await task_group.__aenter__()
    try:
        if wait:
            await task_group.start(service.run, name=f"corral-child:{service.name}")
        else:
            task_group.start_soon(service.run, name=f"corral-child:{service.name}")
    except BaseException:
        task_group.cancel_scope.cancel()
        await task_group.__aexit__(None, None, None)
        raise
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            await service.aclose(grace)
        await task_group.__aexit__(None, None, None)
