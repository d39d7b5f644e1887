"""Calls into a child process: corral's proxy against what people write by hand.

Four measurements, each on uvloop and on the stock asyncio loop:

1. round trip of ``await proxy.echo(small)`` (median and p99), against (a) a
   hand-written asyncio echo over a socketpair with length-prefixed pickle
   frames, the floor for this design; (b) a blocking ``multiprocessing.Pipe``
   ping-pong; (c) ``anyio.to_process.run_sync``; (d) ``run_in_executor`` on a
   ``ProcessPoolExecutor(1)``; (e) ``aiomultiprocess.Pool.apply``;
2. throughput with 64 concurrent callers, against a hand-written pipelined
   echo (call ids in the frame header, a dict of futures);
3. a 64 MiB ``bytes`` echoed, against a raw blocking socketpair copy there
   and back;
4. spawn-to-ready of ``sup.spawn(Echo)`` and the idle child's RSS, against
   ``python -c "import corral"``.

Each variant runs in a fresh interpreter, all in the same invocation on the
same machine; the ratios are what count. The hand-written peers run their
child on the loop being measured; corral's child always runs on uvloop when
it is installed, whatever the host's loop, so on the asyncio host they are
also measured with a uvloop child, marked (a*).

    python benchmarks/rpc.py                  # everything, both loops (~2-3 min)
    python benchmarks/rpc.py --quick          # fewer calls (~30 s)
    python benchmarks/rpc.py --loop uvloop    # one loop
    python benchmarks/rpc.py --json rpc.json  # also dump the figures
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import itertools
import json
import multiprocessing
import os
import pickle
import platform
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import anyio.to_process
import psutil

import corral
from _peers import corral_source, ensure
from _stats import distribution, fmt, percentile, table

T = TypeVar("T")

SMALL = bytes(range(32))  # the small argument: 32 bytes
MiB = 1 << 20
LOOPS = ("uvloop", "asyncio")
SECTIONS = ("rt", "tp", "big", "spawn")
#: (calls, warm-up calls) per round-trip variant, full run and --quick run
RT_CALLS: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "rt_corral": ((20_000, 2_000), (3_000, 300)),
    "rt_floor": ((20_000, 2_000), (3_000, 300)),
    "rt_floor_uvchild": ((20_000, 2_000), (3_000, 300)),
    "rt_pipe": ((20_000, 2_000), (3_000, 300)),
    "rt_anyio": ((20_000, 2_000), (1_000, 100)),
    "rt_executor": ((20_000, 2_000), (1_000, 100)),
    "rt_aiomp": ((40, 5), (15, 3)),
}
VARIANT_TIMEOUT = 180.0  # a variant that takes longer has hung
#: The figure that picks the best of several rounds, by section: (key, lower is better)
BEST_BY = {
    "rt": ("median_us", True),
    "tp": ("calls_per_s", False),
    "big": ("gb_per_s", False),
    "spawn": ("median_ms", True),
}
BUSY_PCT = 25.0  # machine-wide CPU % (of all cores) above which we wait before measuring

# -- what the children run ---------------------------------------------------------


class Echo:
    """The object corral serves in its child."""

    def echo(self, value: T) -> T:
        return value


def echo(value: T) -> T:
    """The function the process-pool peers run (module level, so it pickles by name)."""
    return value


async def async_echo(value: T) -> T:
    """The coroutine function aiomultiprocess runs."""
    return value


def pipe_echo_server(conn: Connection) -> None:
    """(b): answer every value on a multiprocessing pipe until it closes."""
    try:
        while True:
            conn.send(conn.recv())
    except (EOFError, OSError):
        pass


#: Frame header of the hand-written peers: body length, call id.
HEADER = struct.Struct("<IQ")

#: The hand-written asyncio echo child: ``python -c FLOOR_CHILD FD LOOP``.
FLOOR_CHILD = r"""
import asyncio, pickle, socket, struct, sys

HEADER = struct.Struct("<IQ")


async def serve(fd):
    reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
    try:
        while True:
            try:
                head = await reader.readexactly(HEADER.size)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            size, call_id = HEADER.unpack(head)
            value = pickle.loads(await reader.readexactly(size))
            body = pickle.dumps(value, protocol=5)
            writer.write(HEADER.pack(len(body), call_id) + body)
            await writer.drain()
    finally:
        writer.close()


