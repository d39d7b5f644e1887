"""The wire codec and the frame decoder: pure, no I/O.

Round trips for arbitrary values and frame headers, split anywhere; large
binary payloads out of band; and a decoder that, fed garbage, only ever raises
:class:`corral.ProtocolError`.
"""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import corral
from corral import _codec, _wire
from corral._wire import (
    HEADER,
    OOB_THRESHOLD,
    FrameDecoder,
    Kind,
    RawFrame,
    encode,
    iter_frames,
    loads,
    wrap_large,
)

FUZZ_MAX_FRAME = 1 << 16  # keeps a garbage length field from allocating a gigabyte

# -- strategies ---------------------------------------------------------------------

json_like: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=8), children, max_size=5)
        | st.tuples(children, children)
    ),
    max_leaves=20,
)
channels: st.SearchStrategy[Hashable] = st.one_of(
    st.none(),
    st.text(max_size=20),
    st.integers(),
    st.booleans(),
    st.tuples(st.text(max_size=8), st.integers()),
    st.tuples(st.integers(), st.tuples(st.text(max_size=4))),
)
priorities = st.integers(min_value=-32768, max_value=32767)
call_ids = st.integers(min_value=0, max_value=2**64 - 1)
kinds = st.sampled_from(list(Kind))


def _large(kind: type[bytes | bytearray | memoryview], size: int, fill: int) -> Any:
    data = bytes([fill]) * size
    if kind is bytes:
        return data
    if kind is bytearray:
        return bytearray(data)
    return memoryview(bytearray(data))


large_payloads: st.SearchStrategy[Any] = st.builds(
    _large,
    st.sampled_from([bytes, bytearray, memoryview]),
    st.integers(min_value=OOB_THRESHOLD, max_value=OOB_THRESHOLD + 2048),
    st.integers(min_value=0, max_value=255),
)


@dataclass(frozen=True)
class Spec:
    """One frame to encode, and what decoding it must give back."""

    kind: Kind
    obj: Any
    call_id: int
    channel: Hashable
    priority: int

    def encode(self) -> list[bytes | memoryview]:
        return encode(
            self.kind,
            wrap_large(self.obj),
            call_id=self.call_id,
            channel=self.channel,
            priority=self.priority,
        )


specs: st.SearchStrategy[Spec] = st.builds(
    Spec, kinds, json_like | large_payloads, call_ids, channels, priorities
)


def join(pieces: list[bytes | memoryview]) -> bytes:
    return b"".join(pieces)


def same_value(decoded: Any, original: Any) -> None:
    assert type(decoded) is type(original)
    if isinstance(original, memoryview):
        assert bytes(decoded) == bytes(original)
    else:
        assert decoded == original


def check_frame(frame: RawFrame, spec: Spec) -> None:
    assert frame.kind is spec.kind
    assert frame.call_id == spec.call_id
    assert frame.channel == spec.channel
    assert repr(frame.channel) == repr(spec.channel)  # 1 and True are different channels
    assert frame.priority == spec.priority
    same_value(loads(frame), spec.obj)


def chunks(data: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        yield data[start:cut]
        start = cut
    yield data[start:]


def feed_via_buffer(decoder: FrameDecoder, data: bytes, step: int) -> list[RawFrame]:
    """Feed the way ``asyncio.BufferedProtocol`` does, at most ``step`` bytes a time."""
    frames: list[RawFrame] = []
    view = memoryview(data)
    while view:
        target = decoder.get_buffer(step)
        assert len(target) > 0, "the decoder offered no room to receive into"
        n = min(len(target), len(view), step)
        target[:n] = view[:n]
        del target
        frames.extend(decoder.buffer_updated(n))
        view = view[n:]
    return frames


# -- round trips ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(spec=specs)
def test_one_frame_round_trips(spec: Spec) -> None:
    frames = iter_frames(join(spec.encode()))
    assert len(frames) == 1
    check_frame(frames[0], spec)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    frame_specs=st.lists(specs, min_size=1, max_size=6),
    chunk=st.sampled_from([1, 64, 4096, 256 * 1024]),
    data=st.data(),
)
def test_concatenated_frames_split_anywhere_decode_in_order(
    frame_specs: list[Spec], chunk: int, data: st.DataObject
) -> None:
    stream = b"".join(join(spec.encode()) for spec in frame_specs)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    decoder = FrameDecoder(chunk=chunk)
    frames: list[RawFrame] = []
    for piece in chunks(stream, cuts):
        frames.extend(decoder.feed(piece))
    assert decoder.idle
    assert len(frames) == len(frame_specs)
    for frame, spec in zip(frames, frame_specs, strict=True):
        check_frame(frame, spec)


