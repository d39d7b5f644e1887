"""Services and processes for tests/test_regress_zygote.py and test_regress_process2.py.

Each child imports this module: keep it light.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from typing import Any

import corral


def _first_time(marker: str) -> bool:
    """True the first time it is asked about ``marker`` (a file), in any process."""
    if os.path.exists(marker):
        return False
    with open(marker, "w"):
        pass
    return True


class Probe:
    """A service that says what its process sees of itself."""

    def umask(self) -> int:
        mask = os.umask(0)
        os.umask(mask)
        return mask

    def affinity(self) -> list[int]:
        return sorted(os.sched_getaffinity(0))

    def getpid(self) -> int:
        return os.getpid()


# -- processes ----------------------------------------------------------------------------


class RaisesBase(corral.Process):
    """run() raises a BaseException that is not an Exception (it ends the child)."""

    runs = 1

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def run(self) -> None:
        if self.kind == "exit":
            sys.exit(3)
        raise KeyboardInterrupt


class HangsWithNoLifeLeft(corral.Process):
    """Tells its pid, then its sync run hangs past its limit, with no life left to retry."""

    runs = 1
    timeouts = corral.Timeouts(run=0.2)

    def run(self) -> None:
        self.tell(os.getpid())
        time.sleep(30)


def _refuse_to_load() -> Any:
    raise RuntimeError("this value will not unpickle")


class LoadsNowhere:
    """A value that pickles, and whose pickle will not load."""

    def __reduce__(self) -> Any:
        return (_refuse_to_load, ())


class ResultLoadsNowhere(corral.Process):
    """Its result pickles in the child, and will not unpickle in the host."""

    runs = 1

    def run(self) -> None:
        pass

    def result(self) -> LoadsNowhere:
        return LoadsNowhere()


class TellsWhatLoadsNowhere(corral.Process):
    """Tells the host a value that will not unpickle there, then "after"; then ends."""

    runs = 1

    def run(self) -> None:
        self.tell(LoadsNowhere())
        self.tell("after")

    def result(self) -> str:
        return "done"


class FailsToStart(corral.Process):
    """Will not rebuild in its child (its unpickling raises): the start fails."""

    runs = 1

    def __init__(self) -> None:
        self.state = "something to unpickle"  # (an empty state skips __setstate__)

    def __setstate__(self, state: dict[str, Any]) -> None:
        raise ValueError("cannot rebuild in the child")

    def run(self) -> None:
        pass


class HangsOnceThenSpinsTelling(corral.Process):
    """runs=None. Run 1 hangs (sync, past its limit) in the first child; the new child
    tells "retried", then its runs return at once until stopped."""

    lives = 2
    timeouts = corral.Timeouts(run=0.3)

    def __init__(self, marker: str) -> None:
        self.marker = marker
        self.retried = False

    def run(self) -> None:
        if _first_time(self.marker):
            self.tell("hanging")
            time.sleep(30)
        elif not self.retried:
            self.retried = True
            self.tell("retried")

    def result(self) -> int:
        return self.current_run


class KilledAfterItsOutcome(corral.Process):
    """Runs once. In its first child: tells its pid, waits for the host's go (a file), and
    is killed 0.2 s after its cycle ends (as by the OOM killer), while it waits for the ack."""

    runs = 1

    def __init__(self, go: str, first: str) -> None:
        self.go = go
        self.first = first
        self.which = ""

    def run(self) -> None:  # (sync, no limit: it holds the child's loop while it waits)
        if not _first_time(self.first):
            self.which = "second child"
            return
        self.which = "first child"
        self.tell(os.getpid())
        deadline = time.monotonic() + 10
        while not os.path.exists(self.go) and time.monotonic() < deadline:
            time.sleep(0.005)
        threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGKILL)).start()

    def result(self) -> str:
        return self.which
