"""The reliability suite: every test here is marked ``reliability``.

Run it alone with ``pytest -m reliability``. ``make test`` runs it at the
sizes the issue names where that fits the suite's time budget; set
``CORRAL_RELIABILITY=full`` for the long sizes (``scale()``).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).parent


def full() -> bool:
    """True when the long sizes were asked for (``CORRAL_RELIABILITY=full``)."""
    return os.environ.get("CORRAL_RELIABILITY", "") == "full"


def scale(fast: int, long: int) -> int:
    """``fast`` in ``make test``, ``long`` with ``CORRAL_RELIABILITY=full``."""
    return long if full() else fast


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.reliability)