@settings(max_examples=40, deadline=None)
@given(
    frame_specs=st.lists(specs, min_size=1, max_size=4),
    step=st.sampled_from([1, 7, 100, 5000, 1 << 20]),
    chunk=st.sampled_from([64, 256 * 1024]),
)
def test_frames_fed_through_get_buffer_decode_in_order(
    frame_specs: list[Spec], step: int, chunk: int
) -> None:
    stream = b"".join(join(spec.encode()) for spec in frame_specs)
    decoder = FrameDecoder(chunk=chunk)
    frames = feed_via_buffer(decoder, stream, step)
    assert decoder.idle
    assert len(frames) == len(frame_specs)
    for frame, spec in zip(frames, frame_specs, strict=True):
        check_frame(frame, spec)


def test_a_partial_frame_is_held_until_complete() -> None:
    raw = join(encode(Kind.REQUEST, {"a": 1}, call_id=7, channel="c", priority=-3))
    decoder = FrameDecoder()
    fresh = decoder.idle
    assert decoder.feed(raw[:-1]) == []
    partial = decoder.idle
    (frame,) = decoder.feed(raw[-1:])
    assert (fresh, partial, decoder.idle) == (True, False, True)
    assert (frame.kind, frame.call_id, frame.channel, frame.priority) == (Kind.REQUEST, 7, "c", -3)
    assert loads(frame) == {"a": 1}


@pytest.mark.parametrize("kind", list(Kind))
def test_every_kind_survives(kind: Kind) -> None:
    (frame,) = iter_frames(join(encode(kind, None)))
    assert frame.kind is kind
    assert frame.channel is None
    assert (frame.call_id, frame.priority) == (0, 0)


@pytest.mark.parametrize("priority", [-32768, -1, 0, 1, 32767])
@pytest.mark.parametrize("call_id", [0, 1, 2**64 - 1])
def test_header_extremes_survive(priority: int, call_id: int) -> None:
    for obj in (1, wrap_large(bytes(OOB_THRESHOLD))):
        (frame,) = iter_frames(join(encode(Kind.REPLY, obj, call_id=call_id, priority=priority)))
        assert (frame.call_id, frame.priority) == (call_id, priority)


# -- out-of-band buffers --------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("size", [OOB_THRESHOLD, 3 * 1024 * 1024 + 17])
def test_a_large_binary_payload_travels_out_of_band(
    kind: type[bytes | bytearray | memoryview], size: int
) -> None:
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    original: Any = payload if kind is bytes else kind(bytearray(payload))
    pieces = encode(Kind.MESSAGE, wrap_large(original), channel="big", priority=5)
    assert len(pieces) > 1
    assert sum(len(memoryview(p).cast("B")) for p in pieces[1:]) == size
    raw = join(pieces)

    (whole,) = iter_frames(raw)
    assert len(whole.buffers) == 1
    same_value(loads(whole), original)
    assert (whole.channel, whole.priority) == ("big", 5)

    decoder = FrameDecoder()
    small: list[RawFrame] = []
    for start in range(0, len(raw), 4093):
        small.extend(decoder.feed(raw[start : start + 4093]))
    (chunked,) = small
    same_value(loads(chunked), original)
    assert decoder.idle

    decoder = FrameDecoder(chunk=1024)
    (direct,) = feed_via_buffer(decoder, raw, 1 << 20)
    same_value(loads(direct), original)


