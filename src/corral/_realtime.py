"""The real-time recipe: what a control loop's thread asks of the kernel, step by step.

Each step is logged with what took effect, and each degrades with a warning
where it is not permitted. Used as context managers, so ``run_here`` gives
the calling thread back as it was (a child just exits).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import os
import platform
import resource
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from ._region import Flag

logger = logging.getLogger(__name__)

_PR_SET_TIMERSLACK: Final = 29
_PR_GET_TIMERSLACK: Final = 30
_MCL_CURRENT: Final = 1
_MCL_FUTURE: Final = 2
_CAP_IPC_LOCK: Final = 14
_SLICE_NS: Final = 100_000  # the shortest slice the kernel accepts
_SCHED_SETATTR: Final = {"x86_64": 314, "aarch64": 274}  # syscall numbers
DMA_LATENCY: Final = "/dev/cpu_dma_latency"


@dataclass
class Facts:
    """What the recipe achieved (published in the region's header)."""

    policy: str = "SCHED_OTHER"
    priority: int = 0
    flags: int = 0


def _libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


@contextlib.contextmanager
def realtime(
    name: str, cpu: tuple[int, ...] | None, *, enabled: bool, priority: int, restore: bool
) -> Iterator[Facts]:
    """Pin, raise the scheduling class, lock memory and hold the DMA latency.

    ``cpu`` is pinned here only with ``restore`` (``run_here``): a child
    pinned itself before importing user code.
    """
    facts = Facts()
    with contextlib.ExitStack() as undo:
        _pin(name, cpu, facts, undo if restore else None)
        if enabled:
            libc = _libc()
            _schedule(name, priority, facts, libc, undo if restore else None)
            _lock_memory(name, facts, libc, undo if restore else None)
            undo.enter_context(_dma_latency(name, facts))
        else:
            logger.info("%s: realtime=False: normal scheduling, memory not locked", name)
        yield facts


def _pin(
    name: str, cpu: tuple[int, ...] | None, facts: Facts, undo: contextlib.ExitStack | None
) -> None:
    if cpu is None:
        logger.info("%s: not pinned (pass cpu= to give the loop a core of its own)", name)
        return
    if undo is not None:
        before = os.sched_getaffinity(0)
        os.sched_setaffinity(0, cpu)
        undo.callback(os.sched_setaffinity, 0, before)
    if set(os.sched_getaffinity(0)) == set(cpu):
        facts.flags |= Flag.PINNED
        logger.info("%s: pinned to cpu %s", name, ",".join(map(str, cpu)))
    else:
        logger.warning("%s: could not pin to cpu %s; running unpinned", name, cpu)


def _schedule(
    name: str,
    priority: int,
    facts: Facts,
    libc: ctypes.CDLL | None,
    undo: contextlib.ExitStack | None,
) -> None:
    if priority:
        before = (os.sched_getscheduler(0), os.sched_getparam(0))
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        except OSError as error:
            logger.warning(
                "%s: SCHED_FIFO is not permitted here (%s); staying SCHED_OTHER, best effort. "
                "Expect lateness of tens to hundreds of microseconds under load; run as root "
                "or grant CAP_SYS_NICE (or set an rtprio limit) for SCHED_FIFO",
                name,
                error.strerror,
            )
        else:
            facts.policy, facts.priority = "SCHED_FIFO", priority
            logger.info("%s: SCHED_FIFO priority %d", name, priority)
            if undo is not None:
                undo.callback(os.sched_setscheduler, 0, *before)
            return
    _best_effort(name, libc, undo)


def _best_effort(name: str, libc: ctypes.CDLL | None, undo: contextlib.ExitStack | None) -> None:
    """SCHED_OTHER, made as prompt as it gets without privileges.

    A 1 ns timer slack (sleeps end on time, not up to 50 µs later) and a
    short time slice (EEVDF, Linux 6.12+): a woken loop then takes the core
    from a busy process within ~100 µs, not at the end of its slice.
    """
    if libc is None:
        return
    if undo is not None:  # sched_setattr sets SCHED_OTHER: give back what the thread had
        policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
        undo.callback(_restore_policy, policy, param)
    done = []
    slack = libc.prctl(_PR_GET_TIMERSLACK, 0, 0, 0, 0)
    if libc.prctl(_PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0:
        done.append("a 1 ns timer slack")
        if undo is not None:
            undo.callback(libc.prctl, _PR_SET_TIMERSLACK, slack, 0, 0, 0)
    if _set_slice(libc, _SLICE_NS):
        done.append(f"a {_SLICE_NS // 1000} us time slice")
        if undo is not None:
            undo.callback(_set_slice, libc, 0)  # 0: the kernel's default
    logger.info("%s: SCHED_OTHER with %s", name, " and ".join(done) or "default settings")


def _restore_policy(policy: int, param: os.sched_param) -> None:
    if (os.sched_getscheduler(0), os.sched_getparam(0)) != (policy, param):
        try:
            os.sched_setscheduler(0, policy, param)
        except OSError as error:
            logger.warning("could not give the thread its scheduling policy back: %s", error)


def _set_slice(libc: ctypes.CDLL, slice_ns: int) -> bool:
    """Ask for a SCHED_OTHER time slice of ``slice_ns`` (sched_setattr's sched_runtime)."""
    number = _SCHED_SETATTR.get(platform.machine())
    if number is None:
        return False
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=os.SCHED_OTHER,
        sched_nice=os.getpriority(os.PRIO_PROCESS, 0),
        sched_runtime=slice_ns,
    )
    return bool(libc.syscall(number, 0, ctypes.byref(attr), 0) == 0)


class _SchedAttr(ctypes.Structure):
    _fields_ = (
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    )


def _lock_memory(
    name: str, facts: Facts, libc: ctypes.CDLL | None, undo: contextlib.ExitStack | None
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    # With a finite limit, MCL_FUTURE would make later allocations fail once
    # the limit is reached: lock only when the limit does not apply.
    if not _capable(_CAP_IPC_LOCK) and soft != resource.RLIM_INFINITY:
        logger.warning(
            "%s: memory not locked: RLIMIT_MEMLOCK is %d KiB (raise it with `ulimit -l "
            "unlimited`, or grant CAP_IPC_LOCK); page faults may make ticks late",
            name,
            soft // 1024,
        )
        return
    locked_before = _locked_kib()
    if libc is None or libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
        errno = ctypes.get_errno()
        logger.warning("%s: memory not locked: mlockall failed (%s)", name, os.strerror(errno))
        return
    facts.flags |= Flag.MEMORY_LOCKED
    logger.info("%s: memory locked (mlockall current and future)", name)
    if undo is not None and not locked_before:  # unlock only what was not locked before
        undo.callback(libc.munlockall)


def _locked_kib() -> int:
    """Memory this process has locked already (VmLck), in KiB."""
    return int(_status("/proc/self/status", "VmLck:") or "0")


def _capable(bit: int) -> bool:
    """Whether this thread has capability ``bit`` in its effective set (Linux)."""
    return bool(int(_status("/proc/thread-self/status", "CapEff:") or "0", 16) >> bit & 1)


def _status(path: str, key: str) -> str | None:
    """The first word after ``key`` in a /proc status file (None if not there)."""
    with contextlib.suppress(OSError), open(path) as status:
        for line in status:
            if line.startswith(key):
                return line.split()[1]
    return None


@contextlib.contextmanager
def _dma_latency(name: str, facts: Facts) -> Iterator[None]:
    """Hold /dev/cpu_dma_latency at 0 (no deep C-states) for as long as the file is open."""
    try:
        fd = os.open(DMA_LATENCY, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as error:
        logger.info("%s: %s not held (%s)", name, DMA_LATENCY, error.strerror)
        yield
        return
    try:
        os.write(fd, struct.pack("i", 0))
        facts.flags |= Flag.DMA_LATENCY
        logger.info("%s: %s held at 0 us", name, DMA_LATENCY)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def frozen_gc(name: str, facts: Facts, *, enabled: bool) -> Iterator[None]:
    """After setup(): collect, freeze what is left, and keep the collector out of ticks.

    Young garbage is still collected, between ticks when the next deadline
    is far (see ``Ticker.idle``).
    """
    if not enabled:
        yield
        return
    was_enabled = gc.isenabled()
    was_frozen = gc.get_freeze_count() > 0  # by the host: leave that as it was
    gc.collect()
    gc.freeze()
    gc.disable()
    facts.flags |= Flag.GC_FROZEN
    logger.info(
        "%s: gc collected, %d objects frozen, automatic collection off during ticks",
        name,
        gc.get_freeze_count(),
    )
    try:
        yield
    finally:
        if not was_frozen:
            gc.unfreeze()
        if was_enabled:
            gc.enable()
