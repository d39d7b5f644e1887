"""benchmarks/report.py: the report rendered from canned figures (no benchmark runs)."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _render  # noqa: E402
import report  # noqa: E402

HAND_WRITTEN = """# Benchmarks

Speed claims are proved here.

## Interval workers: `benchmarks/interval_workers.py`

Methodology, by hand.

### 2026-11-22, a dated full run

| variant | p99 ms |
|---|---|
| corral | 2.59 |

## Soak: `benchmarks/soak.py`

Ten minutes of mixed load.
"""


def interval_workers() -> dict[str, Any]:
    def variant(p50: float, p99: float, cpu: float, delivered: int) -> dict[str, Any]:
        return {
            "late_p50_ms": p50,
            "late_p99_ms": p99,
            "late_steady_max_ms": 2 * p99,
            "late_max_ms": 3 * p99,
            "cpu_pct": cpu,
            "rss_mb": 70.0,
            "delivered": delivered,
            "skipped": 0,
            "expected": delivered,
        }

    return {
        "params": {"workers": 2000, "hz": 10.0, "duration": 5.0, "loop": "uvloop"},
        "results": {"corral": variant(1.1, 2.5, 34.0, 100_000), "naive": variant(14, 55, 68, 99)},
    }


def rpc() -> dict[str, Any]:
    def rt(median: float) -> dict[str, Any]:
        return {"median_us": median, "p99_us": 2 * median}

    results: dict[str, Any] = {
        "rt_corral": {"uvloop": rt(54.5)},
        "rt_floor": {"uvloop": rt(35.2)},
        "rt_pipe": {"-": rt(35.3)},
        "rt_anyio": {"uvloop": rt(78.4)},
        "rt_executor": {"uvloop": rt(240.8)},
        "tp_corral": {"uvloop": {"calls_per_s": 88_290.0}},
        "tp_pipelined": {"uvloop": {"calls_per_s": 139_591.0}},
        "big_corral": {"uvloop": {"gb_per_s": 0.76}},
        "big_raw": {"-": {"error": "exit status 1"}},
        "spawn_corral": {"uvloop": {"median_ms": 134.0}},
        "spawn_import": {"-": {"median_ms": 126.0}},
    }
    return {
        "params": {"callers": 64, "big_mib": 64},
        "loops": ["uvloop"],
        "results": results,
        "notes": ["(e) aiomultiprocess skipped: aiomultiprocess could not be installed (pip)"],
    }


def crash() -> dict[str, Any]:
    return {
        "params": {"calls": 1000, "rounds": 3},
        "results": {
            "corral": {"median_ms": 12.9, "rounds_ms": [12.9, 14.0, 11.1]},
            "executor": {"median_ms": 17.4, "rounds_ms": [17.4, 16.5, 18.1]},
        },
        "target_ms": 100.0,
        "verdict": "PASS",
    }


def control_loop() -> dict[str, Any]:
    def variant(p99: float, policy: str = "SCHED_FIFO") -> dict[str, Any]:
        return {
            "policy": policy,
            "p50_us": p99 / 50,
            "p99_us": p99,
            "p999_us": 5 * p99,
            "max_us": 900.0,
            "skipped_per_1000": p99 / 100,
            "cpu_percent": 15.9 if p99 < 10 else 1.0,
        }

    return {
        "params": {"hz": 1000.0, "cpu": 1, "duration": 10.0, "callers": 64, "burners": 2},
        "results": {
            "corral": variant(6.8),
            "avena": variant(29.3),
            "absolute": variant(36.8),
            "corral_other": variant(504.6, "SCHED_OTHER"),
        },
        "targets": [
            {"target": "lateness p99 <= 50 us", "verdict": "met"},
            {"target": "without SCHED_FIFO: lateness p99 <= 250 us", "verdict": "MISSED"},
        ],
    }


def process() -> dict[str, Any]:
    return {
        "results": {
            "latency_corral": {"median_ms": 10.1},
            "latency_corral_block": {"median_ms": 165.2},
            "overhead_corral": {"per_run_us": 2.13},
            "overhead_corral_long": {"per_run_us": 1.98},
        },
        "notes": ["suitkaise not measured: suitkaise could not be installed (pip: no network)"],
    }


def pool() -> dict[str, Any]:
    def sizes(*rates: float) -> dict[str, Any]:
        return {
            "sizes": {
                size: {"tasks_per_s": value}
                for size, value in zip(("0", "0.1", "1"), rates, strict=True)
            }
        }

    return {
        "params": {"workers": 2, "items": 200_000},
        "results": {
            "tiny_corral_map": {"tasks_per_s": 7.73e6},
            "tiny_mp": {"tasks_per_s": 6.07e6},
            "tiny_ppe": {"tasks_per_s": 2.52e6},
            "tiny_loky": {"tasks_per_s": 2.66e6},
            "tiny_aiomp": {"tasks_per_s": 24.1e3},
            "tiny_anyio": {"tasks_per_s": 8.4e3},
            "ms_corral": {"spin": {"efficiency": 0.97}},
            "ms_mp": {"spin": {"efficiency": 0.76}},
            "ms_ppe": {"spin": {"efficiency": 0.89}},
            "ms_loky": {"spin": {"efficiency": 0.99}},
            "ms_aiomp": {"error": "hung: no result after 240 s"},
            "ms_anyio": {"spin": {"efficiency": 0.70}},
            "sizes_corral": sizes(4.14e6, 19_200, 2_000),
            "sizes_mp": sizes(3.55e6, 19_800, 1_800),
        },
        "checks": [{"check": "dask: crossover", "shown": "10 ms"}],
    }


def soak() -> dict[str, Any]:
    return {
        "duration_s": 20.4,
        "kill_every_s": 2.0,
        "calls": {"calls": 50_000, "ok": 49_900, "crashed": 100, "lost": 0, "unexpected": 0},
        "kills": 9,
        "restarts": 9,
        "recovery_p50_ms": 94.0,
        "recovery_p99_ms": 944.0,
        "recovery_max_ms": 1660.0,
        "recovery_by_kind_ms": {"service": {"p50": 79.0, "max": 144.0, "count": 5}},
        "rss_mb": {"first": 42.3, "last": 45.5, "growth_pct": 7.5},
        "fds": {"first": 43, "last": 43},
        "processes_left": 0,
        "problems": [],
    }


#: name -> the canned figures of that benchmark (the function of its name above)
CANNED: dict[str, Callable[[], dict[str, Any]]] = {
    name: globals()[name] for name in _render.TITLES
}


def ok(figures: dict[str, Any]) -> dict[str, Any]:
    return {"status": "ok", "wall_s": 12.0, "figures": figures, "notes": []}


def a_run(**benchmarks: dict[str, Any]) -> dict[str, Any]:
    return {
        "quick": True,
        "started_at": 0.0,
        "wall_s": 312.0,
        "load_average": [0.5, 1.25],
        "machine": {
            "date": "2026-11-22T14:00:00+00:00",
            "cores": 2,
            "cpu_model": "AMD EPYC",
            "kernel": "6.18.0",
            "python": "3.11.7",
            "corral": "0.1.0",
            "corral_source": "abc1234+dirty",
            "packages": {"uvloop": "0.23.0", "anyio": "4.16.0"},
        },
        "benchmarks": benchmarks,
    }


def every_benchmark() -> dict[str, Any]:
    return a_run(**{name: ok(make()) for name, make in CANNED.items()})


def rows_of(text: str, measure_start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(f"| {measure_start}")]


def test_every_benchmark_has_its_section_table_and_headline() -> None:
    text = _render.render(every_benchmark())
    assert "a quick run, 5 min 12 s" in text
    assert "2 x AMD EPYC, Linux 6.18.0" in text
    assert "load average 0.50 at the start, 1.25 at the end" in text
    assert "**Python**: 3.11.7; **event loop**: uvloop 0.23.0" in text
    assert "commit abc1234+dirty" in text
    for title in _render.TITLES.values():
        assert f"\n### {title}\n" in text
        assert f"| [{title}](#{_render.slug(title)}) | ok | 12 s |" in text
    assert text.count("| measure | corral | peer | peer's figure | corral is |") == 6  # no soak
    assert "| calls made | 50,000 |" in text
    assert "Problems: none (**PASS**)" in text


@pytest.mark.parametrize(
    ("name", "row"),
    [
        (
            "crash",
            "| `ProcessPoolExecutor(1)`: `BrokenProcessPool` | 17.4 ms | **1.35x faster** |",
        ),
        ("interval_workers", "| naive: a task per worker | 55.00 ms | **22.0x lower** |"),
        (
            "rpc",
            "(a) hand-written asyncio socketpair echo | 35.2 µs (p99 70.4 µs) | 1.55x slower |",
        ),
        (
            "rpc",
            "(d) `run_in_executor(ProcessPoolExecutor(1))` | 240.8 µs (p99 481.6 µs) | **4.42x f",
        ),
        ("rpc", "| hand-written pipelined echo | 139,591 calls/s | 1.58x slower |"),
        ("control_loop", "| (a) `sleep(period - elapsed)` | 29.3 µs | **4.31x lower** |"),
        ("control_loop", "| (a) `sleep(period - elapsed)` | 1.0% | 15.9x more CPU |"),
        ("process", "| suitkaise `p.start(); p.wait(); p.result()` | not measured: suitkaise"),
        ("pool", "| multiprocessing `Pool.map` | 6.07 M/s | **1.27x faster** |"),
        ("pool", "| aiomultiprocess | 24.1 k/s | **321x faster** |"),
        ("pool", "| loky | 99% | 1.02x worse |"),
        ("pool", "| 0 ms | 4.14 M/s | 3.55 M/s (**1.17x faster**) |"),
    ],
)
def test_ratios_say_which_way_they_go(name: str, row: str) -> None:
    text = _render.render(a_run(**{name: ok(CANNED[name]())}))
    assert any(row in line for line in text.splitlines()), row


def test_the_direction_is_stated_and_the_measure_named_once() -> None:
    text = _render.render(a_run(rpc=ok(rpc())))
    assert "above 1x corral is ahead" in text
    round_trip = [line for line in text.splitlines() if "round trip, median" in line]
    assert len(round_trip) == 1  # the other peers' rows leave it blank
    assert "| 54.5 µs (p99 109.0 µs) | (a) hand-written" in round_trip[0]


def test_a_peer_that_was_not_measured_says_why() -> None:
    text = _render.render(a_run(rpc=ok(rpc()), pool=ok(pool()), process=ok(process())))
    assert "(e) aiomultiprocess `Pool.apply` | not measured: (e) aiomultiprocess skipped" in text
    assert "raw blocking socketpair copy | not measured: exit status 1 | - |" in text
    assert "aiomultiprocess | not measured: hung: no result after 240 s | - |" in text
    assert "| not measured: suitkaise could not be installed (pip: no network) | - |" in text


def test_a_failed_benchmark_is_shown_failed_with_its_error_output() -> None:
    failed = {
        "status": "failed",
        "why": "exit status 1 after 3 s",
        "wall_s": 3.0,
        "figures": None,
        "stderr_tail": ["Traceback (most recent call last):", "RuntimeError: boom"],
    }
    text = _render.render(a_run(crash=ok(crash()), rpc=failed))
    assert "| [Calls into a child process](#calls-into-a-child-process) | **failed** |" in text
    assert "exit status 1 after 3 s |" in text
    assert "**Failed**: exit status 1 after 3 s." in text
    assert "```text\nTraceback (most recent call last):\nRuntimeError: boom\n```" in text
    assert "| [A child killed with 1,000 calls in flight]" in text  # the others are shown


def test_a_failed_benchmark_that_wrote_figures_shows_them_too() -> None:
    figures = soak()
    figures["calls"]["lost"] = 2
    figures["problems"] = ["2 calls lost"]
    failed = {"status": "failed", "why": "exit status 1 after 25 s", "wall_s": 25.0}
    text = _render.render(a_run(soak={**failed, "figures": figures, "stderr_tail": []}))
    assert "**Failed**: exit status 1 after 25 s." in text
    assert "| **lost** | **2** |" in text
    assert "Problems: 2 calls lost (**FAIL**)" in text


def test_figures_it_cannot_read_are_said_not_raised() -> None:
    broken = crash()
    del broken["results"]["corral"]
    text = _render.render(a_run(crash=ok(broken)))
    assert "Its figures could not be read: KeyError" in text


def test_markers_go_after_the_intro_and_are_replaced_in_place() -> None:
    first = _render.splice(HAND_WRITTEN, "## Latest run\n\nfirst\n")
    intro, rest = first.split(_render.BEGIN)
    assert intro == "# Benchmarks\n\nSpeed claims are proved here.\n\n"
    assert rest.startswith("\n## Latest run\n\nfirst\n" + _render.END + "\n\n## Interval")
    second = _render.splice(first, "## Latest run\n\nsecond\n")
    assert second == first.replace("first", "second")
    assert _render.splice(second, "## Latest run\n\nsecond\n") == second
    assert _render.strip(second) == _render.strip(first)
    assert second.count(_render.BEGIN) == second.count(_render.END) == 1


def test_a_page_without_headings_gets_the_section_at_its_end() -> None:
    assert (
        _render.splice("# B\n\nintro", "x")
        == f"# B\n\nintro\n\n{_render.BEGIN}\nx\n{_render.END}\n"
    )


def test_the_hand_written_sections_are_linked_by_their_anchors() -> None:
    anchors = _render.anchors_of(HAND_WRITTEN)
    assert anchors == {
        "interval_workers": "#interval-workers-benchmarksinterval_workerspy",
        "soak": "#soak-benchmarkssoakpy",  # as docs/reliability.md links it
    }
    text = _render.render(every_benchmark(), anchors)
    assert "[how it is measured](#soak-benchmarkssoakpy)" in text


def test_write_report_keeps_the_hand_written_page(tmp_path: Path) -> None:
    page = tmp_path / "docs" / "benchmarks.md"
    page.parent.mkdir()
    page.write_text(HAND_WRITTEN)
    run = every_benchmark()
    for name in ("sizes_corral", "sizes_mp"):  # (matplotlib is slow to import: no plot)
        del run["benchmarks"]["pool"]["figures"]["results"][name]
    report.write_report(copy.deepcopy(run), page, tmp_path / "docs" / "img")
    once = page.read_text()
    assert _render.strip(once) == _render.strip(_render.splice(HAND_WRITTEN, ""))
    assert "Methodology, by hand.\n\n### 2026-11-22, a dated full run" in once
    assert once.index(_render.END) < once.index("## Interval workers: `benchmarks/")
    report.write_report(copy.deepcopy(run), page, tmp_path / "docs" / "img")
    assert page.read_text() == once  # idempotent
    assert not (tmp_path / "docs" / "img").exists()  # nothing here to plot


def test_run_one_records_a_failure_and_a_success(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.py").write_text("import sys\nprint('going', flush=True)\nsys.exit('boom')\n")
    (tmp_path / "good.py").write_text(
        "import json, sys\njson.dump({'quick': sys.argv[1]}, open(sys.argv[3], 'w'))\n"
    )
    monkeypatch.setattr(report, "HERE", tmp_path)
    bad = report.run_one("bad", True, tmp_path / "bad.json", 30, [])
    assert bad["status"] == "failed"
    assert bad["why"].startswith("exit status 1 after")
    assert bad["stderr_tail"] == ["boom"]
    good = report.run_one("good", True, tmp_path / "good.json", 30, [])
    assert good["status"] == "ok"
    assert good["figures"] == {"quick": "--quick"}
    out, err = capfd.readouterr()
    assert "== bad: python benchmarks/bad.py --quick --json" in out
    assert "going" in out
    assert "boom" in err
    assert "bad FAILED" in err


def test_the_options() -> None:
    args = report.parse_args(["--quick", "--only", "rpc", "pool", "--no-install"])
    assert args.quick
    assert args.no_install
    assert args.only == ["rpc", "pool"]
    assert args.out == report.ROOT / "docs" / "benchmarks.md"
    assert args.img_dir == report.ROOT / "docs" / "img"
    assert list(report.BENCHMARKS) == list(_render.TITLES)


def test_the_command_that_made_it_is_named() -> None:
    run = a_run(crash=ok(crash()))
    assert "`python benchmarks/report.py --quick` (`make bench-quick`)" in _render.render(run)
    run.update(quick=False, only=["crash"])
    said = "`python benchmarks/report.py --only crash` (`make bench BENCH_ARGS='--only crash'`)"
    assert said in _render.render(run)


def test_a_figure_of_zero_still_says_who_is_ahead() -> None:
    figures = control_loop()
    figures["results"]["corral"]["skipped_per_1000"] = 0.0
    figures["results"]["absolute"]["skipped_per_1000"] = 0.0
    text = _render.render(a_run(control_loop=ok(figures)))
    assert "| (a) `sleep(period - elapsed)` | 0.29 | **fewer** (corral: 0.00) |" in text
    assert "| (b) `sleep` to `t0 + k * period` | 0.00 | the same |" in text
