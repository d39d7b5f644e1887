"""Framing: frames to bytes and bytes to frames. Pure: no I/O here.

A frame on the wire::

    u32  length of everything after this field
    u8   kind            (Kind)
    u8   nbuf            number of out-of-band buffers
    i16  priority        lower goes first
    u64  call id         0 when the frame answers nothing
    u16  channel length  0 for the default channel (None)
    u64 x nbuf          each out-of-band buffer's length
    ...  channel         pickled, when not None
    ...  body            pickle protocol 5
    ...  buffers         raw bytes, one after another

How values become bodies and buffers is ``_codec``'s business.
"""

from __future__ import annotations

import enum
import pickle
import struct
from collections.abc import Hashable, Sequence
from typing import Any, Final

from ._codec import (
    BINARY,
    MAX_BUFFERS,
    OOB_THRESHOLD,
    PROTOCOL,
    Buffers,
    channel_bytes,
    decode_channel,
    dumps,
    dumps_inband,
    wrap_large,
)
from ._errors import ProtocolError, SerializationError

# the codec's names the rest of corral (and the tests) reach through here
__all__ = [
    "BINARY",
    "DEFAULT_MAX_FRAME",
    "HEADER",
    "OOB_THRESHOLD",
    "FrameDecoder",
    "Kind",
    "RawFrame",
    "channel_bytes",
    "dumps",
    "dumps_inband",
    "encode",
    "encode_frame",
    "iter_frames",
    "loads",
    "wrap_large",
]

HEADER: Final = struct.Struct("<IBBhQH")
_BUFLEN: Final = struct.Struct("<Q")
_FIXED: Final = HEADER.size - 4  # header bytes counted in the length field
_HEADER_SIZE: Final = HEADER.size
_unpack_header: Final = HEADER.unpack_from
_pack_header: Final = HEADER.pack
_pickle_dumps: Final = pickle.dumps
DEFAULT_MAX_FRAME: Final = 1 << 30  # 1 GiB


class Kind(enum.IntEnum):
    """What a frame is; the messenger dispatches on it."""

    MESSAGE = 1  # a value on a channel
    REQUEST = 2  # a value that wants a reply (call id set)
    REPLY = 3  # the answer to a request
    FAILURE = 4  # an exception: the answer to a request, or sent on a channel
    STREAM_ITEM = 5  # one item of a streamed answer
    STREAM_END = 6  # the streamed answer is complete
    CANCEL = 7  # the requester gave up on a call id
    CLOSE = 8  # please close (raises CloseRequested on the other side)
    CREDIT = 9  # the requester consumed stream items; the sender may send more


_KINDS: Final = {int(k): k for k in Kind}


class RawFrame:
    """A decoded frame whose body is still pickled (see :func:`loads`)."""

    __slots__ = ("body", "buffers", "call_id", "channel", "kind", "priority")

    def __init__(
        self,
        kind: Kind,
        call_id: int,
        channel: Hashable,
        priority: int,
        body: bytes | bytearray,
        buffers: tuple[bytearray, ...] = (),
    ) -> None:
        self.kind = kind
        self.call_id = call_id
        self.channel = channel
        self.priority = priority
        self.body = body
        self.buffers = buffers

    def __repr__(self) -> str:
        return (
            f"<RawFrame {self.kind.name} id={self.call_id} channel={self.channel!r} "
            f"priority={self.priority} {len(self.body)}+{len(self.buffers)} bytes/buffers>"
        )


# -- framing -----------------------------------------------------------------------


def loads(frame: RawFrame) -> Any:
    """Unpickle a frame's body; raises what unpickling raised."""
    return pickle.loads(frame.body, buffers=frame.buffers)


def encode(
    kind: Kind,
    obj: Any = None,
    *,
    call_id: int = 0,
    channel: Hashable = None,
    priority: int = 0,
    max_frame_size: int = DEFAULT_MAX_FRAME,
) -> list[bytes | memoryview]:
    """Encode one frame; returns the pieces to write, in order (no joining copy).

    Raises :class:`~corral.SerializationError` when ``obj`` will not pickle
    or the frame would exceed ``max_frame_size``.
    """
    return encode_frame(kind, obj, call_id, channel_bytes(channel), priority, max_frame_size)


