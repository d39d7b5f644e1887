"""What benchmarks measure: the peers (installed with pip when missing), and corral itself."""

from __future__ import annotations

import contextlib
import datetime
import importlib
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import corral

PIP_TIMEOUT = 300.0  # seconds an install may take
#: Set (to anything but "" or "0") by ``report.py --no-install``: ensure() installs nothing.
NO_INSTALL = "CORRAL_BENCH_NO_INSTALL"
ROOT = Path(__file__).resolve().parent.parent


def ensure(package: str, module: str | None = None) -> str | None:
    """Make ``module`` (``package`` by default) importable; None when it is, else why not.

    A missing package is installed into the running interpreter's environment
    with ``pip install package`` first.
    """
    module = module or package
    if importlib.util.find_spec(module) is not None:
        return None
    if os.environ.get(NO_INSTALL, "") not in ("", "0"):
        return f"{package} is not installed (and installing was turned off: --no-install)"
    print(
        f"{package} is not installed: installing it into this environment "
        f"({sys.executable} -m pip install {package}) ...",
        file=sys.stderr,
        flush=True,
    )
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    try:
        done = subprocess.run(
            [*pip, package],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=PIP_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"{package} could not be installed ({error})"
    if done.returncode != 0:
        tail = " ".join((done.stderr or done.stdout).strip().splitlines()[-1:])
        return f"{package} could not be installed (pip: {tail or f'exit {done.returncode}'})"
    importlib.invalidate_caches()
    if importlib.util.find_spec(module) is None:
        return f"{package} was installed, but {module} does not import"
    return None


def corral_source() -> str:
    """Where corral was imported from, with its git commit when that is a checkout."""
    where = os.path.dirname(os.path.abspath(corral.__file__))
    try:
        commit = subprocess.run(
            ["git", "-C", where, "log", "-1", "--format=%h"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", where, "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return where
    return f"{where} (commit {commit}{', with uncommitted changes' if dirty else ''})"


def ensure_matplotlib() -> str | None:
    """Import matplotlib for drawing to files (Agg), installing it first if needed; why not."""
    if note := ensure("matplotlib"):
        return note
    importlib.import_module("matplotlib").use("Agg")
    return None


def version(package: str) -> str:
    """``package``'s installed version, or "not installed"."""
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def source_revision() -> str:
    """The commit corral is measured at, "+dirty" when src/ has uncommitted changes."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
        )
        return done.stdout.strip()

    try:
        head, changed = git("rev-parse", "--short", "HEAD"), git("status", "--porcelain", "src")
    except (OSError, subprocess.CalledProcessError):
        return "?"
    return head + ("+dirty" if changed else "")


def machine() -> dict[str, Any]:
    """The date, this machine, the interpreter and the versions a run is measured with."""
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    versions = {}
    for package in ("anyio", "uvloop", "psutil"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "corral": corral.__version__,
        "corral_source": source_revision(),
        "packages": versions,
        "load_average_at_start": os.getloadavg()[0],
    }
