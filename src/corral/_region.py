"""The memory a control loop shares with its host: a header, the slots, a ring.

One region per loop, in 8-byte words::

    header (HEADER words)  counters and facts the loop publishes (see W)
    slots                  see ``_slots``: a sequence word and a value each
    ring (3 words a tick)  deadline, wake and end of step of the last ticks

For a loop in a child it is a ``memfd`` both processes map: no file to
clean up, freed when the last mapping goes. For ``run_here`` it is plain
memory. Only the loop writes the header (except :data:`W.WATCHERS`) and the
ring; the host reads them without stopping it.
"""

from __future__ import annotations

import mmap
import os
from typing import Any, Final, final

from ._slots import Layout

HEADER: Final = 32  # words
MAGIC: Final = 0x636F7272616C0001  # "corral", layout version 1


class W:
    """Indices of the header's words."""

    MAGIC: Final = 0
    RUNNING: Final = 1  # 1 while ticking
    PERIOD: Final = 3
    TICKS: Final = 4  # ticks run (the ring holds the last of them)
    SKIPPED: Final = 5
    OVERRUNS: Final = 6
    MAX_LATE: Final = 7
    MAX_STEP: Final = 8
    CPU0: Final = 9  # CPU time (ns) when ticking began
    WALL0: Final = 10
    CPU_NOW: Final = 11  # CPU time and wall clock, refreshed every few ticks
    WALL_NOW: Final = 12
    POLICY: Final = 13  # 1: SCHED_FIFO in effect
    PRIORITY: Final = 14
    FLAGS: Final = 15  # see Flag
    WATCHERS: Final = 16  # written by the host: > 0 while someone watches outputs
    STARVED: Final = 17  # host turns forced on a loop with no room between ticks


class Flag:
    """Bits of :data:`W.FLAGS`: what the real-time recipe achieved."""

    PINNED: Final = 1
    MEMORY_LOCKED: Final = 2
    GC_FROZEN: Final = 4
    DMA_LATENCY: Final = 8


@final
class Region:
    """One loop's shared memory (see the module docstring)."""

    def __init__(self, layout: Layout, history: int, memory: Any, fd: int | None) -> None:
        self.layout = layout
        self.history = history
        self.fd = fd
        self._memory = memory
        self.view = memoryview(memory)
        self.words = self.view.cast("q")
        self.ring_start = layout.end

    @staticmethod
    def size(layout: Layout, history: int) -> int:
        return (layout.end + 3 * history) * 8

    @classmethod
    def create(cls, layout: Layout, history: int, *, shared: bool) -> Region:
        """New zeroed memory: a memfd to share with a child, or plain memory."""
        size = cls.size(layout, history)
        if not shared:
            return cls(layout, history, bytearray(size), None)
        fd = os.memfd_create("corral-control-loop", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, size)
            memory = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        region = cls(layout, history, memory, fd)
        region.words[W.MAGIC] = MAGIC
        return region

    @classmethod
    def attach(cls, layout: Layout, history: int, fd: int) -> Region:
        """The child's mapping of the host's memfd (the fd is closed: the map keeps it)."""
        try:
            memory = mmap.mmap(fd, cls.size(layout, history))
        finally:
            os.close(fd)
        region = cls(layout, history, memory, None)
        if region.words[W.MAGIC] != MAGIC:
            raise RuntimeError("the control loop's shared memory is not what the host made")
        return region

    def start_run(self) -> None:
        """Zero the counters and the ring for a new run (slot values are kept)."""
        words = self.words
        for index in range(1, HEADER):
            if index != W.WATCHERS:
                words[index] = 0
        ring = self.ring_start
        self.view[ring * 8 :] = bytes(len(self.view) - ring * 8)

    def snapshot(self) -> tuple[Region, list[str]]:
        """A private copy, readable after the loop and its shared memory are gone.

        Also returns the slots a dying loop left half written (their sequence
        odd): the copy marks them complete, so reading them does not wait.
        """
        copy = Region(self.layout, self.history, bytearray(self.view), None)
        copy.words[W.RUNNING] = 0
        return copy, copy.complete_writes()

    def complete_writes(self) -> list[str]:
        """Mark slots left half written by a writer that is gone as complete; their names."""
        torn = []
        for spec in self.layout.specs.values():
            if self.words[spec.word] & 1:
                self.words[spec.word] += 1
                torn.append(spec.name)
        return torn

    def close(self) -> None:
        """Unmap and close (views handed out must have been released)."""
        self.words.release()
        self.view.release()
        if isinstance(self._memory, mmap.mmap):
            self._memory.close()
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def ring(self) -> list[int]:
        """Flat ``[deadline, wake, end, ...]`` of the last ticks run, oldest first."""
        return ring_entries(*self.copy_ring())

    def copy_ring(self) -> tuple[bytes, int, int, int, int]:
        """The raw ring and its counters, copied while the loop may be writing it.

        A memcpy: cheap enough for the event loop; :func:`ring_entries` does
        the rest, anywhere.
        """
        words, start = self.words, self.ring_start
        running = words[W.RUNNING]
        before = words[W.TICKS]
        raw = bytes(self.view[start * 8 :])
        return raw, self.history, running, before, words[W.TICKS]


def ring_entries(raw: bytes, history: int, running: int, before: int, after: int) -> list[int]:
    """:meth:`Region.copy_ring`'s copy as flat ``[deadline, wake, end, ...]``, oldest first.

    Entries overwritten during the copy, and the one a running loop may have
    been half way through, are left out.
    """
    # a running loop may be writing the entry of tick `after` over the oldest one
    first = max(0, after - history + (1 if running else 0), before - history)
    count = before - first
    if count <= 0:
        return []
    entries = memoryview(raw).cast("q").tolist()
    index = first % history
    if index + count <= history:
        return entries[3 * index : 3 * (index + count)]
    return entries[3 * index :] + entries[: 3 * (index + count - history)]
