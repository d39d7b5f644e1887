"""Functions the pool tests run in worker processes (importable by the workers)."""

from __future__ import annotations

import os
import time

import anyio
import anyio.lowlevel

import corral


def double(x: int) -> int:
    return x * 2


def crash_on(x: int, bad: int = 7) -> int:
    if x == bad:
        os._exit(3)
    return x


def sleep_on(x: int, slow: int = 3) -> int:
    if x == slow:
        time.sleep(60)
    return x


def fail_on(x: int) -> int:
    if x == 5:
        raise KeyError(x)
    return x


async def adouble(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return x * 2


class Square(corral.Process):
    runs = 1

    def __init__(self, x: int) -> None:
        self.x = x

    def run(self) -> None:
        self.x = self.x * self.x

    def result(self) -> int:
        return self.x


def pid_of(x: int) -> int:
    return os.getpid()


def slow(x: int) -> int:
    time.sleep(0.05)
    return x


async def numbers(n: int):  # type: ignore[no-untyped-def]
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


class Refuses(corral.Process):
    """A Process whose constructor refuses item 3."""

    runs = 1

    def __init__(self, x: int) -> None:
        if x == 3:
            raise ValueError(f"no {x}")
        self.x = x

    def run(self) -> None:
        pass

    def result(self) -> int:
        return self.x


def crash_once(path: str, x: int) -> int:
    """os._exit the first time item 4 runs (a file remembers), then answer."""
    if x == 4 and not os.path.exists(path):
        with open(path, "w"):
            pass
        os._exit(5)
    return x


def _refuse_loading() -> None:
    raise ValueError("this function cannot be loaded in a worker")


class Unloadable:
    """Pickles in the host; unpickling it (in a worker) raises."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return _refuse_loading, ()


def with_unloadable(unloadable: object, x: int) -> int:
    return x
