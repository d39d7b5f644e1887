"""A :class:`~corral.Process` in its own child: the child's half of a job.

Started as an ``open_worker`` function (``serve_process``): it runs the
cycle, sends the outcome, and returns once the host has acknowledged it,
which ends the child. Messages: TELL both ways, PROGRESS (the current run,
at most every 50 ms) and STOP from the host; the OUTCOME last, and the
host's ACK of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from typing import Any, Final

import anyio

from ._answers import failure_payload
from ._errors import CloseRequested, ResultError, SerializationError
from ._lifecycle import Outcome, Resume, run_cycle
from ._messenger import Messenger
from ._process import Process
from ._spawn import pickled_target

TELL: Final = "__corral_tell__"
PROGRESS: Final = "__corral_progress__"
STOP: Final = "__corral_stop__"
OUTCOME: Final = "__corral_outcome__"
ACK: Final = "__corral_ack__"  # the host has the outcome
CONTROL: Final = "__corral_control__"  # where a close request surfaces
_PROGRESS_EVERY: Final = 0.05

logger = logging.getLogger(__name__)


class ChildLink:
    """The lifecycle's link to the host, over the child's messenger."""

    def __init__(self, messenger: Messenger, unread: list[Any]) -> None:
        self._messenger = messenger
        self._unread = deque(unread)  # told to a child that had to go, not yet read
        self._loop_thread = threading.get_ident()
        self._call_soon = asyncio.get_running_loop().call_soon_threadsafe
        self.current_run = 0

    def tell(self, value: Any) -> None:
        if threading.get_ident() == self._loop_thread:
            self._messenger.send_nowait(value, channel=TELL)
        else:  # from a sync section run in a thread (one with a time limit)
            self._call_soon(self._tell_later, value)

    def _tell_later(self, value: Any) -> None:
        try:
            self._messenger.send_nowait(value, channel=TELL)
        except Exception:
            logger.exception("a value told from a thread could not be sent")

    async def listen(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        if self._unread:
            return self._unread.popleft()
        with anyio.move_on_after(timeout):
            try:
                return await self._messenger.receive(TELL)
            except CloseRequested:  # the host is closing: it tells nothing more
                return None
        return None

    def progress(self, current_run: int) -> None:
        self.current_run = current_run  # (sent by report_progress)

    async def report_progress(self) -> None:
        """Send the current run when it has changed, at most every 50 ms (a task)."""
        reported = 0
        while True:
            await anyio.sleep(_PROGRESS_EVERY)
            if self.current_run != reported:
                reported = self.current_run
                self._messenger.send_nowait(reported, channel=PROGRESS)

    def unread(self) -> list[Any]:
        """What the host told and the process has not read (for a retry in a new child)."""
        values = list(self._unread)
        while True:
            try:
                values.append(self._messenger.receive_nowait(TELL))
            except anyio.WouldBlock:  # no more
                return values
            except SerializationError:  # one that would not unpickle here: the others go on
                continue
            except Exception:  # the connection has ended
                return values


async def serve_process(
    messenger: Messenger, *, process: Process, resume: Resume | None = None
) -> None:
    """Run ``process`` to its end (from ``resume`` if given) and send the host the outcome.

    A close request from the host (its block or supervisor ending) is a
    ``stop()``: the current run finishes, then on_finish() and result().
    Then it waits for the host to acknowledge the outcome: a child that went
    at once could have it lost (a write of the host's to a child gone ends
    the host's reading too).
    """

    def stop(_: object = None) -> None:
        process._corral_stop = True  # (not process.stop(): a subclass may have its own)

    messenger.handle_messages(STOP, stop)
    link = ChildLink(messenger, resume.unread if resume is not None else [])
    async with anyio.create_task_group() as tasks:

        async def stop_on_close() -> None:
            with contextlib.suppress(Exception):  # CloseRequested, or the host went away
                await messenger.receive(CONTROL)
            stop()

        tasks.start_soon(stop_on_close)
        tasks.start_soon(link.report_progress)
        outcome = await run_cycle(process, link, resume)
        if outcome.resume is not None:
            outcome.resume.unread = link.unread()
        try:
            messenger.send_nowait(encode(outcome, process), channel=OUTCOME)
        except SerializationError as error:  # what result() returned will not pickle
            outcome.value, outcome.error = None, ResultError(outcome.runs, error)
            messenger.send_nowait(encode(outcome, process), channel=OUTCOME)
        with contextlib.suppress(Exception):  # CloseRequested, or the host went away
            await messenger.receive(ACK)  # (also with a thread stuck: _exit ends it then)
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