if sys.argv[2] == "uvloop":
    import uvloop

    uvloop.run(serve(int(sys.argv[1])))
else:
    asyncio.run(serve(int(sys.argv[1])))
"""

#: The raw copy child: read SIZE bytes into a fresh buffer, send them back, repeat.
RAW_CHILD = r"""
import socket, sys

sock = socket.socket(fileno=int(sys.argv[1]))
size = int(sys.argv[2])
while True:
    view = memoryview(bytearray(size))
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            sys.exit(0)
        got += n
    sock.sendall(view)
"""

# -- helpers -------------------------------------------------------------------------


def latency(samples_ns: list[int], warmup: int) -> dict[str, Any]:
    us = [s / 1000 for s in samples_ns]
    return {
        "calls": len(us),
        "warmup": warmup,
        "median_us": statistics.median(us),
        "p99_us": percentile(us, 99),
        "mean_us": statistics.fmean(us),
        "min_us": min(us),
        "distribution_us": distribution(us),  # [[percentile, µs], ...], for the report's plot
    }


async def time_calls(
    call: Callable[[], Awaitable[Any]], calls: int, warmup: int
) -> dict[str, Any]:
    for _ in range(warmup):
        await call()
    clock = time.perf_counter_ns
    samples: list[int] = []
    for _ in range(calls):
        t0 = clock()
        await call()
        samples.append(clock() - t0)
    return latency(samples, warmup)


def start_child(code: str, sock: socket.socket, *argv: str) -> subprocess.Popen[bytes]:
    """``python -c code FD *argv`` with ``sock`` inherited as FD."""
    fd = sock.fileno()
    return subprocess.Popen(
        [sys.executable, "-c", code, str(fd), *argv], pass_fds=(fd,), stdin=subprocess.DEVNULL
    )


def stop_child(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Wait for a child that has seen end of file; kill it if it lingers."""
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def floor_child(
    loop: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """The hand-written echo child on ``loop``, and asyncio streams to it."""
    host, child = socket.socketpair()
    try:
        proc = start_child(FLOOR_CHILD, child, loop)
    except BaseException:
        host.close()
        raise
    finally:
        child.close()
    try:
        reader, writer = await asyncio.open_connection(sock=host)
    except BaseException:
        host.close()
        stop_child(proc, 0)
        raise
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        stop_child(proc)


class Pipelined:
    """The hand-written multiplexed client: a call id per frame, a dict of futures."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.loop = asyncio.get_running_loop()
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.task = asyncio.create_task(self._read())

    async def call(self, value: Any) -> Any:
        call_id = next(self.ids)
        future = self.loop.create_future()
        self.futures[call_id] = future
        body = pickle.dumps(value, protocol=5)
        self.writer.write(HEADER.pack(len(body), call_id) + body)
        return await future

    async def _read(self) -> None:
        try:
            while True:
                size, call_id = HEADER.unpack(await self.reader.readexactly(HEADER.size))
                value = pickle.loads(await self.reader.readexactly(size))
                self.futures.pop(call_id).set_result(value)
        except (asyncio.IncompleteReadError, ConnectionError) as error:
            for future in self.futures.values():
                if not future.done():
                    future.set_exception(ConnectionError(f"the echo child went away: {error}"))

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


async def drive(
    call: Callable[[bytes], Awaitable[Any]], callers: int, warmup: float, duration: float
) -> dict[str, Any]:
    """``callers`` tasks calling in a loop: a warm-up window, then the measured one."""

    async def caller(deadline: float) -> int:
        calls = 0
        while time.perf_counter() < deadline:
            await call(SMALL)
            calls += 1
        return calls

    await asyncio.gather(*(caller(time.perf_counter() + warmup) for _ in range(callers)))
    t0 = time.perf_counter()
    counts = await asyncio.gather(*(caller(t0 + duration) for _ in range(callers)))
    elapsed = time.perf_counter() - t0
    total = sum(counts)
    return {"callers": callers, "calls": total, "seconds": elapsed, "calls_per_s": total / elapsed}


# -- the variants (each runs alone in a fresh interpreter) -----------------------------


async def rt_corral(p: dict[str, Any]) -> dict[str, Any]:
    async with corral.spawn(Echo) as proxy:
        return await time_calls(lambda: proxy.echo(SMALL), p["calls"], p["warmup"])


async def rt_floor(p: dict[str, Any]) -> dict[str, Any]:
    async with floor_child(p["child_loop"]) as (reader, writer):

        async def call() -> Any:
            body = pickle.dumps(SMALL, protocol=5)
            writer.write(HEADER.pack(len(body), 0) + body)
            size, _ = HEADER.unpack(await reader.readexactly(HEADER.size))
            return pickle.loads(await reader.readexactly(size))

        return await time_calls(call, p["calls"], p["warmup"])


def rt_pipe(p: dict[str, Any]) -> dict[str, Any]:
    ctx = multiprocessing.get_context("forkserver")
    ours, theirs = ctx.Pipe()
    proc = ctx.Process(target=pipe_echo_server, args=(theirs,), daemon=True)
    proc.start()
    theirs.close()
    try:
        for _ in range(p["warmup"]):
            ours.send(SMALL)
            ours.recv()
        clock = time.perf_counter_ns
        samples: list[int] = []
        for _ in range(p["calls"]):
            t0 = clock()
            ours.send(SMALL)
            ours.recv()
            samples.append(clock() - t0)
    finally:
        ours.close()
        proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()
    return latency(samples, p["warmup"])


async def rt_anyio(p: dict[str, Any]) -> dict[str, Any]:
    return await time_calls(
        lambda: anyio.to_process.run_sync(echo, SMALL), p["calls"], p["warmup"]
    )


async def rt_executor(p: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver")) as pool:
        return await time_calls(
            lambda: loop.run_in_executor(pool, echo, SMALL), p["calls"], p["warmup"]
        )


async def rt_aiomp(p: dict[str, Any]) -> dict[str, Any]:
    aiomultiprocess: Any = importlib.import_module("aiomultiprocess")
    async with aiomultiprocess.Pool(processes=1) as pool:
        figures = await time_calls(
            lambda: pool.apply(async_echo, (SMALL,)), p["calls"], p["warmup"]
        )
    return dict(figures)


async def tp_corral(p: dict[str, Any]) -> dict[str, Any]:
    async with corral.spawn(Echo) as proxy:
        return await drive(proxy.echo, p["callers"], p["tp_warmup"], p["duration"])


async def tp_pipelined(p: dict[str, Any]) -> dict[str, Any]:
    async with floor_child(p["child_loop"]) as (reader, writer):
        client = Pipelined(reader, writer)
        try:
            return await drive(client.call, p["callers"], p["tp_warmup"], p["duration"])
        finally:
            await client.aclose()


def best_rate(times: list[float], size: int) -> dict[str, Any]:
    best = min(times)
    return {"bytes": size, "times_s": times, "best_s": best, "gb_per_s": 2 * size / best / 1e9}


async def big_corral(p: dict[str, Any]) -> dict[str, Any]:
    size = p["big_mib"] * MiB
    big = b"\xa5" * size
    times = []
    async with corral.spawn(Echo) as proxy:
        for _ in range(p["reps"]):
            t0 = time.perf_counter()
            back = await proxy.echo(big)
            times.append(time.perf_counter() - t0)
            if len(back) != size or back != big:
                raise AssertionError("corral echoed the 64 MiB payload back wrong")
            del back
    return best_rate(times, size)


def big_raw(p: dict[str, Any]) -> dict[str, Any]:
    size = p["big_mib"] * MiB
    big = b"\xa5" * size
    host, child = socket.socketpair()
    try:
        proc = start_child(RAW_CHILD, child, str(size))
    except BaseException:
        host.close()
        raise
    finally:
        child.close()
    times = []
    try:
        for _ in range(p["reps"]):
            t0 = time.perf_counter()
            host.sendall(big)
            back = bytearray(size)
            view = memoryview(back)
            got = 0
            while got < size:
                n = host.recv_into(view[got:])
                if n == 0:
                    raise ConnectionError("the raw copy child went away")
                got += n
            times.append(time.perf_counter() - t0)
            view.release()
            if back != big:
                raise AssertionError("the raw copy came back wrong")
            del back
    finally:
        host.close()
        stop_child(proc)
    return best_rate(times, size)


async def spawn_corral(p: dict[str, Any]) -> dict[str, Any]:
    times: list[float] = []
    rss: list[int] = []
    async with corral.Supervisor() as sup:
        for _ in range(p["spawns"]):
            t0 = time.perf_counter()
            proxy = await sup.spawn(Echo)
            times.append(time.perf_counter() - t0)
            try:
                await proxy.echo(SMALL)
                pid = proxy.pid
                assert pid is not None
                rss.append(psutil.Process(pid).memory_info().rss)
            finally:
                await proxy.aclose()
    return {
        "spawns": len(times),
        "median_ms": 1000 * statistics.median(times),
        "min_ms": 1000 * min(times),
        "max_ms": 1000 * max(times),
        "rss_mb": statistics.median(rss) / MiB,
    }


def spawn_import(p: dict[str, Any]) -> dict[str, Any]:
    def wall(code: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL)
        return time.perf_counter() - t0

    n = p["spawns"]
    bare = [wall("pass") for _ in range(n)]
    imports = [wall("import corral") for _ in range(n)]
    code = "import corral, psutil; print(psutil.Process().memory_info().rss)"
    rss = [
        int(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True).stdout)
        for _ in range(n)
    ]
    return {
        "runs": n,
        "median_ms": 1000 * statistics.median(imports),
        "bare_python_ms": 1000 * statistics.median(bare),
        "rss_mb": statistics.median(rss) / MiB,
    }


ASYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]] = {
    "rt_corral": rt_corral,
    "rt_floor": rt_floor,
    "rt_floor_uvchild": rt_floor,
    "rt_anyio": rt_anyio,
    "rt_executor": rt_executor,
    "rt_aiomp": rt_aiomp,
    "tp_corral": tp_corral,
    "tp_pipelined": tp_pipelined,
    "tp_pipelined_uvchild": tp_pipelined,
    "big_corral": big_corral,
    "spawn_corral": spawn_corral,
}
SYNC_VARIANTS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "rt_pipe": rt_pipe,
    "big_raw": big_raw,
    "spawn_import": spawn_import,
}


def child(variant: str, params: dict[str, Any], out: str) -> None:
    if variant in SYNC_VARIANTS:
        result = SYNC_VARIANTS[variant](params)
    else:
        fn = ASYNC_VARIANTS[variant]
        result = corral.run(fn, params, use_uvloop=params["loop"] == "uvloop")
    with open(out, "w") as f:
        json.dump(result, f)


# -- the host: run each variant in a fresh interpreter, then report ------------------


#: Seconds left for waiting on a busy machine in this run (so a run ends in time).
_settle_budget = [60.0]


def settle(max_wait: float) -> float:
    """Wait (up to ``max_wait`` s) for other work on the machine to die down.

    Returns the machine-wide CPU % (of all cores) seen just before measuring.
    """
    t0 = time.monotonic()
    deadline = t0 + min(max_wait, _settle_budget[0])
    busy = psutil.cpu_percent(interval=0.25)
    while busy > BUSY_PCT and time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=0.25)
    _settle_budget[0] -= time.monotonic() - t0
    return busy


def measure(variant: str, loop: str, params: dict[str, Any]) -> dict[str, Any]:
    """Run one variant in a fresh interpreter; its figures, or {"error": ...}."""
    # the *_uvchild peers: the hand-written child on uvloop, as corral's child always is
    child_loop = "uvloop" if variant.endswith("_uvchild") else loop
    params = {**params, "loop": loop, "child_loop": child_loop}
    if variant in RT_CALLS:
        full, quick = RT_CALLS[variant]
        params["calls"], params["warmup"] = quick if params["quick"] else full
    label = variant if loop == "-" else f"{variant} on {loop}"
    busy = settle(params["settle"])
    note = f" (machine {busy:.0f}% busy)" if busy > BUSY_PCT else ""
    print(f"  measuring {label}{note} ...", file=sys.stderr, flush=True)
    fd, out = tempfile.mkstemp(prefix="corral-rpc-", suffix=".json")
    os.close(fd)
    cmd = [sys.executable, __file__, "--child", variant, "--params", json.dumps(params)]
    cmd += ["--out", out]
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a hung variant goes with its children
    )
    t0 = time.perf_counter()
    try:
        try:
            stdout, stderr = proc.communicate(timeout=VARIANT_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            return {"error": f"hung: no result after {VARIANT_TIMEOUT:g} s", "stderr": stderr}
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            return {"error": f"exit status {proc.returncode}", "stderr": stderr + stdout}
        with open(out) as f:
            result: dict[str, Any] = json.load(f)
    finally:
        os.unlink(out)
    result["variant_wall_s"] = time.perf_counter() - t0
    result["busy_before_pct"] = busy
    if stderr.strip():
        result["stderr"] = stderr
    return result


class Report:
    """Collects figures and target checks; prints one table per section."""

    def __init__(self) -> None:
        self.results: dict[str, dict[str, dict[str, Any]]] = {}
        self.checks: list[dict[str, Any]] = []
        self.notes: list[str] = []

    def add(self, section: str, variant: str, loop: str, result: dict[str, Any]) -> None:
        """Keep the best round of ``variant`` on ``loop`` (and every round's key figure)."""
        key, lower = BEST_BY[section]
        by_loop = self.results.setdefault(variant, {})
        old = by_loop.get(loop)
        if "error" in result:
            if old is None:
                by_loop[loop] = result
            else:
                old.setdefault("round_errors", []).append(result)
            return
        rounds = [] if old is None or "error" in old else old["rounds"]
        result["rounds"] = [*rounds, result[key]]
        errors = [] if old is None else old.get("round_errors", [])
        if old is not None and "error" in old:
            errors = [*errors, {k: v for k, v in old.items() if k != "round_errors"}]
        if errors:
            result["round_errors"] = errors
        if old is None or "error" in old or (result[key] < old[key]) == lower:
            by_loop[loop] = result
        else:
            old["rounds"] = result["rounds"]
            if errors:
                old["round_errors"] = errors

    def get(self, variant: str, loop: str) -> dict[str, Any] | None:
        result = self.results.get(variant, {}).get(loop)
        return None if result is None or "error" in result else result

    def check(
        self, section: str, loop: str, what: str, value: float | None, target: str, ok: bool | None
    ) -> list[str]:
        verdict = "-" if ok is None else ("PASS" if ok else "MISS")
        if value is None:
            verdict = "n/a"
        self.checks.append(
            {
                "section": section,
                "loop": loop,
                "check": what,
                "value": value,
                "target": target,
                "verdict": verdict,
            }
        )
        return [what, fmt(value, ".2f"), target, verdict]


def rounds_of(result: dict[str, Any], spec: str, scale: float = 1.0) -> str:
    """Each round's key figure (the best is the one reported)."""
    return " / ".join(f"{scale * v:{spec}}" for v in result.get("rounds", []))


def ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def figure(result: dict[str, Any] | None, key: str) -> float | None:
    return None if result is None else float(result[key])


def print_targets(rows: list[list[str]]) -> None:
    print()
    table(["check", "value", "target", "verdict"], rows)


def report_rt(rep: Report, loop: str, params: dict[str, Any]) -> None:
    names = [
        ("rt_corral", loop, "corral  await proxy.echo(x)"),
        ("rt_floor", loop, f"(a) asyncio socketpair echo ({loop} both ends)"),
        ("rt_floor_uvchild", loop, "(a*) the same with a uvloop child, as corral's"),
        ("rt_pipe", "-", "(b) multiprocessing.Pipe, blocking"),
        ("rt_anyio", loop, "(c) anyio.to_process.run_sync"),
        ("rt_executor", loop, "(d) run_in_executor(ProcessPoolExecutor(1))"),
        ("rt_aiomp", loop, "(e) aiomultiprocess Pool.apply"),
    ]
    ours = rep.get("rt_corral", loop)
    base = figure(ours, "median_us")
    print(f"\n== 1. Round trip, {loop} host: echo of a 32-byte bytes, one call at a time")
    rows = []
    for variant, at, label in names:
        if at not in rep.results.get(variant, {}):
            continue
        result = rep.results[variant][at]
        if "error" in result:
            rows.append([label, "error", "", "", "", "", ""])
            continue
        median = figure(result, "median_us")
        rows.append(
            [
                label,
                f"{result['calls']:,}",
                fmt(median),
                fmt(figure(result, "p99_us")),
                fmt(figure(result, "mean_us")),
                fmt(ratio(median, base), ".2f", "x"),
                rounds_of(result, ".1f"),
            ]
        )
    table(
        ["variant", "calls", "median us", "p99 us", "mean us", "vs corral", "median by round"],
        rows,
    )

    def med(variant: str, at: str) -> float | None:
        return figure(rep.get(variant, at), "median_us")

    checks = []
    value = ratio(base, med("rt_floor", loop))
    checks.append(rep.check("rt", loop, "corral / (a) floor", value, "<= 1.20", _le(value, 1.2)))
    if rep.get("rt_floor_uvchild", loop) is not None:
        value = ratio(base, med("rt_floor_uvchild", loop))
        checks.append(
            rep.check("rt", loop, "corral / (a*) floor", value, "<= 1.20", _le(value, 1.2))
        )
    value = ratio(med("rt_pipe", "-"), base)
    checks.append(
        rep.check("rt", loop, "(b) mp.Pipe / corral", value, "> 1.00 (faster)", _gt(value, 1.0))
    )
    value = ratio(med("rt_anyio", loop), base)
    checks.append(rep.check("rt", loop, "(c) anyio / corral", value, ">= 3", _ge(value, 3)))
    value = ratio(med("rt_executor", loop), base)
    checks.append(rep.check("rt", loop, "(d) executor / corral", value, ">= 5", _ge(value, 5)))
    if "rt_aiomp" in rep.results:
        value = ratio(med("rt_aiomp", loop), base)
        checks.append(rep.check("rt", loop, "(e) aiomultiprocess / corral", value, "-", None))
    print_targets(checks)


def report_tp(rep: Report, loop: str, params: dict[str, Any]) -> None:
    print(
        f"\n== 2. Throughput, {loop} host: {params['callers']} concurrent callers for "
        f"{params['duration']:g} s (after {params['tp_warmup']:g} s warm-up)"
    )
    rows = []
    ours = figure(rep.get("tp_corral", loop), "calls_per_s")
    for variant, label in (
        ("tp_corral", "corral  await proxy.echo(x)"),
        ("tp_pipelined", f"hand-written pipelined echo ({loop} both ends)"),
        ("tp_pipelined_uvchild", "the same with a uvloop child, as corral's"),
    ):
        if loop not in rep.results.get(variant, {}):
            continue
        result = rep.results.get(variant, {}).get(loop, {})
        if "error" in result:
            rows.append([label, "error", "", "", ""])
            continue
        rate = figure(result, "calls_per_s")
        rows.append(
            [
                label,
                f"{result['calls']:,}",
                fmt(rate, ",.0f"),
                fmt(ratio(rate, ours), ".2f", "x"),
                rounds_of(result, ".1f", 1e-3),
            ]
        )
    table(["variant", "calls", "calls/s", "vs corral", "kcalls/s by round"], rows)
    theirs = figure(rep.get("tp_pipelined", loop), "calls_per_s")
    value = ratio(ours, theirs)
    checks = [
        rep.check("tp", loop, "corral kcalls/s", ours and ours / 1000, ">= 50", _ge(ours, 50_000)),
        rep.check("tp", loop, "corral / pipelined", value, ">= 0.70", _ge(value, 0.7)),
    ]
    theirs = figure(rep.get("tp_pipelined_uvchild", loop), "calls_per_s")
    if theirs is not None:
        value = ratio(ours, theirs)
        checks.append(
            rep.check(
                "tp", loop, "corral / pipelined, uvloop child", value, ">= 0.70", _ge(value, 0.7)
            )
        )
    print_targets(checks)


def report_big(rep: Report, loop: str, params: dict[str, Any]) -> None:
    print(
        f"\n== 3. Large payload, {loop} host: {params['big_mib']} MiB bytes there and back, "
        f"best of {params['reps']} runs (per round)"
    )
    ours = figure(rep.get("big_corral", loop), "gb_per_s")
    rows = []
    for variant, at, label in (
        ("big_corral", loop, "corral  await proxy.echo(big)"),
        ("big_raw", "-", "raw blocking socketpair, sendall/recv_into"),
    ):
        result = rep.results.get(variant, {}).get(at, {})
        if "error" in result:
            rows.append([label, "error", "", "", "", ""])
            continue
        rate = figure(result, "gb_per_s")
        times = ", ".join(f"{1000 * t:.0f}" for t in result["times_s"])
        rows.append(
            [
                label,
                times,
                fmt(rate, ".2f"),
                fmt(ratio(rate, ours), ".2f", "x"),
                rounds_of(result, ".2f"),
            ]
        )
    table(["variant", "runs ms (best round)", "GB/s", "vs corral", "GB/s by round"], rows)
    value = ratio(ours, figure(rep.get("big_raw", "-"), "gb_per_s"))
    print_targets([rep.check("big", loop, "corral / raw copy", value, "- (none set)", None)])


def report_spawn(rep: Report, loop: str, params: dict[str, Any]) -> None:
    print(
        f"\n== 4. Spawn-to-ready, {loop} host: median of {params['spawns']} "
        "(each closed before the next)"
    )
    ours = rep.get("spawn_corral", loop)
    peer = rep.get("spawn_import", "-")
    rows = []
    if ours is not None:
        rows.append(
            [
                "corral  await sup.spawn(Echo)",
                fmt(figure(ours, "median_ms")),
                f"{ours['min_ms']:.1f}-{ours['max_ms']:.1f}",
                fmt(figure(ours, "rss_mb")),
                rounds_of(ours, ".1f"),
            ]
        )
    else:
        rows.append(["corral  await sup.spawn(Echo)", "error", "", "", ""])
    if peer is not None:
        rows.append(
            [
                'python -c "import corral"',
                fmt(figure(peer, "median_ms")),
                "",
                fmt(figure(peer, "rss_mb")),
                rounds_of(peer, ".1f"),
            ]
        )
        rows.append(['python -c "pass"', fmt(figure(peer, "bare_python_ms")), "", "", ""])
    else:
        rows.append(['python -c "import corral"', "error", "", "", ""])
    table(["variant", "median ms", "range ms", "RSS MB", "median by round"], rows)
    checks = [
        rep.check(
            "spawn",
            loop,
            "spawn / import time",
            ratio(figure(ours, "median_ms"), figure(peer, "median_ms")),
            "- (none set)",
            None,
        ),
        rep.check(
            "spawn",
            loop,
            "child RSS / import RSS",
            ratio(figure(ours, "rss_mb"), figure(peer, "rss_mb")),
            "- (none set)",
            None,
        ),
    ]
    print_targets(checks)


def _le(value: float | None, bound: float) -> bool | None:
    return None if value is None else value <= bound


def _ge(value: float | None, bound: float) -> bool | None:
    return None if value is None else value >= bound


def _gt(value: float | None, bound: float) -> bool | None:
    return None if value is None else value > bound


def uvloop_installed() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def plan(sections: list[str], loops: list[str], aiomp: bool) -> Iterator[tuple[str, str, str]]:
    """(section, variant, loop) in the order they run; "-" for loop-independent peers."""
    per_loop = {
        "rt": ["rt_corral", "rt_floor", "rt_floor_uvchild", "rt_anyio", "rt_executor"]
        + (["rt_aiomp"] * aiomp),
        "tp": ["tp_corral", "tp_pipelined", "tp_pipelined_uvchild"],
        "big": ["big_corral"],
        "spawn": ["spawn_corral"],
    }
    once = {"rt": ["rt_pipe"], "tp": [], "big": ["big_raw"], "spawn": ["spawn_import"]}
    for section in sections:
        for variant in once[section]:
            yield section, variant, "-"
        for loop in loops:
            for variant in per_loop[section]:
                if variant.endswith("_uvchild") and (loop == "uvloop" or not uvloop_installed()):
                    continue  # on a uvloop host, the plain peer already has a uvloop child
                yield section, variant, loop


REPORTERS: dict[str, Callable[[Report, str, dict[str, Any]], None]] = {
    "rt": report_rt,
    "tp": report_tp,
    "big": report_big,
    "spawn": report_spawn,
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--loop", choices=["uvloop", "asyncio", "both"], default="both")
    parser.add_argument("--quick", action="store_true", help="fewer calls, shorter windows")
    parser.add_argument("--json", metavar="PATH", help="also write the figures to PATH")
    parser.add_argument(
        "--section",
        action="append",
        choices=SECTIONS,
        help="run only this section (repeatable; default all)",
    )
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--duration", type=float, help="throughput window, s (default 2)")
    parser.add_argument("--big-mib", type=int, default=64)
    parser.add_argument(
        "--rounds",
        type=int,
        help="run every variant this many times, interleaved, and keep each one's best\n"
        "(default 2; 1 with --quick)",
    )
    parser.add_argument(
        "--settle",
        type=float,
        help=f"before each variant, wait up to this many seconds for the machine to be\n"
        f"under {BUSY_PCT:g}%% busy (default 5; 2 with --quick; at most 60 s in all,\n"
        "15 s with --quick)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.child:
        child(args.child, json.loads(args.params), args.out)
        return

    params: dict[str, Any] = {
        "quick": args.quick,
        "callers": args.callers,
        "duration": args.duration or (1.0 if args.quick else 2.0),
        "tp_warmup": 0.3 if args.quick else 0.5,
        "big_mib": args.big_mib,
        "reps": 3,
        "spawns": 5 if args.quick else 10,
        "settle": args.settle if args.settle is not None else (2.0 if args.quick else 5.0),
    }
    args.rounds = args.rounds or (1 if args.quick else 2)
    _settle_budget[0] = 15.0 if args.quick else 60.0
    loops = list(LOOPS) if args.loop == "both" else [args.loop]
    sections = args.section or list(SECTIONS)
    rep = Report()
    aiomp = False
    if "rt" in sections:
        note = ensure("aiomultiprocess")
        note = note and f"(e) aiomultiprocess skipped: {note}"
        aiomp = note is None
        if note:
            rep.notes.append(note)
            print(f"  {note}", file=sys.stderr)
    print(
        f"corral RPC benchmark: Python {sys.version.split()[0]}, {platform.machine()}, "
        f"{psutil.cpu_count()} cores, loops {', '.join(loops)}{' (quick)' if args.quick else ''}"
        f"\ncorral {corral.__version__} from {corral_source()}"
        f"\nload average at start {os.getloadavg()[0]:.2f} (other work on the machine skews "
        "every figure; the ratios less so)",
        flush=True,
    )
    if sys.flags.dont_write_bytecode:
        print(
            "PYTHONDONTWRITEBYTECODE is set: modules without a cached .pyc (an editable corral)"
            " are compiled on every import, which section 4 includes"
        )
    started = time.perf_counter()
    jobs = list(plan(sections, loops, aiomp))
    for section, group in itertools.groupby(jobs, key=lambda job: job[0]):
        section_jobs = list(group)
        for _ in range(args.rounds):  # rounds interleave: a burst of load spoils one round
            for _, variant, loop in section_jobs:
                rep.add(section, variant, loop, measure(variant, loop, params))
        for loop in loops:
            REPORTERS[section](rep, loop, params)
        sys.stdout.flush()
    summarize(rep, started)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "python": sys.version,
                    "corral": corral_source(),
                    "cores": psutil.cpu_count(),
                    "params": params,
                    "rounds": args.rounds,
                    "loops": loops,
                    "results": rep.results,
                    "checks": rep.checks,
                    "notes": rep.notes,
                },
                f,
                indent=2,
            )
        print(f"figures written to {args.json}")


def summarize(rep: Report, started: float) -> None:
    problems = [
        (variant, loop, failure)
        for variant, by_loop in rep.results.items()
        for loop, result in by_loop.items()
        for failure in [result, *result.get("round_errors", [])]
        if "error" in failure or failure.get("stderr")
    ]
    if problems or rep.notes:
        print("\n== Problems and notes")
        for note in rep.notes:
            print(f"- {note}")
        for variant, loop, result in problems:
            what = result.get("error", "ran, but wrote to stderr")
            print(f"- {variant} ({loop}): {what}")
            for line in result.get("stderr", "").strip().splitlines()[-15:]:
                print(f"    {line}")
    busy = [
        f"{variant} ({loop}): {result['busy_before_pct']:.0f}%"
        for variant, by_loop in rep.results.items()
        for loop, result in by_loop.items()
        if result.get("busy_before_pct", 0) > BUSY_PCT
    ]
    if busy:
        print(
            f"\nThe machine was over {BUSY_PCT:g}% busy (all cores) just before these figures"
            " were taken (they may be pessimistic; --rounds and --settle help):\n  "
            + "\n  ".join(busy)
        )
    missed = [c for c in rep.checks if c["verdict"] == "MISS"]
    passed = [c for c in rep.checks if c["verdict"] == "PASS"]
    print(
        f"\n{len(passed)} targets met, {len(missed)} missed"
        + "".join(f"\n  MISS {c['section']}/{c['loop']}: {c['check']}" for c in missed)
        + f"\n(total {time.perf_counter() - started:.0f} s; "
        f"load average at the end {os.getloadavg()[0]:.2f})"
    )


if __name__ == "__main__":
    main()
