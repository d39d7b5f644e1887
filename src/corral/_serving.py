"""The child's half of a proxy: serving an object's methods and attributes.

Each request on the calls channel is ``(op, name, args, kwargs)``: a plain
tuple, because it is pickled on every call and a tuple costs least. Sync
methods run inline, in arrival order, straight from the read callback (no
task hop); async methods and streams run as tasks, concurrently; methods
marked :func:`corral.threaded` run in a worker thread.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import logging
from collections import deque
from collections.abc import Callable
from types import CoroutineType
from typing import Any, Final, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from ._answers import Request
from ._errors import WorkerStopped
from ._messenger import NOT_INLINE, Messenger

logger = logging.getLogger(__name__)

CALLS: Final = None  # proxy calls are requests on the default channel: no channel bytes
NOWAIT: Final = "__corral_nowait__"  # fire-and-forget calls are messages here
F = TypeVar("F", bound=Callable[..., Any])
_THREADED: Final = "__corral_threaded__"


class Op:
    """What a proxy asks of the object behind it (plain ints: cheapest to pickle)."""

    CALL: Final = 0
    STREAM: Final = 1
    GET: Final = 2
    SET: Final = 3


class Member(enum.StrEnum):
    """How the host should treat a name of the served object."""

    SYNC = "sync"
    ASYNC = "async"
    STREAM = "stream"
    THREAD = "thread"
    PROPERTY = "property"
    ATTRIBUTE = "attribute"


_current: Messenger | None = None


def messenger() -> Messenger:
    """The messenger connecting this child process to its host.

    For a spawned object to publish to the host (read there with
    ``async for msg in proxy.messages(channel)``) and for a function started
    with :func:`corral.open_worker`. Raises :class:`RuntimeError` outside a
    corral child.
    """
    if _current is None:
        raise RuntimeError(
            "corral.messenger() is only available inside a child started by corral "
            "(spawn(), open_worker())"
        )
    return _current


def set_current(channel: Messenger) -> None:
    """Make ``channel`` what :func:`messenger` returns (once, in a child)."""
    global _current  # noqa: PLW0603  (one per process, set once)
    _current = channel


def threaded(fn: F) -> F:
    """Mark a sync method of a spawned object to run in a worker thread.

    Unmarked sync methods run one at a time on the child's main thread, in
    the order calls arrive; a marked one runs beside them, so a slow blocking
    call does not hold up the others.
    """
    setattr(fn, _THREADED, True)
    return fn


def describe(cls: type[Any], hidden: frozenset[str] = frozenset()) -> dict[str, Member]:
    """The public members of ``cls`` (less ``hidden``), by how a proxy reaches them."""
    members: dict[str, Member] = {}
    for name in dir(cls):
        if name.startswith("_") or name in hidden:
            continue
        attribute = inspect.getattr_static(cls, name)
        if isinstance(attribute, property):
            members[name] = Member.PROPERTY
            continue
        if isinstance(attribute, staticmethod | classmethod):
            attribute = attribute.__func__
        if not callable(attribute):
            members[name] = Member.ATTRIBUTE
        elif inspect.isasyncgenfunction(attribute) or inspect.isgeneratorfunction(attribute):
            members[name] = Member.STREAM
        elif inspect.iscoroutinefunction(attribute):
            members[name] = Member.ASYNC
        elif getattr(attribute, _THREADED, False):
            members[name] = Member.THREAD
        else:
            members[name] = Member.SYNC
    return members


class Server:
    """Serves ``obj`` to the host over ``messenger`` until asked to close."""

    def __init__(
        self,
        obj: Any,
        messenger: Messenger,
        task_group: anyio.abc.TaskGroup,
        hidden: frozenset[str] = frozenset(),
        admit: Callable[[], bool] | None = None,
        close_object: bool = True,
    ) -> None:
        self.obj = obj
        self._close_object = close_object  # call its aclose()/close() when closing
        self._admit = admit  # None, or: may a call start now? (a control loop's budget)
        self._waiting: deque[Request] = deque()  # calls not admitted yet, in arrival order
        self._draining = False
        self.members = describe(type(obj), hidden)
        self._hidden = hidden
        # sync methods, looked up once: they run inline, straight from the read callback
        self._inline: dict[str, Callable[..., Any]] = {
            name: getattr(obj, name) for name, kind in self.members.items() if kind is Member.SYNC
        }
        self._messenger = messenger
        self._task_group = task_group
        self._active = 0
        self._idle = anyio.Event()
        self._closing = False
        self._streams: set[Request] = set()
        self._returned: dict[int, Any] = {}  # coroutines sync methods returned, by call value
        messenger.handle_requests(CALLS, self._request, inline=self._call_inline)
        messenger.handle_messages(NOWAIT, self._fire_and_forget)

    async def serve(self) -> None:
        """Serve until the host asks to close, then finish calls in flight and close."""
        with contextlib.suppress(Exception):  # CloseRequested, or the host went away
            await self._messenger.receive("__corral_control__")
        self._closing = True
        for request in list(self._streams):  # open-ended: a close ends them
            request._cancel()
        if self._active:
            await self._idle.wait()
        if self._close_object:
            await _close_object(self.obj)

    # -- dispatch --------------------------------------------------------------------

    def _call_inline(self, value: Any) -> Any:
        """A sync method's call, answered straight from the read callback (the common case)."""
        op, name, args, kwargs = value
        method = self._inline.get(name)
        if method is None or op != Op.CALL or self._closing or not self._may_start():
            return NOT_INLINE
        result = method(*args, **kwargs)
        if type(result) is CoroutineType:  # a plain def that returned a coroutine
            self._returned[id(value)] = result
            return NOT_INLINE
        return result

    def _may_start(self) -> bool:
        return self._admit is None or (not self._waiting and self._admit())

    def _request(self, request: Request) -> None:
        if self._closing:
            request.fail(WorkerStopped(f"{self._messenger.name} is closing"))
        elif self._may_start():
            self._dispatch(request)
        else:  # the loop's next deadline is too near: in a later turn, in order
            self._waiting.append(request)
            if not self._draining:
                self._draining = True
                self._active += 1
                self._task_group.start_soon(self._drain)

    async def _drain(self) -> None:
        """Start the calls that were not admitted, each when there is room for it."""
        assert self._admit is not None
        try:
            while self._waiting:
                await anyio.lowlevel.checkpoint()  # a later turn: ticks run in between
                while self._waiting and self._admit():
                    request = self._waiting.popleft()
                    if request.cancelled:  # the caller gave up while it waited: only forget it
                        request.fail(WorkerStopped("cancelled by the caller"))
                    else:
                        self._dispatch(request)
        finally:
            self._draining = False
            self._finished_one()

    def _dispatch(self, request: Request) -> None:
        try:
            op, name, args, kwargs = request.value
            if (coroutine := self._returned.pop(id(request.value), None)) is not None:
                self._start(self._await, request, lambda: coroutine, (), {})
            elif op == Op.CALL:
                self._call(request, name, args, kwargs)
            elif op == Op.STREAM:
                if self._closing:  # (one that waited for room): a close ends streams
                    raise WorkerStopped(f"{self._messenger.name} is closing")
                self._streams.add(request)
                self._start(self._stream, request, self._method(name), args, kwargs)
            elif op == Op.GET:
                request.reply(self._get(name))
            elif op == Op.SET:
                self._set(name, args[0])
                request.reply(None)
            else:
                raise ValueError(f"unknown proxy operation {op!r}")
        except Exception as error:
            request.fail(error)

    def _call(self, request: Request, name: str, args: Any, kwargs: Any) -> None:
        method = self._method(name)
        kind = self.members.get(name)
        if kind is Member.ASYNC:
            self._start(self._await, request, method, args, kwargs)
        elif kind is Member.THREAD:
            self._start(self._in_thread, request, method, args, kwargs)
        else:
            result = method(*args, **kwargs)
            if inspect.isawaitable(result):
                self._start(self._await, request, lambda: result, (), {})
            else:
                request.reply(result)

    def _fire_and_forget(self, value: Any) -> None:
        """``proxy.method.nowait(...)``: run it; log, never send, what it raises."""
        request = _Unanswered(self._messenger, value)
        self._request(request)  # type: ignore[arg-type]  # answers go to the log

    def _check_served(self, name: str) -> None:
        if name.startswith("_"):
            raise AttributeError(
                f"{type(self.obj).__qualname__!r}: private attribute {name!r} is not served"
            )
        if name in self._hidden:
            raise AttributeError(
                f"{type(self.obj).__qualname__!r}: {name!r} belongs to the object's own "
                "machinery (it is run in the child, not served to the host)"
            )

    def _method(self, name: str) -> Callable[..., Any]:
        self._check_served(name)
        method: Callable[..., Any] = getattr(self.obj, name)  # AttributeError names the class
        if not callable(method):
            raise TypeError(
                f"{type(self.obj).__qualname__}.{name} is not callable; read it with "
                f"`await proxy.{name}`"
            )
        return method

    def _set(self, name: str, value: Any) -> None:
        self._check_served(name)
        setattr(self.obj, name, value)
        self._inline.pop(name, None)  # a method replaced by a value: look it up again

    def _get(self, name: str) -> Any:
        self._check_served(name)
        value = getattr(self.obj, name)
        if inspect.ismethod(value) and value.__self__ is self.obj:
            raise TypeError(
                f"{type(self.obj).__qualname__}.{name} is a method; call it: "
                f"`await proxy.{name}(...)`"
            )
        return value

    # -- tasks -----------------------------------------------------------------------

    def _start(self, runner: Callable[..., Any], request: Request, *args: Any) -> None:
        self._active += 1
        scope = anyio.CancelScope()  # now: a CANCEL may come before the task first runs
        request.on_cancel = scope.cancel
        self._task_group.start_soon(self._track, scope, runner, request, *args)

    async def _track(
        self, scope: anyio.CancelScope, runner: Callable[..., Any], request: Request, *args: Any
    ) -> None:
        try:
            with scope:
                await runner(request, *args)
        except Exception as error:
            request.fail(error)
        finally:
            self._streams.discard(request)
            self._finished_one()

    def _finished_one(self) -> None:
        self._active -= 1
        if not self._active:
            self._idle.set()
            self._idle = anyio.Event()

    @staticmethod
    async def _await(request: Request, method: Callable[..., Any], args: Any, kwargs: Any) -> None:
        request.reply(await method(*args, **kwargs))

    @staticmethod
    async def _in_thread(
        request: Request, method: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        request.reply(await anyio.to_thread.run_sync(lambda: method(*args, **kwargs)))

    @staticmethod
    async def _stream(
        request: Request, method: Callable[..., Any], args: Any, kwargs: Any
    ) -> None:
        produced = method(*args, **kwargs)
        if hasattr(produced, "__aiter__"):
            try:
                async for item in produced:
                    await request.send_item(item)
                    if request.cancelled:
                        break
            finally:
                await produced.aclose()
        else:
            for item in produced:
                await request.send_item(item)
                if request.cancelled:
                    produced.close()
                    break
        request.end_stream()


class _Unanswered:
    """Stands in for a request nobody waits for: failures are logged instead."""

    def __init__(self, messenger: Messenger, value: Any) -> None:
        self.value = value
        self.cancelled = False
        self.on_cancel: Callable[[], object] | None = None
        self._name = messenger.name

    def reply(self, value: Any) -> None:
        pass

    def fail(self, error: BaseException) -> None:
        logger.error("%s: a nowait() call failed", self._name, exc_info=error)

    async def send_item(self, value: Any) -> None:
        pass

    def end_stream(self) -> None:
        pass


async def _close_object(obj: Any) -> None:
    """Call the served object's ``aclose()`` or ``close()``, if it has one."""
    for name in ("aclose", "close"):
        method = getattr(obj, name, None)
        if callable(method):
            try:
                result = method()
                if inspect.isawaitable(result):
                    await result
            except Exception:
                logger.exception("%s.%s() raised while closing", type(obj).__qualname__, name)
            return
