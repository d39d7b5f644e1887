"""Hooks: registration, priority order, concurrency, results and failures."""

from __future__ import annotations

import anyio
import pytest

import corral

pytestmark = pytest.mark.anyio


async def test_results_are_keyed_by_module_qualname_in_priority_order() -> None:
    hooks = corral.Hooks()
    order: list[str] = []

    @hooks.register
    def late(x: int) -> str:
        order.append("late")
        return "L"

    @hooks.register(priority=1)
    async def early(x: int) -> int:
        order.append("early")
        return x * 2

    def plus_one(x: int) -> int:
        order.append("plus_one")
        return x + 1

    hooks.register(plus_one, priority=1)  # same priority: registration order
    results = await hooks.run(21)
    assert results.ok
    assert order == ["early", "plus_one", "late"]
    assert list(hooks) == [early, plus_one, late]
    prefix = f"{__name__}.test_results_are_keyed_by_module_qualname_in_priority_order.<locals>"
    assert results[f"{prefix}.early"] == 42
    assert results[f"{prefix}.plus_one"] == 22
    assert results[f"{prefix}.late"] == "L"
    hooks.unregister(late)
    assert late not in hooks


async def test_failures_are_reported_not_raised_and_others_still_run() -> None:
    hooks = corral.Hooks()
    ran: list[str] = []

    @hooks.register(priority=1)
    def broken() -> None:
        raise ValueError("nope")

    @hooks.register(priority=2)
    async def fine() -> str:
        ran.append("fine")
        return "ok"

    results = await hooks.run()
    assert not results.ok
    assert results.failed == (f"{__name__}.{broken.__qualname__}",)
    assert isinstance(results.errors[results.failed[0]], ValueError)
    assert ran == ["fine"]
    with pytest.raises(KeyError, match="raised ValueError"):
        results[results.failed[0]]
    with pytest.raises(
        corral.HooksFailed, match=r"1 hook\(s\) failed: .*broken: ValueError: nope"
    ):
        results.raise_for_errors()


async def test_concurrent_hooks_run_at_once() -> None:
    hooks = corral.Hooks(concurrent=True)
    arrived = 0
    all_here = anyio.Event()

    async def meet() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 3:
            all_here.set()
        await all_here.wait()  # deadlocks unless all three run at the same time

    for _ in range(3):

        async def hook() -> None:
            await meet()

        hooks.register(hook)
    with anyio.fail_after(5):
        results = await hooks.run()
    assert results.ok
    base = f"{__name__}.{hook.__qualname__}"
    assert sorted(results.results) == [base, f"{base}#2", f"{base}#3"]


async def test_sequential_run_can_be_made_concurrent_per_call() -> None:
    hooks = corral.Hooks()
    both = anyio.Event()
    count = 0

    async def meet() -> None:
        nonlocal count
        count += 1
        if count == 2:
            both.set()
        await both.wait()

    async def a() -> None:
        await meet()

    async def b() -> None:
        await meet()

    hooks.register(a)
    hooks.register(b)
    with anyio.fail_after(5):
        assert (await hooks.run(concurrent=True)).ok


def test_bad_registrations_are_refused() -> None:
    hooks = corral.Hooks()

    def fn() -> None:
        pass

    hooks.register(fn)
    with pytest.raises(ValueError, match="already registered"):
        hooks.register(fn)
    with pytest.raises(TypeError, match="priority must be an int"):
        hooks.register(fn, priority="high")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="needs a callable"):
        hooks.register(3)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="is not registered"):
        hooks.unregister(print)
    assert len(hooks) == 1
    assert fn in hooks
    assert "fn" in repr(hooks)
