"""What benchmarks measure: the peers (installed with pip when missing), and corral itself."""

from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys

import corral

PIP_TIMEOUT = 300.0  # seconds an install may take


def ensure(package: str, module: str | None = None) -> str | None:
    """Make ``module`` (``package`` by default) importable; None when it is, else why not.

    A missing package is installed into the running interpreter's environment
    with ``pip install package`` first.
    """
    module = module or package
    if importlib.util.find_spec(module) is not None:
        return None
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
