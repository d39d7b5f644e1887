"""Review regression tests: a cancellation must never hang the host.

Up to 0c58ce7, ``ChildProcess.wait()`` only returned once a ``watch`` task had
reaped the child, but ``watch`` ran in the same task group as the code that,
after a cancellation, kills the child and waits for it in a *shielded* scope.
The cancellation reached the watcher too, so the shielded wait never returned.
No outer deadline can break such a hang, so each scenario runs in its own host
process with a hard timeout.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEADLINE = 15.0  # ~0.7 s when it works; a hang never ends, so a generous bound costs nothing

SCENARIOS = {
    # leaving `async with corral.spawn(...)` by a cancellation while the child boots
    "spawn-cancelled-during-startup": """
        with anyio.move_on_after(0.3):
            async with corral.spawn(SlowStart, 30):
                pass
    """,
    # a cancelled sup.spawn() (e.g. the body cancelled because a worker failed)
    "sup-spawn-cancelled-during-startup": """
        async with corral.Supervisor() as sup:
            with anyio.move_on_after(0.3):
                await sup.spawn(SlowStart, 30)
    """,
    # the supervisor's shutdown_timeout runs out while a child is still closing
    "supervisor-shutdown-timeout": """
        async with corral.Supervisor(shutdown_timeout=0.2) as sup:
            echo = await sup.spawn(Echo)
            echo.block.nowait(30)  # the child's loop is busy: it cannot act on the close
    """,
}


def _script(body: str, backend: str) -> str:
    return textwrap.dedent(
        """
        import anyio
        import corral
        from tests.services import Echo, SlowStart

        async def main():
        {body}
            print("finished", flush=True)

        anyio.run(main, backend={backend!r})
        """
    ).format(body=textwrap.indent(textwrap.dedent(body), "    "), backend=backend)


# Review finding (fixed in 42287e4): _spawn.ChildProcess.wait() relies on the watch task,
# which the same cancellation has already cancelled: the shielded wait in
# launch()/Service.run() never returns
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_cancellation_never_hangs_the_host(scenario: str, backend: str) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", _script(SCENARIOS[scenario], backend)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
    except subprocess.TimeoutExpired:  # the host is killed; PDEATHSIG takes its child
        pytest.fail(f"{scenario} on {backend}: the host still hung after {DEADLINE}s")
    assert done.returncode == 0, done.stderr
    assert "finished" in done.stdout
