"""What the reliability tests run in child processes (kept light: each child imports it).

Objects spawned behind proxies, ``open_worker`` functions, ``corral.Process``
classes and pool functions. Those of the cancellation tests report what they
have under way (tasks, open streams, calls running), so that a test can check
that nothing is left in the child either once the host has cancelled its
calls; those of the bad-input tests misbehave on request (raw bytes on the
socket, values that will not pickle or unpickle, values over the frame size
limit, exits during the handshake).
"""

from __future__ import annotations

import asyncio
import os
import select
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import anyio
import anyio.lowlevel

import corral

#: A child importing this module exits at once (status :data:`IMPORT_EXIT`) while
#: this variable names another process (the host that set it): a target whose
#: module import ends the child, during the handshake.
EXIT_ON_IMPORT = "CORRAL_RELIABILITY_EXIT_ON_IMPORT"
IMPORT_EXIT = 4

_host = os.environ.get(EXIT_ON_IMPORT)
if _host and _host != str(os.getpid()):
    os._exit(IMPORT_EXIT)


def child_tasks() -> int:
    """Tasks on this child's event loop (children run asyncio or uvloop)."""
    return len(asyncio.all_tasks())


# -- a service behind a proxy ----------------------------------------------------------


class Calls:
    """One of each kind of member, counting what runs: async calls and open streams."""

    def __init__(self, tag: str = "calls") -> None:
        self.tag = tag
        self.running = 0  # async calls under way
        self.open_streams = 0  # generators started and not yet closed

    @property
    def label(self) -> str:
        return f"{self.tag}@{os.getpid()}"

    def echo(self, value: Any) -> Any:
        return value

    async def aecho(self, value: Any, delay: float = 0.0) -> Any:
        self.running += 1
        try:
            if delay:
                await anyio.sleep(delay)
            else:
                await anyio.lowlevel.checkpoint()
            return value
        finally:
            self.running -= 1

    async def count(self, n: int, start: int = 0) -> AsyncIterator[int]:
        self.open_streams += 1
        try:
            for i in range(start, start + n):
                yield i
        finally:
            self.open_streams -= 1

    def count_sync(self, n: int, start: int = 0) -> Iterator[int]:
        self.open_streams += 1
        try:
            yield from range(start, start + n)
        finally:
            self.open_streams -= 1

    def busy(self) -> tuple[int, int, int]:
        """(tasks on the loop, open streams, async calls running)."""
        return child_tasks(), self.open_streams, self.running


# -- a function behind open_worker -------------------------------------------------------


async def answer(messenger: corral.Messenger) -> None:
    """Answers requests ``(op, value)`` until asked to close.

    ``("echo", v)``: at once; ``("later", (v, delay))``: from a task, after
    ``delay`` seconds (cancelled with the request); ``("stream", (start, n))``:
    the items ``start .. start + n - 1``; ``("busy", None)``: (tasks on the
    loop, requests being answered by a task).
    """
    working = [0]

    async def later(request: corral.Request, value: Any, delay: float) -> None:
        working[0] += 1
        try:
            scope = anyio.CancelScope()
            request.on_cancel = scope.cancel
            with scope:
                await anyio.sleep(delay)
                request.reply(value)
        finally:
            working[0] -= 1

    async def stream(request: corral.Request, start: int, n: int) -> None:
        working[0] += 1
        try:
            scope = anyio.CancelScope()
            request.on_cancel = scope.cancel
            with scope:
                for i in range(start, start + n):
                    await request.send_item(i)
                    if request.cancelled:
                        return
                request.end_stream()
        finally:
            working[0] -= 1

    async with anyio.create_task_group() as tasks:
        while True:
            try:
                request = await messenger.receive_request()
            except corral.CloseRequested:
                tasks.cancel_scope.cancel()
                return
            op, value = request.value
            if op == "echo":
                request.reply(value)
            elif op == "later":
                tasks.start_soon(later, request, *value)
            elif op == "stream":
                tasks.start_soon(stream, request, *value)
            elif op == "busy":
                request.reply((child_tasks(), working[0]))
            else:
                request.fail(ValueError(f"unknown op {op!r}"))


