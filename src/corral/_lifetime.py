"""A child's lifetime: its options (checked), its restarts within a window, its statistics."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal, final, get_args

RestartPolicy = Literal["never", "on-failure", "always"]
ServiceState = Literal["starting", "running", "restarting", "closing", "closed", "failed"]


def check_options(
    restart: str, max_restarts: int, restart_window: float, startup_timeout: float
) -> None:
    """Reject bad lifetime options with a message that says what to pass."""
    if restart not in get_args(RestartPolicy):
        raise ValueError(
            f"restart= must be one of {', '.join(map(repr, get_args(RestartPolicy)))}, "
            f"got {restart!r}"
        )
    if isinstance(max_restarts, bool) or not isinstance(max_restarts, int) or max_restarts < 0:
        raise ValueError(f"max_restarts= must be a whole number >= 0, got {max_restarts!r}")
    for label, value in (("restart_window", restart_window), ("startup_timeout", startup_timeout)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
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


class RestartWindow:
    """Restarts counted within a sliding window of seconds; the pause before the next."""

    def __init__(self, max_restarts: int, seconds: float) -> None:
        self.max_restarts = max_restarts
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

    def delay(self) -> float:
        """Seconds to wait before the restart just admitted: 10 ms, doubling, at most 2 s."""
        return min(0.01 * 2.0 ** (len(self._times) - 1), 2.0)

    def spent(self) -> str:
        """Why a restart was refused, for the error's note."""
        return (
            f"(restarted {len(self._times)} times within {self.seconds:g}s: "
            f"max_restarts={self.max_restarts} reached)"
        )
