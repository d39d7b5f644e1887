"""The child's entry point: ``main([_, FD, ...])``, run by ``_forker.boot_command``.

In order: ignore SIGINT (the host decides when children stop: a Ctrl-C in
the terminal reaches the whole process group), ask the kernel to kill us if
the host dies, read the boot record, pin to ``cpu``, take the host's
``sys.path``, and only then unpickle the target (importing user code). Then
serve on an event loop (uvloop when installed) until the host asks us to
close or goes away.
"""

from __future__ import annotations

import contextlib
import ctypes
import inspect
import logging
import os
import pickle
import signal
import socket
import sys
import traceback
from typing import Any, Final, NoReturn

import anyio

from ._answers import Request
from ._connection import open_connection
from ._errors import CloseRequested, StartupError
from ._logs import LogForwarder
from ._messenger import Messenger
from ._serving import Server, set_current
from ._spawn import BOOT_CHANNEL, Boot
from ._wire import FrameDecoder, RawFrame, loads

logger = logging.getLogger(__name__)

_PR_SET_PDEATHSIG: Final = 1


def main(argv: list[str]) -> NoReturn:
    """Run the child; never returns."""
    # a handler that does nothing, not SIG_IGN: that would be inherited across exec
    # by every process the service starts, and they should still see Ctrl-C
    signal.signal(signal.SIGINT, _ignore_signal)
    _die_with_parent()
    sock = socket.socket(fileno=int(argv[1]))
    frame = _read_boot(sock)
    boot: Boot = loads(frame)
    if os.getppid() != boot.parent_pid:  # the host died before we could ask to die with it
        os._exit(0)
    forwarder = LogForwarder()
    root = logging.getLogger()
    root.addHandler(forwarder)
    root.setLevel(boot.log_level)
    _pin(boot.cpu)
    sys.path[:] = list(boot.sys_path)
    options: dict[str, Any] = {}
    if boot.kind == "control":  # ticks run in the selector: stock asyncio, not uvloop
        from ._loopchild import new_event_loop  # noqa: PLC0415

        options["loop_factory"] = new_event_loop
    else:
        try:
            import uvloop  # noqa: F401, PLC0415

            options["use_uvloop"] = True
        except ImportError:
            pass
    code = anyio.run(_serve, sock, boot, frame.call_id, forwarder, backend_options=options)
    _exit(code)


def _ignore_signal(signum: int, frame: object) -> None:
    """SIGINT in a child: the host decides when children stop."""


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)  # no waiting on threads user code may have left behind


def _die_with_parent() -> None:
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _read_boot(sock: socket.socket) -> RawFrame:
    decoder = FrameDecoder()
    while True:
        view = decoder.get_buffer()
        nbytes = sock.recv_into(view)
        del view
        if nbytes == 0:
            _exit(0)
        frames = decoder.buffer_updated(nbytes)
        if frames:
            if len(frames) > 1 or not decoder.idle:
                sys.stderr.write("corral child: unexpected data after the boot record\n")
                _exit(2)
            return frames[0]


def _pin(cpu: tuple[int, ...] | None) -> None:
    if cpu is None:
        return
    try:
        os.sched_setaffinity(0, cpu)
    except (OSError, AttributeError) as error:
        logger.warning("could not pin to cpu %s (%s); running unpinned", cpu, error)
    else:
        logger.debug("pinned to cpu %s", cpu)


async def _serve(sock: socket.socket, boot: Boot, call_id: int, forwarder: LogForwarder) -> int:
    channel = Messenger(name=boot.name, max_frame_size=boot.max_frame_size)
    channel.on_lost = lambda error: _exit(0)  # the host is gone: so are we
    set_current(channel)
    async with anyio.create_task_group() as task_group:
        connection = await open_connection(
            sock, channel, task_group, max_frame_size=boot.max_frame_size
        )
        channel.attach(connection)
        forwarder.attach(channel)
        answer = Request(channel, call_id, BOOT_CHANNEL, None)
        try:
            fn, args, kwargs = pickle.loads(boot.target)
            if boot.kind == "service":
                obj = fn(*args, **kwargs)
                if inspect.isawaitable(obj):
                    obj = await obj
                server = Server(obj, channel, task_group)
        except Exception as error:
            answer.fail(
                StartupError(
                    f"{boot.name}: {type(error).__name__}: {error}",
                    traceback="".join(traceback.format_exception(error)),
                )
            )
            await connection.drain()
            return 1
        if boot.kind == "service":
            answer.reply(dict(server.members))
            await server.serve()
            code = 0
        elif boot.kind == "control":  # fn serves the loop, answering the boot itself
            code = await fn(channel, task_group, answer, *args, **kwargs)
        else:
            answer.reply(None)
            code = await _run_function(fn, channel, kwargs)
        await connection.drain()
        task_group.cancel_scope.cancel()
    return code


async def _run_function(fn: Any, channel: Messenger, kwargs: dict[str, Any]) -> int:
    try:
        await fn(channel, **kwargs)
    except CloseRequested:
        pass
    except Exception:
        logger.exception("%s: the worker function raised", channel.name)
        traceback.print_exc()  # also to stderr: the host's WorkerCrashed shows its last lines
        return 1
    return 0
