"""Review regression tests: a value that crosses the process boundary is the value sent."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import corral

pytestmark = pytest.mark.anyio


# Review finding (fixed in 42287e4): Request.reply() sends a large bytearray out of band by
# reference (_codec.wrap_large); the transport/backlog still holds that view when the next
# call mutates the object, so the host gets a torn reply. Second round (fixed in 279a759):
# the same with a read-only view of that memory, which was still sent by reference
@pytest.mark.parametrize(
    "view",
    [
        pytest.param(lambda buf: buf, id="the-bytearray-itself"),
        # a read-only view: "you may look, not touch", and the memory still changes
        pytest.param(lambda buf: memoryview(buf).toreadonly(), id="a-read-only-view"),
    ],
)
async def test_a_reply_is_not_torn_by_a_later_call(view: Callable[[bytearray], Any]) -> None:
    class Frame:  # (local: crosses by value)
        def __init__(self) -> None:
            self.buf = bytearray(8 << 20)

        def snapshot(self) -> Any:
            return view(self.buf)

        def fill(self, value: int) -> None:
            self.buf[:] = bytes([value]) * len(self.buf)

    async with corral.spawn(Frame) as frame:
        for _ in range(3):
            await frame.fill(0)
            result: list[Any] = []
            async with anyio.create_task_group() as tg:

                async def snap(into: list[Any]) -> None:
                    into.append(await frame.snapshot())

                tg.start_soon(snap, result)
                with anyio.fail_after(10):
                    while frame.statistics().in_flight == 0:  # snapshot() has been sent
                        await anyio.lowlevel.checkpoint()
                await frame.fill(1)  # runs after snapshot() has returned, in the child
            from_fill = bytes(result[0]).count(1)
            assert from_fill == 0, f"{from_fill} bytes of the reply came from fill(1)"


# Review finding (fixed in 42287e4): send_nowait() keeps a view on the caller's bytearray in
# the connection's backlog (and the transport's buffer): data the caller writes afterwards
# is sent
async def test_send_nowait_sends_the_value_as_it_was(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    async def reader(messenger: corral.Messenger, *, fifo: str) -> None:
        with open(fifo, "rb") as gate:  # noqa: ASYNC230  (blocks the child's loop on purpose)
            gate.read(1)  # ...until the host has sent, and reused, its buffers
        changed = 0
        for _ in range(8):
            data = await messenger.receive()
            changed += data.count(0xFF) > 0
        await messenger.send(changed, channel="result")

    async with corral.open_worker(reader, fifo=str(fifo)) as worker:
        buffers = [bytearray(1 << 20) for _ in range(8)]
        for buffer in buffers:
            worker.send_nowait(buffer)
        for buffer in buffers:
            buffer[:] = b"\xff" * len(buffer)  # the caller reuses its buffers

        def release() -> None:
            with open(fifo, "wb") as gate:
                gate.write(b"x")

        with anyio.fail_after(10):
            await anyio.to_thread.run_sync(release)
            assert await worker.receive("result") == 0


class _Array:
    """Pickles the way a numpy array does under protocol 5: its data as a PickleBuffer."""

    def __init__(self, data: bytes) -> None:
        self.data = bytes(data)

    def __reduce_ex__(self, protocol: Any) -> Any:
        if protocol >= 5:
            return _Array, (pickle.PickleBuffer(self.data),)
        return _Array, (self.data,)


# Review finding (fixed in 42287e4): encode_frame/dumps pass buffer_callback
# unconditionally, so every PickleBuffer (each numpy array, however small) goes out of band,
# and a frame takes at most 255 of them
async def test_a_list_of_many_small_arrays_crosses() -> None:
    class Frames:
        def frames(self, n: int) -> list[_Array]:
            return [_Array(b"\0" * 12) for _ in range(n)]

    async with corral.spawn(Frames) as frames:
        assert len(await frames.frames(255)) == 255
        assert len(await frames.frames(256)) == 256
