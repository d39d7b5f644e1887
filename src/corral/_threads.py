"""A supervisor-owned pool of threads for running sync worker functions.

anyio's shared worker threads outlive the code that used them (they idle for
seconds after the last call), so a supervisor could not promise that leaving
its block leaves no thread behind. This pool is owned and closed by the
supervisor, and a completion is delivered to the loop as a callback rather
than by a task waiting on it, so interval workers need no task per tick.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, final

import anyio
import anyio.from_thread
import anyio.lowlevel

from ._eventloop import LoopHandle

logger = logging.getLogger(__name__)

#: What a completion callback receives: ``(result, None)`` or ``(None, error)``.
Done = Callable[[object, Exception | None], object]

_STOP = object()


@final
class ThreadPool:
    """Runs sync functions in daemon threads and reports back on the loop thread."""

    def __init__(
        self, loop: LoopHandle, *, max_threads: int, name: str, idle_timeout: float = 10.0
    ):
        if max_threads < 1:
            raise ValueError(f"max_threads must be at least 1, got {max_threads}")
        self._loop = loop
        self._max = max_threads
        self._name = name
        self._idle_timeout = idle_timeout
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        # Every count below changes under the lock, together with the job queue,
        # so a job is always owed to exactly one thread: an idle one, a new one,
        # or (backlog) the next busy one to finish.
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._exiting: list[threading.Thread] = []
        self._idle = 0
        self._backlog = 0
        self._busy: dict[threading.Thread, Callable[..., object]] = {}
        self._all_exited: anyio.Event | None = None
        self._closed = False

    def submit(self, fn: Callable[..., object], args: tuple[object, ...], done: Done) -> Job:
        """Run ``fn(*args)`` in a thread; ``done(result, error)`` runs later on the loop.

        Returns the :class:`Job`; cancelling it before a thread takes it means
        ``fn`` never runs (and ``done`` is never called).
        """
        job = Job(fn, args, done)
        with self._lock:
            if self._closed:
                raise RuntimeError("the thread pool is closed")
            self._jobs.put(job)
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(
                    target=self._work, name=f"{self._name}-thread-{len(self._threads)}"
                )
                thread.daemon = True  # an abandoned, stuck function must not block exit
                self._threads.add(thread)
                thread.start()
            else:
                self._backlog += 1
        return job

    async def run(self, fn: Callable[..., object], *args: object) -> object:
        """Run ``fn(*args)`` in a thread and return its result (or raise its error).

        If the caller is cancelled before a thread takes the job, it never
        runs; once running it finishes in its thread (threads cannot be
        interrupted) and its result is discarded.
        """
        finished = anyio.Event()
        outcome: list[Any] = []

        def done(result: object, error: Exception | None) -> None:
            outcome.extend((result, error))
            finished.set()

        job = self.submit(fn, args, done)
        try:
            await finished.wait()
        except BaseException:
            job.cancel()
            raise
        result, error = outcome
        if error is not None:
            raise error
        return result

    def busy(self) -> list[str]:
        """Names of the functions running in threads right now."""
        with self._lock:
            return [getattr(fn, "__qualname__", repr(fn)) for fn in self._busy.values()]

    async def aclose(self, timeout: float) -> None:  # noqa: ASYNC109  (a bound, not a deadline)
        """Stop every thread; wait up to ``timeout`` for busy ones, then abandon them."""
        with self._lock:
            self._closed = True
            count = len(self._threads)
            if count:
                self._all_exited = anyio.Event()
            for _ in range(count):
                self._jobs.put(_STOP)
        if self._all_exited is not None:
            with anyio.move_on_after(timeout):
                await self._all_exited.wait()
        stuck = self.busy()
        if stuck:
            logger.warning(
                "%s: %d sync function(s) still running after %.3gs and abandoned in daemon "
                "threads: %s. Make them return promptly (check a stop flag) to shut down cleanly.",
                self._name,
                len(stuck),
                timeout,
                ", ".join(stuck),
            )
        with self._lock:
            exiting, self._exiting = self._exiting, []
            idle = [t for t in self._threads if t not in self._busy]
        for thread in exiting:
            thread.join()  # each has left its loop; this returns at once
        for thread in idle:  # even with no time to wait: an idle thread leaves at once
            thread.join(timeout=1.0)

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            try:
                job = self._jobs.get(timeout=self._idle_timeout)
            except queue.Empty:
                with self._lock:
                    if self._idle == 0:  # a job was just owed to this thread: take it
                        continue
                    self._idle -= 1
                    self._leave(me)  # in the same breath, so submit() sees room at once
                break
            if job is _STOP:
                with self._lock:
                    self._leave(me)
                break
            if job.cancelled:
                pass  # its caller has gone: nothing to run, nobody to tell
            elif self._closed:
                error = RuntimeError("the thread pool closed before this call could start")
                self._loop.call_soon_threadsafe(job.done, None, error)
            else:
                self._run(me, job)
            with self._lock:
                if self._backlog:
                    self._backlog -= 1  # a queued job is owed to this thread
                else:
                    self._idle += 1
            del job
        if self._all_exited is not None and not self._threads:
            self._loop.call_soon_threadsafe(self._all_exited.set)

    def _run(self, me: threading.Thread, job: Job) -> None:
        with self._lock:
            self._busy[me] = job.fn
        try:
            result, error = job.fn(*job.args), None
        except Exception as exc:  # delivered to the caller, never swallowed
            result, error = None, exc
        except BaseException as exc:  # SystemExit in a thread ends nothing but the call
            result, error = None, RuntimeError(f"{job.fn!r} raised {exc!r} in a worker thread")
            error.__cause__ = exc
        with self._lock:
            del self._busy[me]
        self._loop.call_soon_threadsafe(job.done, result, error)

    def _leave(self, me: threading.Thread) -> None:
        """Forget this thread (call with the lock held)."""
        self._threads.discard(me)
        self._exiting = [t for t in self._exiting if t.is_alive()]
        self._exiting.append(me)


@final
class Job:
    """One call waiting for, or taken by, a thread of the pool."""

    __slots__ = ("args", "cancelled", "done", "fn")

    def __init__(self, fn: Callable[..., object], args: tuple[object, ...], done: Done) -> None:
        self.fn = fn
        self.args = args
        self.done = done
        self.cancelled = False

    def cancel(self) -> None:
        """Skip the call if no thread has taken it yet."""
        self.cancelled = True


async def run_in_own_thread(fn: Callable[..., Any], *args: object, name: str) -> Any:
    """``fn(*args)`` in a new thread that ends with the call (unlike anyio's idle pool).

    For occasional heavy work (a statistics sort) where no thread may be left
    behind. Cancelling the wait abandons the result; the thread still ends
    when ``fn`` returns.
    """
    token = anyio.lowlevel.current_token()
    finished = anyio.Event()
    outcome: list[tuple[bool, Any]] = []

    def work() -> None:
        try:
            outcome.append((True, fn(*args)))
        except BaseException as error:  # delivered to the waiting task
            outcome.append((False, error))
        with contextlib.suppress(RuntimeError):  # the loop has gone: nobody is waiting
            anyio.from_thread.run_sync(finished.set, token=token)

    thread = threading.Thread(target=work, name=name, daemon=True)
    thread.start()
    await finished.wait()
    thread.join()  # it is returning from its last call: a matter of microseconds
    ok, value = outcome[0]
    if ok:
        return value
    raise value
