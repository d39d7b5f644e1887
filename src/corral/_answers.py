"""The answering side of the messenger: requests received, streamed replies,
message iterators, and exceptions carried across the process boundary.
"""

from __future__ import annotations

import contextlib
import pickle
import traceback
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from typing import TYPE_CHECKING, Any, Final, final

from ._connection import Future
from ._errors import RemoteError
from ._wire import Kind, RawFrame, dumps, wrap_large

if TYPE_CHECKING:
    from ._messenger import Messenger

# enum members as module constants: a class attribute lookup costs ~90 ns per frame
_REPLY: Final = Kind.REPLY
_FAILURE: Final = Kind.FAILURE
_STREAM_ITEM: Final = Kind.STREAM_ITEM
_STREAM_END: Final = Kind.STREAM_END
_CREDIT: Final = Kind.CREDIT
STREAM_WINDOW: Final = 64  # stream items in flight before the sender waits for credit


@final
class Request:
    """A request received from the other side; answer it with :meth:`reply` or :meth:`fail`.

    :attr:`value` is what was sent; :attr:`channel` where. Answering twice,
    or after the requester gave up (:attr:`cancelled`), does nothing.
    """

    __slots__ = (
        "_credit",
        "_credit_slot",
        "_done",
        "_messenger",
        "call_id",
        "cancelled",
        "channel",
        "on_cancel",
        "value",
    )

    def __init__(self, messenger: Messenger, call_id: int, channel: Hashable, value: Any) -> None:
        self._messenger = messenger
        self.call_id = call_id
        self.channel = channel
        self.value = value
        self.cancelled = False
        self.on_cancel: Callable[[], object] | None = None
        """Called when the requester gives up (to stop the work)."""
        self._done = False
        self._credit = STREAM_WINDOW
        self._credit_slot: Future | None = None

    def __repr__(self) -> str:
        return f"<Request #{self.call_id} on {self.channel!r}>"

    def reply(self, value: Any) -> None:
        """Send ``value`` back as the answer (a large bytes-like travels out of band).

        A value that will not pickle is answered with a
        :class:`~corral.SerializationError` instead.
        """
        self._answer(_REPLY, wrap_large(value))

    def fail(self, error: BaseException) -> None:
        """Answer with ``error``: the requester's ``await`` raises it."""
        self._answer(_FAILURE, failure_payload(error))

    async def send_item(self, value: Any) -> None:
        """Stream one item of the answer; waits while the requester is behind."""
        while self._credit <= 0 and not self._done and not self.cancelled:
            self._credit_slot = self._messenger._connection_or_raise().future()
            await self._credit_slot
        if self._done or self.cancelled:
            return
        self._credit -= 1
        self._messenger._send(_STREAM_ITEM, wrap_large(value), self.call_id, self.channel)

    def end_stream(self) -> None:
        """The streamed answer is complete."""
        self._answer(_STREAM_END, None)

    def _add_credit(self, n: int) -> None:
        self._credit += n
        if self._credit_slot is not None:
            resolve(self._credit_slot, None)
            self._credit_slot = None

    def _cancel(self) -> None:
        self.cancelled = True
        self._add_credit(0)
        if self.on_cancel is not None:
            self.on_cancel()

    def _answer(self, kind: Kind, payload: Any) -> None:
        if self._done:
            return
        self._done = True
        messenger = self._messenger
        messenger._requests_in.pop(self.call_id, None)
        if not self.cancelled:
            messenger._answer(kind, payload, self.call_id, self.channel)


class StreamState:
    """What arrives for a streamed answer (held by the messenger while it is pending)."""

    __slots__ = ("done", "error", "items", "waiter")

    def __init__(self) -> None:
        self.items: deque[RawFrame] = deque()
        self.waiter: Future | None = None
        self.done = False
        self.error: BaseException | None = None


@final
class ReplyStream:
    """The answer to :meth:`Messenger.request_stream`: an async iterator of items."""

    __slots__ = ("_consumed", "_messenger", "_state", "call_id", "channel", "priority")

    def __init__(
        self, messenger: Messenger, call_id: int, channel: Hashable, priority: int
    ) -> None:
        self._messenger = messenger
        self._state = StreamState()
        self._consumed = 0
        self.call_id = call_id
        self.channel = channel
        self.priority = priority

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> Any:
        messenger = self._messenger
        state = self._state
        while not state.items:
            if state.done:
                self._finish()
                if state.error is not None:
                    raise state.error
                raise StopAsyncIteration
            state.waiter = messenger._connection_or_raise().future()
            try:
                await state.waiter
            except BaseException:
                self._finish()
                raise
        frame = state.items.popleft()
        if frame.kind is _STREAM_END:
            self._finish()
            raise StopAsyncIteration
        try:
            item = messenger._result(frame)
        except BaseException:
            self._finish()
            raise
        self._consumed += 1
        if self._consumed == STREAM_WINDOW // 2:
            self._consumed = 0
            messenger._send(_CREDIT, STREAM_WINDOW // 2, self.call_id, self.channel)
        return item

    async def aclose(self) -> None:
        """Stop the stream; the other side is told to stop producing."""
        self._finish()

    def _finish(self) -> None:
        self._state.done = True
        self._state.items.clear()
        if self._messenger._pending.pop(self.call_id, None) is not None:
            self._messenger._cancel(self.call_id, self.channel, self.priority)

    def __del__(self) -> None:
        if not self._state.done:  # abandoned without aclose(): tell the other side
            with contextlib.suppress(Exception):
                self._finish()


class Messages:
    """``async for value in ...``: calls ``receive(channel)`` until it raises ``end``."""

    __slots__ = ("_channel", "_end", "_receive")

    def __init__(
        self,
        receive: Callable[[Hashable], Awaitable[Any]],
        channel: Hashable,
        end: type[BaseException],
    ) -> None:
        self._receive = receive
        self._channel = channel
        self._end = end

    def __aiter__(self) -> Messages:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._receive(self._channel)
        except self._end:
            raise StopAsyncIteration from None


class Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def unpack(value: Any) -> Any:
    if type(value) is Failed:
        raise value.error
    return value


def wake(stream: StreamState, error: BaseException | None = None) -> None:
    if stream.waiter is not None:
        resolve(stream.waiter, None, error)


def resolve(future: Future, value: Any, error: BaseException | None = None) -> None:
    if not future.done():
        if error is None:
            future.set_result(value)
        else:
            future.set_exception(error)


def failure_payload(error: BaseException) -> tuple[bytes | None, str, str, str]:
    """What crosses the wire for an exception: its pickle if it has one, and its text."""
    name = f"{type(error).__module__}.{type(error).__qualname__}"
    try:
        text = "".join(traceback.format_exception(error))
    except Exception:
        text = f"{name}: <the exception's text could not be formatted>\n"
    try:
        message = str(error)
    except Exception:
        message = "<str() of the exception raised>"
    try:
        body, buffers = dumps(error)
        carried = None if buffers else body
    except Exception:
        carried = None
    return (carried, name, message, text)


def rebuild_failure(payload: Any) -> BaseException:
    """The exception to raise for a failure payload (see :func:`failure_payload`)."""
    try:
        carried, type_name, message, text = payload
    except (TypeError, ValueError):
        return RemoteError("unknown", repr(payload), "")
    try:
        error = pickle.loads(carried) if carried is not None else None
    except Exception:
        error = None
    if isinstance(error, Exception):
        error.add_note(f"Remote traceback:\n{text.rstrip()}")
        return error
    # Not raised as itself: a remote CancelledError or SystemExit would pass for
    # this task's own cancellation or exit.
    return RemoteError(type_name, message, text)
