"""``corral.ControlLoop``: a fixed-rate loop, run in a pinned child or in-process.

Subclass it, declare ``inputs`` / ``outputs`` and write ``step()``; start it
with ``sup.control_loop(Controller(), hz=1000, cpu=1)`` (see ``_loophost``)
or run it here with :meth:`ControlLoop.run_here`.
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from time import perf_counter_ns
from types import MappingProxyType
from typing import Final, Literal, final, get_args

from . import _realtime
from ._errors import StepFailed
from ._loopstats import ControlLoopStatistics, summarize
from ._realtime import Facts, frozen_gc
from ._region import HEADER, Region, W
from ._slots import Inputs, Layout, Outputs, SlotWriter, Value
from ._spawn import check_cpu
from ._ticker import Ticker

logger = logging.getLogger(__name__)

Overrun = Literal["skip", "catch-up"]
MAX_HZ: Final = 100_000
MIN_HZ: Final = 0.001  # a period of 1000 s
DEFAULT_HISTORY: Final = 65_536


class ControlLoop:
    """Base class of a fixed-rate loop: ``step()`` runs once every period.

    >>> class Counter(corral.ControlLoop):
    ...     inputs = {"increment": 1}
    ...     outputs = {"total": 0}
    ...     def step(self) -> None:
    ...         self.outputs["total"] += self.inputs["increment"]
    >>> counter = Counter()
    >>> stats = counter.run_here(hz=1000, ticks=100)
    >>> counter.outputs["total"], stats.ticks
    (100, 100)

    Declare slots as class attributes (or instance attributes set in
    ``__init__``): ``inputs`` (written by the host with ``await
    rt.set(name, value)``) and ``outputs`` (read by the host with ``await
    rt.get(name)`` or ``rt.watch(name)``), each a dict of names to default
    values. A value is a float, int or bool, or a tuple of them of fixed
    length: the default fixes its type and size. Inside ``step()``,
    ``self.inputs[name]`` reads the host's latest value and
    ``self.outputs[name] = value`` publishes one; neither ever waits.

    ``setup()`` runs once in the loop's process before the first tick (open
    devices, allocate buffers), ``teardown()`` once after the last, even
    when ``step()`` raised. Other public methods are the host's to call (``await
    rt.method(...)``), served between ticks. ``self.tick`` is the number of
    the tick being run (tick ``k`` is due ``k`` periods after the first);
    ``self.stop()`` ends the loop after the current tick.
    """

    inputs: Mapping[str, Value] = MappingProxyType({})
    outputs: MutableMapping[str, Value] = {}  # noqa: RUF012  (replaced per instance when run)
    tick: int = -1
    _corral_stop: bool = False
    _corral_name: str = ""
    _corral_warned: float = -math.inf
    _corral_overruns: int = 0

    def setup(self) -> None:
        """Prepare, in the loop's process, before the first tick (override as needed)."""

    def step(self) -> None:
        """One tick's work (override this): read ``self.inputs``, write ``self.outputs``.

        A loop whose class does not define it is refused at start.
        """

    def teardown(self) -> None:
        """Clean up after the last tick, whether the loop stopped, closed or failed."""

    def on_overrun(self, tick: int, late: float) -> None:
        """Called right after a step that ended ``late`` seconds past the next deadline.

        The default logs an "OVERTIME" warning, at most once a second, with
        the number of overruns since the last warning. Override to react
        (runs in the loop, between ticks: keep it short).
        """
        self._corral_overruns += 1
        now = time.monotonic()
        if now - self._corral_warned < 1.0:
            return
        logger.warning(
            "%s OVERTIME: tick %d ended %.3f ms after the next deadline "
            "(%d overrun(s) since the last warning)",
            self._corral_name or type(self).__qualname__,
            tick,
            late * 1e3,
            self._corral_overruns,
        )
        self._corral_warned = now
        self._corral_overruns = 0

    def stop(self) -> None:
        """End the loop after the current tick (from ``step()``, or another thread)."""
        self._corral_stop = True

    def run_here(
        self,
        hz: float,
        *,
        ticks: int | None = None,
        duration: float | None = None,
        overrun: Overrun = "skip",
        spin: float | None = None,
        cpu: int | tuple[int, ...] | list[int] | None = None,
        realtime: bool = False,
        priority: int = 50,
        gc_freeze: bool = False,
        history: int = DEFAULT_HISTORY,
    ) -> ControlLoopStatistics:
        """Run the loop on this thread (blocking) and return its statistics.

        For tests, and for hosts without a core to spare. It runs setup(),
        then ticks until ``ticks`` have run, ``duration`` seconds have passed
        or ``stop()`` is called, then teardown(). Afterwards ``self.inputs``
        and ``self.outputs`` are plain dicts of the last values. ``cpu``,
        ``realtime`` and ``gc_freeze`` apply the real-time recipe to this
        thread, and undo it on return. A step that raises stops the loop and
        raises :class:`~corral.StepFailed` naming the tick.

        From async code, run it in a thread (``await
        anyio.to_thread.run_sync(loop.run_here, 100)``) and end it with
        ``loop.stop()``; the thread holds the GIL while it spins, so give it
        ``spin=0`` there.
        """
        options = LoopOptions.check(
            self, hz, overrun=overrun, spin=spin, budget=None, cpu=cpu, realtime=realtime,
            priority=priority, gc_freeze=gc_freeze, history=history, name=None,
        )  # fmt: skip
        if ticks is not None and (isinstance(ticks, bool) or not isinstance(ticks, int)):
            raise TypeError(f"ticks= must be a whole number, got {ticks!r}")
        if duration is not None and not duration > 0:
            raise ValueError(f"duration= must be a number of seconds > 0, got {duration!r}")
        region = Region.create(options.layout, options.history, shared=False)
        SlotWriter(options.layout, region.view).reset(options.layout.defaults)
        slots, outputs = bind(self, region, options.name)
        until = None if duration is None else perf_counter_ns() + int(duration * 1e9)
        ticker = Ticker(
            self, region, options.period, skip=options.skip, spin=options.spin,
            outputs=outputs, cpu_clock=time.thread_time_ns, collect_garbage=gc_freeze,
        )  # fmt: skip
        try:
            with _realtime.realtime(
                options.name, options.cpu, enabled=realtime, priority=priority, restore=True
            ) as facts:
                publish(region, facts)
                self.setup()
                try:
                    with frozen_gc(options.name, facts, enabled=gc_freeze):
                        publish(region, facts)
                        ticker.begin(perf_counter_ns() + options.period)
                        ticker.run_blocking(ticks, until)
                finally:
                    teardown(self, options.name, quiet=ticker.failure is not None)
        finally:
            self.inputs, self.outputs = dict(self.inputs), dict(self.outputs)
            slots.release()
        if ticker.failure is not None:
            tick, error = ticker.failure
            if not isinstance(error, Exception):  # sys.exit(), Ctrl-C: as they are
                raise error
            raise StepFailed(options.name, tick, error) from error
        return summarize(region, options.name)


