"""corral's pytest plugin (registered under the ``pytest11`` entry point).

It adds one fixture, ``corral_supervisor``: a running
:class:`~corral.Supervisor` for an async test (anyio's pytest plugin runs
it), stopped after the test, which then fails if the supervisor left a
child process, thread or file descriptor behind
(:func:`corral.testing.supervised`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from ._supervisor import Supervisor
from .testing import supervised


@pytest.fixture
async def corral_supervisor(anyio_backend: Any) -> AsyncIterator[Supervisor]:
    """A running supervisor; after the test, a check that nothing it started is left."""
    async with supervised(name="corral_supervisor", shutdown_timeout=5.0) as sup:
        yield sup
