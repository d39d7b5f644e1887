"""A progress bar for a pool's map, on a terminal: items done of the total, rate, ETA."""

from __future__ import annotations

import sys
import time
from typing import Final, TextIO

REDRAW_EVERY: Final = 0.1  # seconds between redraws
WIDTH: Final = 30


class ProgressBar:
    """Redrawn in place on ``stream`` (stderr) while it is a terminal; silent otherwise."""

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._started = time.monotonic()
        self._drawn = 0.0
        self._shown = _is_terminal(self._stream)

    def advance(self, items: int, total: int | None = None) -> None:
        """``items`` more are done (``total``: now known)."""
        self.done += items
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self._shown and now - self._drawn >= REDRAW_EVERY:
            self._drawn = now
            self._draw(now)

    def finish(self) -> None:
        """Draw the final state and end the line."""
        if self._shown:
            self._draw(time.monotonic())
            self._write("\n")
            self._shown = False

    def line(self, now: float | None = None) -> str:
        """The bar as text."""
        elapsed = max((now if now is not None else time.monotonic()) - self._started, 1e-9)
        rate = self.done / elapsed
        if self.total:
            share = min(self.done / self.total, 1.0)
            filled = int(share * WIDTH)
            left = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta = (
                f"ETA {_duration(left)}" if self.done < self.total else f"in {_duration(elapsed)}"
            )
            return (
                f"{self.label} [{'#' * filled}{'.' * (WIDTH - filled)}] {self.done:,}/"
                f"{self.total:,} {share:6.1%}  {_rate(rate)}  {eta}"
            )
        return f"{self.label} {self.done:,} done  {_rate(rate)}  {_duration(elapsed)}"

    def _draw(self, now: float) -> None:
        self._write("\r" + self.line(now) + "\x1b[K")

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # closed: no bar then
            self._shown = False


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _rate(per_second: float) -> str:
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M/s"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k/s"
    return f"{per_second:.1f}/s"


def _duration(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