def test_a_small_binary_payload_stays_in_band() -> None:
    for value in (bytes(OOB_THRESHOLD - 1), bytearray(100)):
        pieces = encode(Kind.MESSAGE, wrap_large(value))
        assert len(pieces) == 1
        same_value(loads(iter_frames(join(pieces))[0]), value)


def test_wrap_large_leaves_other_values_alone() -> None:
    for value in (1, "x" * OOB_THRESHOLD, [bytes(OOB_THRESHOLD)], bytes(10)):
        assert wrap_large(value) is value


def test_a_large_frame_between_small_ones_fed_byte_by_byte_at_its_edges() -> None:
    big = bytearray(b"\xab") * (OOB_THRESHOLD + 5)
    stream = (
        join(encode(Kind.MESSAGE, "before"))
        + join(encode(Kind.MESSAGE, wrap_large(big)))
        + join(encode(Kind.MESSAGE, "after"))
    )
    decoder = FrameDecoder(chunk=64)
    frames: list[RawFrame] = []
    # byte by byte through the first 200 and last 200 bytes, in one go in between
    for piece in (stream[:200], stream[200:-200], stream[-200:]):
        if len(piece) == 200:
            for i in range(len(piece)):
                frames.extend(decoder.feed(piece[i : i + 1]))
        else:
            frames.extend(decoder.feed(piece))
    assert [type(loads(f)) for f in frames] == [str, bytearray, str]
    assert loads(frames[1]) == big


def test_large_pickle_buffers_inside_a_value_travel_out_of_band() -> None:
    big = bytes(OOB_THRESHOLD)
    value = [
        pickle.PickleBuffer(b"ab"),
        pickle.PickleBuffer(big),
        pickle.PickleBuffer(bytearray(big)),
        3,
    ]
    pieces = encode(Kind.MESSAGE, value)
    assert len(pieces) == 3  # the two large ones; the small one stays in the pickle
    (frame,) = iter_frames(join(pieces))
    first, second, third, fourth = loads(frame)
    assert (bytes(first), bytes(second), bytes(third), fourth) == (b"ab", big, big, 3)


def test_a_writable_buffer_is_sent_as_it_was_when_encoded() -> None:
    data = bytearray(OOB_THRESHOLD)
    pieces = encode(Kind.MESSAGE, wrap_large(data))
    data[:4] = b"late"  # the transport may still hold the frame: it must not see this
    (frame,) = iter_frames(join(pieces))
    assert loads(frame) == bytearray(OOB_THRESHOLD)


def test_many_buffers_cross_past_the_out_of_band_limit() -> None:
    value = [pickle.PickleBuffer(bytes(OOB_THRESHOLD)) for _ in range(300)]
    pieces = encode(Kind.MESSAGE, value)
    assert len(pieces) == 1 + 255  # the rest went in-band
    (frame,) = iter_frames(join(pieces))
    assert [len(bytes(b)) for b in loads(frame)] == [OOB_THRESHOLD] * 300


# -- a decoder fed garbage --------------------------------------------------------------


def feed_garbage(decoder: FrameDecoder, stream: bytes, cuts: list[int]) -> bool:
    """Feed ``stream`` in pieces; True when the decoder raised ProtocolError.

    Anything other than ProtocolError escapes and fails the test.
    """
    try:
        for piece in chunks(stream, cuts):
            for frame in decoder.feed(piece):
                assert isinstance(frame, RawFrame)
                assert frame.kind in Kind
    except corral.ProtocolError:
        event("the decoder raised ProtocolError")
        return True
    event("the decoder raised nothing")
    return False


def assert_stays_broken(decoder: FrameDecoder) -> None:
    for _ in range(2):
        with pytest.raises(corral.ProtocolError):
            decoder.feed(join(encode(Kind.MESSAGE, "valid")))
        with pytest.raises(corral.ProtocolError):
            decoder.get_buffer()


