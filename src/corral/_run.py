"""``corral.run``: the entry point that picks the fastest event loop available, and
turns SIGINT and SIGTERM into a graceful stop (a second one kills at once)."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from types import FrameType
from typing import Any, Literal, TypeVar, TypeVarTuple

import anyio
import psutil

from ._eventloop import LoopHandle

logger = logging.getLogger(__name__)
T = TypeVar("T")
Ts = TypeVarTuple("Ts")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def uvloop_available() -> bool:
    """True when uvloop can be imported here."""
    return importlib.util.find_spec("uvloop") is not None


def run(
    main: Callable[[*Ts], Awaitable[T]],
    *args: *Ts,
    backend: Literal["asyncio", "trio"] = "asyncio",
    use_uvloop: bool | None = None,
) -> T:
    """Run ``await main(*args)`` on a new event loop and return its result.

    On asyncio, uvloop is used when it is installed (``use_uvloop=None``);
    pass ``use_uvloop=False`` for the stock loop. ``backend="trio"`` runs on
    trio, if installed.

    Called from the main thread, it handles SIGINT (Ctrl-C) and SIGTERM: the
    first cancels ``main``, so every supervisor in it stops gracefully (within
    its ``shutdown_timeout``, then by killing); then ``run`` raises
    ``KeyboardInterrupt`` (SIGINT) or ``SystemExit(143)`` (SIGTERM). A second
    one while that goes on kills every child process at once and exits the
    interpreter (status 130 or 143). The previous handlers are restored on
    return.
    """
    _open_closed_std_fds()
    if backend == "trio":
        if use_uvloop:
            raise ValueError("use_uvloop applies only to backend='asyncio'")
        return anyio.run(_stoppable, main, args, backend="trio")
    if backend != "asyncio":
        raise ValueError(f"backend must be 'asyncio' or 'trio', got {backend!r}")
    if use_uvloop is None:
        use_uvloop = uvloop_available()
    elif use_uvloop and not uvloop_available():
        raise RuntimeError(
            "uvloop is not installed: `pip install uvloop`, or pass use_uvloop=False"
        )
    return anyio.run(
        _stoppable, main, args, backend="asyncio", backend_options={"use_uvloop": use_uvloop}
    )


def _open_closed_std_fds() -> None:
    """Point a closed stdin, stdout or stderr at /dev/null.

    Else the next descriptor opened (a socket to a child) takes its number:
    output meant for the terminal would go to the child, and libuv aborts.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            opened = os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
            if opened != fd:  # (a lower one was closed too, and is now taken)
                os.dup2(opened, fd)
                os.close(opened)
            os.set_inheritable(fd, True)  # (children inherit 0-2 as usual)


async def _stoppable(main: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    """``await main(*args)``, cancelled by the first SIGINT or SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        return await main(*args)  # (signal handlers can only be set from the main thread)
    stop = _Stop(LoopHandle())
    try:
        with handling(STOP_SIGNALS, stop.handle), stop.scope:
            return await main(*args)
    finally:
        if stop.signum is not None:
            logger.info("stopped by %s", signal.Signals(stop.signum).name)
    if stop.signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise SystemExit(128 + signal.SIGTERM)


@contextlib.contextmanager
def handling(
    signums: tuple[int, ...], handler: Callable[[int, FrameType | None], object]
) -> Iterator[dict[int, Any]]:
    """``handler`` handles ``signums`` in the block (the previous handlers, yielded, after)."""
    previous = {signum: signal.signal(signum, handler) for signum in signums}
    try:
        yield previous
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


class _Stop:
    """The handler of SIGINT and SIGTERM: the first stops gracefully, the second kills."""

    def __init__(self, loop: LoopHandle) -> None:
        self.loop = loop
        self.scope = anyio.CancelScope()
        self.signum: int | None = None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.signum is None:
            self.signum = signum
            logger.warning(
                "%s: stopping gracefully; %s again kills every child at once",
                name,
                "Ctrl-C" if signum == signal.SIGINT else name,
            )
            self.loop.call_soon_threadsafe(self.scope.cancel)
            return
        logger.error("%s again: killing every child process and exiting now", name)
        kill_descendants()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(128 + signum)


def kill_descendants() -> None:
    """SIGKILL every process this one started, and theirs."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                child.kill()
