"""The packages benchmarks measure corral against, installed with pip when missing."""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

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
