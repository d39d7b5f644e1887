"""The child's half of a control loop: the recipe, the ticks, host calls between them.

The child runs the stock asyncio event loop with a :class:`LoopSelector`
(uvloop's selector cannot be replaced): ticks run inside the selector, host
calls are served by an ordinary :class:`Server` in the time between them.
Nothing in this process starts a thread.
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import traceback
from time import perf_counter_ns
from typing import Final

import anyio
import anyio.abc

from ._answers import Request, failure_payload
from ._control import ControlLoop, LoopOptions, bind, publish, teardown
from ._errors import RemoteError, StartupError, StepFailed
from ._messenger import Messenger
from ._realtime import frozen_gc, realtime
from ._region import Region
from ._serving import Server, describe
from ._spawn import FAILURE_CHANNEL
from ._ticker import LoopSelector, Ticker
from ._wire import dumps_inband

logger = logging.getLogger(__name__)

# The base class's names run in the child; the host reaches none of them.
HIDDEN: Final = frozenset(describe(ControlLoop))
_selector: LoopSelector | None = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    """The child's event loop: asyncio whose selector runs the ticks."""
    global _selector  # noqa: PLW0603  (one loop per child process)
    _selector = LoopSelector()
    return asyncio.SelectorEventLoop(_selector)


async def serve_loop(
    messenger: Messenger,
    task_group: anyio.abc.TaskGroup,
    answer: Request,
    obj: ControlLoop,
    options: LoopOptions,
) -> int:
    """Run ``obj`` at its rate until the host closes it (0) or ``step()`` raises (1)."""
    assert _selector is not None, "a control loop child runs on new_event_loop()"
    name = options.name
    region = Region.attach(options.layout, options.history, options.memfd)
    region.start_run()
    _, outputs = bind(obj, region, name)
    with realtime(
        name, options.cpu, enabled=options.realtime, priority=options.priority, restore=False
    ) as facts:
        publish(region, facts)
        try:
            obj.setup()
        except Exception as error:
            answer.fail(
                StartupError(
                    f"{name}: setup() raised {type(error).__name__}: {error}",
                    traceback="".join(traceback.format_exception(error)),
                )
            )
            return 1
        # teardown() is the loop's cleanup: a close() it has is the host's to call
        server = Server(
            obj, messenger, task_group, hidden=HIDDEN, admit=_selector.has_room, close_object=False
        )
        ticker = Ticker(
            obj, region, options.period, skip=options.skip, spin=options.spin,
            outputs=outputs, eventfd=options.eventfd if options.eventfd >= 0 else None,
            collect_garbage=options.gc_freeze,
        )  # fmt: skip
        stopped = anyio.Event()
        ticker.on_stopped = stopped.set
        try:
            with frozen_gc(name, facts, enabled=options.gc_freeze):
                publish(region, facts)
                answer.reply(dict(server.members))
                _selector.attach(ticker, options.budget)
                ticker.begin(perf_counter_ns() + options.period)
                await _until_stopped(server, stopped)
        finally:
            ticker.stop()
            teardown(obj, name, quiet=True)
    if ticker.failure is not None:
        tick, raised = ticker.failure
        _report(messenger, StepFailed(name, tick, _portable(raised)), raised)
        return 1
    return 0


async def _until_stopped(server: Server, stopped: anyio.Event) -> None:
    """Serve the host until it asks to close or the loop stops by itself."""
    async with anyio.create_task_group() as tasks:

        async def serve() -> None:
            await server.serve()
            tasks.cancel_scope.cancel()

        tasks.start_soon(serve)
        await stopped.wait()
        tasks.cancel_scope.cancel()


def _portable(error: BaseException) -> BaseException:
    """``error``, or a RemoteError standing for it if it cannot cross to the host."""
    try:
        pickle.loads(dumps_inband(error))  # it must unpickle there, not only pickle here
    except Exception:
        return RemoteError(
            f"{type(error).__module__}.{type(error).__qualname__}",
            str(error),
            "".join(traceback.format_exception(error)),
        )
    return error


def _report(messenger: Messenger, failure: StepFailed, cause: BaseException) -> None:
    """Tell the host why this child is about to exit with an error."""
    failure.__cause__ = cause
    logger.debug("%s", failure, exc_info=cause)
    try:
        messenger.send_nowait(failure_payload(failure), channel=FAILURE_CHANNEL)
    except Exception:  # the host is gone, or the error will not pickle: the exit code tells
        logger.exception("%s: could not report the failure to the host", failure.name)
