"""Waiting for a supervisor's zygote (the tests of forked children share it)."""

from __future__ import annotations

import anyio

import corral
from corral._forker import Forker


async def zygote_ready(sup: corral.Supervisor) -> Forker:
    """The supervisor's zygote, once ready (a first child starts it)."""
    forker = sup._forker
    assert forker is not None
    assert forker._ready is not None
    with anyio.fail_after(30):
        await forker._ready.wait()
    assert not forker._failed
    return forker
