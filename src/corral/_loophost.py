"""The host's half of a control loop: its shared memory, its proxy, its statistics.

``sup.control_loop(obj, hz=...)`` and ``corral.control_loop(...)`` build a
:class:`LoopHost` (the memfd the child maps, an eventfd it signals when
outputs change) and a :class:`Service` running ``_loopchild.serve_loop``.
The proxy adds ``set``/``get``/``watch``/``statistics`` to the usual calls:
they touch shared memory only, never the loop's process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import AsyncIterator
from typing import Final, Generic, TypedDict, TypeVar, final

import anyio
import anyio.lowlevel

from ._control import DEFAULT_HISTORY, ControlLoop, LoopOptions, Overrun
from ._lifetime import RestartPolicy
from ._loopchild import serve_loop
from ._loopstats import ControlLoopStatistics, summarize_copy
from ._proxy import OWN_NAMES, ProxyBase
from ._region import HEADER, Region, W
from ._service import Service
from ._serving import Member, describe
from ._slots import SlotSpec, SlotWriter, Value
from ._threads import run_in_own_thread

logger = logging.getLogger(__name__)
L = TypeVar("L", bound=ControlLoop)
_INLINE_STATISTICS: Final = 4096  # ticks summarized on the loop; more go to a thread


class LoopKeywords(TypedDict, total=False):
    """The options of ``control_loop()`` after ``hz`` (see docs/control-loop.md)."""

    cpu: int | tuple[int, ...] | list[int] | None
    realtime: bool
    overrun: Overrun
    spin: float | None
    budget: float | None
    priority: int
    gc_freeze: bool
    history: int
    name: str | None
    restart: RestartPolicy
    max_restarts: int | None
    restart_window: float | None
    startup_timeout: float
    log_level: int | None


def open_loop(loop: ControlLoop, hz: float, options: LoopKeywords) -> tuple[Service, LoopHost]:
    """Check everything and build the (not yet started) service and its shared memory."""
    service_options = {
        key: options.pop(key)
        for key in ("restart", "max_restarts", "restart_window", "startup_timeout", "log_level")
        if key in options
    }
    checked = LoopOptions.check(
        loop,
        hz,
        overrun=options.get("overrun", "skip"),
        spin=options.get("spin"),
        budget=options.get("budget"),
        cpu=options.get("cpu"),
        realtime=options.get("realtime", True),
        priority=options.get("priority", 50),
        gc_freeze=options.get("gc_freeze", True),
        history=options.get("history", DEFAULT_HISTORY),
        name=options.get("name"),
    )
    if unknown := options.keys() - LoopKeywords.__annotations__.keys():
        raise TypeError(f"control_loop() got unexpected keyword(s): {', '.join(sorted(unknown))}")
    threaded = [n for n, kind in describe(type(loop)).items() if kind is Member.THREAD]
    if threaded:
        raise TypeError(
            f"{type(loop).__qualname__}: @corral.threaded method(s) {', '.join(threaded)} would "
            "run beside the loop and take the GIL from it; make them plain methods"
        )
    host = LoopHost(checked)
    try:
        service = Service(
            "control",
            serve_loop,
            (loop, host.options),
            {},
            cpu=checked.cpu,
            name=checked.name,
            pass_fds=(host.options.memfd, host.options.eventfd),
            on_finished=host.close,
            **service_options,  # type: ignore[arg-type]
        )
    except BaseException:
        host.close()
        raise
    return service, host


@final
class LoopHost:
    """The host's side of one loop's shared memory, across the loop's restarts."""

    def __init__(self, options: LoopOptions) -> None:
        self.region = Region.create(options.layout, options.history, shared=True)
        self.slots = SlotWriter(options.layout, self.region.view)
        self.slots.reset(options.layout.defaults)
        self.eventfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        assert self.region.fd is not None
        self.options = dataclasses.replace(options, memfd=self.region.fd, eventfd=self.eventfd)
        self.closed = False
        self._reading = False
        self._woken = anyio.Event()

    def close(self) -> None:
        """Keep a private copy for late readers; unmap and close the fds (the loop is gone)."""
        if self.closed:
            return
        self.closed = True
        snapshot, torn = self.region.snapshot()
        _warn_torn(self.options.name, torn)
        self.slots.release()
        self.region.close()
        self.region, self.slots = snapshot, SlotWriter(self.options.layout, snapshot.view)
        anyio.notify_closing(self.eventfd)
        os.close(self.eventfd)
        self._wake()

    async def changed(self) -> None:
        """Wait until the loop signals an output change (or the loop is gone)."""
        if self.closed:
            raise anyio.ClosedResourceError
        if self._reading:  # one task reads the eventfd; the others wait for it
            await self._woken.wait()
            return
        self._reading = True
        try:
            await anyio.wait_readable(self.eventfd)
            with contextlib.suppress(BlockingIOError):  # another reader was first
                os.eventfd_read(self.eventfd)
        finally:
            self._reading = False
            self._wake()

    def _wake(self) -> None:
        woken, self._woken = self._woken, anyio.Event()
        woken.set()


