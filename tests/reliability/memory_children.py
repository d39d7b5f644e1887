"""What the memory tests run in child processes (kept light: each child imports this)."""

from __future__ import annotations

import corral


class Marked(corral.Process):
    """Runs ``runs`` times, telling the host its run number every ``every`` runs (the
    host samples the child's memory then); stays up after the last run until the host
    says it has taken its last sample."""

    def __init__(self, every: int) -> None:
        self.every = every
        self.total = 0

    def run(self) -> None:
        self.total += 1
        if self.current_run % self.every == 0:
            self.tell(self.current_run)

    async def result(self) -> int:
        await self.listen()
        return self.total
