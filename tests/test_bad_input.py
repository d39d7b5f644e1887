"""Bad input raises a clear error at the call site, saying what was expected."""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import anyio
import pytest

import corral

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("interval", [0, -1, -0.5, math.inf, math.nan])
async def test_interval_must_be_positive_and_finite(interval: float) -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(
            ValueError, match="interval must be a finite number of seconds greater"
        ):
            sup.every(interval, lambda: None)
    with pytest.raises(ValueError, match="interval must be"):
        corral.interval(interval)


@pytest.mark.parametrize("interval", ["1", None, True, [1]])
async def test_interval_must_be_a_number(interval: Any) -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(TypeError, match="interval must be a number of seconds"):
            sup.every(interval, lambda: None)


async def test_non_callable_function_is_refused() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(TypeError, match="needs a callable, got int 42"):
            sup.every(1, 42)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="needs a callable, got int 42"):
            sup.queue_worker(42)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="needs a callable, got str 'x'"):
            sup.event_worker("x")  # type: ignore[call-overload]


async def test_coroutine_object_instead_of_function_is_refused_and_closed() -> None:
    async def poll() -> None:
        pass

    async with corral.Supervisor() as sup:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a "never awaited" warning would fail here
            coro = poll()
            with pytest.raises(TypeError, match=r"not the result of calling it"):
                sup.every(1, coro)  # type: ignore[call-overload]
            assert inspect.getcoroutinestate(coro) == "CORO_CLOSED"  # so no warning later


async def test_generator_functions_are_refused() -> None:
    async def agen() -> Any:
        yield 1

    async with corral.Supervisor() as sup:
        with pytest.raises(TypeError, match="not a generator"):
            sup.loop_worker(agen)


async def test_a_plain_function_returning_a_coroutine_fails_clearly() -> None:
    async def real() -> None:
        pass

    with pytest.raises(corral.WorkerFailed, match="declare it with `async def`"):
        async with corral.Supervisor() as sup:
            sup.every(0.01, lambda: real())  # noqa: PLW0108  (the point of the test)
            await anyio.sleep_forever()


async def test_queue_put_after_stop_raises() -> None:
    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(lambda x: None)
        worker.stop()
        with pytest.raises(corral.WorkerStopped, match="is stopped and takes no more items"):
            worker.put_nowait(1)
        with pytest.raises(corral.WorkerStopped):
            await worker.put(1)
    with pytest.raises(corral.WorkerStopped):
        worker.put_nowait(1)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"maxsize": -1}, ValueError, "maxsize must be a whole number of at least 0"),
        ({"concurrency": 0}, ValueError, "concurrency must be a whole number of at least 1"),
        ({"maxsize": 1.5}, ValueError, "maxsize must be a whole number"),
        ({"priority": "yes"}, TypeError, "priority must be True or False"),
    ],
)
async def test_queue_options_are_checked(options: dict[str, Any], error: type, match: str) -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(error, match=match):
            sup.queue_worker(lambda x: None, **options)


async def test_priority_items_must_be_pairs() -> None:
    async with corral.Supervisor() as sup:
        worker = sup.queue_worker(lambda x: None, priority=True)
        with pytest.raises(TypeError, match=r"must be \(priority, item\) tuples; got 'job'"):
            worker.put_nowait("job")


async def test_interval_options_are_checked() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(ValueError, match="mode must be 'rate'"):
            sup.every(1, lambda: None, mode="fast")  # type: ignore[call-overload]
        with pytest.raises(ValueError, match="delay_before must be a finite number of seconds 0"):
            sup.every(1, lambda: None, delay_before=-1)
        with pytest.raises(TypeError, match="on_error must be a callable"):
            sup.every(1, lambda: None, on_error="log")  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="on_error must be a plain function"):

            async def handler(exc: Exception) -> None:
                pass

            sup.every(1, lambda: None, on_error=handler)
        with pytest.raises(TypeError, match="name must be a non-empty string"):
            sup.every(1, lambda: None, name="")
        assert sup.workers == ()


async def test_start_worker_needs_a_spec() -> None:
    async with corral.Supervisor() as sup:
        with pytest.raises(TypeError, match="takes a WorkerSpec"):
            sup.start_worker(lambda: None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"shutdown_timeout": -1}, ValueError),
        ({"shutdown_timeout": math.nan}, ValueError),
        ({"shutdown_timeout": "5"}, TypeError),
        ({"max_threads": 0}, ValueError),
    ],
)
def test_supervisor_options_are_checked(kwargs: dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        corral.Supervisor(**kwargs)