def bind(loop: ControlLoop, region: Region, name: str) -> tuple[SlotWriter, Outputs]:
    """Give ``loop`` its slots in ``region`` and a fresh run's flags.

    Returns the writer they use and the outputs (which the ticker watches).
    """
    slots = SlotWriter(region.layout, region.view)
    outputs = Outputs(slots)
    loop.inputs, loop.outputs = Inputs(slots), outputs
    loop._corral_stop, loop._corral_name = False, name
    return slots, outputs


def teardown(loop: ControlLoop, name: str, *, quiet: bool) -> None:
    """Run ``loop.teardown()``; with ``quiet`` (a failure is already on its way) only log
    what it raises."""
    try:
        loop.teardown()
    except Exception:
        if not quiet:
            raise
        logger.exception("%s: teardown() raised", name)


def publish(region: Region, facts: Facts) -> None:
    """Put what the real-time recipe achieved in the region's header."""
    words = region.words
    words[W.POLICY] = facts.policy == "SCHED_FIFO"
    words[W.PRIORITY] = facts.priority
    words[W.FLAGS] = facts.flags


@final
@dataclass(frozen=True, slots=True)
class LoopOptions:
    """A control loop's checked options (pickled to its child with the object)."""

    name: str
    period: int  # ns
    skip: bool
    spin: int  # ns
    budget: int  # ns
    cpu: tuple[int, ...] | None
    realtime: bool
    priority: int
    gc_freeze: bool
    history: int
    layout: Layout
    memfd: int = -1
    eventfd: int = -1

    @classmethod
    def check(
        cls,
        obj: object,
        hz: float,
        *,
        overrun: str,
        spin: float | None,
        budget: float | None,
        cpu: int | tuple[int, ...] | list[int] | None,
        realtime: bool,
        priority: int,
        gc_freeze: bool,
        history: int,
        name: str | None,
    ) -> LoopOptions:
        """Validate everything, with errors that say what to pass instead."""
        if not isinstance(obj, ControlLoop):
            raise TypeError(
                f"a control loop is an instance of a corral.ControlLoop subclass, got {obj!r}"
            )
        if type(obj).step is ControlLoop.step:
            raise TypeError(f"{type(obj).__qualname__} must define step(), the work of one tick")
        for hook in ("setup", "step", "teardown", "on_overrun"):
            if inspect.iscoroutinefunction(getattr(type(obj), hook)):
                raise TypeError(
                    f"{type(obj).__qualname__}.{hook}() must be a plain def: the loop calls it "
                    "between deadlines and never awaits (do async work in host-called methods)"
                )
        if isinstance(hz, bool) or not isinstance(hz, int | float) or not MIN_HZ <= hz <= MAX_HZ:
            raise ValueError(f"hz= must be a rate in Hz from {MIN_HZ} to {MAX_HZ}; got {hz!r}")
        period = round(1e9 / hz)
        if overrun not in get_args(Overrun):
            raise ValueError(f'overrun= must be "skip" or "catch-up", got {overrun!r}')
        spin_ns = _fraction("spin", spin, period, min(150_000, period // 4))
        budget_ns = _fraction("budget", budget, period, min(200_000, period // 4))
        if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 99:
            raise ValueError(
                "priority= is a SCHED_FIFO priority from 1 to 99, or 0 for SCHED_OTHER "
                f"(best effort); got {priority!r}"
            )
        if isinstance(history, bool) or not isinstance(history, int) or history < 1:
            raise ValueError(f"history= is a number of ticks >= 1, got {history!r}")
        layout = Layout(obj.inputs, obj.outputs, HEADER)
        return cls(
            name=name or type(obj).__qualname__,
            period=period,
            skip=overrun == "skip",
            spin=spin_ns,
            budget=budget_ns,
            cpu=check_cpu(cpu),
            realtime=bool(realtime),
            priority=priority,
            gc_freeze=bool(gc_freeze),
            history=history,
            layout=layout,
        )


def _fraction(label: str, value: float | None, period: int, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{label}= is a number of seconds >= 0, got {value!r}")
    ns = round(value * 1e9)
    if ns >= period:
        raise ValueError(
            f"{label}={value!r} s is not shorter than the period ({period / 1e9:g} s); "
            "pass a smaller value or a lower hz="
        )
    return ns
