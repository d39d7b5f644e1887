"""A pool's worker process: the child's half of :class:`~corral.Pool`.

Chunks of calls arrive as requests on :data:`TASKS`:
``(key, blob, mode, items)``. ``blob`` is the pickled function, sent the
first time this worker sees ``key`` (``None`` after); ``mode`` says how an
item becomes a call: ``"call"`` ``fn(item)``, ``"star"`` ``fn(*item)``,
``"apply"`` ``fn(*args, **kwargs)`` from ``item = (args, kwargs)``,
``"process"`` ``fn(item)`` (a :class:`~corral.Process` class, run to its
result), ``"process-star"`` the same with ``fn(*item)``, ``"process-apply"``
with ``fn(*args, **kwargs)``. The reply is
``(results, errors, seconds)``: a result per item (None where it failed),
``[(position, failure payload), ...]``, and the time the chunk took.
"""

from __future__ import annotations

import contextlib
import inspect
import pickle
from collections import OrderedDict
from collections.abc import Hashable
from time import perf_counter
from typing import Any, Final

import anyio

from ._answers import Request, failure_payload
from ._errors import CloseRequested
from ._lifecycle import run_cycle
from ._messenger import Messenger

TASKS: Final = "__corral_tasks__"
KEPT_FUNCTIONS: Final = 64  # functions a worker keeps unpickled (the host keeps their keys)
CONTROL: Final = "__corral_pool_control__"


class UnknownFunction(LookupError):
    """The host sent a key without its function (a new worker): it sends it again."""


class _NoLink:
    """A process run by a pool has no host to talk to: tell and listen do nothing."""

    def tell(self, value: Any) -> None:
        pass

    async def listen(self, timeout: float | None) -> Any:  # noqa: ASYNC109
        return None

    def progress(self, current_run: int) -> None:
        pass


class Functions:
    """Functions unpickled by key: the :data:`KEPT_FUNCTIONS` most recently used."""

    def __init__(self) -> None:
        self._functions: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key: Hashable, blob: bytes | None) -> Any:
        """The function of ``key`` (unpickled from ``blob`` if new); None: not kept, no blob."""
        fn = self._functions.get(key)
        if fn is not None:
            self._functions.move_to_end(key)
            return fn
        if blob is None:
            return None
        fn = self._functions[key] = pickle.loads(blob)
        while len(self._functions) > KEPT_FUNCTIONS:
            self._functions.popitem(last=False)
        return fn


async def serve_pool(messenger: Messenger) -> None:
    """Answer chunks of calls until the host closes this worker."""
    functions = Functions()
    async with anyio.create_task_group() as tasks:

        def handle(request: Request) -> None:
            key, blob, mode, items = request.value
            try:
                fn = functions.get(key, blob)
            except Exception as error:  # (say, a module it needs is not importable here)
                request.fail(error)
                return
            if fn is None:  # forgotten (or a new worker): the host sends it again
                request.fail(UnknownFunction(key))
                return
            if runs_async(fn, mode):
                tasks.start_soon(_answer_async, request, fn, mode, items)
            else:
                request.reply(run_sync(fn, mode, items))

        messenger.handle_requests(TASKS, handle)
        with contextlib.suppress(CloseRequested, Exception):
            await messenger.receive(CONTROL)  # (nothing comes: it ends at the close)
        tasks.cancel_scope.cancel()


def run_sync(fn: Any, mode: str, items: list[Any]) -> tuple[list[Any], list[Any], float]:
    """A chunk's calls, one after another: ``(results, errors, seconds)``."""
    began = perf_counter()
    results: list[Any] = []
    errors: list[tuple[int, Any]] = []
    if mode == "call":  # at C speed: extend() keeps what came before an item that raised
        calls = map(fn, items)
        while len(results) < len(items):
            try:
                results.extend(calls)
            except Exception as error:
                errors.append((len(results), failure_payload(error)))
                results.append(None)  # (and map() goes on after the item that raised)
        return results, errors, perf_counter() - began
    for item in items:
        try:
            if mode == "star":
                results.append(fn(*item))
            else:  # apply
                results.append(fn(*item[0], **item[1]))
        except Exception as error:
            errors.append((len(results), failure_payload(error)))
            results.append(None)
    return results, errors, perf_counter() - began


async def _answer_async(request: Request, fn: Any, mode: str, items: list[Any]) -> None:
    request.reply(await run_async(fn, mode, items))


def runs_async(fn: Any, mode: str) -> bool:
    """Whether ``fn``'s calls are awaited (an ``async def``, or a Process run to its end)."""
    return mode.startswith("process") or inspect.iscoroutinefunction(fn)


async def run_async(fn: Any, mode: str, items: list[Any]) -> tuple[list[Any], list[Any], float]:
    """A chunk's calls awaited one by one: ``(results, errors, seconds)``."""
    began = perf_counter()
    results: list[Any] = []
    errors: list[tuple[int, Any]] = []
    for item in items:
        try:
            results.append(await _call_async(fn, mode, item))
        except Exception as error:
            errors.append((len(results), failure_payload(error)))
            results.append(None)
    return results, errors, perf_counter() - began


async def _call_async(fn: Any, mode: str, item: Any) -> Any:
    if mode.startswith("process"):
        if mode == "process-apply":
            process = fn(*item[0], **item[1])
        else:
            process = fn(*item) if mode == "process-star" else fn(item)
        outcome = await run_cycle(process, _NoLink())
        if outcome.error is not None:
            raise outcome.error
        return outcome.value
    if mode == "star":
        return await fn(*item)
    if mode == "apply":
        return await fn(*item[0], **item[1])
    return await fn(item)
