"""The report's plots, from the benchmarks' JSON figures (matplotlib, Agg).

The control loop's lateness histogram is drawn by ``control_loop.py`` itself
(``--plot``): it needs every tick's lateness, which its JSON leaves out.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from _render import RPC_PEERS, SIZES_PEERS

RPC_PNG = "rpc_latency.png"
POOL_PNG = "pool_throughput.png"
CONTROL_LOOP_PNG = "control_loop_lateness.png"


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (matplotlib must be importable)."""
    importlib.import_module("matplotlib").use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def rpc_latency(figures: dict[str, Any], path: Path) -> bool:
    """The round trip's latency distribution (CDF), corral against each peer, one panel a
    host loop; False when there is nothing to draw."""
    results = figures["results"]
    loops = [
        loop
        for loop in figures["loops"]
        if "distribution_us" in results.get("rt_corral", {}).get(loop, {})
    ]
    if not loops:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(loops), figsize=(6.5 * len(loops), 5), squeeze=False)
    lines: list[tuple[str, Any, str]] = [("rt_corral", None, "corral `await proxy.echo(x)`")]
    lines += [(variant, at, label) for variant, at, label, _ in RPC_PEERS]
    for ax, loop in zip(axes[0], loops, strict=True):
        for n, (variant, at, label) in enumerate(lines):
            if at not in (None, "-") and loop not in at:
                continue
            result = results.get(variant, {}).get("-" if at == "-" else loop, {})
            points = result.get("distribution_us")
            if not points:
                continue
            ax.plot(
                [value for _, value in points],
                [p for p, _ in points],
                label=label.replace("`", "").replace("\\", ""),
                color=f"C{n}",
                linewidth=2.2 if variant == "rt_corral" else 1.2,
            )
        ax.set_xscale("log")
        ax.set_xlabel("round trip (µs, log scale)")
        ax.set_ylabel("calls at most this long (%)")
        ax.set_title(f"{loop} host")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle("Calls into a child process: latency of a 32-byte echo, one call at a time")
    return save(plt, fig, path)


def pool_throughput(figures: dict[str, Any], path: Path) -> bool:
    """Items/s against the work of an item, corral's pool and each peer's, and each peer's
    items/s over corral's; False when there is nothing to draw."""
    results = figures["results"]
    shown = [("sizes_corral", "corral Pool.map"), *SIZES_PEERS]
    drawn = [(v, name) for v, name in shown if "sizes" in results.get(v, {})]
    if not drawn:
        return False
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    sizes = sorted({s for v, _ in drawn for s in results[v]["sizes"]}, key=float)
    ours = results.get("sizes_corral", {}).get("sizes", {})
    for n, (variant, name) in enumerate(drawn):
        by_size = results[variant]["sizes"]
        at = [i for i, s in enumerate(sizes) if s in by_size]
        style = {
            "marker": "o",
            "label": name,
            "color": f"C{n}",
            "linewidth": 2.2 if variant == "sizes_corral" else 1.2,
        }
        left.plot(at, [by_size[sizes[i]]["tasks_per_s"] for i in at], **style)
        at = [i for i in at if sizes[i] in ours]
        shares = [by_size[sizes[i]]["tasks_per_s"] / ours[sizes[i]]["tasks_per_s"] for i in at]
        right.plot(at, shares, **style)
    workers = figures["params"]["workers"]
    ideal = [(i, workers * 1000 / float(s)) for i, s in enumerate(sizes) if float(s) > 0]
    if ideal:
        left.plot(
            [i for i, _ in ideal],
            [v for _, v in ideal],
            linestyle=":",
            color="grey",
            label=f"ideal: {workers} workers / task time",
        )
    for ax in (left, right):
        ax.set_xticks(range(len(sizes)), [f"{s} ms" for s in sizes])
        ax.set_yscale("log")
        ax.set_xlabel("work per item (busy spin)")
        ax.grid(True, which="both", alpha=0.3)
    left.set_ylabel("items per second (log scale)")
    left.set_title("throughput")
    left.legend(fontsize=8)
    right.set_ylabel("items per second over corral's (log scale)")
    right.set_title("against corral: below 1, slower than corral")
    fig.suptitle(f"Pool throughput against task size, {workers} workers each")
    return save(plt, fig, path)


def save(plt: Any, fig: Any, path: Path) -> bool:
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
