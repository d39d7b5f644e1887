"""Bad input gives its documented error, and everything stays usable afterwards.

After each bad input a good call is made and its value checked. The inputs:

- bytes a child writes raw to its socket, between the frames, chosen by
  hypothesis: a corrupt frame fails the calls in flight with
  ``corral.ProtocolError``, the child is killed and (``restart="on-failure"``)
  started again; any bytes followed by the child's exit give either that or
  ``WorkerCrashed``, and never a hang;
- values that will not pickle, or will not unpickle on the other side:
  arguments, results, stream items, exceptions (proxies, the messenger,
  pools, ``corral.Process`` jobs): ``SerializationError`` naming what,
  ``RemoteError`` for an exception that will not cross, the section's error
  for a job;
- frames over the size limit (``DEFAULT_MAX_FRAME``, 1 GiB): refused at the
  sender with ``SerializationError``, the connection untouched; a header
  announcing one is refused at the receiver with ``ProtocolError``;
- garbage on the pipe with calls and streams in flight, under a supervisor
  and from an ``open_worker`` function;
- children that exit during the handshake (in the constructor, as the
  target is unpickled, as its module is imported): ``StartupError`` (or
  ``WorkerCrashed`` once the handshake is done), and nothing left behind.
"""

from __future__ import annotations

import contextlib
import functools
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.lowlevel
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

import corral
from corral._wire import DEFAULT_MAX_FRAME, HEADER, FrameDecoder, Kind, RawFrame, encode
from tests.hosts import ROOT
from tests.reliability.children import (
    EXIT_ON_IMPORT,
    IMPORT_EXIT,
    Calls,
    ExitOnLoad,
    ExitsInInit,
    ExitsOnRestart,
    Faulty,
    LockedResult,
    Plain,
    RaisesLocked,
    RaisesTwoArgument,
    Relay,
    SizedResult,
    Unloadable,
    answer,
    exits_at_once,
    garbles,
    lock_result,
    odd_answers,
    raise_locked,
    raise_two_argument,
    takes_unloadable,
    triple,
)
from tests.reliability.conftest import full, scale
from tests.reliability.test_cancellation import SETTLE, descendants, nothing_left_behind

pytestmark = pytest.mark.anyio

OVER = DEFAULT_MAX_FRAME + 1  # a value this large makes a frame over the limit
FIXED = HEADER.size - 4  # the header's bytes counted in its length field
KNOWN_KINDS = frozenset(int(kind) for kind in Kind)
#: hypothesis examples per test: each one restarts a child (a fresh interpreter)
EXAMPLES = scale(6, 60)
CORRUPT = r"corrupt|exceeds the maximum frame size|too short|do not add up|channel"


def is_uvloop(anyio_backend: Any) -> bool:
    return bool(anyio_backend[0] == "asyncio" and anyio_backend[1].get("use_uvloop"))


async def good_call(proxy: corral.Proxy[Any], token: Any) -> None:
    """The proxy answers, with the right value."""
    with anyio.fail_after(SETTLE):
        assert await proxy.echo(token) == token


@contextlib.asynccontextmanager
async def served(how: str, target: Callable[..., Any], /, **options: Any) -> AsyncIterator[Any]:
    """A proxy for ``target`` in a child: alone (``corral.spawn``) or a supervisor's."""
    if how == "alone":
        async with corral.spawn(target, **options) as proxy:
            yield proxy
    else:
        async with corral.Supervisor() as sup:
            yield await sup.spawn(target, **options)


# -- bytes from a child, chosen by hypothesis --------------------------------------------


def decoded(data: bytes) -> tuple[list[RawFrame], bool]:
    """The frames a fresh decoder makes of ``data``, and whether it refused it."""
    decoder = FrameDecoder(DEFAULT_MAX_FRAME)
    frames: list[RawFrame] = []
    try:
        frames += decoder.feed(data)
    except corral.ProtocolError:
        return frames, True
    return frames, False