def encode_frame(
    kind: Kind, obj: Any, call_id: int, raw_channel: bytes, priority: int, max_frame_size: int
) -> list[bytes | memoryview]:
    """:func:`encode` with the channel already in wire form (the per-call path)."""
    collected = Buffers()
    buffers: list[pickle.PickleBuffer] = collected
    try:  # the hot path, inlined: most frames are small and plain
        body = _pickle_dumps(obj, PROTOCOL, buffer_callback=collected.take)
        if b"__main__" in body:
            body, buffers = dumps(obj)
    except Exception:
        body, buffers = dumps(obj)
    if not buffers:
        length = _FIXED + len(raw_channel) + len(body)
        if length <= max_frame_size and -0x8000 <= priority <= 0x7FFF:
            return [
                _pack_header(length, kind, 0, priority, call_id, len(raw_channel))
                + raw_channel
                + body
            ]
    return _frame_pieces(kind, body, buffers, call_id, raw_channel, priority, max_frame_size)


def _frame_pieces(
    kind: Kind,
    body: bytes,
    buffers: Sequence[pickle.PickleBuffer],
    call_id: int,
    raw_channel: bytes,
    priority: int,
    max_frame_size: int,
) -> list[bytes | memoryview]:
    if not -0x8000 <= priority <= 0x7FFF:
        raise ValueError(f"priority must be between -32768 and 32767, got {priority}")
    if len(buffers) > MAX_BUFFERS:
        raise SerializationError(
            f"{len(buffers)} out-of-band buffers in one frame; at most {MAX_BUFFERS}"
        )
    views = [buffer.raw() for buffer in buffers]
    lengths = [view.nbytes for view in views]
    length = _FIXED + 8 * len(views) + len(raw_channel) + len(body) + sum(lengths)
    if length > max_frame_size:
        raise SerializationError(
            f"a frame of {length:,} bytes exceeds the maximum frame size "
            f"(max_frame_size={max_frame_size:,} bytes); send the data in parts "
            "(several calls, or a stream)"
        )
    head = HEADER.pack(length, kind, len(views), priority, call_id, len(raw_channel))
    if lengths:
        head += b"".join(_BUFLEN.pack(n) for n in lengths)
    pieces: list[bytes | memoryview] = [head + raw_channel + body]
    pieces.extend(views)
    return pieces


# -- the decoder --------------------------------------------------------------------


