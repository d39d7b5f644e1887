"""A child's lifetime: its options (checked), its restarts within a window, its statistics."""

from __future__ import annotations

import random
import sys
from collections import deque
from dataclasses import dataclass
from typing import Literal, final, get_args

from ._worker import WorkerStatistics

RestartPolicy = Literal["never", "on-failure", "always"]
ServiceState = Literal["starting", "running", "restarting", "closing", "closed", "failed"]


#: The first pause before a restart, and the most it doubles to (seconds).
BACKOFF = 0.01
MAX_BACKOFF = 2.0


def restarts_after(policy: RestartPolicy, failed: bool) -> bool:
    """Whether ``policy`` starts again a child that ended (``failed``: not cleanly)."""
    return policy == "always" or (policy == "on-failure" and failed)


def check_options(
    restart: str,
    max_restarts: int | None,
    restart_window: float | None,
    startup_timeout: float,
) -> None:
    """Reject bad lifetime options with a message that says what to pass (None: not given)."""
    check_policy(restart, get_args(RestartPolicy))
    check_limits(max_restarts, restart_window=restart_window, startup_timeout=startup_timeout)


def check_policy(value: object, allowed: tuple[str, ...], label: str = "restart") -> None:
    """``value`` must be one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{label}= must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def check_limits(max_restarts: int | None, **seconds: float | None) -> None:
    """``max_restarts`` a whole number >= 0; each of ``seconds`` a number > 0 (None: unset)."""
    if max_restarts is not None and (
        isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0
    ):
        raise ValueError(f"max_restarts= must be a whole number >= 0, got {max_restarts!r}")
    for label, value in seconds.items():
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value > 0
        ):
            raise ValueError(f"{label}= must be a number of seconds > 0, got {value!r}")


@final
@dataclass(frozen=True, slots=True)
class ProxyStatistics:
    """A frozen snapshot of a spawned child and the calls made through its proxy."""

    name: str
    state: ServiceState
    pid: int | None
    calls: int
    errors: int
    in_flight: int
    restarts: int
    last_exit: int | None
    rss: int | None
    cpu_percent: float | None
    last_exit_reason: str | None = None
    """Why the last child ended, in words (``None`` until one has)."""


@final
@dataclass(frozen=True, slots=True)
class RestartEvent:
    """One restart a supervisor made: which child, why, and what went with it."""

    child: str
    """The child that ended (a nested supervisor's name when it escalated)."""
    reason: str
    """Why it ended, in words (``"child process 'cam' was killed by SIGKILL"``)."""
    at: float
    """When, as ``time.time()``."""
    delay: float
    """The pause before the restart (exponential backoff with jitter), in seconds."""
    siblings: tuple[str, ...] = ()
    """The other children stopped and started again with it (one_for_all, rest_for_one)."""


class RestartWindow:
    """Restarts counted within a sliding window of seconds; the pause before the next."""

    def __init__(self, max_restarts: int | None, seconds: float) -> None:
        self.max_restarts = sys.maxsize if max_restarts is None else max_restarts
        self.seconds = seconds
        self._times: deque[float] = deque()

    def __str__(self) -> str:
        return f"{len(self._times)}/{self.max_restarts} within {self.seconds:g}s"

    def admit(self, now: float) -> bool:
        """Count a restart at ``now``; False (not counted) when the window is full."""
        while self._times and now - self._times[0] > self.seconds:
            self._times.popleft()
        if len(self._times) >= self.max_restarts:
            return False
        self._times.append(now)
        return True

    def delay(self, backoff: float = BACKOFF, max_backoff: float = MAX_BACKOFF) -> float:
        """Seconds to wait before the restart just admitted: exponential, with jitter.

        The n-th restart within the window waits between half and all of
        ``min(backoff * 2 ** (n - 1), max_backoff)``: the jitter keeps children
        that crashed together from all starting again at the same instant.
        """
        bound = min(backoff * 2.0 ** (len(self._times) - 1), max_backoff)
        return bound * random.uniform(0.5, 1.0)

    def clear(self) -> None:
        """Forget the restarts counted so far (a subtree started afresh)."""
        self._times.clear()

    def spent(self) -> str:
        """Why a restart was refused, for the error's note."""
        return (
            f"(restarted {len(self._times)} times within {self.seconds:g}s: "
            f"max_restarts={self.max_restarts} reached)"
        )


SupervisorState = Literal["new", "running", "stopping", "stopped"]


@final
@dataclass(frozen=True, slots=True)
class SupervisorStatistics:
    """A frozen snapshot of a supervisor and every worker it has started."""

    name: str
    state: SupervisorState
    workers: tuple[WorkerStatistics, ...]
    threads_busy: int
    children: tuple[ProxyStatistics, ...] = ()
    strategy: Literal["one_for_one", "one_for_all", "rest_for_one"] = "one_for_one"
    restarts: int = 0
    """Restarts this supervisor has made (a group restarted together counts once)."""
    restart_history: tuple[RestartEvent, ...] = ()
    """Its last 100 restarts, oldest first: which child, why, when, the backoff, siblings."""
    supervisors: tuple[SupervisorStatistics, ...] = ()
    """Its nested supervisors (``sup.supervisor()``), each with its own children."""