@st.composite
def corrupt_frames(draw: st.DrawFn) -> bytes:
    """A header the decoder must refuse by itself, then anything.

    An unknown kind, a length over the limit or too short to be a frame, or a
    channel longer than the frame; the rest of the header is arbitrary.
    """
    how = draw(st.sampled_from(["kind", "too-long", "too-short", "channel"]))
    kind = draw(st.sampled_from(sorted(KNOWN_KINDS)))
    length = draw(st.integers(FIXED, 4096))
    nbuf = draw(st.integers(0, 255))
    channel_length = draw(st.integers(0, 0xFFFF))
    if how == "kind":
        kind = draw(st.integers(0, 255).filter(lambda k: k not in KNOWN_KINDS))
        length = draw(st.integers(0, 2**32 - 1))
    elif how == "too-long":
        length = draw(st.integers(DEFAULT_MAX_FRAME + 1, 2**32 - 1))
    elif how == "too-short":
        length = draw(st.integers(0, FIXED - 1))
    else:
        nbuf = 0
        channel_length = draw(st.integers(length - FIXED + 1, 0xFFFF))
    event(how)
    priority = draw(st.integers(-(2**15), 2**15 - 1))
    call_id = draw(st.integers(0, 2**64 - 1))
    head = HEADER.pack(length, kind, nbuf, priority, call_id, channel_length)
    return head + draw(st.binary(max_size=300))


@st.composite
def cut_frames(draw: st.DrawFn) -> bytes:
    """A well-formed frame (or several), cut short anywhere: it waits for bytes never sent."""
    stream = b"".join(
        b"".join(bytes(piece) for piece in encode(kind, value, call_id=call_id, channel=channel))
        for kind, value, call_id, channel in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(list(Kind)),
                    st.none() | st.integers() | st.text(max_size=30) | st.binary(max_size=60),
                    st.integers(0, 2**64 - 1),
                    st.none() | st.text(max_size=10),
                ),
                min_size=1,
                max_size=3,
            )
        )
    )
    return stream[: draw(st.integers(1, len(stream) - 1))]


#: Bytes of every sort: arbitrary, a frame cut short, a corrupt header.
any_bytes = st.binary(min_size=1, max_size=300) | cut_frames() | corrupt_frames()


@pytest.fixture
async def garbled() -> AsyncIterator[corral.Proxy[Faulty]]:
    """A child that restarts after each failure (a limit it never reaches): one per test,
    shared by its hypothesis examples."""
    async with corral.spawn(
        Faulty, restart="on-failure", max_restarts=1_000_000, restart_window=1e-3
    ) as proxy:
        yield proxy


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(garbage=corrupt_frames(), token=st.integers())
async def test_a_corrupt_frame_from_a_child_is_a_protocol_error_and_the_restart_answers(
    garbled: corral.Proxy[Faulty], garbage: bytes, token: int
) -> None:
    assert decoded(garbage)[1], "the strategy made a frame the decoder accepts"
    pid = garbled.pid
    restarts = garbled.statistics().restarts
    with anyio.fail_after(SETTLE):
        with pytest.raises(corral.ProtocolError, match=CORRUPT):
            await garbled.write(garbage)  # its answer follows the garbage: never read
        await good_call(garbled, token)  # a new child
    stats = garbled.statistics()
    assert garbled.pid not in (None, pid)
    assert pid not in descendants()  # the one that sent garbage was killed (and reaped)
    assert (stats.restarts, stats.in_flight) == (restarts + 1, 0)


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=any_bytes, token=st.integers())
async def test_any_bytes_then_the_childs_exit_fail_the_call_and_the_restart_answers(
    garbled: corral.Proxy[Faulty], data: bytes, token: int
) -> None:
    frames, refused = decoded(data)
    assume(not frames)  # (a whole frame, of whatever kind, would be taken as one)
    event("refused by the decoder" if refused else "a partial frame")
    pid = garbled.pid
    with anyio.fail_after(SETTLE):
        with pytest.raises((corral.ProtocolError, corral.WorkerCrashed)) as raised:
            await garbled.write_then_exit(data, 3)
        await good_call(garbled, token)
    error = raised.value
    event(f"raised {type(error).__name__}")
    if not refused:  # nothing the decoder could object to: the exit is the news
        assert isinstance(error, corral.WorkerCrashed)
    if isinstance(error, corral.WorkerCrashed):  # (refused: the exit may be seen first)
        assert error.exit_code == 3
    assert garbled.pid not in (None, pid)
    assert garbled.statistics().in_flight == 0


# -- garbage on the pipe, with calls in flight --------------------------------------------


GARBAGE = b"\xff" * 64  # an unknown kind, a length over the limit


