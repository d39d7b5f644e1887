"""What the demo shows while it runs: a live dashboard on a terminal, log lines elsewhere.

The plant hands a :class:`Frame` (one row per worker and child, the control
loop's lateness, the pool's progress, what happened) to a view a few times a
second. :class:`LiveView` draws it with rich when stdout is a terminal and
rich is installed; :class:`LogView` prints plain lines once a second (CI,
pipes, ``--plain``); :class:`QuietView` shows nothing (``--json``).
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Row:
    """One worker or child process on the dashboard (None: not applicable)."""

    name: str
    kind: str
    state: str
    calls: int | None
    errors: int | None
    restarts: int | None
    latency: str
    cpu_percent: float | None = None
    rss: int | None = None


@dataclass(frozen=True, slots=True)
class Frame:
    """Everything one redraw shows."""

    elapsed: float
    duration: float
    title: str
    rows: list[Row]
    status: str  # the plant's counts, in one line
    control: str | None  # the control loop, in one line
    pool_done: int
    pool_total: int
    pool_note: str
    events: list[str] = field(default_factory=list)  # every event so far, oldest first


class View(Protocol):
    """Shows frames; a context manager around the part of the demo it shows."""

    interval: float  # seconds between frames

    def __enter__(self) -> View: ...

    def __exit__(self, *exc: object) -> None: ...

    def show(self, frame: Frame) -> None: ...


def make_view(*, quiet: bool, plain: bool) -> View:
    """The view for this run: quiet for --json, live on a terminal with rich, else log lines."""
    if quiet:
        return QuietView()
    if plain or sys.stdout is None or not sys.stdout.isatty():  # (None: stdout was closed)
        return LogView()
    if importlib.util.find_spec("rich") is None:
        logger.warning("the live dashboard needs rich: pip install 'corral[demo]'; log lines now")
        return LogView()
    return LiveView()


class QuietView:
    """Shows nothing (the summary comes as JSON at the end)."""

    interval = 1.0

    def __enter__(self) -> QuietView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, frame: Frame) -> None:
        return None


class LogView:
    """A status line (and the control loop's and pool's) each second; each event once."""

    interval = 1.0

    def __init__(self) -> None:
        self._events_shown = 0
        self._second = -1  # the last second a status line was printed for

    def __enter__(self) -> LogView:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def show(self, frame: Frame) -> None:
        for event in frame.events[self._events_shown :]:
            print(f"  * {event}", flush=True)
        self._events_shown = len(frame.events)
        second = round(frame.elapsed)
        if second == self._second:  # (an extra frame, at the kill: its events are enough)
            return
        self._second = second
        print(f"[{second:>3}s] {frame.status}", flush=True)
        if frame.control:
            print(f"       {frame.control}", flush=True)
        print(
            f"       pool: {frame.pool_done}/{frame.pool_total} windows; {frame.pool_note}",
            flush=True,
        )


class LiveView:
    """A rich dashboard redrawn in place (without a refresh thread of its own)."""

    interval = 0.25

    def __init__(self) -> None:
        from rich.console import Console  # noqa: PLC0415  (an optional dependency)

        self._console: Console = Console()
        self._live: Live | None = None
        self._log = _Remembered()  # log records, shown in the panel while it is live
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> LiveView:
        from rich.live import Live  # noqa: PLC0415

        root = logging.getLogger()
        self._handlers = root.handlers[:]  # (they write to the terminal the panel is on)
        root.handlers = [self._log]
        self._live = Live(console=self._console, auto_refresh=False)
        self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            logging.getLogger().handlers = self._handlers

    def show(self, frame: Frame) -> None:
        if self._live is not None:
            self._live.update(render(frame, self._log.lines), refresh=True)


class _Remembered(logging.Handler):
    """Keeps the last few log lines (warnings and up) for the dashboard."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines = [*self.lines[-3:], f"{record.levelname.lower()}: {record.getMessage()}"]


def render(frame: Frame, log: list[str]) -> Any:
    """The dashboard for ``frame``, as a rich renderable."""
    from rich.console import Group  # noqa: PLC0415
    from rich.panel import Panel  # noqa: PLC0415
    from rich.progress_bar import ProgressBar  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    table = Table(expand=True, header_style="bold", box=None, padding=(0, 1, 0, 0))
    table.add_column("worker / child", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column("kind", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for column in ("calls", "errs", "rst", "p50/p99", "CPU%", "MB"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in frame.rows:
        table.add_row(
            row.name,
            row.kind,
            Text(row.state, style=STATE_STYLES.get(row.state, "")),
            _count(row.calls),
            Text(_count(row.errors), style="yellow" if row.errors else ""),
            Text(_count(row.restarts), style="magenta" if row.restarts else ""),
            row.latency,
            "-" if row.cpu_percent is None else f"{row.cpu_percent:.0f}",
            "-" if row.rss is None else f"{row.rss / 2**20:.0f}",
        )
    share = frame.pool_done / frame.pool_total if frame.pool_total else 0.0
    pool = Table.grid(expand=True, padding=(0, 1))
    pool.add_column(no_wrap=True)
    pool.add_column(ratio=1)
    pool.add_column(no_wrap=True)
    pool.add_row(
        "pool map",
        ProgressBar(total=float(frame.pool_total or 1), completed=float(frame.pool_done)),
        f"{frame.pool_done}/{frame.pool_total} windows {share:4.0%}",
    )
    legend = Text(
        "errs: errors; rst: restarts; p50/p99: how late ticks ran (interval workers, control "
        "loop), how long runs or calls took (the others); MB: RSS",
        style="dim",
    )
    # The figures first and the table after: a short terminal crops the bottom.
    parts: list[Any] = [Text(frame.status)]
    if frame.control:
        parts.append(Text(frame.control, style="cyan"))
    parts += [pool, Text(f"pool: {frame.pool_note}")]
    if frame.events:
        parts.append(Text("\n".join(f"• {e}" for e in frame.events[-3:])))
    parts += [Text(""), table, legend]
    if log:
        parts.append(Text("\n".join(log), style="dim yellow"))
    left = max(frame.duration - frame.elapsed, 0.0)
    return Panel(
        Group(*parts),
        title=f"[bold]{frame.title}[/bold], {frame.elapsed:.1f} s, {left:.1f} s to go",
        subtitle="Ctrl-C ends it early, with the summary",
    )


STATE_STYLES = {
    "running": "green",
    "restarting": "magenta",
    "starting": "blue",
    "stopping": "yellow",
    "closing": "yellow",
    "failed": "bold red",
}


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
