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
import math
import os
import selectors
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, TypeVar, final

import anyio
import psutil

from ._proxy import ProxyBase
from ._scheduler import IntervalWorker
from ._supervisor import Supervisor
from ._worker import Worker

__all__ = [
    "VirtualClock",
    "nothing_left_running",
    "supervised",
    "wait_for_restarts",
    "wait_for_runs",
    "wait_until",
]

T = TypeVar("T")

#: Threads that outlive a block by design: idle workers of anyio's and asyncio's
#: own thread pools (they exit by themselves), and trio's I/O thread in guest mode.
IGNORED_THREADS = ("AnyIO worker thread", "asyncio_", "Trio thread", "ThreadPoolExecutor-")


@contextlib.asynccontextmanager
async def nothing_left_running(
    *, timeout: float = 5.0, threads: bool = True, fds: bool = True
) -> AsyncIterator[None]:
    """Fail if the block leaves a child process, thread or file descriptor behind.

    What exists when the block starts is the baseline. When it ends, whatever
    is new gets up to ``timeout`` seconds to go away (a child being reaped, a
    socket closing on the next loop turn); then an :class:`AssertionError`
    lists what is left, after killing the processes (their owner still reaps
    them), so one failing test does not leak into the next. Threads of
    anyio's, asyncio's and trio's own pools (idle, they exit by themselves)
    are not counted. ``threads=False`` or
    ``fds=False`` leaves those out of the check.

    Example::

        async with corral.testing.nothing_left_running():
            async with corral.spawn(Camera, "/dev/video0") as cam:
                await cam.capture()
    """
    me = psutil.Process()
    children_before = {p.pid for p in me.children(recursive=True)}
    threads_before = {t.ident for t in threading.enumerate()}
    fds_before = _open_fds()
    yield
    deadline = anyio.current_time() + timeout

    def leftovers() -> tuple[list[psutil.Process], list[threading.Thread], set[int]]:
        processes = [
            p for p in me.children(recursive=True) if p.pid not in children_before and _alive(p)
        ]
        stray_threads = [
            t
            for t in threading.enumerate()
            if t.ident not in threads_before and not t.name.startswith(IGNORED_THREADS)
        ]
        stray_fds = _open_fds() - fds_before
        return processes, stray_threads if threads else [], stray_fds if fds else set()

    processes, stray_threads, stray_fds = leftovers()
    while (processes or stray_threads or stray_fds) and anyio.current_time() < deadline:
        await anyio.sleep(0.01)
        processes, stray_threads, stray_fds = leftovers()
    if not (processes or stray_threads or stray_fds):
        return
    lines = [f"left running {timeout:g} s after the block ended:"]
    for p in processes:
        lines.append(f"  process {p.pid}: {_command_line(p)} (killed now)")
        with contextlib.suppress(psutil.Error):
            p.kill()
    lines.extend(f"  thread {t.name!r} (daemon={t.daemon})" for t in stray_threads)
    lines.extend(f"  file descriptor {fd}: {_fd_target(fd)}" for fd in sorted(stray_fds))
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
    (on a :class:`VirtualClock` those are virtual seconds, which pass at
    once). The error says how many runs it made, its state and its errors. A
    worker that stops before its ``n``-th run raises
    :class:`~corral.WorkerStopped` at once. Nothing polls: the worker wakes
    the waiter on the run.
    """
    if timeout is None:
        timeout = 5.0 + n * (worker.interval if isinstance(worker, IntervalWorker) else 0.0)
    try:
        with anyio.fail_after(timeout):
            await worker.wait_runs(n)
    except TimeoutError:
        stats = worker.statistics()
        raise TimeoutError(
            f"worker {stats.name!r} made {stats.runs} of {n} runs within {timeout:g} s "
            f"(state {stats.state.value}, {stats.errors} errors, {stats.skipped} skipped ticks)"
        ) from None


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

    def reached() -> bool:
        return service.restarts >= n and (not running or service.state == "running")

    try:
        with anyio.fail_after(timeout):
            while not reached():
                if service.state in ("failed", "closed"):
                    raise AssertionError(
                        f"child {service.name!r} is {service.state} after {service.restarts} "
                        f"of {n} restarts (last exit: {service.last_exit_reason})"
                    )
                await service._changed.wait()
    except TimeoutError:
        raise TimeoutError(
            f"child {service.name!r} had {service.restarts} of {n} restarts within "
            f"{timeout:g} s (state {service.state}; last exit: {service.last_exit_reason})"
        ) from None


async def wait_until(
    condition: Callable[[], object],
    *,
    timeout: float = 5.0,
    interval: float = 0.005,
    message: str | Callable[[], str] = "",
) -> None:
    """Wait until ``condition()`` is true, checking every ``interval`` seconds.

    For conditions nothing signals (a statistic, a file appearing). Raises
    ``TimeoutError`` after ``timeout`` seconds, with ``message`` (or what it
    returns, evaluated then) appended. Prefer :func:`wait_for_runs` and
    :func:`wait_for_restarts`, which are woken by the event itself.
    """
    deadline = anyio.current_time() + timeout
    while not condition():
        if anyio.current_time() >= deadline:
            detail = message() if callable(message) else message
            raise TimeoutError(
                f"condition not met within {timeout:g} s" + (f": {detail}" if detail else "")
            )
        await anyio.sleep(interval)


@final
class VirtualClock:
    """Virtual time for asyncio: sleeps and timers end as soon as nothing else can run.

    Loops made by :meth:`new_event_loop` read the time from this clock, which
    starts at 0 and jumps to the next timer whenever the loop has been idle
    (no ready callbacks, no I/O) for ``autojump`` real seconds. An interval
    worker with a one-hour interval makes its hundredth run in milliseconds,
    and its ticks are exactly on time, since the clock stands still while
    callbacks run.

    Only time moves: I/O is real. Child processes and threads run on real
    time, so a timeout the host waits on can expire (virtually) before a
    child or a thread has answered; raise ``autojump`` (say to 0.05) to give
    them real time to answer first. uvloop cannot be driven this way: these
    loops are the stock asyncio loop. On trio, use ``trio.testing.MockClock``
    (corral reads trio's clock).

    Use it with :meth:`run` or, with anyio's pytest plugin, by returning
    :attr:`anyio_backend` from an ``anyio_backend`` fixture.
    """

    def __init__(self, *, autojump: float = 0.0) -> None:
        if not (autojump >= 0 and math.isfinite(autojump)):
            raise ValueError(f"autojump must be a finite number of seconds >= 0, not {autojump!r}")
        self.autojump = autojump
        self._now = 0.0

    def time(self) -> float:
        """The virtual time now, in seconds since the clock was made."""
        return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds`` now (timers due by then fire next)."""
        if not seconds >= 0:
            raise ValueError(f"the clock only moves forward; got {seconds!r} seconds")
        self._now += seconds

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        """A new asyncio event loop on this clock."""
        return _VirtualLoop(self)

    @property
    def anyio_backend(self) -> tuple[str, dict[str, Any]]:
        """``("asyncio", {"loop_factory": ...})``: what an ``anyio_backend`` fixture returns."""
        return "asyncio", {"loop_factory": self.new_event_loop}

    def run(self, main: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
        """Run ``main(*args)`` on a new loop on this clock and return its result."""
        with asyncio.Runner(loop_factory=self.new_event_loop) as runner:
            return runner.run(main(*args))


class _VirtualSelector(selectors.DefaultSelector):
    """Waits for I/O for real, up to ``autojump``; then jumps the clock to the next timer."""

    def __init__(self, clock: VirtualClock) -> None:
        super().__init__()
        self._clock = clock

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None or timeout <= 0:  # nothing scheduled, or something ready now
            return super().select(timeout)
        events = super().select(min(timeout, self._clock.autojump))
        if not events:
            self._clock._now += timeout
        return events


class _VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self, clock: VirtualClock) -> None:
        super().__init__(_VirtualSelector(clock))
        self._virtual_clock = clock

    def time(self) -> float:
        return self._virtual_clock._now


def _open_fds() -> set[int]:
    try:
        listed = {int(name) for name in os.listdir("/proc/self/fd")}
    except OSError:  # no /proc: no check
        return set()
    return {fd for fd in listed if _is_open(fd)}  # less the listing's own, closed by now


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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
