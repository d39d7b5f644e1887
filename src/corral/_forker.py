"""The host's side of a zygote (see ``_zygote``): fork children in milliseconds.

A :class:`Forker` belongs to a supervisor. Its zygote starts in the
background when the first child is asked of it (that child, and any asked
for before the zygote is ready, are spawned as usual) and ends with the
supervisor's block, after the children. :meth:`Forker.fork` returns None
while it is not ready, or where it cannot start or has died: the caller
spawns instead.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc

logger = logging.getLogger(__name__)

MAX_MESSAGE: Final = 1 << 20
START_TIMEOUT: Final = 30.0
CLOSE_GRACE: Final = 2.0


class Forked:
    """A child forked by the zygote: the part of ``subprocess.Popen`` that corral uses.

    Its exit status comes from the zygote, which reaps it.
    """

    def __init__(self, pid: int, parent_pid: int) -> None:
        self.pid = pid
        self.parent_pid = parent_pid
        self.returncode: int | None = None
        self._exited = anyio.Event()

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def exited(self, returncode: int) -> None:
        self.returncode = returncode
        self._exited.set()

    async def wait_async(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode


class Forker:
    """A supervisor's zygote, started on first use."""

    def __init__(
        self, task_group: anyio.abc.TaskGroup, environment: Callable[[], dict[str, str]]
    ) -> None:
        self._task_group = task_group
        self._environment = environment  # a child's (a spawned child gets the same)
        self._popen: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready: anyio.Event | None = None
        self._failed = False
        self._closed = False
        self._pid = 0
        self._tokens = itertools.count()
        self._pending: dict[int, tuple[anyio.Event, list[Any]]] = {}
        self._children: dict[int, Forked] = {}
        self._sending = anyio.Lock()

    async def fork(self, channel: int, stderr: int) -> Forked | None:
        """Fork a child of the zygote running ``corral._child`` on ``channel``.

        ``stderr`` becomes its fd 2; its fd 1 is ours; it gets our working
        directory and a spawned child's environment. None when there is no
        zygote ready to fork from: spawn instead.
        """
        if not self._available():
            return None
        assert self._sock is not None
        token = next(self._tokens)
        done, answer = self._pending[token] = (anyio.Event(), [])
        stdout = 1 if _is_open(1) else os.open(os.devnull, os.O_WRONLY)
        try:
            request = pickle.dumps(("fork", token, os.getcwd(), self._environment()))
            if len(request) > MAX_MESSAGE:
                raise OSError("the environment is too large to send to the zygote")
            async with self._sending:  # (one task at a time may wait for room)
                while True:
                    try:
                        socket.send_fds(self._sock, [request], [channel, stdout, stderr])
                        break
                    except BlockingIOError:
                        await anyio.wait_writable(self._sock)
        except OSError as error:
            del self._pending[token]
            self._give_up(f"a fork request could not be sent ({error})")
            return None
        finally:
            if stdout != 1:
                os.close(stdout)
        await done.wait()
        if not answer:  # the zygote died before it answered
            return None
        kind, value = answer
        if kind == "failed":
            logger.warning("the zygote could not fork (%s); spawning instead", value)
            return None
        child = self._children[value] = Forked(value, self._pid)
        return child

    def _available(self) -> bool:
        """True once the zygote is ready; the first call starts it (in the background)."""
        if self._failed or self._closed:
            return False
        if self._ready is None:
            self._ready = anyio.Event()
            self._task_group.start_soon(self._serve, name="corral-zygote")
            return False
        return self._ready.is_set() and not self._failed

    async def _serve(self) -> None:
        assert self._ready is not None
        try:
            await self._start()
        except Exception as error:
            self._give_up(f"the zygote did not start ({error})")
            return
        finally:
            self._ready.set()
        await self._read()

    async def _start(self) -> None:
        host, zygote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._popen = subprocess.Popen(  # noqa: ASYNC220  (fork+exec: ~1 ms)
                [sys.executable, "-m", "corral._zygote", str(zygote.fileno())],
                pass_fds=(zygote.fileno(),),
                stdin=subprocess.DEVNULL,
                env=self._environment(),
            )
        except BaseException:
            host.close()
            raise
        finally:
            zygote.close()
        host.setblocking(False)
        self._sock = host
        with anyio.fail_after(START_TIMEOUT):
            message = await self._receive()
        if message is None or message[0] != "ready":
            raise OSError(f"it sent {message!r} instead of ready")
        self._pid = message[1]
        logger.debug("zygote started (pid %d)", self._pid)

    async def _receive(self) -> tuple[Any, ...] | None:
        """The next message from the zygote; None at the end."""
        assert self._sock is not None
        while True:
            await anyio.wait_readable(self._sock)
            try:
                data = self._sock.recv(MAX_MESSAGE)
            except BlockingIOError:
                continue
            except OSError:
                return None
            if not data:
                return None
            message: tuple[Any, ...] = pickle.loads(data)
            return message

    async def _read(self) -> None:
        """Answers to fork requests, and children's exits (a task, until the zygote ends)."""
        try:
            while (message := await self._receive()) is not None:
                kind = message[0]
                if kind in ("forked", "failed"):
                    done, answer = self._pending.pop(message[1])
                    answer.extend((kind, message[2]))
                    done.set()
                elif kind == "exited":
                    child = self._children.pop(message[1], None)
                    if child is not None:
                        child.exited(message[2])
        finally:
            if not self._closed:
                self._give_up("the zygote exited")
            self._end()

    def _give_up(self, why: str) -> None:
        """No more forks: answer those waiting, and fail the children still running."""
        if not self._failed and not self._closed:
            logger.warning("%s; children will be spawned instead", why)
        self._failed = True
        with contextlib.suppress(OSError):
            if self._sock is not None:
                self._sock.shutdown(socket.SHUT_RDWR)

    def _end(self) -> None:
        for done, _ in self._pending.values():
            done.set()
        self._pending.clear()
        for child in self._children.values():  # they died with the zygote
            child.exited(-signal.SIGKILL)
        self._children.clear()

    async def aclose(self) -> None:
        """End the zygote (its children should have exited by now: any left die with it)."""
        self._closed = True
        popen, sock = self._popen, self._sock
        if popen is None or sock is None:
            return
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(CLOSE_GRACE) as waiting:
                await reap(popen)
            if waiting.cancelled_caught:
                popen.kill()
                await reap(popen)
        sock.close()
        self._end()


async def reap(popen: subprocess.Popen[bytes]) -> int:
    """Wait for a child of ours to exit, and reap it; its exit status."""
    if popen.returncode is None:
        try:
            pidfd = os.pidfd_open(popen.pid)
        except ProcessLookupError:  # already reaped (by another wait)
            pass
        except (AttributeError, OSError):  # no pidfd (old kernel): a thread waits
            await anyio.to_thread.run_sync(popen.wait, abandon_on_cancel=True)
        else:
            try:
                await anyio.wait_readable(pidfd)
            finally:
                os.close(pidfd)
    return popen.wait()  # at once: it has exited


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
