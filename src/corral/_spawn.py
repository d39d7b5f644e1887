"""Starting, watching and reaping child processes (the host's half).

A child is ``corral._child.main`` (started by ``_forker.boot_command``) with
one end of a socketpair inherited as ``FD``. The first frame it reads is a
:class:`Boot` record: plain data it can read before any user code is imported
(so it pins itself first), plus the cloudpickled target, unpickled after that.
Its reply to the boot request says it is ready (or carries the startup
traceback).

Its stderr comes through a pipe: the host copies it to its own ``sys.stderr``
and keeps the last lines, so a crash can say what the child last wrote. Its
stdout is inherited. Its exit is seen through a pidfd, on any loop.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import logging
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Final, final

import anyio
import anyio.abc
import psutil

from ._answers import rebuild_failure
from ._connection import open_connection
from ._errors import RemoteError, StartupError, WorkerCrashed
from ._forker import Forked, Forker, ForkLost, boot_command, reap
from ._logs import LOGS, relog
from ._messenger import Messenger
from ._wire import DEFAULT_MAX_FRAME, dumps_inband

logger = logging.getLogger(__name__)

BOOT_CHANNEL: Final = "__corral_boot__"
FAILURE_CHANNEL: Final = "__corral_failure__"  # why the child is about to exit with an error
STDERR_LINES: Final = 20


@final
@dataclass(frozen=True, slots=True)
class Boot:
    """What a child needs before it imports user code."""

    name: str
    cpu: tuple[int, ...] | None
    sys_path: tuple[str, ...]
    log_level: int
    parent_pid: int
    max_frame_size: int
    kind: str  # "service" (an object behind a proxy), "function" (open_worker) or "control"
    target: bytes  # pickled (fn, args, kwargs); unpickled after pinning


def check_cpu(cpu: int | tuple[int, ...] | list[int] | None) -> tuple[int, ...] | None:
    """Validate ``cpu=`` (one core or several) against the cores this host may use."""
    if cpu is None:
        return None
    cores = (cpu,) if isinstance(cpu, int) and not isinstance(cpu, bool) else cpu
    if not isinstance(cores, tuple | list) or not cores:
        raise TypeError(f"cpu= takes a core number or a sequence of them, got {cpu!r}")
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    for core in cores:
        if isinstance(core, bool) or not isinstance(core, int):
            raise TypeError(f"cpu= takes core numbers (int), got {core!r}")
        if allowed is not None and core not in allowed:
            raise ValueError(
                f"cpu={core} is not a core this process may run on; choose from {allowed}"
            )
    return tuple(cores)


@final
class ChildProcess:
    """A running child on the host's side: its pid, its exit, its stderr."""

    def __init__(self, popen: subprocess.Popen[bytes] | Forked, name: str, stderr_fd: int) -> None:
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self._stderr_fd = stderr_fd
        self._tail: deque[str] = deque(maxlen=STDERR_LINES)
        self._partial = ""
        # a character split across two reads must not turn into two U+FFFD
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stderr_done = anyio.Event()
        self._psutil: psutil.Process | None = None
        self.reported: BaseException | None = None

    def __repr__(self) -> str:
        return f"<ChildProcess {self.name!r} pid={self.pid} returncode={self.returncode}>"

    @property
    def returncode(self) -> int | None:
        """The exit status once reaped (negative: the signal that killed it)."""
        return self.popen.returncode

    def stderr_tail(self) -> str:
        """The last lines the child wrote to stderr."""
        lines = list(self._tail)
        if self._partial:
            lines.append(self._partial)
        return "\n".join(lines)

    def kill(self) -> None:
        """SIGKILL the child (does nothing once it has been reaped)."""
        if self.popen.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGKILL)

    async def wait(self) -> int:
        """Wait for the child to exit (reaping it); returns its exit status.

        Self-contained (its own pidfd): it works from a shielded scope even
        when the tasks around it have been cancelled.
        """
        popen = self.popen
        if isinstance(popen, Forked):  # the zygote reaps it, and tells its status
            return await popen.wait_async()
        return await reap(popen)

    async def wait_stderr(self, grace: float) -> None:
        """Wait (briefly) for the child's stderr to reach end of file."""
        with anyio.move_on_after(grace):
            await self._stderr_done.wait()

    def report(self, payload: Any) -> None:
        """The child says why it is about to exit with an error (see :data:`FAILURE_CHANNEL`)."""
        self.reported = rebuild_failure(payload)

    def failure(self) -> BaseException:
        """Why the child exited with an error: what it reported, else :meth:`crashed`."""
        if self.reported is None:
            return self.crashed()
        self.reported.add_note(f"child process {self.name!r} exited with code {self.returncode}")
        return self.reported

    def crashed(self, detail: str = "") -> WorkerCrashed:
        """The error that pending calls raise now that the child is gone."""
        return WorkerCrashed(self.name, self.returncode, stderr=self.stderr_tail(), detail=detail)

    def resources(self) -> tuple[int | None, float | None]:
        """(RSS in bytes, CPU % since the last call) or (None, None) once gone."""
        if self.popen.returncode is not None:
            return None, None
        try:
            if self._psutil is None:
                self._psutil = psutil.Process(self.pid)
                self._psutil.cpu_percent(None)
            return self._psutil.memory_info().rss, self._psutil.cpu_percent(None)
        except psutil.Error:
            return None, None

    async def pump_stderr(self) -> None:
        """Copy the child's stderr to ours, keeping the last lines (a task)."""
        fd = self._stderr_fd
        os.set_blocking(fd, False)
        try:
            while True:
                await anyio.wait_readable(fd)
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    continue
                if not data:
                    return
                text = self._utf8.decode(data)
                self._keep(text)
                _write_stderr(text)
        finally:
            os.close(fd)
            self._stderr_done.set()

    def _keep(self, text: str) -> None:
        *lines, self._partial = (self._partial + text).split("\n")
        self._tail.extend(lines)
        if len(self._partial) > 4096:
            self._tail.append(self._partial)
            self._partial = ""