async def test_garbage_fails_every_call_in_flight_and_a_supervised_child_restarts() -> None:
    async with nothing_left_behind(), corral.Supervisor() as sup:
        other = await sup.spawn(Calls, restart="on-failure")
        sender = await sup.spawn(Faulty, restart="on-failure")
        assert await other.echo(0) == 0
        pid = sender.pid
        errors: list[BaseException] = []

        async def in_flight(call: Callable[[], Awaitable[Any]]) -> None:
            try:
                await call()
            except corral.ProtocolError as error:
                errors.append(error)

        async def stream() -> None:
            async for _ in sender.trickle():  # one item, then it waits for the next
                pass

        with anyio.fail_after(SETTLE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(in_flight, stream)
                for i in range(5):
                    tg.start_soon(in_flight, functools.partial(sender.aecho, i, 60))
                while sender.statistics().in_flight < 6:
                    await anyio.lowlevel.checkpoint()
                tg.start_soon(in_flight, functools.partial(sender.write, GARBAGE))
        assert len(errors) == 7, errors
        assert all("it was killed" in str(error) for error in errors)
        await good_call(sender, "after")
        assert sender.pid not in (None, pid)
        assert pid not in descendants()
        assert sender.statistics().restarts == 1
        assert await other.echo(1) == 1  # the other child never noticed
        assert other.statistics().restarts == 0


async def test_garbage_from_a_child_without_restart_fails_the_supervisor_and_the_next_runs() -> (
    None
):
    async with nothing_left_behind():
        with pytest.raises(corral.WorkerFailed, match="'garbler'") as raised:
            async with corral.Supervisor() as sup:
                sender = await sup.spawn(Faulty, name="garbler")
                with pytest.raises(corral.ProtocolError, match=CORRUPT):
                    await sender.write(GARBAGE)
                await anyio.sleep_forever()  # the supervisor cancels the body when it fails
        assert isinstance(raised.value.__cause__, corral.ProtocolError)
        async with corral.Supervisor() as sup:
            await good_call(await sup.spawn(Faulty, name="garbler"), "a new supervisor")


async def test_garbage_from_an_open_worker_fails_its_requests_and_its_block_ends() -> None:
    async with nothing_left_behind():
        async with corral.open_worker(garbles) as worker:
            with anyio.fail_after(SETTLE), pytest.raises(corral.ProtocolError, match=CORRUPT):
                await worker.request(GARBAGE)
            with pytest.raises(corral.ProtocolError):  # the connection is gone for good
                await worker.request(b"later")
            assert worker.closed
            assert worker.remaining() == 0
        async with corral.open_worker(answer) as worker:
            assert await worker.request(("echo", 5)) == 5


# -- values that will not cross -----------------------------------------------------------


@pytest.mark.parametrize("how", ["alone", "supervised"])
async def test_proxy_values_that_will_not_cross_leave_the_proxy_usable(how: str) -> None:
    lock = threading.Lock()
    async with nothing_left_behind(), served(how, Faulty) as proxy:
        pid = proxy.pid
        bad = 0

        async def refused(
            call: Callable[[], Awaitable[Any]], error: type[BaseException], match: str
        ) -> BaseException:
            nonlocal bad
            bad += 1
            with anyio.fail_after(SETTLE), pytest.raises(error, match=match) as raised:
                await call()
            await good_call(proxy, ("after", bad))
            return raised.value

        # arguments that will not pickle: named, and nothing sent
        error = await refused(
            lambda: proxy.echo([1, lock]), corral.SerializationError, "argument 0"
        )
        assert isinstance(error, corral.SerializationError)
        assert error.argument == "0"
        error = await refused(
            lambda: proxy.call("describe", value=lock), corral.SerializationError, "value="
        )
        assert isinstance(error, corral.SerializationError)
        assert error.argument == "value"
        error = await refused(
            lambda: proxy.set_attr("args", lock), corral.SerializationError, "cannot pickle"
        )

        async def stream_with_lock() -> None:
            async for _ in proxy.sized_items(lock):  # sent on the first step
                pass

        error = await refused(stream_with_lock, corral.SerializationError, "argument 0")
        with pytest.raises(corral.SerializationError, match="argument 0"):
            proxy.echo.nowait(lock)  # at once, nothing sent
        # an argument that pickles here but will not unpickle there
        await refused(
            lambda: proxy.describe(Unloadable()),
            corral.SerializationError,
            "request would not unpickle",
        )
        # results that will not pickle there, or will not unpickle here
        error = await refused(proxy.lock, corral.SerializationError, "cannot pickle")
        assert any("other process" in note for note in error.__notes__)
        await refused(proxy.unloadable, corral.SerializationError, "reply would not unpickle")

        async def items_then_lock() -> list[Any]:
            return [item async for item in proxy.items_then_lock()]

        await refused(items_then_lock, corral.SerializationError, "cannot pickle")
        # exceptions that will not unpickle here, or will not pickle there
        error = await refused(proxy.raise_two_argument_error, corral.RemoteError, "1 and 2")
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("TwoArgumentError")
        assert "raise_two_argument_error" in error.traceback
        error = await refused(proxy.raise_locked_error, corral.RemoteError, "holds a lock")
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("LockedError")
        stats = proxy.statistics()
        assert proxy.pid == pid  # none of it harmed the child
        assert (stats.restarts, stats.in_flight) == (0, 0)
        assert stats.errors >= bad


async def test_messenger_values_that_will_not_cross_leave_it_usable() -> None:
    async with nothing_left_behind(), corral.open_worker(odd_answers) as worker:
        bad = 0

        async def refused(value: Any, error: type[BaseException], match: str) -> BaseException:
            nonlocal bad
            bad += 1
            with anyio.fail_after(SETTLE), pytest.raises(error, match=match) as raised:
                await worker.request(value)
            assert worker.remaining() == 0
            with anyio.fail_after(SETTLE):
                assert await worker.request(("echo", bad)) == bad
            return raised.value

        await refused(("echo", threading.Lock()), corral.SerializationError, "cannot pickle")
        with pytest.raises(corral.SerializationError):
            worker.request_stream(("echo", threading.Lock()))
        with pytest.raises(corral.SerializationError):
            worker.send_nowait(threading.Lock(), channel="anything")
        await refused(("echo", Unloadable()), corral.SerializationError, "would not unpickle")
        await refused(("lock", None), corral.SerializationError, "cannot pickle")
        await refused(("unloadable", None), corral.SerializationError, "would not unpickle")
        error = await refused(("locked-error", "locked x"), corral.RemoteError, "locked x")
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("LockedError")
        error = await refused(("two-argument-error", 7), corral.RemoteError, "7 and 7")
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("TwoArgumentError")
        assert not worker.closed


async def test_pool_values_that_will_not_cross_fail_their_items_only() -> None:
    expected = [3 * x for x in range(100)]
    async with nothing_left_behind(), corral.Pool(2) as pool:

        async def refused(
            call: Callable[[], Awaitable[Any]], error: type[BaseException], item: int
        ) -> BaseException:
            with anyio.fail_after(SETTLE), pytest.raises(error) as raised:
                await call()
            assert f"(item {item} of the map)" in raised.value.__notes__
            with anyio.fail_after(SETTLE):
                assert await pool.map(triple, range(100)) == expected
            return raised.value

        error = await refused(
            lambda: pool.map(lock_result, range(6)), corral.SerializationError, 3
        )
        assert "cannot pickle" in str(error)
        locked_errors = functools.partial(pool.map, raise_locked, range(6))
        error = await refused(locked_errors, corral.RemoteError, 2)
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("LockedError")
        error = await refused(
            lambda: pool.map(raise_two_argument, range(6)), corral.RemoteError, 2
        )
        assert isinstance(error, corral.RemoteError)
        assert error.type_name.endswith("TwoArgumentError")
        error = await refused(
            lambda: pool.map(takes_unloadable, [0, Unloadable(), 2]), corral.SerializationError, 1
        )
        assert "would not unpickle" in str(error)
        # with return_exceptions=True, the others are right, each error in its place
        results = await pool.map(lock_result, range(6), return_exceptions=True)
        assert [r for i, r in enumerate(results) if i != 3] == [0, 1, 2, 4, 5]
        assert isinstance(results[3], corral.SerializationError)
        with pytest.raises(corral.SerializationError):
            await pool.submit(takes_unloadable, threading.Lock())
        assert await pool.submit(triple, 5) == 15
        stats = pool.statistics()
        assert (stats.crashes, stats.restarts) == (0, 0)


async def test_job_values_that_will_not_cross_leave_the_supervisor_usable() -> None:
    async with nothing_left_behind(), corral.Supervisor() as sup:
        good = 0

        async def next_job_answers() -> None:
            nonlocal good
            good += 1
            with anyio.fail_after(SETTLE):
                assert await (await sup.start(Plain(good))).result() == good

        with pytest.raises(corral.SerializationError, match="attribute 'value'") as refused:
            await sup.start(Plain(threading.Lock()))  # the instance will not pickle
        assert refused.value.argument == "value"
        await next_job_answers()
        with anyio.fail_after(SETTLE), pytest.raises(corral.ResultError) as result_error:
            await (await sup.start(LockedResult())).result()
        assert isinstance(result_error.value.original_error, corral.SerializationError)
        await next_job_answers()
        for process, type_name in ((RaisesLocked(), "LockedError"), (RaisesTwoArgument(), "")):
            with anyio.fail_after(SETTLE), pytest.raises(corral.RunError) as run_error:
                await (await sup.start(process)).result()
            original = run_error.value.original_error
            assert isinstance(original, corral.RemoteError)
            assert original.type_name.endswith(type_name or "TwoArgumentError")
            await next_job_answers()
        relay = await sup.start(Relay(2))  # values told that will not pickle
        with pytest.raises(corral.SerializationError):
            await relay.tell(threading.Lock())
        await relay.tell("first")
        await relay.tell(Unloadable())  # pickles here; unloading it in the child fails
        with anyio.fail_after(SETTLE):
            assert await relay.listen() == "first"
            with pytest.raises(corral.RunError) as run_error:  # its listen() raised
                await relay.result()
        assert isinstance(run_error.value.original_error, corral.SerializationError)
        assert "would not unpickle" in str(run_error.value.original_error)
        await next_job_answers()


# -- frames over the size limit ---------------------------------------------------------


@pytest.mark.parametrize("how", ["alone", "supervised"])
async def test_frames_over_the_limit_are_refused_by_the_sender_and_the_proxy_goes_on(
    how: str,
) -> None:
    big = bytes(OVER)  # (calloc: untouched zero pages; sent out of band, never copied)
    async with nothing_left_behind(), served(how, Faulty) as proxy:
        pid = proxy.pid
        with anyio.fail_after(SETTLE):
            with pytest.raises(corral.SerializationError, match="exceeds the maximum frame size"):
                await proxy.echo(big)  # host to child: refused before sending
            await good_call(proxy, 1)
            with pytest.raises(corral.SerializationError, match="exceeds") as refused:
                await proxy.sized(OVER)  # child to host: the child answers with the error
            assert any("other process" in note for note in refused.value.__notes__)
            await good_call(proxy, 2)
            items: list[Any] = []
            with pytest.raises(corral.SerializationError, match="exceeds"):
                async for item in proxy.sized_items(OVER):  # a stream's item
                    items.append(item)
            assert items == [b"small"]
            await good_call(proxy, 3)
            with pytest.raises(corral.SerializationError, match="exceeds"):
                await proxy.publish_sized(OVER)  # a message the child sends
            await good_call(proxy, 4)
            assert await proxy.sized(1 << 20) == bytes(1 << 20)  # large, within the limit
        assert proxy.pid == pid
        assert proxy.statistics().restarts == 0
    del big


async def test_frames_over_the_limit_are_refused_by_the_messenger_and_it_goes_on() -> None:
    big = bytes(OVER)
    async with nothing_left_behind(), corral.open_worker(odd_answers) as worker:
        with anyio.fail_after(SETTLE):
            with pytest.raises(corral.SerializationError, match="exceeds"):
                await worker.request(big)
            with pytest.raises(corral.SerializationError, match="exceeds"):
                worker.send_nowait(big, channel="big")
            assert worker.remaining() == 0
            assert await worker.request(("echo", 1)) == 1
            with pytest.raises(corral.SerializationError, match="exceeds"):
                await worker.request(("sized", OVER))
            assert await worker.request(("echo", 2)) == 2
            assert await worker.request(("sized", 1 << 20)) == bytes(1 << 20)
        assert not worker.closed
    del big


async def test_a_header_announcing_a_frame_over_the_limit_is_refused_by_the_receiver() -> None:
    async with nothing_left_behind(), corral.Supervisor() as sup:
        proxy = await sup.spawn(Faulty, restart="on-failure")
        pid = proxy.pid
        header = HEADER.pack(OVER, Kind.REPLY, 0, 0, 1, 0)  # refused before reading on
        with anyio.fail_after(SETTLE), pytest.raises(corral.ProtocolError, match="exceeds"):
            await proxy.write(header)
        await good_call(proxy, "after")
        assert proxy.pid not in (None, pid)
        assert proxy.statistics().restarts == 1


async def test_pool_and_job_values_over_the_limit_fail_their_item_or_job_only(
    anyio_backend: Any,
) -> None:
    """Pool items and results and a job's result over the limit (each pickled in-band:
    a gigabyte copied, ~2 s each; so on one loop, or all with CORRAL_RELIABILITY=full)."""
    if not is_uvloop(anyio_backend) and not full():
        pytest.skip("a gigabyte copied per value: run on uvloop only (all: CORRAL_RELIABILITY)")
    async with nothing_left_behind(), corral.Supervisor() as sup:
        pool = sup.pool(2)
        with anyio.fail_after(4 * SETTLE):
            with pytest.raises(corral.SerializationError, match="exceeds") as refused:
                await pool.map(takes_unloadable, [b"", bytes(OVER)])  # an item
            assert "(item 1 of the map)" in refused.value.__notes__
            assert await pool.map(triple, range(10)) == [3 * x for x in range(10)]
            with pytest.raises(corral.SerializationError, match="exceeds") as refused:
                await pool.map(bytes, [1, OVER])  # a result
            assert "(item 1 of the map)" in refused.value.__notes__
            assert await pool.map(triple, range(10)) == [3 * x for x in range(10)]
            with pytest.raises(corral.ResultError) as result_error:
                await (await sup.start(SizedResult(OVER))).result()
            assert isinstance(result_error.value.original_error, corral.SerializationError)
            assert await (await sup.start(Plain("after"))).result() == "after"
        stats = pool.statistics()
        assert (stats.crashes, stats.restarts) == (0, 0)


# -- children that exit during the handshake -------------------------------------------------


@pytest.mark.parametrize(("how", "restart"), [("alone", "on-failure"), ("supervised", "never")])
async def test_a_child_that_exits_during_the_handshake_is_a_startup_error(
    how: str, restart: Literal["never", "on-failure"], monkeypatch: pytest.MonkeyPatch
) -> None:
    cases: list[tuple[Callable[..., Any], tuple[Any, ...], int, bool]] = [
        (ExitsInInit, (3,), 3, False),  # its constructor ends the process
        (Faulty, (ExitOnLoad(5),), 5, False),  # unpickling its target ends the process
        (Faulty, (), IMPORT_EXIT, True),  # importing its module ends the process
    ]
    async with nothing_left_behind(), contextlib.AsyncExitStack() as stack:
        sup = None if how == "alone" else await stack.enter_async_context(corral.Supervisor())
        for target, args, code, on_import in cases:
            if on_import:
                monkeypatch.setenv(EXIT_ON_IMPORT, str(os.getpid()))
            with anyio.fail_after(SETTLE), pytest.raises(corral.StartupError) as raised:
                if sup is None:
                    async with corral.spawn(target, *args, restart=restart):
                        pytest.fail("the block was entered")
                else:
                    await sup.spawn(target, *args, restart=restart)
            monkeypatch.delenv(EXIT_ON_IMPORT, raising=False)
            assert raised.value.exit_code == code
            assert "exited during startup" in str(raised.value)
            if sup is None:  # and its good twin starts, and answers
                async with corral.spawn(Faulty) as proxy:
                    await good_call(proxy, code)
            else:
                await good_call(await sup.spawn(Faulty), code)


async def test_an_open_worker_that_exits_during_or_after_the_handshake(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with nothing_left_behind():
        monkeypatch.setenv(EXIT_ON_IMPORT, str(os.getpid()))
        with anyio.fail_after(SETTLE), pytest.raises(corral.StartupError) as raised:
            async with corral.open_worker(answer):
                pytest.fail("the block was entered")
        monkeypatch.delenv(EXIT_ON_IMPORT)
        assert raised.value.exit_code == IMPORT_EXIT
        # a function that exits at once: the handshake was done, so its requests tell
        async with corral.open_worker(exits_at_once, code=6) as worker:
            with anyio.fail_after(SETTLE), pytest.raises(corral.WorkerCrashed) as crashed:
                await worker.request(("echo", 1))
            assert crashed.value.exit_code == 6
        async with corral.open_worker(answer) as worker:
            assert await worker.request(("echo", 2)) == 2


async def test_a_job_whose_child_exits_during_the_handshake_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with nothing_left_behind(), corral.Supervisor() as sup:
        with anyio.fail_after(SETTLE):
            with pytest.raises(corral.StartupError) as raised:
                await (await sup.start(Plain(ExitOnLoad(5)))).result()
            assert raised.value.exit_code == 5
            monkeypatch.setenv(EXIT_ON_IMPORT, str(os.getpid()))
            job = await sup.start(Plain("never"))
            with pytest.raises(corral.StartupError) as raised:
                await job.result()
            monkeypatch.delenv(EXIT_ON_IMPORT)
            assert raised.value.exit_code == IMPORT_EXIT
            assert not job.is_alive
            assert await (await sup.start(Plain("after"))).result() == "after"


async def test_pool_workers_that_exit_as_they_load_the_function_fail_each_item(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with nothing_left_behind():
        monkeypatch.setenv(EXIT_ON_IMPORT, str(os.getpid()))  # workers start with it
        async with corral.Pool(1) as pool:
            with anyio.fail_after(SETTLE):
                results = await pool.map(triple, range(3), return_exceptions=True)
        monkeypatch.delenv(EXIT_ON_IMPORT)
        assert all(isinstance(r, corral.WorkerCrashed) for r in results), results
        assert {r.exit_code for r in results if isinstance(r, corral.WorkerCrashed)} == {
            IMPORT_EXIT
        }
        async with corral.Pool(1) as pool:
            assert await pool.map(triple, range(3)) == [0, 3, 6]


async def test_a_restart_that_exits_during_the_handshake_gives_up_with_a_startup_error(
    tmp_path: Path,
) -> None:
    async with nothing_left_behind():
        async with corral.spawn(
            ExitsOnRestart, str(tmp_path / "started"), 3, restart="on-failure", max_restarts=2
        ) as proxy:
            await good_call(proxy, 1)
            with anyio.fail_after(SETTLE):
                with pytest.raises(corral.WorkerCrashed):
                    await proxy.crash()
                for _ in range(2):  # the restarts fail to start, until corral gives up
                    with pytest.raises(corral.StartupError, match="max_restarts=2") as raised:
                        await proxy.echo(2)
                    assert raised.value.exit_code == 3
            stats = proxy.statistics()
            assert (stats.state, stats.restarts, stats.pid) == ("failed", 2, None)
        async with corral.spawn(Faulty) as other:
            await good_call(other, "after")


# Was a bug: ProxyStatistics.last_exit ignores children that exit during a (re)start:
# Service._session sets last_exit only in _until_exit, not from the StartupError
async def test_last_exit_counts_a_restart_that_exited_during_the_handshake(
    tmp_path: Path,
) -> None:
    async with corral.spawn(
        ExitsOnRestart, str(tmp_path / "started"), 3, restart="on-failure", max_restarts=1
    ) as proxy:
        with anyio.fail_after(SETTLE):
            with pytest.raises(corral.WorkerCrashed):
                await proxy.crash()  # exit status 9
            with pytest.raises(corral.StartupError):
                await proxy.echo(1)  # its restart exited with status 3
        assert proxy.statistics().last_exit == 3  # "the exit status of the last child to exit"


# -- keep the strategies' promises honest ---------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(garbage=corrupt_frames())
def test_the_corrupt_frames_strategy_makes_only_frames_the_decoder_refuses(
    garbage: bytes,
) -> None:
    assert decoded(garbage)[1]


def test_the_locked_and_two_argument_errors_really_will_not_cross() -> None:
    # In a fresh interpreter, as in a child: importing distributed (the Dask tests)
    # makes every exception unpickle in this one (tblib's pickling support).
    check = (
        "import pickle\n"
        "from tests.reliability.children import LockedError, TwoArgumentError\n"
        "for make in (lambda: pickle.dumps(LockedError('x')),\n"
        "             lambda: pickle.loads(pickle.dumps(TwoArgumentError(1, 2)))):\n"
        "    try:\n"
        "        make()\n"
        "    except TypeError:\n"
        "        continue\n"
        "    raise SystemExit('it crossed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