# -- corral.Process classes --------------------------------------------------------------


class Nap(corral.Process):
    """Sleeps ``seconds`` (async), then returns ``value``."""

    runs = 1

    def __init__(self, seconds: float, value: Any) -> None:
        self.seconds = seconds
        self.value = value

    async def run(self) -> None:
        await anyio.sleep(self.seconds)

    def result(self) -> Any:
        return self.value


class Teller(corral.Process):
    """Tells ``0 .. n - 1``, a little apart, then returns ``n``."""

    runs = 1

    def __init__(self, n: int, gap: float = 0.0005) -> None:
        self.n = n
        self.gap = gap

    async def run(self) -> None:
        for i in range(self.n):
            self.tell(i)
            await anyio.sleep(self.gap)

    def result(self) -> int:
        return self.n


# -- pool functions ----------------------------------------------------------------------


def triple(x: int) -> int:
    return x * 3


async def atriple(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x * 3


# -- bad input -----------------------------------------------------------------------------


def channel_fd() -> int:
    """This child's end of its socket to the host, spawned or forked from a zygote.

    (``sys.argv[1]`` names it only in a spawned child: a forked one keeps the
    zygote's argv.) Children run asyncio or uvloop, so the connection is a
    transport; corral keeps it on the messenger's connection.
    """
    connection: Any = cast(Any, corral.messenger())._connection
    fd: int = connection._transport.get_extra_info("socket").fileno()
    return fd


def _write_all(data: bytes) -> None:
    fd = channel_fd()
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:  # (the socket is non-blocking: wait until it takes more)
            select.select([], [fd], [])


class LoadError(Exception):
    """Raised by unpickling an :class:`Unloadable`."""


def _refuse_loading() -> None:
    raise LoadError("this value cannot be loaded here")


class Unloadable:
    """Pickles anywhere; unpickling it raises :class:`LoadError`."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return _refuse_loading, ()


class ExitOnLoad:
    """Pickles anywhere; unpickling it ends the process (status ``code``) at once."""

    def __init__(self, code: int) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, tuple[int]]:
        return os._exit, (self.code,)


class TwoArgumentError(Exception):
    """Pickles, but will not unpickle: its args hold one value, its constructor needs two."""

    def __init__(self, a: int, b: int) -> None:
        super().__init__(f"{a} and {b}")


class LockedError(Exception):
    """Will not pickle at all: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class Faulty:
    """A service that misbehaves on request, and answers ``echo`` in between."""

    def __init__(self, *args: Any) -> None:
        self.args = args  # (an ExitOnLoad here ends the child as its target is unpickled)

    def echo(self, value: Any) -> Any:
        return value

    def getpid(self) -> int:
        return os.getpid()

    def describe(self, value: Any) -> str:
        return type(value).__qualname__

    async def aecho(self, value: Any, delay: float) -> Any:
        await anyio.sleep(delay)
        return value

    async def trickle(self) -> AsyncIterator[int]:
        """One item, then none ever again."""
        yield 1
        await anyio.sleep_forever()

    def write(self, data: bytes) -> str:
        """Write ``data`` raw to the socket, between the frames, and answer."""
        _write_all(data)
        return "written"

    def write_then_exit(self, data: bytes, code: int) -> None:
        """Write ``data`` raw to the socket, then end at once with ``code``."""
        _write_all(data)
        os._exit(code)

    def sized(self, n: int) -> bytes:
        return bytes(n)  # (calloc: untouched zero pages cost no memory)

    async def sized_items(self, n: int) -> AsyncIterator[bytes]:
        yield b"small"
        yield bytes(n)

    def publish_sized(self, n: int) -> None:
        corral.messenger().send_nowait(bytes(n), channel="sized")

    def lock(self) -> threading.Lock:
        return threading.Lock()

    def unloadable(self) -> Unloadable:
        return Unloadable()

    def raise_two_argument_error(self) -> None:
        raise TwoArgumentError(1, 2)

    def raise_locked_error(self) -> None:
        raise LockedError("holds a lock")

    async def items_then_lock(self) -> AsyncIterator[Any]:
        yield 1
        yield threading.Lock()


class ExitsInInit:
    """A constructor that ends the child during the handshake."""

    def __init__(self, code: int) -> None:
        os._exit(code)


async def exits_at_once(messenger: corral.Messenger, code: int) -> None:
    """An open_worker function that ends its child before it answers anything."""
    os._exit(code)


async def odd_answers(messenger: corral.Messenger) -> None:
    """Answers requests ``(op, value)`` oddly on purpose, until asked to close.

    ``echo``: the value; ``sized``: ``bytes(value)``; ``lock``: a lock (will
    not pickle); ``unloadable``: an :class:`Unloadable`; ``locked-error`` and
    ``two-argument-error``: fails with those.
    """
    while True:
        try:
            request = await messenger.receive_request()
        except corral.CloseRequested:
            return
        op, value = request.value
        if op == "echo":
            request.reply(value)
        elif op == "sized":
            request.reply(bytes(value))
        elif op == "lock":
            request.reply(threading.Lock())
        elif op == "unloadable":
            request.reply(Unloadable())
        elif op == "locked-error":
            request.fail(LockedError(value))
        elif op == "two-argument-error":
            request.fail(TwoArgumentError(value, value))
        else:
            request.fail(ValueError(f"unknown op {op!r}"))


async def garbles(messenger: corral.Messenger) -> None:
    """Writes each request's value raw to the socket, between the frames; answers nothing."""
    while True:
        request = await messenger.receive_request()
        _write_all(request.value)


class LockedResult(corral.Process):
    runs = 1

    def run(self) -> None:
        pass

    def result(self) -> threading.Lock:
        return threading.Lock()


class RaisesLocked(corral.Process):
    runs = 1

    def run(self) -> None:
        raise LockedError("in run")


class RaisesTwoArgument(corral.Process):
    runs = 1

    def run(self) -> None:
        raise TwoArgumentError(3, 4)


class Plain(corral.Process):
    """Returns ``value``: the good job after a bad one."""

    runs = 1

    def __init__(self, value: Any) -> None:
        self.value = value

    def run(self) -> None:
        pass

    def result(self) -> Any:
        return self.value


class Relay(corral.Process):
    """Tells back each of the ``n`` values it is told."""

    runs = 1

    def __init__(self, n: int) -> None:
        self.n = n

    async def run(self) -> None:
        for _ in range(self.n):
            self.tell(await self.listen())

    def result(self) -> int:
        return self.n


class SizedResult(corral.Process):
    """Returns ``bytes(n)``, made in the child."""

    runs = 1

    def __init__(self, n: int) -> None:
        self.n = n

    def run(self) -> None:
        pass

    def result(self) -> bytes:
        return bytes(self.n)


def lock_result(x: int) -> Any:
    return threading.Lock() if x == 3 else x


def raise_locked(x: int) -> int:
    if x == 2:
        raise LockedError(f"item {x}")
    return x


def raise_two_argument(x: int) -> int:
    if x == 2:
        raise TwoArgumentError(x, x)
    return x


def takes_unloadable(x: Any) -> Any:
    return x


class ExitsOnRestart:
    """Starts once; every later start (a restart) ends the child in its constructor."""

    def __init__(self, marker: str, code: int) -> None:
        if os.path.exists(marker):
            os._exit(code)
        with open(marker, "w"):
            pass

    def echo(self, value: Any) -> Any:
        return value

    def crash(self) -> None:
        os._exit(9)