def _write_stderr(text: str) -> None:
    stream = sys.stderr
    if stream is None:
        return
    try:
        stream.write(text)
        stream.flush()
    except (OSError, ValueError):  # closed or gone: the tail still keeps it
        pass


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    # the child must import corral before it learns the host's sys.path
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


def pickled_target(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> bytes:
    """What a child runs, pickled once for every (re)start.

    Raises :class:`~corral.SerializationError` when ``fn`` or its arguments
    will not pickle.
    """
    return dumps_inband((fn, args, kwargs))


async def launch(
    kind: str,
    target: bytes,
    *,
    name: str,
    cpu: tuple[int, ...] | None,
    task_group: anyio.abc.TaskGroup,
    startup_timeout: float,
    log_level: int | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME,
    pass_fds: tuple[int, ...] = (),
    forker: Forker | None = None,
    handlers: Mapping[Hashable, Callable[[Messenger, Any], None]] | None = None,
) -> tuple[ChildProcess, Messenger, Any]:
    """Start a child running ``target`` and wait until it is ready.

    ``target`` is :func:`pickled_target`'s bytes. The child is forked from
    ``forker``'s zygote when there is one (and no ``pass_fds``), else
    spawned. ``handlers`` take the messages on their channels from the start
    (given the messenger and the value). Returns the child, the
    host's messenger to it and what the child sent back when ready. Raises
    :class:`~corral.StartupError` (the child is gone by then) when it fails
    to start.
    """
    if log_level is None:
        log_level = logging.getLogger().getEffectiveLevel()
    # (a zygote that does not answer gets half the start's time: then a spawn, the rest)
    popen, host_sock, stderr_read = await _start_process(forker, pass_fds, startup_timeout / 2)
    parent = popen.parent_pid if isinstance(popen, Forked) else os.getpid()
    boot = Boot(name, cpu, tuple(sys.path), log_level, parent, max_frame_size, kind, target)
    child = ChildProcess(popen, name, stderr_read)
    logger.debug("started child %r (pid %d)", name, child.pid)
    task_group.start_soon(child.pump_stderr, name=f"corral-stderr:{name}")
    messenger = Messenger(name=name, max_frame_size=max_frame_size)
    messenger.handle_messages(LOGS, functools.partial(relog, name))
    messenger.handle_messages(FAILURE_CHANNEL, child.report)
    for channel, handler in (handlers or {}).items():
        messenger.handle_messages(channel, functools.partial(handler, messenger))
    messenger.on_lost = EarlyLoss(messenger)
    try:
        messenger.attach(
            await open_connection(host_sock, messenger, task_group, max_frame_size=max_frame_size)
        )
        with anyio.fail_after(startup_timeout):
            ready = await _boot(messenger, child, boot)
    except BaseException as error:
        child.kill()
        messenger.abort()
        with anyio.CancelScope(shield=True):
            await child.wait()
            await child.wait_stderr(0.5)
        if isinstance(error, TimeoutError):
            why = (
                f"child {name!r} was not ready within {startup_timeout:g}s; it was killed. "
                "Raise startup_timeout= if its constructor is slow"
            )
        elif isinstance(error, WorkerCrashed | anyio.BrokenResourceError):
            why = (
                f"child {name!r} exited during startup (exit status {child.returncode}); "
                "the last lines it wrote to stderr follow"
            )
        else:
            raise
        raise StartupError(
            why, traceback=child.stderr_tail(), exit_code=child.returncode
        ) from None
    return child, messenger, ready


async def _start_process(
    forker: Forker | None, pass_fds: tuple[int, ...], fork_timeout: float
) -> tuple[subprocess.Popen[bytes] | Forked, socket.socket, int]:
    """A child forked from the zygote (or spawned), with our ends of its socket and stderr."""
    if pass_fds:  # (descriptors passed keep their numbers: a fork could not do that)
        forker = None
    while True:
        host_sock, child_sock = socket.socketpair()
        stderr_read, stderr_write = os.pipe()
        try:
            popen: subprocess.Popen[bytes] | Forked | None = None
            if forker is not None:
                popen = await forker.fork(child_sock.fileno(), stderr_write, fork_timeout)
            if popen is None:
                popen = subprocess.Popen(  # noqa: ASYNC220  (fork+exec: ~1 ms; no thread hop)
                    boot_command("corral._child", child_sock.fileno()),
                    pass_fds=(child_sock.fileno(), *pass_fds),
                    stdin=subprocess.DEVNULL,
                    stderr=stderr_write,
                    env=child_env(),
                )
        except ForkLost:  # a fork may hold these ends: spawn on fresh ones
            host_sock.close()
            os.close(stderr_read)
            forker = None
            continue
        except BaseException:
            host_sock.close()
            os.close(stderr_read)
            raise
        finally:
            child_sock.close()
            os.close(stderr_write)
        return popen, host_sock, stderr_read


async def _boot(messenger: Messenger, child: ChildProcess, boot: Boot) -> Any:
    try:
        return await messenger.request(boot, channel=BOOT_CHANNEL)
    except (StartupError, RemoteError) as error:
        if isinstance(error, RemoteError):
            error = StartupError(f"{error.type_name}: {error.message}", traceback=error.traceback)
        elif hasattr(error, "__notes__"):  # its traceback is already in the message
            del error.__notes__
        error.exit_code = await child.wait()
        raise error from None


class EarlyLoss:
    """The connection's end, seen before the child's owner took over.

    Before the boot reply, it fails the boot request (the start fails). After
    it (on trio the reply and the end of file can arrive in one read), it is
    kept for the owner: :attr:`lost` and :attr:`error`.
    """

    def __init__(self, messenger: Messenger) -> None:
        self._messenger = messenger
        self.lost = False
        self.error: BaseException | None = None

    def __call__(self, error: BaseException | None) -> None:
        if self._messenger.remaining(BOOT_CHANNEL):  # still booting
            self._messenger._fail_all(
                anyio.BrokenResourceError(f"the connection ended during startup ({error!r})")
            )
        else:
            self.lost, self.error = True, error
