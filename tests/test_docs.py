"""The documentation's code runs: every ```python block, and every docstring example."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import corral

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _blocks() -> list[pytest.param]:  # type: ignore[valid-type]
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), id=f"{page.name}:{line}"))
    return found


#: A block whose first line is ``# file: test_x.py`` is a test module: pytest runs it.
TEST_FILE = re.compile(r"# file: (test_\w+\.py)\n")


@pytest.mark.parametrize("code", _blocks())
def test_code_block_runs(code: str, tmp_path: Path) -> None:
    test_file = TEST_FILE.match(code)
    script = tmp_path / (test_file.group(1) if test_file else "example.py")
    script.write_text(code)
    command = ["-m", "pytest", "-q", "-p", "no:cacheprovider"] if test_file else []
    done = subprocess.run(
        [sys.executable, *command, str(script)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        check=False,
    )
    output = done.stdout if test_file else done.stderr
    assert done.returncode == 0, f"example failed:\n{code}\n--- output ---\n{output}"


def test_every_page_has_been_checked_for_blocks() -> None:
    assert (ROOT / "README.md").exists()
    assert len(PAGES) >= 2


def test_api_reference_covers_every_public_name() -> None:
    """docs/api.md has a ``::: corral.NAME`` entry for each name in ``corral.__all__``."""
    api = (ROOT / "docs" / "api.md").read_text()
    documented = set(re.findall(r"^::: corral\.(\w+)$", api, re.MULTILINE))
    assert set(corral.__all__) - documented == set(), "add these to docs/api.md"
    assert documented - set(corral.__all__) == set(), "not public: remove from docs/api.md"


@pytest.mark.parametrize(
    "module",
    [
        m.name
        for m in pkgutil.iter_modules(corral.__path__, "corral.")
        if m.name != "corral.__main__"
    ],
)
def test_docstring_examples(module: str) -> None:
    failures, _ = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert failures == 0
