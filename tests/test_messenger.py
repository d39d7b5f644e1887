"""The messenger over a real socket pair, in one process, on every backend.

Channels, priorities, requests and replies, errors sent across, close
requests, streams with flow control, cancellation at any point, and what
happens when the other side goes away.
"""

from __future__ import annotations

import contextlib
import functools
import random
import socket
import threading
from collections.abc import AsyncIterator, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import anyio
import anyio.abc
import anyio.lowlevel
import pytest

import corral
from corral import Messenger, Request
from corral._answers import STREAM_WINDOW
from corral._connection import open_connection
from corral._wire import DEFAULT_MAX_FRAME

pytestmark = pytest.mark.anyio

TIMEOUT = 10  # a deadline for waits that should end at once: only reached on a bug


@dataclass
class Pair:
    """Two messengers talking over a socket pair, and the task group they run in."""

    a: Messenger
    b: Messenger
    tg: anyio.abc.TaskGroup


@contextlib.asynccontextmanager
async def messenger_pair(
    *, max_frame_a: int = DEFAULT_MAX_FRAME, max_frame_b: int = DEFAULT_MAX_FRAME
) -> AsyncIterator[Pair]:
    sock_a, sock_b = socket.socketpair()
    owned: list[socket.socket] = [sock_a, sock_b]  # until a connection owns them
    a = Messenger(name="a", max_frame_size=max_frame_a)
    b = Messenger(name="b", max_frame_size=max_frame_b)
    async with anyio.create_task_group() as tg:
        try:
            a.attach(await open_connection(sock_a, a, tg, max_frame_size=max_frame_a))
            owned.remove(sock_a)
            b.attach(await open_connection(sock_b, b, tg, max_frame_size=max_frame_b))
            owned.remove(sock_b)
            yield Pair(a, b, tg)
        finally:
            tg.cancel_scope.cancel()  # first, so that no helper task sees the abort
            for sock in owned:
                sock.close()
            a.abort()
            b.abort()
            with anyio.CancelScope(shield=True):
                await anyio.lowlevel.checkpoint()  # let asyncio close the transports


def serve(pair: Pair, channel: Hashable, answer: Callable[[Request], None]) -> None:
    """Answer every request on ``channel`` at b, as it arrives."""
    pair.b.handle_requests(channel, answer)


@dataclass
class Outcome:
    """What a call made in another task returned or raised, and when it finished."""

    done: anyio.Event = field(default_factory=anyio.Event)
    value: Any = None
    error: BaseException | None = None

    async def run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = await fn()
        except Exception as error:
            self.error = error
        finally:
            self.done.set()

    async def run_started(
        self, fn: Callable[[], Any], *, task_status: anyio.abc.TaskStatus[None]
    ) -> None:
        task_status.started()  # the caller resumes once fn() is parked in its first wait
        await self.run(fn)

    async def wait(self) -> Outcome:
        with anyio.fail_after(TIMEOUT):
            await self.done.wait()
        return self


def start(pair: Pair, fn: Callable[[], Any]) -> Outcome:
    """Call ``fn()`` in a task of the pair's task group."""
    outcome = Outcome()
    pair.tg.start_soon(outcome.run, fn)
    return outcome


async def start_waiting(pair: Pair, fn: Callable[[], Any]) -> Outcome:
    """Like :func:`start`, but return once ``fn()`` is waiting (e.g. registered to receive)."""
    outcome = Outcome()
    await pair.tg.start(outcome.run_started, fn)
    return outcome


def _refuse_to_unpickle(message: str) -> NoReturn:
    raise RuntimeError(f"refusing to unpickle {message!r}")


