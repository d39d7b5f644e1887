"""The messenger: one end of a conversation with another process.

Channels (any hashable; ``None`` is the default), priorities (lower first,
FIFO within a level, both when the socket is backed up and in each channel's
inbox), requests with replies, errors sent across, and close requests. Proxies
are built on it, and it is usable on its own through :func:`corral.open_worker`.

Every send is a synchronous write (see ``_connection``), so a caller cancelled
at any point never desynchronises the stream: a cancelled request sends
``CANCEL`` and forgets its call id, and a late reply for a forgotten id is
dropped.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator, Callable, Hashable
from typing import Any, Final, final

import anyio

from ._answers import (
    Failed,
    Messages,
    ReplyStream,
    Request,
    StreamState,
    failure_payload,
    rebuild_failure,
    resolve,
    unpack,
    wake,
)
from ._connection import Connection, Future
from ._errors import CloseRequested, SerializationError
from ._inbox import Inboxes
from ._wire import (
    BINARY,
    DEFAULT_MAX_FRAME,
    Kind,
    RawFrame,
    channel_bytes,
    encode_frame,
    loads,
    wrap_large,
)

logger = logging.getLogger(__name__)

# enum members as module constants: a class attribute lookup costs ~90 ns per frame
_REPLY: Final = Kind.REPLY
_FAILURE: Final = Kind.FAILURE
_REQUEST: Final = Kind.REQUEST
_MESSAGE: Final = Kind.MESSAGE
_STREAM_ITEM: Final = Kind.STREAM_ITEM
_STREAM_END: Final = Kind.STREAM_END
_CANCEL: Final = Kind.CANCEL
_CREDIT: Final = Kind.CREDIT
_CLOSE: Final = Kind.CLOSE

NOT_INLINE: Final = object()  # an inline handler's "make a Request of this one"
LAST: Final = 0x7FFF  # the lowest priority: goes after everything queued


@final
class Messenger:
    """One end of a conversation with another process.

    On the host, :func:`corral.open_worker` hands you one; in a child,
    :func:`corral.messenger` returns the child's. Values cross by pickle
    (cloudpickle when needed); ``send`` / ``request`` raise
    :class:`~corral.SerializationError` before anything is sent when a value
    will not pickle. When the other side goes away, waiting calls raise the
    reason (:class:`~corral.WorkerCrashed` on the host).
    """

    def __init__(self, *, name: str, max_frame_size: int = DEFAULT_MAX_FRAME) -> None:
        self.name = name
        self.max_frame_size = max_frame_size
        self._connection: Connection | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[Hashable, Future | StreamState]] = {}
        self._requests_in: dict[int, Request] = {}
        self._inboxes = Inboxes()
        self._request_inboxes = Inboxes()
        self._handlers: dict[Hashable, Callable[[Any], None]] = {}
        self._request_handlers: dict[Hashable, Callable[[Request], None]] = {}
        self._inline_handlers: dict[Hashable, Callable[[Any], Any]] = {}
        self._close_requested = False
        self._error: BaseException | None = None
        self.on_lost: Callable[[BaseException | None], None] | None = None
        """Called when the stream ends; it must call :meth:`_fail_all` (default: at once)."""

    def __repr__(self) -> str:
        state = "closed" if self._error is not None else "open"
        return f"<Messenger {self.name!r} {state} pending={len(self._pending)}>"

    # -- sending ---------------------------------------------------------------------

    async def send(self, value: Any, *, channel: Hashable = None, priority: int = 0) -> None:
        """Send ``value`` on ``channel``; waits only while the socket is backed up."""
        self.send_nowait(value, channel=channel, priority=priority)
        await self._connection_or_raise().drain()

    def send_nowait(self, value: Any, *, channel: Hashable = None, priority: int = 0) -> None:
        """Send ``value`` now, never waiting (unsent data is buffered)."""
        self._send(_MESSAGE, wrap_large(value), 0, channel, priority)

    async def send_error(
        self, error: BaseException, *, channel: Hashable = None, priority: int = 0
    ) -> None:
        """Send an exception: the other side's ``receive(channel)`` raises it."""
        self._send(_FAILURE, failure_payload(error), 0, channel, priority)
        await self._connection_or_raise().drain()

    async def request_close(self) -> None:
        """Ask the other side to close: its receives raise :class:`~corral.CloseRequested`.

        It goes after everything already sent (the lowest priority, last), so
        the other side sees earlier messages first.
        """
        self.request_close_nowait()
        await self._connection_or_raise().drain()

    def request_close_nowait(self) -> None:
        """Like :meth:`request_close`, without waiting for a backed-up socket to drain."""
        self._send(_CLOSE, None, 0, None, LAST)

    # -- receiving -------------------------------------------------------------------

    async def receive(self, channel: Hashable = None) -> Any:
        """The next value sent on ``channel`` (lowest priority first).

        Raises an error the other side sent with ``send_error``,
        :class:`~corral.CloseRequested` once a close was requested and the
        channel is empty, or the reason the connection ended.
        """
        return unpack(await self._inboxes.get(channel, self._future, self._check_receivable))

    def receive_nowait(self, channel: Hashable = None) -> Any:
        """Like :meth:`receive`, but raises :class:`anyio.WouldBlock` when nothing waits."""
        found, value = self._inboxes.pop(channel)
        if found:
            return unpack(value)
        self._check_receivable()
        raise anyio.WouldBlock

    def messages(self, channel: Hashable = None) -> AsyncIterator[Any]:
        """Every value sent on ``channel``, until the other side asks to close.

        Raises what :meth:`receive` raises otherwise (the connection's end).
        """
        return Messages(self.receive, channel, CloseRequested)

    async def receive_request(self, channel: Hashable = None) -> Request:
        """The next request sent on ``channel``; answer it with ``reply`` or ``fail``."""
        request: Request = await self._request_inboxes.get(
            channel, self._future, self._check_receivable
        )
        return request

    # -- request and reply -----------------------------------------------------------

    async def request(self, value: Any, *, channel: Hashable = None, priority: int = 0) -> Any:
        """Send ``value`` as a request and return the other side's reply.

        If the other side answers with ``fail(error)``, this raises ``error``
        (with the remote traceback as a note). Cancelling the wait tells the
        other side, and a late reply is dropped.
        """
        if self._error is not None:
            raise self._error
        connection = self._connection
        assert connection is not None, "messenger used before attach()"
        call_id = next(self._ids)
        future = connection.future()
        self._pending[call_id] = (channel, future)  # first: a send that fails resolves it
        if not connection.closed:  # (closed: the reason is on its way to this future)
            if type(value) in BINARY:
                value = wrap_large(value)
            try:
                self._send(_REQUEST, value, call_id, channel, priority)
            except BaseException:
                self._pending.pop(call_id, None)
                raise
        try:
            frame: RawFrame = await future
        finally:
            if self._pending.pop(call_id, None) is not None:  # no answer came: tell them
                self._cancel(call_id, channel, priority)
        return self._result(frame)

    def request_stream(
        self, value: Any, *, channel: Hashable = None, priority: int = 0
    ) -> ReplyStream:
        """Send ``value`` as a request whose answer is a stream of items.

        Returns an async iterator; the request is sent now (so a value that
        will not pickle raises here). Leaving the iteration early, or calling
        ``aclose()``, tells the other side to stop.
        """
        call_id = next(self._ids)
        stream = ReplyStream(self, call_id, channel, priority)
        self._pending[call_id] = (channel, stream._state)
        try:
            if not self._connection_or_raise().closed:
                self._send(_REQUEST, wrap_large(value), call_id, channel, priority)
        except BaseException:
            stream._state.done = True
            self._pending.pop(call_id, None)
            raise
        return stream

    def remaining(self, channel: Hashable = None) -> int:
        """How many requests sent on ``channel`` still await their reply."""
        return sum(
            1 for pending_channel, _ in self._pending.values() if pending_channel == channel
        )

    # -- direct handlers (for the proxy server and log forwarding) -------------------

    def handle_messages(self, channel: Hashable, handler: Callable[[Any], None]) -> None:
        """Call ``handler(value)`` on the loop for each message on ``channel`` (no inbox)."""
        self._handlers[channel] = handler

    def handle_requests(
        self,
        channel: Hashable,
        handler: Callable[[Request], None],
        *,
        inline: Callable[[Any], Any] | None = None,
    ) -> None:
        """Call ``handler(request)`` on the loop for each request on ``channel``.

        ``inline(value)``, if given, is tried first: its result is the answer,
        what it raises is the failure, and only when it returns
        :data:`NOT_INLINE` is a :class:`Request` made for ``handler``. (The
        proxy server answers sync methods this way, without the request object.)
        """
        self._request_handlers[channel] = handler
        if inline is not None:
            self._inline_handlers[channel] = inline

    # -- the connection's side -------------------------------------------------------

    def attach(self, connection: Connection) -> None:
        """Start using ``connection`` (called once, by whoever opened it)."""
        self._connection = connection

    @property
    def closed(self) -> bool:
        """True once the connection has ended."""
        return self._error is not None

    @property
    def error(self) -> BaseException | None:
        """Why the connection ended (what waiting calls raise), or None while open."""
        return self._error

    def abort(self) -> None:
        """Close the connection now; waiting calls raise :class:`anyio.BrokenResourceError`."""
        if self._connection is not None:
            self._connection.abort()

    def frames_received(self, frames: list[RawFrame]) -> None:
        for frame in frames:
            kind = frame.kind
            if kind is _REPLY or (kind is _FAILURE and frame.call_id):
                entry = self._pending.pop(frame.call_id, None)
                if entry is not None:
                    waiter = entry[1]
                    if isinstance(waiter, StreamState):
                        waiter.items.append(frame)
                        waiter.done = True
                        wake(waiter)
                    else:
                        resolve(waiter, frame)
            elif kind is _REQUEST:
                self._request_received(frame)
            elif kind is _MESSAGE or kind is _FAILURE:
                self._message_received(frame)
            elif kind is _STREAM_ITEM or kind is _STREAM_END:
                if kind is _STREAM_END:
                    entry = self._pending.pop(frame.call_id, None)
                else:
                    entry = self._pending.get(frame.call_id)
                if entry is not None and isinstance(entry[1], StreamState):
                    entry[1].items.append(frame)
                    entry[1].done = kind is _STREAM_END
                    wake(entry[1])
            elif kind is _CANCEL:
                request = self._requests_in.pop(frame.call_id, None)
                if request is not None:
                    request._cancel()
            elif kind is _CREDIT:
                request = self._requests_in.get(frame.call_id)
                if request is not None:
                    request._add_credit(int(loads(frame)))
            elif kind is _CLOSE:
                self._close_requested = True
                self._wake_all(CloseRequested(f"{self.name}: the other side asked to close"))

    def connection_lost(self, error: BaseException | None) -> None:
        if self.on_lost is not None:
            self.on_lost(error)
        else:
            self._fail_all(
                anyio.BrokenResourceError(f"{self.name}: the connection ended ({error!r})")
            )

    def _fail_all(self, error: BaseException) -> None:
        """End every wait with ``error`` (the connection is gone)."""
        if self._error is None:
            self._error = error
        for _, waiter in list(self._pending.values()):
            if isinstance(waiter, StreamState):
                waiter.done = True
                waiter.error = error
                wake(waiter, error)
            else:
                resolve(waiter, None, error)
        for request in list(self._requests_in.values()):
            request._cancel()
        self._wake_all(error)

    # -- internals -------------------------------------------------------------------

    def _connection_or_raise(self) -> Connection:
        self._raise_if_ended()
        assert self._connection is not None, "messenger used before attach()"
        return self._connection

    def _raise_if_ended(self) -> None:
        if self._error is not None:
            raise self._error

    def _send(
        self, kind: Kind, value: Any, call_id: int, channel: Hashable, priority: int = 0
    ) -> None:
        if self._error is not None:
            raise self._error
        connection = self._connection
        assert connection is not None, "messenger used before attach()"
        raw_channel = b"" if channel is None else channel_bytes(channel)
        connection.send(
            encode_frame(kind, value, call_id, raw_channel, priority, self.max_frame_size),
            priority,
        )

    def _answer(self, kind: Kind, payload: Any, call_id: int, channel: Hashable) -> None:
        """Send the answer to request ``call_id`` (if anyone can still receive it)."""
        if not self._writable():
            return
        try:
            self._send(kind, payload, call_id, channel)
        except SerializationError as error:
            error.add_note("(raised in the other process while sending the answer)")
            self._send(_FAILURE, failure_payload(error), call_id, channel)

    def _cancel(self, call_id: int, channel: Hashable, priority: int) -> None:
        # at the request's own priority: never ahead of the request it cancels
        if self._writable():
            self._send(_CANCEL, None, call_id, channel, priority)

    def _writable(self) -> bool:
        connection = self._connection
        return self._error is None and connection is not None and not connection.closed

    def _result(self, frame: RawFrame) -> Any:
        try:
            value = loads(frame)
        except Exception as error:
            raise SerializationError(
                f"{self.name}: a reply would not unpickle here: {type(error).__name__}: {error}"
            ) from error
        if frame.kind is _FAILURE:
            raise rebuild_failure(value)
        return value

    def _request_received(self, frame: RawFrame) -> None:
        try:
            value = loads(frame)
        except Exception as error:
            request = Request(self, frame.call_id, frame.channel, None)
            request.fail(SerializationError(f"the request would not unpickle: {error!r}"))
            return
        inline = self._inline_handlers.get(frame.channel)
        if inline is not None:
            try:
                result = inline(value)
            except Exception as error:
                self._answer(_FAILURE, failure_payload(error), frame.call_id, frame.channel)
                return
            if result is not NOT_INLINE:
                if type(result) in BINARY:
                    result = wrap_large(result)
                self._answer(_REPLY, result, frame.call_id, frame.channel)
                return
        request = Request(self, frame.call_id, frame.channel, value)
        handler = self._request_handlers.get(frame.channel)
        if handler is not None:
            try:
                handler(request)
            except Exception as error:  # the handler's bug: answer, don't break the stream
                request.fail(error)
            if not request._done:  # answered later: a cancel must find it
                self._requests_in[frame.call_id] = request
        else:
            self._requests_in[frame.call_id] = request
            self._request_inboxes.put(frame.channel, frame.priority, request)

    def _message_received(self, frame: RawFrame) -> None:
        try:
            value: Any = loads(frame)
        except Exception as error:
            value = Failed(SerializationError(f"a message would not unpickle: {error!r}"))
        else:
            if frame.kind is _FAILURE:
                value = Failed(rebuild_failure(value))
        handler = self._handlers.get(frame.channel)
        if handler is not None:
            try:
                handler(value)
            except Exception:  # the handler's bug: log it, don't break the stream
                logger.exception("%s: the handler for channel %r raised", self.name, frame.channel)
        else:
            self._inboxes.put(frame.channel, frame.priority, value)

    def _wake_all(self, error: BaseException) -> None:
        self._inboxes.wake_all()  # each receiver re-checks, and raises
        self._request_inboxes.wake_all()

    def _future(self) -> Future:
        assert self._connection is not None, "messenger used before attach()"
        return self._connection.future()

    def _check_receivable(self) -> None:
        self._raise_if_ended()
        if self._close_requested:
            raise CloseRequested(f"{self.name}: the other side asked to close")