class ControlLoopProxy(ProxyBase[L], Generic[L]):
    """The host's handle on a running :class:`~corral.ControlLoop`.

    Besides the loop object's own methods (``await rt.method(...)``, served
    between ticks), it has ``set``, ``get``, ``watch`` and ``statistics``,
    which read and write shared memory and never wait for the loop.
    """

    _own_names = OWN_NAMES | {"set", "get", "watch"}

    def __init__(self, service: Service, host: LoopHost) -> None:
        super().__init__(service)
        object.__setattr__(self, "_host", host)

    async def set(self, name: str, value: Value) -> None:
        """Set input ``name``; the loop's next ``self.inputs[name]`` reads it.

        Raises :class:`ValueError` for a name that is not a declared input,
        :class:`TypeError` (or ValueError, for a wrong length) for a value
        the slot cannot hold, :class:`~corral.WorkerStopped` once closed.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        host: LoopHost = self._host
        spec = host.options.layout.spec(name, "input")
        if host.closed:
            raise self._service.stopped_error()
        host.slots.write(spec, value)

    async def get(self, name: str) -> Value:
        """The latest value of slot ``name`` (an output, or an input as last set).

        After the loop has closed, the last values it wrote.
        """
        await anyio.lowlevel.checkpoint_if_cancelled()
        host: LoopHost = self._host
        return await _read(host, host.options.layout.spec(name), self._service)

    def watch(self, name: str) -> AsyncIterator[Value]:
        """``async for value in rt.watch(name)``: output ``name`` now, then each time it changes.

        Woken by an eventfd the loop signals after a step that changed an
        output; values written faster than this task reads them are
        coalesced (the latest is yielded). Ends when the loop is closed;
        raises the loop's failure (e.g. :class:`~corral.StepFailed`) if it
        failed.
        """
        host: LoopHost = self._host
        return _Watch(self._service, host, host.options.layout.spec(name, "output"))

    async def statistics(self) -> ControlLoopStatistics:
        """Ticks, skips, overruns, lateness/period error/step percentiles, CPU %, recipe facts.

        Read from shared memory (the loop is not disturbed), also after the
        loop has stopped. See :class:`~corral.ControlLoopStatistics`.
        """
        host: LoopHost = self._host
        service: Service = self._service
        ring = host.region.copy_ring()  # first: the counters read after cover all of it
        words = host.region.words[:HEADER].tolist()
        if service.pid is None:  # killed, or between restarts: whatever its header says
            words[W.RUNNING] = 0
        arguments = (ring, words, service.name, service.restarts)
        if min(words[W.TICKS], host.options.history) <= _INLINE_STATISTICS:
            await anyio.lowlevel.checkpoint()
            return summarize_copy(*arguments)
        statistics: ControlLoopStatistics = await run_in_own_thread(
            summarize_copy, *arguments, name=f"corral-statistics:{service.name}"
        )
        return statistics


async def _read(host: LoopHost, spec: SlotSpec, service: Service) -> Value:
    while True:
        for _ in range(100):
            read = host.slots.read(spec)
            if read is not None:
                return read[1]
        if service.pid is None and not service.launching:  # no loop: the write died with it
            _warn_torn(service.name, host.region.complete_writes())
            continue
        await anyio.lowlevel.checkpoint()  # the writer was preempted mid-write


def _warn_torn(name: str, torn: list[str]) -> None:
    if torn:
        logger.warning(
            "control loop %r died while writing %s: %s may hold part of a new value",
            name,
            ", ".join(map(repr, torn)),
            "they" if len(torn) > 1 else "it",
        )


@final
class _Watch:
    __slots__ = ("_done", "_host", "_last", "_service", "_spec")

    def __init__(self, service: Service, host: LoopHost, spec: SlotSpec) -> None:
        self._service = service
        self._host = host
        self._spec = spec
        self._last: int | None = None
        self._done = False
        host.region.words[W.WATCHERS] += 1

    def __aiter__(self) -> _Watch:
        return self

    async def __anext__(self) -> Value:
        host = self._host
        while not self._done:
            sequence = host.slots.sequence(self._spec)
            if sequence != self._last and not sequence & 1:
                read = host.slots.read(self._spec)
                if read is not None:
                    self._last, value = read
                    await anyio.lowlevel.checkpoint()
                    return value
            if host.closed:
                self._finish()
                if self._service.state == "failed" and self._service.error is not None:
                    raise self._service.error
                break
            try:
                await host.changed()
            except (anyio.ClosedResourceError, OSError):  # closed while waiting: look once more
                continue
        self._finish()
        raise StopAsyncIteration

    async def aclose(self) -> None:
        """Stop watching."""
        self._finish()

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            if not self._host.closed:
                self._host.region.words[W.WATCHERS] -= 1

    def __del__(self) -> None:
        self._finish()
