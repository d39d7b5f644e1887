"""The zygote: a process that has imported corral once, and forks children from there.

``main([_, FD, ...])``, run by ``_forker.boot_command``, started by a
supervisor (see ``_forker``) on its first child. A child forked from it skips
the interpreter's start and corral's imports (~150 ms of a spawned child's
start, ~5 ms left) and goes straight to ``corral._child``'s main with the
socket the host passed.

The zygote has no thread and runs no event loop: a blocking loop over its
socket to the host (SOCK_SEQPACKET, one pickled tuple per message, file
descriptors passed alongside) and a wake-up pipe for SIGCHLD. Messages:

- host → zygote: ``("fork", token, cwd, environ)`` with three descriptors:
  the child's end of its socketpair, its stdout and its stderr;
- zygote → host: ``("ready", pid)`` once, then ``("forked", token, pid)`` or
  ``("failed", token, reason)`` per fork, and ``("exited", pid, returncode)``
  when it reaps a child (always after that child's ``forked``).

It exits when the host closes its end, and dies with the host
(``PR_SET_PDEATHSIG``); its children die with it the same way.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import sys
import traceback
from typing import Any, Final, NoReturn

from . import _child  # the children's imports, done once, here
from ._forker import MAX_MESSAGE

CHILD_FAILED: Final = 70  # the exit status of a fork that could not become a child


def main(argv: list[str]) -> NoReturn:
    """Serve fork requests until the host closes the socket."""
    _preimport()
    signal.signal(signal.SIGINT, _ignore)  # Ctrl-C is the host's to handle
    _child._die_with_parent()
    sock = socket.socket(fileno=int(argv[1]))
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, _ignore)
    signal.set_wakeup_fd(wake_write)
    _send(sock, ("ready", os.getpid()))
    while True:
        readable, _, _ = select.select([sock.fileno(), wake_read], [], [])
        if wake_read in readable:
            with contextlib.suppress(BlockingIOError):
                while os.read(wake_read, 512):
                    pass
            _reap(sock)
        if sock.fileno() in readable:
            try:
                data, fds, _flags, _address = socket.recv_fds(sock, MAX_MESSAGE, 3)
            except OSError:  # the host died with our reports unread (ECONNRESET)
                os._exit(0)
            if not data:  # the host closed its end: we are done
                os._exit(0)
            request = pickle.loads(data)
            _fork(sock, request, fds, (wake_read, wake_write))


def _preimport() -> None:
    """What a child would import before it serves: anyio's backend, uvloop."""
    import anyio._backends._asyncio  # noqa: F401, PLC0415

    with contextlib.suppress(ImportError):
        import uvloop  # noqa: F401, PLC0415


def _fork(sock: socket.socket, request: Any, fds: list[int], own: tuple[int, int]) -> None:
    _kind, token, *setting = request
    parent = os.getpid()
    try:
        if len(fds) != 3:
            raise OSError(f"expected 3 file descriptors with the request, got {len(fds)}")
        pid = os.fork()
    except OSError as error:
        for fd in fds:
            os.close(fd)
        _send(sock, ("failed", token, f"{type(error).__name__}: {error}"))
        return
    if pid == 0:
        _child._die_with_parent()  # first: a zygote gone now must not leave us behind
        if os.getppid() != parent:
            os._exit(0)
        code = CHILD_FAILED
        try:
            _become_child(sock, own, fds, *setting)
        except SystemExit as exit:  # as Python's top level does with it
            code = _exit_code(exit)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)
    for fd in fds:
        os.close(fd)
    _send(sock, ("forked", token, pid))


def _become_child(
    sock: socket.socket,
    own: tuple[int, int],
    fds: list[int],
    cwd: str,
    environ: dict[str, str],
    umask: int | None,
    affinity: list[int] | None,
) -> None:
    """In a new fork: shed the zygote, take the host's descriptors and settings, run the child."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    sock.close()
    for fd in own:
        os.close(fd)
    channel, stdout, stderr = fds
    for fd, target in ((stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    with contextlib.suppress(OSError):  # gone since: the zygote's own stays
        os.chdir(cwd)
    os.environ.clear()
    os.environ.update(environ)
    if umask is not None:
        os.umask(umask)
    if affinity is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, affinity)
    _child.main(["corral._child", str(channel)])


def _exit_code(exit: SystemExit) -> int:
    if exit.code is None:
        return 0
    if isinstance(exit.code, int):
        return exit.code
    sys.stderr.write(f"{exit.code}\n")  # (what the interpreter prints)
    return 1


def _reap(sock: socket.socket) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:  # none left
            return
        if pid == 0:
            return
        _send(sock, ("exited", pid, os.waitstatus_to_exitcode(status)))


def _send(sock: socket.socket, message: tuple[Any, ...]) -> None:
    try:
        sock.sendall(pickle.dumps(message))
    except OSError:  # the host is gone: so are we
        os._exit(0)


def _ignore(signum: int, frame: object) -> None:
    """A handler that does nothing (SIGINT; SIGCHLD, which only wakes the loop)."""
