"""A :class:`~corral.Process` in its own child: the child's half of a job.

Started as an ``open_worker`` function (``serve_process``): it runs the
cycle, sends the outcome, and returns, which ends the child. Messages on
three channels: TELL both ways, PROGRESS (the current run, at most every
50 ms) and STOP from the host; the OUTCOME last.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any, Final

import anyio

from ._answers import failure_payload
from ._lifecycle import Outcome, Resume, run_cycle
from ._messenger import Messenger
from ._process import Process
from ._spawn import pickled_target

TELL: Final = "__corral_tell__"
PROGRESS: Final = "__corral_progress__"
STOP: Final = "__corral_stop__"
OUTCOME: Final = "__corral_outcome__"
CONTROL: Final = "__corral_control__"  # where a close request surfaces
_PROGRESS_EVERY: Final = 0.05

logger = logging.getLogger(__name__)


class ChildLink:
    """The lifecycle's link to the host, over the child's messenger."""

    def __init__(self, messenger: Messenger) -> None:
        self._messenger = messenger
        self._reported = 0.0

    def tell(self, value: Any) -> None:
        self._messenger.send_nowait(value, channel=TELL)

    async def listen(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        with anyio.move_on_after(timeout):
            return await self._messenger.receive(TELL)
        return None

    def progress(self, current_run: int) -> None:
        now = time.monotonic()
        if now - self._reported >= _PROGRESS_EVERY:
            self._reported = now
            self._messenger.send_nowait(current_run, channel=PROGRESS)


async def serve_process(
    messenger: Messenger, *, process: Process, resume: Resume | None = None
) -> None:
    """Run ``process`` to its end (from ``resume`` if given) and send the host the outcome.

    A close request from the host (its block or supervisor ending) is a
    ``stop()``: the current run finishes, then on_finish() and result().
    """
    messenger.handle_messages(STOP, lambda _: process.stop())
    async with anyio.create_task_group() as tasks:

        async def stop_on_close() -> None:
            with contextlib.suppress(Exception):  # CloseRequested, or the host went away
                await messenger.receive(CONTROL)
            process.stop()

        tasks.start_soon(stop_on_close)
        outcome = await run_cycle(process, ChildLink(messenger), resume)
        messenger.send_nowait(encode(outcome, process), channel=OUTCOME)
        tasks.cancel_scope.cancel()


def encode(outcome: Outcome, process: Process) -> tuple[Any, ...]:
    """What crosses to the host: the error travels as a failure payload.

    A process to go on in a new child comes with what that child runs: the
    instance as it is now, so its state is kept (None if it will not
    pickle: the host then starts again from the instance it started).
    """
    error = failure_payload(outcome.error) if outcome.error is not None else None
    target = None
    if outcome.resume is not None:
        process._corral_channel = None  # (the abandoned thread may still be changing it)
        try:
            target = process_target(process, outcome.resume)
        except Exception as problem:
            logger.warning(
                "%s: its state will not pickle (%s); the new child starts from the state "
                "it was started with",
                type(process).__qualname__,
                problem,
            )
    return (outcome.value, error, outcome.runs, outcome.timers, outcome.resume, target)


def process_target(process: Process, resume: Resume | None = None) -> bytes:
    """What a child runs to run ``process`` (from ``resume``), pickled."""
    return pickled_target(serve_process, (), {"process": process, "resume": resume})
