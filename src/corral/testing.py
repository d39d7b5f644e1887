"""Helpers for testing code that uses corral.

- :func:`nothing_left_running`: a block that fails if it leaves a child
  process, a thread or a file descriptor behind (and kills what it left).
- :func:`supervised`: a :class:`~corral.Supervisor` inside that check.
- :func:`wait_for_runs`, :func:`wait_for_restarts`, :func:`wait_until`:
  wait for a worker's *n*-th run, a child's *n*-th restart, or any
  condition, with a deadline and a message that says what was seen instead.
- :class:`VirtualClock`: an asyncio event loop on virtual time, so an
  interval worker that runs hourly runs its hundredth time in milliseconds.

With pytest, the ``corral_supervisor`` fixture (registered by corral's pytest
plugin) gives each test a supervised block; see ``docs/testing.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import anyio.lowlevel
import psutil
import sniffio

from ._proxy import ProxyBase
from ._scheduler import IntervalWorker
from ._supervisor import Supervisor
from ._virtual import VirtualClock, _VirtualLoop
from ._worker import Worker

__all__ = [
    "VirtualClock",
    "nothing_left_running",
    "supervised",
    "wait_for_restarts",
    "wait_for_runs",
    "wait_until",
]


VirtualClock.__module__ = __name__  # (defined in corral._virtual; public here)

#: Threads that outlive a block by design, busy or idle: the workers of anyio's
#: and asyncio's own thread pools (idle, they exit by themselves), trio's I/O thread
#: in guest mode, and executors' threads (their executor's owner shuts them down).
IGNORED_THREADS = ("AnyIO worker thread", "asyncio_", "Trio thread", "ThreadPoolExecutor-")

_Fd = tuple[int, str]  # (number, what it is): a number alone is reused


@contextlib.asynccontextmanager
async def nothing_left_running(
    *, timeout: float = 5.0, threads: bool = True, fds: bool = True
) -> AsyncIterator[None]:
    """Fail if the block leaves a child process, thread or file descriptor behind.

    What exists when the block starts is the baseline. When it ends, whatever
    is new gets up to ``timeout`` seconds (real ones, on a
    :class:`VirtualClock` too) to go away (a child being reaped, a socket
    closing on the next loop turn); then an :class:`AssertionError` lists
    what is left, after killing the processes (their owner still reaps them),
    so one failing test does not leak into the next. When the block raises,
    its processes are killed too, and a note on its exception says so.
    Threads of anyio's, asyncio's and trio's own pools and executors' threads
    are not counted. ``threads=False`` or ``fds=False`` leaves those out of
    the check (say, for a block that opens a log file on purpose).

    Example::

        async with corral.testing.nothing_left_running():
            async with corral.spawn(Camera, "/dev/video0") as cam:
                await cam.capture()
    """
    await _open_loop_reserves()
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    threads_before = set(threading.enumerate())
    fds_before = _open_fds()

    def leftovers() -> tuple[list[psutil.Process], list[threading.Thread], set[_Fd]]:
        processes = [
            p for p in me.children(recursive=True) if p.pid not in children_before and _alive(p)
        ]
        stray_threads = [
            t
            for t in threading.enumerate()
            if t not in threads_before and not t.name.startswith(IGNORED_THREADS)
        ]
        stray_fds = _open_fds() - fds_before
        return processes, stray_threads if threads else [], stray_fds if fds else set()

    try:
        yield
    except BaseException as error:
        killed = _kill(leftovers()[0])
        if killed:
            error.add_note(f"nothing_left_running: the block failed; killed {', '.join(killed)}")
        raise
    deadline = time.monotonic() + timeout
    processes, stray_threads, stray_fds = leftovers()
    while (processes or stray_threads or stray_fds) and time.monotonic() < deadline:
        await anyio.sleep(0.01)
        processes, stray_threads, stray_fds = leftovers()
    if not (processes or stray_threads or stray_fds):
        return
    lines = [f"left running {timeout:g} s after the block ended:"]
    lines.extend(f"  {process} (killed now)" for process in _kill(processes))
    lines.extend(f"  thread {t.name!r} (daemon={t.daemon})" for t in stray_threads)
    lines.extend(f"  file descriptor {fd}: {_fd_target(fd)}" for fd, _ in sorted(stray_fds))
    lines.append(
        "Close what the block opened before it ends (leave `async with` blocks, await "
        "aclose()), or leave a kind out of the check: threads=False, fds=False."
    )
    raise AssertionError("\n".join(lines))


@contextlib.asynccontextmanager
async def supervised(*, timeout: float = 5.0, **options: Any) -> AsyncIterator[Supervisor]:
    """A :class:`~corral.Supervisor` (``options`` go to it) inside :func:`nothing_left_running`.

    Leaving the block stops the supervisor as usual (its failures are raised
    as usual), then checks that nothing it started is left.

    Example::

        async with corral.testing.supervised(shutdown_timeout=1.0) as sup:
            worker = sup.every(0.01, poll)
            await corral.testing.wait_for_runs(worker, 3)
    """
    async with nothing_left_running(timeout=timeout), Supervisor(**options) as sup:
        yield sup


async def wait_for_runs(worker: Worker, n: int, *, timeout: float | None = None) -> None:
    """Wait until ``worker`` has completed ``n`` runs; ``TimeoutError`` after ``timeout`` s.

    The default timeout is 5 s, plus ``n`` intervals for an interval worker
    (on a :class:`VirtualClock`, just 5 s: the helpers' timeouts are real
    seconds there too). The error says how many runs it made, its state and
    its errors. A worker that stops before its ``n``-th run raises
    :class:`~corral.WorkerStopped` at once. Nothing polls: the worker wakes
    the waiter on the run.
    """
    if timeout is None:
        per_run = worker.interval if isinstance(worker, IntervalWorker) else 0.0
        timeout = 5.0 + (0.0 if _virtual_loop() else n * per_run)
    with _deadline(timeout) as scope:
        await worker.wait_runs(n)
    if not scope.cancelled_caught:
        return
    stats = worker.statistics()
    raise TimeoutError(
        f"worker {stats.name!r} made {stats.runs} of {n} runs within {timeout:g} s "
        f"(state {stats.state.value}, {stats.errors} errors, {stats.skipped} skipped ticks)"
    )


async def wait_for_restarts(
    proxy: ProxyBase[Any], n: int, *, timeout: float = 10.0, running: bool = True
) -> None:
    """Wait until the child behind ``proxy`` has been restarted ``n`` times.

    With ``running=True`` (the default) it also waits for the restarted child
    to be up and taking calls. Works for :class:`~corral.Proxy` and
    :class:`~corral.ControlLoopProxy`. ``TimeoutError`` after ``timeout``
    seconds says how many restarts there were and the child's state; a child
    that fails or closes for good first raises ``AssertionError`` at once.
    """
    service = proxy._service
    with _deadline(timeout) as scope:
        while service.restarts < n or (running and service.state != "running"):
            if service.state in ("failed", "closed"):
                raise AssertionError(
                    f"child {service.name!r} is {service.state} after {service.restarts} "
                    f"of {n} restarts (last exit: {service.last_exit_reason})"
                )
            await service._changed.wait()
    if not scope.cancelled_caught:
        return
    raise TimeoutError(
        f"child {service.name!r} had {service.restarts} of {n} restarts within "
        f"{timeout:g} s (state {service.state}; last exit: {service.last_exit_reason})"
    )


async def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str | Callable[[], str] = "",
) -> None:
    """Wait until ``condition()`` is true, checking every ``interval`` seconds.

    For conditions nothing signals (a statistic, a file appearing). Raises
    ``TimeoutError`` after ``timeout`` (real) seconds, with ``message`` (or
    what it returns, evaluated then) appended. Prefer :func:`wait_for_runs`
    and :func:`wait_for_restarts`, which are woken by the event itself.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            detail = message() if callable(message) else message
            raise TimeoutError(
                f"condition not met within {timeout:g} s" + (f": {detail}" if detail else "")
            )
        await anyio.sleep(interval)


