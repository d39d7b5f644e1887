"""A child's lifetime options (restart policy, limits), checked; and its statistics snapshot."""

from __future__ import annotations

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