class FrameDecoder:
    """Turns a byte stream into :class:`RawFrame` objects, incrementally.

    Fed the way ``asyncio.BufferedProtocol`` is: :meth:`get_buffer` gives a
    writable view, :meth:`buffer_updated` says how much was written and returns
    the frames completed. An out-of-band buffer is read into its own
    ``bytearray`` directly. Malformed input raises :class:`~corral.ProtocolError`
    (and the decoder stays broken: the stream cannot be trusted after that).
    """

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME, chunk: int = 256 * 1024) -> None:
        self.max_frame_size = max_frame_size
        self._chunk = chunk
        self._use(bytearray(chunk))
        self._start = 0
        self._end = 0
        self._broken: ProtocolError | None = None
        # the frame being read
        self._head: tuple[Kind, int, int, int, int, int] | None = None
        self._lengths: list[int] = []
        self._oob: list[bytearray] = []
        self._oob_filled = 0
        self._pending: tuple[bytes, bytes] | None = None  # channel, body

    def feed(self, data: bytes) -> list[RawFrame]:
        """Feed bytes (copies them in); returns the frames completed."""
        frames: list[RawFrame] = []
        view = memoryview(data)
        while view:
            target = self.get_buffer(len(view))
            n = min(len(target), len(view))
            target[:n] = view[:n]
            del target
            frames.extend(self.buffer_updated(n))
            view = view[n:]
        return frames

    def get_buffer(self, sizehint: int = -1) -> memoryview:
        """A writable view to receive into; valid until :meth:`buffer_updated`."""
        if self._broken is not None:
            raise self._broken
        if self._pending is not None and self._start == self._end:
            current = self._oob[len(self._oob) - 1]
            return memoryview(current)[self._oob_filled :]
        if self._start == self._end:
            self._start = self._end = 0
            if len(self._buf) > 4 * self._chunk:  # give back what one huge frame took
                self._use(bytearray(self._chunk))
        elif len(self._buf) - self._end < 4096:
            self._compact(len(self._buf))
        return self._view[self._end :]

    def _use(self, buffer: bytearray) -> None:
        # never resized in place (a view of it may still be out), so one view serves
        self._buf = buffer
        self._view = memoryview(buffer)

    def buffer_updated(self, nbytes: int) -> list[RawFrame]:
        """``nbytes`` were written into the last view; returns completed frames."""
        if self._pending is not None and self._start == self._end:
            self._oob_filled += nbytes
        else:
            self._end += nbytes
        frames: list[RawFrame] = []
        buf, start, stop = self._buf, self._start, self._end
        try:
            # the common case inline: whole small frames in the buffer, no state kept
            while self._head is None and stop - start >= _HEADER_SIZE:
                length, kind, nbuf, priority, call_id, channel_len = _unpack_header(buf, start)
                end = start + 4 + length
                if nbuf or end > stop or kind not in _KINDS or length > self.max_frame_size:
                    break
                body_at = start + _HEADER_SIZE + channel_len
                if length < _FIXED or body_at > end:
                    raise ProtocolError("a frame's lengths do not add up: the stream is corrupt")
                channel = (
                    decode_channel(bytes(buf[start + _HEADER_SIZE : body_at]))
                    if channel_len
                    else None
                )
                frames.append(RawFrame(_KINDS[kind], call_id, channel, priority, buf[body_at:end]))
                start = self._start = end
            if start == stop and self._head is None:  # all consumed: nothing partial to track
                self._start = self._end = 0
                return frames
            while (frame := self._next()) is not None:
                frames.append(frame)
        except ProtocolError as error:
            self._broken = error
            raise
        return frames

    @property
    def idle(self) -> bool:
        """True between frames (no partial frame held)."""
        return self._head is None and self._start == self._end

    def _compact(self, capacity: int) -> None:
        pending = self._end - self._start
        if capacity > len(self._buf):
            grown = bytearray(capacity)  # never resize: a view may still be out
            grown[:pending] = self._buf[self._start : self._end]
            self._use(grown)
        else:
            self._buf[:pending] = self._buf[self._start : self._end]
        self._start, self._end = 0, pending

    def _take(self, n: int) -> memoryview | None:
        if self._end - self._start < n:
            if n > len(self._buf) - self._start:
                self._compact(max(n, len(self._buf)))
            return None
        view = memoryview(self._buf)[self._start : self._start + n]
        self._start += n
        return view

    def _next(self) -> RawFrame | None:
        if self._head is None:
            view = self._take(HEADER.size)
            if view is None:
                return None
            length, kind, nbuf, priority, call_id, channel_len = HEADER.unpack(view)
            if kind not in _KINDS:
                raise ProtocolError(f"unknown frame kind {kind}: the stream is corrupt")
            if length > self.max_frame_size:
                raise ProtocolError(
                    f"a frame of {length:,} bytes exceeds the maximum frame size of "
                    f"{self.max_frame_size:,} bytes"
                )
            if length < _FIXED:
                raise ProtocolError(f"a frame length of {length} is too short to be a frame")
            self._head = (_KINDS[kind], nbuf, priority, call_id, channel_len, length)
            self._lengths = []
        kind, nbuf, priority, call_id, channel_len, length = self._head
        if nbuf and not self._lengths:
            view = self._take(8 * nbuf)
            if view is None:
                return None
            self._lengths = [n for (n,) in _BUFLEN.iter_unpack(view)]
        if self._pending is None:
            inline = length - _FIXED - 8 * nbuf - sum(self._lengths)
            if inline < channel_len:
                raise ProtocolError("a frame's lengths do not add up: the stream is corrupt")
            view = self._take(inline)
            if view is None:
                return None
            self._pending = (bytes(view[:channel_len]), bytes(view[channel_len:]))
            self._oob = []
        if not self._fill_buffers():
            return None
        raw_channel, body = self._pending
        buffers = tuple(self._oob)
        self._head, self._pending, self._oob, self._oob_filled = None, None, [], 0
        return RawFrame(kind, call_id, decode_channel(raw_channel), priority, body, buffers)

    def _fill_buffers(self) -> bool:
        """Fill out-of-band buffers from what is buffered; False while one is short."""
        while True:
            if self._oob and self._oob_filled < len(self._oob[-1]):
                current = self._oob[-1]
                n = min(len(current) - self._oob_filled, self._end - self._start)
                if n:
                    end = self._oob_filled + n
                    current[self._oob_filled : end] = self._buf[self._start : self._start + n]
                    self._start += n
                    self._oob_filled = end
                if self._oob_filled < len(current):
                    return False
            if len(self._oob) == len(self._lengths):
                return True
            self._oob.append(bytearray(self._lengths[len(self._oob)]))
            self._oob_filled = 0


def iter_frames(data: bytes, max_frame_size: int = DEFAULT_MAX_FRAME) -> list[RawFrame]:
    """Decode every complete frame in ``data`` (for tests and tools)."""
    return FrameDecoder(max_frame_size).feed(data)