@contextlib.contextmanager
def _deadline(seconds: float) -> Iterator[anyio.CancelScope]:
    """A cancel scope that ends its block after ``seconds`` of real time.

    On a :class:`VirtualClock` loop a timer would fire as soon as the loop is
    idle, so there a thread keeps the time instead.
    """
    loop = _virtual_loop()
    if loop is None:
        with anyio.move_on_after(seconds) as scope:
            yield scope
        return
    with anyio.CancelScope() as scope:
        watchdog = threading.Timer(seconds, loop.call_soon_threadsafe, (scope.cancel,))
        watchdog.name = "corral.testing deadline"
        watchdog.start()
        try:
            yield scope
        finally:
            watchdog.cancel()
            watchdog.join()


def _virtual_loop() -> _VirtualLoop | None:
    """The running loop if it is on a :class:`VirtualClock`."""
    if sniffio.current_async_library() != "asyncio":
        return None
    loop = asyncio.get_running_loop()
    return loop if isinstance(loop, _VirtualLoop) else None


def _open_fds() -> set[_Fd]:
    try:
        listed = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:  # no /proc: no check
        return set()
    found = set()
    for fd in listed:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
        # What it is, less the inode of a socket or pipe: uvloop makes its signal
        # socketpair anew each time the loop runs (as pytest's fixtures make it).
        found.add((fd, re.sub(r":\[\d+\]$", "", target)))
    return found


async def _open_loop_reserves() -> None:
    """Have the loop open what it keeps for its lifetime, so the baseline has it.

    libuv (uvloop) opens a descriptor on /dev/null with a loop's first stream,
    a reserve for when descriptors run out, and keeps it until the loop closes.
    """
    if sniffio.current_async_library() != "asyncio":
        return
    loop = asyncio.get_running_loop()
    if not type(loop).__module__.startswith("uvloop"):
        return
    ours, theirs = socket.socketpair()
    with ours, theirs:  # (uvloop's transport works on a duplicate of ours)
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        transport.close()
        await anyio.lowlevel.checkpoint()  # the close completes on the next turn


def _kill(processes: list[psutil.Process]) -> list[str]:
    """SIGKILL each of ``processes``; what each was, in words."""
    killed = []
    for process in processes:
        killed.append(f"process {process.pid}: {_command_line(process)}")
        with contextlib.suppress(psutil.Error):
            process.kill()
    return killed


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "(closed since)"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _command_line(process: psutil.Process) -> str:
    try:
        return " ".join(process.cmdline())[:200] or process.name()
    except psutil.Error:
        return "(gone)"