@settings(max_examples=300, deadline=None)
@given(
    stream=st.binary(max_size=300),
    cuts=st.lists(st.integers(0, 300), max_size=5),
    chunk=st.sampled_from([16, 256 * 1024]),
)
def test_arbitrary_bytes_raise_only_protocol_error(
    stream: bytes, cuts: list[int], chunk: int
) -> None:
    decoder = FrameDecoder(FUZZ_MAX_FRAME, chunk=chunk)
    if feed_garbage(decoder, stream, cuts):
        assert_stays_broken(decoder)


@st.composite
def header_then_garbage(draw: st.DrawFn) -> bytes:
    """A plausible header (a known kind, a small length) followed by random bytes."""
    body = draw(st.binary(max_size=200))
    nbuf = draw(st.integers(0, 3))
    length = draw(st.integers(0, 300))
    head = HEADER.pack(
        length,
        draw(st.sampled_from(list(Kind))),
        nbuf,
        draw(priorities),
        draw(call_ids),
        draw(st.integers(0, 0xFFFF) | st.integers(0, 40)),
    )
    return head + body


@settings(max_examples=300, deadline=None)
@given(stream=header_then_garbage(), cuts=st.lists(st.integers(0, 600), max_size=5))
def test_plausible_headers_with_garbage_raise_only_protocol_error(
    stream: bytes, cuts: list[int]
) -> None:
    decoder = FrameDecoder(FUZZ_MAX_FRAME)
    if feed_garbage(decoder, stream, cuts):
        assert_stays_broken(decoder)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    frame_specs = draw(
        st.lists(st.builds(Spec, kinds, json_like, call_ids, channels, priorities), max_size=4)
    )
    stream = bytearray(b"".join(join(spec.encode()) for spec in frame_specs))
    if not stream:
        stream = bytearray(join(encode(Kind.MESSAGE, "x", channel=("a", 1))))
    for _ in range(draw(st.integers(1, 4))):
        how = draw(st.sampled_from(["flip", "truncate", "extend", "delete", "insert"]))
        at = draw(st.integers(0, max(len(stream) - 1, 0)))
        if how == "flip" and stream:
            stream[at] ^= draw(st.integers(1, 255))
        elif how == "truncate":
            del stream[at:]
        elif how == "extend":
            stream += draw(st.binary(min_size=1, max_size=40))
        elif how == "delete":
            del stream[at : at + draw(st.integers(1, 8))]
        else:
            stream[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(stream)


@settings(max_examples=300, deadline=None)
@given(stream=mutated_streams(), cuts=st.lists(st.integers(0, 2000), max_size=5))
def test_mutated_frames_raise_only_protocol_error(stream: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder(FUZZ_MAX_FRAME)
    if feed_garbage(decoder, stream, cuts):
        assert_stays_broken(decoder)


@settings(max_examples=100, deadline=None)
@given(
    value=large_payloads,
    at=st.integers(0, HEADER.size + 40),
    mask=st.integers(1, 255),
    step=st.sampled_from([1000, 1 << 20]),
)
def test_a_corrupt_header_of_an_out_of_band_frame_raises_only_protocol_error(
    value: Any, at: int, mask: int, step: int
) -> None:
    stream = bytearray(join(encode(Kind.MESSAGE, wrap_large(value), channel="c")))
    stream[at] ^= mask
    decoder = FrameDecoder(1 << 20, chunk=4096)
    try:
        for frame in feed_via_buffer(decoder, bytes(stream), step):
            assert frame.kind in Kind
    except corral.ProtocolError:
        assert_stays_broken(decoder)


def test_an_unknown_kind_is_a_protocol_error() -> None:
    raw = bytearray(join(encode(Kind.MESSAGE, 1)))
    raw[4] = 200
    decoder = FrameDecoder()
    with pytest.raises(corral.ProtocolError, match="unknown frame kind 200"):
        decoder.feed(bytes(raw))
    assert_stays_broken(decoder)


def test_a_channel_that_will_not_unpickle_is_a_protocol_error() -> None:
    raw = bytearray(join(encode(Kind.MESSAGE, 1, channel="abcdef")))
    raw[HEADER.size] = ord(".")  # the channel's pickle, right after the header: STOP at once
    decoder = FrameDecoder()
    with pytest.raises(corral.ProtocolError, match="channel"):
        decoder.feed(bytes(raw))
    assert_stays_broken(decoder)


def test_an_unhashable_channel_is_a_protocol_error() -> None:
    channel = pickle.dumps([1, 2], 5)
    body = pickle.dumps(None, 5)
    length = HEADER.size - 4 + len(channel) + len(body)
    raw = HEADER.pack(length, Kind.MESSAGE, 0, 0, 0, len(channel)) + channel + body
    with pytest.raises(corral.ProtocolError, match="channel"):
        iter_frames(raw)


def test_a_frame_too_short_to_be_a_frame_is_a_protocol_error() -> None:
    raw = HEADER.pack(3, Kind.MESSAGE, 0, 0, 0, 0) + bytes(40)
    with pytest.raises(corral.ProtocolError, match=r"too short|do not add up"):
        iter_frames(raw)


def test_lengths_that_do_not_add_up_are_a_protocol_error() -> None:
    body = pickle.dumps(None, 5)
    length = HEADER.size - 4 + len(body)
    # the channel claims more bytes than the frame holds
    raw = HEADER.pack(length, Kind.MESSAGE, 0, 0, 0, 500) + body
    with pytest.raises(corral.ProtocolError, match="do not add up"):
        iter_frames(raw + bytes(600))
    # the out-of-band buffers claim more bytes than the frame holds
    raw = HEADER.pack(length + 8, Kind.MESSAGE, 1, 0, 0, 0) + (10**6).to_bytes(8, "little")
    with pytest.raises(corral.ProtocolError, match="do not add up"):
        iter_frames(raw + body)


def test_a_body_that_will_not_unpickle_still_decodes_to_a_frame() -> None:
    body = b"\x80\x05garbage"
    length = HEADER.size - 4 + len(body)
    (frame,) = iter_frames(HEADER.pack(length, Kind.REPLY, 0, 1, 9, 0) + body)
    assert (frame.kind, frame.call_id, frame.priority) == (Kind.REPLY, 9, 1)
    with pytest.raises(Exception):  # noqa: B017, PT011 (unpickling garbage may raise anything)
        loads(frame)


# -- max_frame_size -------------------------------------------------------------------


def test_max_frame_size_bounds_encoding_exactly() -> None:
    for value in ("x" * 1000, wrap_large(bytes(OOB_THRESHOLD + 10))):
        size = len(join(encode(Kind.MESSAGE, value, channel="c"))) - 4
        encode(Kind.MESSAGE, value, channel="c", max_frame_size=size)
        with pytest.raises(corral.SerializationError, match="max_frame_size"):
            encode(Kind.MESSAGE, value, channel="c", max_frame_size=size - 1)


def test_max_frame_size_bounds_decoding_exactly() -> None:
    for value in ("x" * 1000, bytes(OOB_THRESHOLD + 10)):
        raw = join(encode(Kind.MESSAGE, wrap_large(value)))
        size = len(raw) - 4
        (frame,) = iter_frames(raw, max_frame_size=size)
        assert loads(frame) == value
        with pytest.raises(corral.ProtocolError, match="exceeds the maximum frame size"):
            iter_frames(raw, max_frame_size=size - 1)
        # the header alone is enough to refuse it
        decoder = FrameDecoder(size - 1)
        with pytest.raises(corral.ProtocolError, match="exceeds the maximum frame size"):
            decoder.feed(raw[: HEADER.size])
        assert_stays_broken(decoder)


def test_a_header_announcing_a_huge_frame_is_refused_before_reading_it() -> None:
    raw = HEADER.pack(2**32 - 1, Kind.MESSAGE, 0, 0, 0, 0)
    with pytest.raises(corral.ProtocolError, match="exceeds the maximum frame size"):
        FrameDecoder().feed(raw)


def test_a_channel_too_large_is_a_serialization_error() -> None:
    with pytest.raises(corral.SerializationError, match="too large"):
        encode(Kind.MESSAGE, 1, channel="x" * 70_000)


# -- what will and will not pickle ------------------------------------------------------


def _generator() -> Iterator[int]:
    yield 1


@pytest.mark.parametrize(
    "make",
    [threading.Lock, _generator, lambda: [1, threading.Lock()]],
    ids=["lock", "generator", "nested-lock"],
)
def test_unpicklable_values_are_a_serialization_error(make: Callable[[], Any]) -> None:
    value = make()
    with pytest.raises(corral.SerializationError, match="cannot pickle"):
        encode(Kind.MESSAGE, value)
    with pytest.raises(corral.SerializationError, match="cannot pickle"):
        _wire.dumps(value)


def test_lambdas_closures_and_local_classes_travel_by_value() -> None:
    offset = 10

    def closure(x: int) -> int:
        return x + offset

    class Local:
        def __init__(self, value: int) -> None:
            self.value = value

        def doubled(self) -> int:
            return 2 * self.value

    square: Callable[[int], int] = lambda x: x * x  # noqa: E731

    (frame,) = iter_frames(join(encode(Kind.MESSAGE, (square, closure, Local(21)))))
    square2, closure2, local2 = loads(frame)
    assert square2(7) == 49
    assert closure2(1) == 11
    assert local2.doubled() == 42


def test_a_body_naming_main_goes_through_cloudpickle_and_still_round_trips() -> None:
    value = {"__main__": b"__main__", "x": [1, 2]}
    (frame,) = iter_frames(join(encode(Kind.MESSAGE, value)))
    assert loads(frame) == value


@pytest.mark.parametrize("priority", [-32769, 32768, 10**6, -(10**6)])
def test_priority_out_of_range_is_a_value_error(priority: int) -> None:
    for value in (1, wrap_large(bytes(OOB_THRESHOLD))):
        with pytest.raises(ValueError, match="priority must be between -32768 and 32767"):
            encode(Kind.MESSAGE, value, priority=priority)


# -- regressions -------------------------------------------


class _RefusesToPickle:
    """Unpicklable the way many real objects are: ``__reduce__`` raises."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __reduce__(self) -> Any:
        raise self.error


class _BrokenRepr:
    """Unpicklable (holds a lock), and its ``__repr__`` raises."""

    def __init__(self) -> None:
        self.lock = threading.Lock()

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def _nested(depth: int) -> list[Any]:
    outer: list[Any] = []
    inner = outer
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return outer


@pytest.mark.parametrize(
    "make",
    [
        lambda: _RefusesToPickle(RuntimeError("no")),
        lambda: _RefusesToPickle(ValueError("no")),
        lambda: _nested(50_000),
        _BrokenRepr,
    ],
    ids=["reduce-raises-runtime-error", "reduce-raises-value-error", "deeply-nested", "bad-repr"],
)
def test_any_pickling_failure_is_a_serialization_error(make: Callable[[], Any]) -> None:
    value = make()
    with pytest.raises(corral.SerializationError):
        encode(Kind.MESSAGE, value)
    with pytest.raises(corral.SerializationError):
        _wire.dumps(value)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (1, True),
        (1, 1.0),
        (0, False),
        (("job", 1), ("job", True)),
    ],
)
def test_a_channel_keeps_its_type_after_an_equal_channel_was_sent(
    monkeypatch: pytest.MonkeyPatch, first: Hashable, second: Hashable
) -> None:
    monkeypatch.setattr(_codec, "_channel_bytes", {})
    for channel in (first, second, first):
        (frame,) = iter_frames(join(encode(Kind.MESSAGE, None, channel=channel)))
        assert frame.channel == channel
        assert type(frame.channel) is type(channel)
        assert repr(frame.channel) == repr(channel)
