"""The codec: values to pickles and back, out-of-band buffers, channel names.

The body is pickled with the C pickler; cloudpickle steps in only for what
that cannot carry faithfully (lambdas, closures, anything from ``__main__``),
which keeps a small call at ~0.4 µs instead of ~2.8 µs. A large top-level
``bytes``/``bytearray``/``memoryview`` travels as an out-of-band buffer: it is
written from where it lies and read straight into its own buffer.
"""

from __future__ import annotations

import pickle
from collections.abc import Hashable
from typing import Any, Final

import cloudpickle

from ._errors import ProtocolError, SerializationError

OOB_THRESHOLD: Final = 64 * 1024  # smaller payloads are cheaper in-band
PROTOCOL: Final = 5
MAX_BUFFERS: Final = 255  # out-of-band buffers in one frame


def _rebuild_bytes(buffer: Any) -> bytes:
    return bytes(buffer)


def _rebuild_bytearray(buffer: Any) -> bytearray:
    return buffer if isinstance(buffer, bytearray) else bytearray(buffer)


def _rebuild_memoryview(buffer: Any) -> memoryview:
    return memoryview(buffer)


_REBUILD: Final = {
    bytes: _rebuild_bytes,
    bytearray: _rebuild_bytearray,
    memoryview: _rebuild_memoryview,
}


class _OutOfBand:
    """Wraps a large binary payload so it pickles as an out-of-band buffer."""

    __slots__ = ("data",)

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = data

    def __reduce_ex__(self, protocol: Any) -> Any:
        return _REBUILD[type(self.data)], (pickle.PickleBuffer(self.data),)


BINARY: Final = frozenset(_REBUILD)


def wrap_large(value: Any) -> Any:
    """Mark ``value`` for out-of-band transfer when it is a large binary payload."""
    if type(value) in BINARY and len(value) >= OOB_THRESHOLD:
        if type(value) is memoryview and not value.c_contiguous:
            return value
        return _OutOfBand(value)
    return value


class Buffers(list[pickle.PickleBuffer]):
    """Collects a pickle's out-of-band buffers (its :meth:`take` is the ``buffer_callback``).

    Only large buffers leave the pickle: a small one costs more as a buffer
    than as bytes, and a frame carries at most :data:`MAX_BUFFERS`. A buffer
    over anything but ``bytes`` is snapshotted: the transport may still hold
    it when the memory behind it changes.
    """

    __slots__ = ()

    def take(self, buffer: pickle.PickleBuffer) -> bool:
        try:
            raw = buffer.raw()
        except BufferError:  # not contiguous: in-band
            return True
        if raw.nbytes < OOB_THRESHOLD or len(self) >= MAX_BUFFERS:
            return True  # (a true value keeps it in the pickle)
        # only bytes is immutable: a read-only view may still show memory that changes
        self.append(buffer if type(raw.obj) is bytes else pickle.PickleBuffer(bytes(raw)))
        return False


def dumps(obj: Any) -> tuple[bytes, list[pickle.PickleBuffer]]:
    """Pickle ``obj``; returns the body and its out-of-band buffers.

    Raises :class:`~corral.SerializationError` when neither pickle nor
    cloudpickle can carry it.
    """
    buffers = Buffers()
    try:
        body = pickle.dumps(obj, PROTOCOL, buffer_callback=buffers.take)
        # pickle writes a reference to __main__ (or a local object) that the other
        # process cannot resolve; cloudpickle sends those by value instead.
        if b"__main__" not in body:
            return body, buffers
    except Exception:
        pass
    buffers.clear()
    try:
        body = cloudpickle.dumps(obj, PROTOCOL, buffer_callback=buffers.take)
    except Exception as error:
        raise SerializationError(
            f"cannot pickle {_describe(obj)}: {type(error).__name__}: {error}. "
            "Send plain data (numbers, strings, containers, dataclasses) or make the "
            "object picklable (define __reduce__ or __getstate__)"
        ) from error
    return body, buffers


def dumps_inband(obj: Any) -> bytes:
    """Pickle ``obj`` into one ``bytes`` (no out-of-band buffers)."""
    body, buffers = dumps(obj)
    if not buffers:
        return body
    result: bytes = cloudpickle.dumps(obj, PROTOCOL)
    return result


def _describe(obj: Any) -> str:
    try:
        text = repr(obj)
    except Exception:
        text = f"<{type(obj).__qualname__} object>"
    return text if len(text) <= 80 else text[:77] + "..."


_channel_bytes: dict[tuple[type, Hashable], bytes] = {}
_FLAT_CHANNELS: Final = frozenset({str, int, bytes})
_channel_values: dict[bytes, Hashable] = {}
_CHANNEL_CACHE: Final = 1024


def _encode_channel(channel: Hashable) -> bytes:
    try:
        hash(channel)
    except TypeError:
        raise TypeError(
            f"a channel must be hashable (a str, an int, a tuple of them...), got {channel!r}"
        ) from None
    body, buffers = dumps(channel)
    if buffers or len(body) > 0xFFFF:
        raise SerializationError(f"channel {_describe(channel)} is too large; use a short name")
    # Cached by (type, value) only for flat channels: 1, 1.0 and True are equal but
    # not the same channel, and inside a tuple the type would be lost from the key.
    if type(channel) in _FLAT_CHANNELS and len(_channel_bytes) < _CHANNEL_CACHE:
        _channel_bytes[type(channel), channel] = body
    return body


def decode_channel(raw: bytes) -> Hashable:
    if not raw:
        return None
    try:
        return _channel_values[raw]
    except KeyError:
        pass
    try:
        value: Hashable = pickle.loads(raw)
        hash(value)
    except Exception as error:
        raise ProtocolError(f"a frame names a channel that will not unpickle: {error!r}") from None
    if len(_channel_values) < _CHANNEL_CACHE:
        _channel_values[raw] = value
    return value


def channel_bytes(channel: Hashable) -> bytes:
    """The wire form of ``channel`` (cached; empty for the default channel)."""
    if channel is None:
        return b""
    if type(channel) in _FLAT_CHANNELS:
        cached = _channel_bytes.get((type(channel), channel))
        if cached is not None:
            return cached
    return _encode_channel(channel)