class WontUnpickle(Exception):
    """Pickles fine, but unpickling it raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_refuse_to_unpickle, (str(self),))


class RefusesToPickle:
    """Unpicklable the way many real objects are: ``__reduce__`` raises."""

    def __reduce__(self) -> NoReturn:
        raise RuntimeError("this object will not pickle")


def raise_and_catch(error: BaseException) -> BaseException:
    """``error`` with a traceback, as a responder would have it."""
    try:
        raise error
    except BaseException as caught:
        return caught


# -- channels -----------------------------------------------------------------------


CHANNELS: list[Hashable] = [None, "jobs", 7, ("worker", 3), frozenset({"x"}), b"raw"]


async def test_send_and_receive_on_the_default_and_named_channels() -> None:
    async with messenger_pair() as p:
        for i, channel in enumerate(CHANNELS):
            await p.a.send(("value", i), channel=channel)
        with anyio.fail_after(TIMEOUT):
            for i, channel in reversed(list(enumerate(CHANNELS))):
                assert await p.b.receive(channel) == ("value", i)
            for channel in CHANNELS:
                with pytest.raises(anyio.WouldBlock):
                    p.b.receive_nowait(channel)
            await p.b.send("back", channel="jobs")
            assert await p.a.receive("jobs") == "back"


async def test_a_value_sent_on_one_channel_is_not_received_on_another() -> None:
    async with messenger_pair() as p:
        p.a.send_nowait("for x", channel="x")
        p.a.send_nowait(1, channel=1)
        await p.a.send("marker", channel="marker")
        with anyio.fail_after(TIMEOUT):
            assert await p.b.receive("marker") == "marker"  # so both arrived before it
        for other in (None, "y", "X", ("x",), 2, 1.5):
            with pytest.raises(anyio.WouldBlock):
                p.b.receive_nowait(other)
        assert p.b.receive_nowait("x") == "for x"
        assert p.b.receive_nowait(1) == 1


async def test_a_receiver_waiting_first_gets_the_value() -> None:
    async with messenger_pair() as p:
        waiting = [await start_waiting(p, functools.partial(p.b.receive, c)) for c in CHANNELS]
        for i, channel in enumerate(CHANNELS):
            p.a.send_nowait(i, channel=channel)
        for i, outcome in enumerate(waiting):
            assert (await outcome.wait()).value == i


async def test_several_receivers_on_one_channel_each_get_one_value() -> None:
    async with messenger_pair() as p:
        receivers = [await start_waiting(p, lambda: p.b.receive("shared")) for _ in range(5)]
        for i in range(5):
            await p.a.send(i, channel="shared")
        values = sorted([(await r.wait()).value for r in receivers])
        assert values == list(range(5))


async def test_a_cancelled_receiver_never_swallows_a_message() -> None:
    async with messenger_pair() as p:
        for round_ in range(30):
            scope = anyio.CancelScope()
            first, second = Outcome(), Outcome()

            async def receive_in_scope(scope: anyio.CancelScope = scope) -> Any:
                with scope:
                    return await p.b.receive("c")
                return "cancelled"

            await p.tg.start(first.run_started, receive_in_scope)
            await p.tg.start(second.run_started, lambda: p.b.receive("c"))
            # the message and a hook that cancels the first receiver arrive together
            p.b.handle_messages(("hook", round_), functools.partial(cancel_on_hook, scope))
            p.a.send_nowait(("m", round_), channel="c")
            p.a.send_nowait(None, channel=("hook", round_))
            await first.wait()
            if first.value == "cancelled":
                assert (await second.wait()).value == ("m", round_)
            else:
                assert first.value == ("m", round_)
                p.a.send_nowait("spare", channel="c")
                assert (await second.wait()).value == "spare"
            with pytest.raises(anyio.WouldBlock):
                p.b.receive_nowait("c")


def cancel_on_hook(scope: anyio.CancelScope, _value: Any) -> None:
    scope.cancel()


async def test_handle_messages_takes_values_instead_of_the_inbox() -> None:
    async with messenger_pair() as p:
        seen: list[Any] = []
        got_all = anyio.Event()

        def handler(value: Any) -> None:
            seen.append(value)
            if len(seen) == 3:
                got_all.set()

        p.b.handle_messages("handled", handler)
        for i in range(3):
            await p.a.send(i, channel="handled")
        with anyio.fail_after(TIMEOUT):
            await got_all.wait()
        assert seen == [0, 1, 2]
        with pytest.raises(anyio.WouldBlock):
            p.b.receive_nowait("handled")


# -- priorities ---------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
async def test_queued_messages_come_out_lowest_priority_first_fifo_within_a_level(
    seed: int,
) -> None:
    rng = random.Random(seed)
    levels = [-32768, -5, 0, 3, 32767]
    sent = [(rng.choice(levels), i) for i in range(80)]
    async with messenger_pair() as p:
        for priority, i in sent:
            p.a.send_nowait((priority, i), channel="q", priority=priority)
        await p.a.send("sync", channel="sync", priority=32767)  # last, even from a backlog
        with anyio.fail_after(TIMEOUT):
            await p.b.receive("sync")
        received = [p.b.receive_nowait("q") for _ in sent]
        assert received == sorted(sent)
        with pytest.raises(anyio.WouldBlock):
            p.b.receive_nowait("q")


async def test_queued_requests_come_out_lowest_priority_first_fifo_within_a_level() -> None:
    rng = random.Random(7)
    sent = [(rng.choice([-1, 0, 2]), i) for i in range(30)]
    async with messenger_pair() as p:
        # request_stream sends at once, so the order of sending is known
        streams = [
            p.a.request_stream((priority, i), channel="r", priority=priority)
            for priority, i in sent
        ]
        await p.a.send("sync", channel="sync", priority=32767)
        with anyio.fail_after(TIMEOUT):
            await p.b.receive("sync")
            received = [(await p.b.receive_request("r")).value for _ in sent]
        assert received == sorted(sent)
        for stream in streams:
            await stream.aclose()


# -- request and reply --------------------------------------------------------------


async def test_request_answered_through_receive_request() -> None:
    async with messenger_pair() as p:

        async def responder() -> None:
            while True:
                request = await p.b.receive_request(("math", 1))
                assert request.channel == ("math", 1)
                request.reply(request.value * 2)

        p.tg.start_soon(responder)
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request(21, channel=("math", 1)) == 42
            answers = [await p.a.request(i, channel=("math", 1)) for i in range(5)]
        assert answers == [0, 2, 4, 6, 8]
        assert p.a.remaining(("math", 1)) == 0


async def test_request_answered_by_a_handler_now_or_later() -> None:
    async with messenger_pair() as p:
        serve(p, "now", lambda r: r.reply(("now", r.value)))
        later: list[Request] = []
        arrived = anyio.Event()

        def hold(request: Request) -> None:
            later.append(request)
            arrived.set()

        serve(p, "later", hold)
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request(1, channel="now") == ("now", 1)
            outcome = start(p, lambda: p.a.request(2, channel="later"))
            await arrived.wait()
            assert p.a.remaining("later") == 1
            later[0].reply(("later", later[0].value))
            assert (await outcome.wait()).value == ("later", 2)
            assert p.a.remaining("later") == 0


async def test_requests_cross_in_both_directions_at_once() -> None:
    async with messenger_pair() as p:
        p.a.handle_requests("q", lambda r: r.reply(("a", r.value)))
        p.b.handle_requests("q", lambda r: r.reply(("b", r.value)))
        to_b = [start(p, functools.partial(p.a.request, i, channel="q")) for i in range(10)]
        to_a = [start(p, functools.partial(p.b.request, i, channel="q")) for i in range(10)]
        assert [(await o.wait()).value for o in to_b] == [("b", i) for i in range(10)]
        assert [(await o.wait()).value for o in to_a] == [("a", i) for i in range(10)]


async def test_remaining_counts_requests_awaiting_replies_per_channel() -> None:
    async with messenger_pair() as p:
        assert p.a.remaining() == 0
        send, receive = anyio.create_memory_object_stream[tuple[str, int, Any]](10)

        async def ask(channel: str, i: int) -> None:
            await send.send((channel, i, await p.a.request(i, channel=channel)))

        for i in range(3):
            p.tg.start_soon(ask, "c1", i)
        for i in range(2):
            p.tg.start_soon(ask, "c2", i)
        with anyio.fail_after(TIMEOUT):
            held = [await p.b.receive_request("c1") for _ in range(3)]
            held += [await p.b.receive_request("c2") for _ in range(2)]
            assert (p.a.remaining("c1"), p.a.remaining("c2")) == (3, 2)
            assert (p.a.remaining(), p.a.remaining("c3"), p.b.remaining("c1")) == (0, 0, 0)

            held[0].reply("first")
            assert await receive.receive() == ("c1", held[0].value, "first")
            assert (p.a.remaining("c1"), p.a.remaining("c2")) == (2, 2)
            for request in held[1:]:
                request.reply(request.channel)
            answers = {await receive.receive() for _ in held[1:]}
        assert answers == {(r.channel, r.value, r.channel) for r in held[1:]}
        assert (p.a.remaining("c1"), p.a.remaining("c2")) == (0, 0)
        send.close()
        receive.close()


async def test_answering_twice_does_nothing() -> None:
    async with messenger_pair() as p:

        def twice(request: Request) -> None:
            request.reply("first")
            request.reply("second")
            request.fail(ValueError("third"))

        serve(p, None, twice)
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request(1) == "first"
            assert await p.a.request(2) == "first"


# -- failures sent across -------------------------------------------------------------


async def test_fail_raises_the_error_with_the_remote_traceback_as_a_note() -> None:
    async with messenger_pair() as p:

        def failing_handler(request: Request) -> None:
            request.fail(raise_and_catch(ValueError(f"bad value {request.value}")))

        serve(p, "f", failing_handler)
        with anyio.fail_after(TIMEOUT), pytest.raises(ValueError, match="bad value 3") as info:
            await p.a.request(3, channel="f")
        assert str(info.value) == "bad value 3"
        notes = getattr(info.value, "__notes__", [])
        assert any("Remote traceback" in note for note in notes)
        assert any("raise_and_catch" in note and "ValueError" in note for note in notes)
        serve(p, "ok", lambda r: r.reply("still fine"))
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request(None, channel="ok") == "still fine"


@pytest.mark.parametrize("how", ["will-not-unpickle", "will-not-pickle"])
async def test_an_error_that_cannot_be_recreated_becomes_remote_error(how: str) -> None:
    error: BaseException
    if how == "will-not-unpickle":
        error = WontUnpickle("boom")
    else:
        error = ValueError("boom")
        error.lock = threading.Lock()  # type: ignore[attr-defined]
    error = raise_and_catch(error)
    async with messenger_pair() as p:
        serve(p, None, lambda r: r.fail(error))
        with anyio.fail_after(TIMEOUT), pytest.raises(corral.RemoteError) as info:
            await p.a.request(None)
    remote = info.value
    cls = type(error)
    assert remote.type_name == f"{cls.__module__}.{cls.__qualname__}"
    assert remote.message == "boom"
    assert "Traceback (most recent call last)" in remote.traceback
    assert "raise_and_catch" in remote.traceback
    assert "Remote traceback" in str(remote)


async def test_send_error_makes_the_other_sides_receive_raise_it() -> None:
    async with messenger_pair() as p:
        await p.a.send_error(KeyError("k"), channel="e")
        await p.a.send("after", channel="e")
        await p.a.send_error(WontUnpickle("strange"), channel="e")
        with anyio.fail_after(TIMEOUT):
            with pytest.raises(KeyError) as info:
                await p.b.receive("e")
            assert any("Remote traceback" in n for n in getattr(info.value, "__notes__", []))
            assert await p.b.receive("e") == "after"
            with pytest.raises(corral.RemoteError, match="strange"):
                await p.b.receive("e")
            # a waiting receiver gets it too
            waiting = await start_waiting(p, lambda: p.b.receive("e2"))
            await p.a.send_error(ValueError("late"), channel="e2")
            assert isinstance((await waiting.wait()).error, ValueError)


# -- close requests ---------------------------------------------------------------------


async def test_request_close_raises_close_requested_after_queued_messages() -> None:
    async with messenger_pair() as p:
        idle = await start_waiting(p, lambda: p.b.receive("idle"))
        for i in range(3):
            await p.a.send(i, channel="q")
        await p.a.request_close()
        assert isinstance((await idle.wait()).error, corral.CloseRequested)
        with anyio.fail_after(TIMEOUT):
            assert [await p.b.receive("q") for _ in range(3)] == [0, 1, 2]
            for _ in range(2):
                with pytest.raises(corral.CloseRequested):
                    await p.b.receive("q")
            with pytest.raises(corral.CloseRequested):
                await p.b.receive("never used")
            with pytest.raises(corral.CloseRequested):
                await p.b.receive_request("never used")


async def test_messages_ends_when_the_other_side_asks_to_close() -> None:
    async with messenger_pair() as p:
        for i in range(4):
            p.a.send_nowait(i, channel="m")
        await p.a.request_close()
        with anyio.fail_after(TIMEOUT):
            assert [value async for value in p.b.messages("m")] == [0, 1, 2, 3]


# -- streams ---------------------------------------------------------------------------


async def produce_range(request: Request) -> None:
    for i in range(request.value):
        await request.send_item(i)
    request.end_stream()


async def stream_responder(pair: Pair, channel: Hashable, produce: Any) -> None:
    async with anyio.create_task_group() as tg:
        while True:
            request = await pair.b.receive_request(channel)
            tg.start_soon(produce, request)


async def test_stream_items_arrive_in_order_beyond_the_window() -> None:
    async with messenger_pair() as p:
        p.tg.start_soon(stream_responder, p, "s", produce_range)
        with anyio.fail_after(TIMEOUT):
            for n in (0, 1, STREAM_WINDOW, 5 * STREAM_WINDOW + 3):
                assert [item async for item in p.a.request_stream(n, channel="s")] == list(
                    range(n)
                )
        assert p.a.remaining("s") == 0


async def test_stream_of_large_items_travels_out_of_band() -> None:
    async with messenger_pair() as p:

        async def produce(request: Request) -> None:
            for i in range(3):
                await request.send_item(bytes([i]) * (200 * 1024))
            request.end_stream()

        p.tg.start_soon(stream_responder, p, "big", produce)
        with anyio.fail_after(TIMEOUT):
            items = [item async for item in p.a.request_stream(None, channel="big")]
        assert items == [bytes([i]) * (200 * 1024) for i in range(3)]


async def test_a_stream_producer_waits_for_credit() -> None:
    async with messenger_pair() as p:
        sent = 0
        at_window = anyio.Event()
        finished = anyio.Event()

        async def produce(request: Request) -> None:
            nonlocal sent
            for i in range(3 * STREAM_WINDOW):
                if sent == STREAM_WINDOW:
                    at_window.set()
                await request.send_item(i)
                sent += 1
            request.end_stream()
            finished.set()

        p.tg.start_soon(stream_responder, p, "s", produce)
        serve(p, "ping", lambda r: r.reply("pong"))
        stream = p.a.request_stream(None, channel="s")
        with anyio.fail_after(TIMEOUT):
            await at_window.wait()
            # a round trip: any credit in flight would have arrived by now, and none was sent
            assert await p.a.request(None, channel="ping") == "pong"
            assert sent == STREAM_WINDOW
            assert [item async for item in stream] == list(range(3 * STREAM_WINDOW))
            await finished.wait()


@pytest.mark.parametrize("how", ["aclose", "abandon", "cancel-while-waiting"])
async def test_a_consumer_leaving_early_cancels_the_stream(how: str) -> None:
    async with messenger_pair() as p:
        cancelled = anyio.Event()
        stopped = anyio.Event()
        requests: list[Request] = []

        async def produce(request: Request) -> None:
            requests.append(request)
            request.on_cancel = cancelled.set
            i = 0
            while not request.cancelled:
                if how != "cancel-while-waiting" or i < 3:
                    await request.send_item(i)
                    i += 1
                else:
                    await cancelled.wait()
            stopped.set()

        p.tg.start_soon(stream_responder, p, "s", produce)
        with anyio.fail_after(TIMEOUT):
            if how == "aclose":
                stream = p.a.request_stream(None, channel="s")
                async with contextlib.aclosing(stream):
                    async for item in stream:
                        if item == 10:
                            break
            elif how == "abandon":
                async for item in p.a.request_stream(None, channel="s"):
                    if item == STREAM_WINDOW + 10:  # past the first credit
                        break
            else:
                received: list[int] = []
                with anyio.CancelScope() as scope:
                    async for item in p.a.request_stream(None, channel="s"):
                        received.append(item)
                        if item == 2:
                            p.tg.start_soon(cancel_soon, scope)
                assert received == [0, 1, 2]
            await cancelled.wait()
            await stopped.wait()
        assert requests[0].cancelled
        assert p.a.remaining("s") == 0


async def cancel_soon(scope: anyio.CancelScope) -> None:
    scope.cancel()


async def test_a_stream_answered_with_fail_raises_after_its_items() -> None:
    async with messenger_pair() as p:

        async def produce(request: Request) -> None:
            for i in range(3):
                await request.send_item(i)
            request.fail(ValueError("midway"))

        p.tg.start_soon(stream_responder, p, "s", produce)
        received: list[int] = []
        with anyio.fail_after(TIMEOUT), pytest.raises(ValueError, match="midway"):
            async for item in p.a.request_stream(None, channel="s"):
                received.append(item)
        assert received == [0, 1, 2]
        assert p.a.remaining("s") == 0


# -- cancellation ------------------------------------------------------------------------


def answer_for(value: int) -> tuple[str, int, int]:
    return ("answer", value, value * 7 + 1)


@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_cancelled_requests_never_desynchronise(seed: int) -> None:
    rng = random.Random(seed)
    count = 240
    plans: list[int | None] = [
        rng.choice([None, None, None, -1, 0, 1, 2, 5, 20]) for _ in range(count)
    ]
    results: dict[int, Any] = {}
    cancelled: set[int] = set()

    async with messenger_pair() as p:

        async def answer_later(request: Request, checkpoints: int) -> None:
            for _ in range(checkpoints):
                await anyio.lowlevel.checkpoint()
            request.reply(answer_for(request.value))

        async def responder() -> None:
            async with anyio.create_task_group() as tg:
                while True:
                    request = await p.b.receive_request("calc")
                    delay = rng.choice([0, 0, 1, 3, 10])
                    if delay:
                        tg.start_soon(answer_later, request, delay)
                    else:
                        request.reply(answer_for(request.value))

        p.tg.start_soon(responder)

        async def one(i: int, plan: int | None) -> None:
            priority = rng.choice([0, 0, -1, 1])
            if plan == -1:  # cancelled before the first checkpoint
                with anyio.move_on_after(0) as scope:
                    results[i] = await p.a.request(i, channel="calc", priority=priority)
            else:
                scope = anyio.CancelScope()

                async def cancel_after(checkpoints: int) -> None:
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    scope.cancel()

                async with anyio.create_task_group() as inner:
                    if plan is not None:
                        inner.start_soon(cancel_after, plan)
                    with scope:
                        results[i] = await p.a.request(i, channel="calc", priority=priority)
            if scope.cancelled_caught:
                cancelled.add(i)

        with anyio.fail_after(TIMEOUT * 2):
            for batch in range(0, count, 24):
                async with anyio.create_task_group() as tg:
                    for i in range(batch, min(batch + 24, count)):
                        tg.start_soon(one, i, plans[i])
            for i in range(count):
                if i in results:
                    assert results[i] == answer_for(i)
                else:
                    assert i in cancelled
                    assert plans[i] is not None
            assert all(i in results for i in range(count) if plans[i] is None)
            assert p.a.remaining("calc") == 0
            assert cancelled, "no request was cancelled: the test tests nothing"
            for i in range(count, count + 20):
                assert await p.a.request(i, channel="calc") == answer_for(i)


async def test_a_cancelled_request_tells_the_other_side() -> None:
    async with messenger_pair() as p:
        arrivals, arrived = anyio.create_memory_object_stream[Request](10)
        cancelled = anyio.Event()

        def hold(request: Request) -> None:
            request.on_cancel = cancelled.set
            arrivals.send_nowait(request)

        serve(p, "slow", hold)
        kept = start(p, functools.partial(p.a.request, 1, channel="slow"))
        scope = anyio.CancelScope()

        async def ask() -> Any:
            with scope:
                return await p.a.request(2, channel="slow")
            return "cancelled"

        dropped = start(p, ask)
        with anyio.fail_after(TIMEOUT):
            held = {(r := await arrived.receive()).value: r for _ in range(2)}
            assert p.a.remaining("slow") == 2
            scope.cancel()
            assert (await dropped.wait()).value == "cancelled"
            await cancelled.wait()
        assert held[2].cancelled
        assert not held[1].cancelled
        assert p.a.remaining("slow") == 1
        held[2].reply("too late")  # does nothing
        held[1].reply("in time")
        assert (await kept.wait()).value == "in time"
        assert p.a.remaining("slow") == 0
        arrivals.close()
        arrived.close()


# -- values that will not travel -------------------------------------------------------------


async def test_an_unpicklable_value_raises_at_the_call_site_and_the_messenger_stays_usable() -> (
    None
):
    async with messenger_pair() as p:
        serve(p, None, lambda r: r.reply(r.value))
        for bad in (threading.Lock(), (i for i in range(3))):
            with pytest.raises(corral.SerializationError):
                await p.a.send(bad)
            with pytest.raises(corral.SerializationError):
                p.a.send_nowait(bad, channel="x")
            with pytest.raises(corral.SerializationError):
                await p.a.request(bad)
            with pytest.raises(corral.SerializationError):
                p.a.request_stream(bad)
        assert p.a.remaining() == 0
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request("ok") == "ok"
            await p.a.send("fine", channel="x")
            assert await p.b.receive("x") == "fine"


async def test_a_reply_that_will_not_pickle_becomes_serialization_error() -> None:
    async with messenger_pair() as p:
        serve(p, None, lambda r: r.reply(threading.Lock()))
        with anyio.fail_after(TIMEOUT), pytest.raises(corral.SerializationError) as info:
            await p.a.request(1)
        assert any("other process" in n for n in getattr(info.value, "__notes__", []))
        serve(p, "ok", lambda r: r.reply("ok"))
        with anyio.fail_after(TIMEOUT):
            assert await p.a.request(None, channel="ok") == "ok"


async def test_a_frame_over_max_frame_size_is_refused_before_sending() -> None:
    async with messenger_pair(max_frame_a=1 << 16, max_frame_b=1 << 16) as p:
        serve(p, None, lambda r: r.reply(bytes(r.value)))
        for big in (bytes(1 << 17), "x" * (1 << 17)):
            with pytest.raises(corral.SerializationError, match="max_frame_size"):
                await p.a.send(big)
            with pytest.raises(corral.SerializationError, match="max_frame_size"):
                await p.a.request(big)
        with anyio.fail_after(TIMEOUT):
            # the reply is too large for b to send: a hears so instead of hanging
            with pytest.raises(corral.SerializationError, match="max_frame_size"):
                await p.a.request(1 << 17)
            assert await p.a.request(10) == bytes(10)


async def test_a_frame_over_the_receivers_max_frame_size_ends_the_connection() -> None:
    async with messenger_pair(max_frame_a=1 << 16) as p:
        lost: list[BaseException | None] = []

        def on_lost(error: BaseException | None) -> None:
            lost.append(error)
            p.a._fail_all(anyio.BrokenResourceError("lost"))

        p.a.on_lost = on_lost
        waiting = await start_waiting(p, p.a.receive)
        await p.b.send(bytes(1 << 17))  # b may send it; a refuses to read it
        assert isinstance((await waiting.wait()).error, anyio.BrokenResourceError)
        assert len(lost) == 1
        assert isinstance(lost[0], corral.ProtocolError)
        assert p.a.closed


async def test_by_default_a_protocol_error_fails_calls_with_broken_resource_error() -> None:
    async with messenger_pair(max_frame_a=1 << 16) as p:
        waiting = start(p, lambda: p.a.request(None))
        request = None
        with anyio.fail_after(TIMEOUT):
            request = await p.b.receive_request()
        request.reply(bytes(1 << 17))
        error = (await waiting.wait()).error
        assert isinstance(error, anyio.BrokenResourceError)
        assert "ProtocolError" in str(error)


# -- the other side going away -----------------------------------------------------------------


async def test_pending_calls_raise_when_the_other_side_aborts() -> None:
    async with messenger_pair() as p:

        def produce_in_a_task(request: Request) -> None:
            p.tg.start_soon(produce_range, request)

        p.b.handle_requests("s", produce_in_a_task)
        requesting = start(p, lambda: p.a.request(1, channel="r"))
        receiving = await start_waiting(p, lambda: p.a.receive("m"))
        stream = p.a.request_stream(10 * STREAM_WINDOW, channel="s")
        with anyio.fail_after(TIMEOUT):
            request = await p.b.receive_request("r")
            assert await stream.__anext__() == 0
        p.b.abort()
        assert p.b.closed
        assert request.cancelled
        request.reply("never arrives")  # does nothing, raises nothing
        assert isinstance((await requesting.wait()).error, anyio.BrokenResourceError)
        assert isinstance((await receiving.wait()).error, anyio.BrokenResourceError)
        with anyio.fail_after(TIMEOUT), pytest.raises(anyio.BrokenResourceError):
            async for _ in stream:
                pass
        assert p.a.closed
        # and later calls fail at once
        with pytest.raises(anyio.BrokenResourceError):
            await p.a.request(2)
        with pytest.raises(anyio.BrokenResourceError):
            await p.a.send(3)
        with pytest.raises(anyio.BrokenResourceError):
            await p.a.receive()
        with pytest.raises(anyio.BrokenResourceError):
            p.a.receive_nowait()
        assert p.a.remaining() == 0 or p.a.closed


async def test_aborting_its_own_side_fails_its_own_pending_calls() -> None:
    async with messenger_pair() as p:
        requesting = start(p, lambda: p.a.request(1))
        with anyio.fail_after(TIMEOUT):
            await p.b.receive_request()
        p.a.abort()
        assert isinstance((await requesting.wait()).error, anyio.BrokenResourceError)


# -- large payloads --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [bytes, bytearray])
async def test_an_8_mib_request_and_reply_round_trip_intact(kind: type[bytes | bytearray]) -> None:
    payload = kind(random.Random(0).randbytes(8 * 1024 * 1024))
    async with messenger_pair() as p:
        serve(p, "big", lambda r: r.reply(kind(r.value[::-1])))
        with anyio.fail_after(TIMEOUT):
            result = await p.a.request(payload, channel="big")
        assert type(result) is kind
        assert result == payload[::-1]


# -- regressions: bugs found while writing these tests ----------------------------------------


async def test_a_reply_whose_reduce_raises_answers_with_serialization_error() -> None:
    async with messenger_pair() as p:
        waiting = start(p, lambda: p.a.request(1))
        with anyio.fail_after(TIMEOUT):
            request = await p.b.receive_request()
        request.reply(RefusesToPickle())
        assert isinstance((await waiting.wait()).error, corral.SerializationError)


async def test_a_value_whose_reduce_raises_is_a_serialization_error_at_send() -> None:
    async with messenger_pair() as p:
        with pytest.raises(corral.SerializationError):
            await p.a.send(RefusesToPickle())


async def test_a_request_into_a_socket_the_peer_closed_raises_instead_of_hanging() -> None:
    async with messenger_pair() as p:
        p.b.abort()  # on trio the socket closes now, so a's next write fails with EPIPE
        with anyio.fail_after(TIMEOUT), pytest.raises(anyio.BrokenResourceError):
            await p.a.request(1)


async def test_a_new_connection_works_after_an_aborted_one_on_the_same_fd_numbers() -> None:
    async with messenger_pair() as first:
        serve(first, None, lambda r: r.reply(r.value))
        with anyio.fail_after(TIMEOUT):
            assert await first.a.request(1) == 1
        first.a.abort()
        first.b.abort()
        async with messenger_pair() as second:
            serve(second, None, lambda r: r.reply(r.value + 1))
            with anyio.fail_after(TIMEOUT):
                assert await second.a.request(1) == 2


async def test_receive_nowait_raises_close_requested_once_the_channel_is_empty() -> None:
    async with messenger_pair() as p:
        p.a.send_nowait(1, channel="q")
        await p.a.request_close()
        with anyio.fail_after(TIMEOUT), pytest.raises(corral.CloseRequested):
            await p.b.receive("other")
        assert p.b.receive_nowait("q") == 1
        with pytest.raises(corral.CloseRequested):
            p.b.receive_nowait("q")


# -- regressions: priorities under backpressure ---------------------------------------


def back_up(messenger: Messenger) -> None:
    """Fill the socket so that the next frames wait in the connection's priority backlog."""
    messenger.send_nowait(bytes(8 * 1024 * 1024), channel="bulk")
    connection = messenger._connection
    assert connection is not None
    if not connection._blocked:
        pytest.skip("8 MiB did not back the socket up here")


async def test_a_cancel_never_overtakes_its_request() -> None:
    async with messenger_pair() as p:
        serve(p, "ping", lambda r: r.reply("pong"))
        back_up(p.a)
        stream = p.a.request_stream("work", channel="s", priority=5)
        await stream.aclose()  # sends CANCEL while the REQUEST still waits in the backlog
        with anyio.fail_after(TIMEOUT):
            request = await p.b.receive_request("s")
            # sent last at the lowest urgency: once answered, the CANCEL has arrived
            assert await p.a.request(None, channel="ping", priority=32767) == "pong"
        assert request.cancelled


async def test_close_requested_arrives_after_the_messages_sent_before_it() -> None:
    async with messenger_pair() as p:
        arrivals: list[tuple[int, bool]] = []
        all_arrived = anyio.Event()

        def record(value: int) -> None:
            arrivals.append((value, p.b._close_requested))
            if len(arrivals) == 3:
                all_arrived.set()

        p.b.handle_messages("m", record)
        back_up(p.a)
        for i in range(3):
            p.a.send_nowait(i, channel="m", priority=5)
        await p.a.request_close()
        with anyio.fail_after(TIMEOUT):
            await all_arrived.wait()
        assert arrivals == [(0, False), (1, False), (2, False)]
