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
FORK_TIMEOUT: Final = 10.0  # a zygote that takes longer to answer has stopped answering
REPORT_GRACE: Final = 1.0  # ... and one that has not reported a child's exit by then
CLOSE_GRACE: Final = 2.0


# The first lines a child runs, before it imports corral: the kernel is to kill
# it when its parent dies (PR_SET_PDEATHSIG), and a parent already gone (killed
# while this interpreter started) ends it at once. Importing corral takes ~100 ms,
# seconds on a loaded machine: a host killed then would leave it running that long.
_BOOT = """\
import os, sys
if sys.platform == "linux":
    import ctypes, signal
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass
if os.getppid() != int(sys.argv[2]):
    os._exit(0)
from {module} import main
main(sys.argv)
"""


def boot_command(module: str, fd: int) -> list[str]:
    """The command that runs ``module``'s ``main`` in a child that dies with this process."""
    return [sys.executable, "-c", _BOOT.format(module=module), str(fd), str(os.getpid())]


class ForkLost(Exception):
    """A fork was asked for and the zygote never said how it went: start on fresh pipes."""


class Forked:
    """A child forked by the zygote: the part of ``subprocess.Popen`` that corral uses.

    Its exit status comes from the zygote, which reaps it; a pidfd of its own
    signals it (no pid reuse) and sees it exit, should the zygote stop
    answering.
    """

    def __init__(self, pid: int, forker: Forker) -> None:
        self.pid = pid
        self.parent_pid = forker.pid
        self.returncode: int | None = None
        self._forker = forker
        self._exited = anyio.Event()
        try:
            self._pidfd: int | None = os.pidfd_open(pid)
        except (OSError, AttributeError):  # gone already (the zygote tells), or no pidfd
            self._pidfd = None

    def send_signal(self, signum: int) -> None:
        if self.returncode is not None:
            return
        if self._pidfd is not None:
            signal.pidfd_send_signal(self._pidfd, signum)
        else:
            os.kill(self.pid, signum)

    def exited(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._exited.set()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def wait_async(self) -> int:
        if self.returncode is None:
            async with anyio.create_task_group() as tasks:
                if self._pidfd is not None:
                    tasks.start_soon(self._watch, os.dup(self._pidfd))
                await self._exited.wait()
                tasks.cancel_scope.cancel()
        assert self.returncode is not None
        return self.returncode

    async def _watch(self, pidfd: int) -> None:
        """Should the zygote not report the exit the pidfd sees, it has stopped answering."""
        try:
            await anyio.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        with anyio.move_on_after(REPORT_GRACE):
            await self._exited.wait()
            return
        self._forker.unresponsive(f"it did not report the exit of its child {self.pid}")


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
        self._pending: dict[int, tuple[anyio.Event, list[Any]]] = {}  # fork requests
        self._children: dict[int, Forked] = {}
        self._sending = anyio.Lock()

    @property
    def pid(self) -> int:
        """The zygote's pid (0 before it is ready)."""
        return self._pid

    async def fork(
        self, channel: int, stderr: int, answer_within: float = FORK_TIMEOUT
    ) -> Forked | None:
        """Fork a child of the zygote running ``corral._child`` on ``channel``.

        ``stderr`` becomes its fd 2; its fd 1 is ours; it gets our working
        directory, umask, CPU affinity and a spawned child's environment.
        None when nothing was forked (no zygote ready, a request it could not
        take): spawn instead. Raises :class:`ForkLost` when the zygote never
        answered (it may have forked a child that holds ``channel``).
        """
        if not self._available():
            return None
        assert self._sock is not None
        token = next(self._tokens)
        done, answer = self._pending[token] = (anyio.Event(), [])
        try:
            if not await self._send(token, channel, stderr):
                return None
            limit = min(answer_within, FORK_TIMEOUT)
            with anyio.move_on_after(limit):
                await done.wait()
            if not done.is_set():
                self.unresponsive(f"it did not answer a fork request within {limit:g}s")
        finally:
            self._pending.pop(token, None)
        if not answer:  # it died, or hung, before it answered
            raise ForkLost
        kind, value = answer
        if kind == "failed":
            logger.warning("the zygote could not fork (%s); spawning instead", value)
            return None
        child = self._children[value] = Forked(value, self)
        return child

    async def _send(self, token: int, channel: int, stderr: int) -> bool:
        """Send a fork request; False when it was not sent (nothing was forked)."""
        assert self._sock is not None
        try:
            request = pickle.dumps(
                ("fork", token, os.getcwd(), self._environment(), _umask(), _affinity())
            )
        except OSError as error:  # our working directory is gone
            logger.debug("no fork request (%s): spawning instead", error)
            return False
        stdout = 1 if _is_open(1) else os.open(os.devnull, os.O_WRONLY)
        try:
            async with self._sending:  # (one task at a time may wait for room)
                while True:
                    try:
                        socket.send_fds(self._sock, [request], [channel, stdout, stderr])
                        return True
                    except BlockingIOError:
                        await anyio.wait_writable(self._sock)
        except OSError as error:  # too large for the socket; or the zygote is gone
            logger.debug("fork request not sent (%s): spawning instead", error)
            return False
        finally:
            if stdout != 1:
                os.close(stdout)

    def unresponsive(self, why: str) -> None:
        """The zygote stopped answering: kill it (its children die with it), spawn from now on."""
        self._give_up(f"the zygote was killed: {why}")
        if self._popen is not None:
            self._popen.kill()

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
            if self._popen is not None:
                self._popen.kill()
                await reap(self._popen)
            if self._sock is not None:
                self._sock.close()
            return
        finally:
            self._ready.set()
        await self._read()

    async def _start(self) -> None:
        host, zygote = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._popen = subprocess.Popen(  # noqa: ASYNC220  (fork+exec: ~1 ms)
                boot_command("corral._zygote", zygote.fileno()),
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
                    # (None: its fork() was cancelled; the child it got finds its
                    # socket closed and exits)
                    request = self._pending.pop(message[1], None)
                    if request is not None:
                        done, answer = request
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
        """No more forks (the children already forked go on)."""
        if not self._failed and not self._closed:
            logger.warning("%s; children will be spawned instead", why)
        self._failed = True

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


def _umask() -> int | None:
    """This process's umask, read without changing it (Linux), or None."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None


def _affinity() -> list[int] | None:
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return None


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
