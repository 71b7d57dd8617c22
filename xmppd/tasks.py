"""Background work the server owns: answers delivered from synchronous code, module timers and
loops. Every task is tracked, so that stopping the server can wait for the work in flight to end
before the storage it writes to closes (`drain`), and tests can wait for quiet instead of sleeping.

Like a TaskGroup, but for a server whose lifetime is not one `async with` block: a failing task
is logged and costs nothing else (one bad stanza must not stop the others' work).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("xmppd.tasks")


class Background:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()
        # Loops that run as long as the server (a periodic cleanup): never waited for, cancelled.
        self._daemons: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, daemon: bool = False) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coroutine)
        tasks = self._daemons if daemon else self._tasks
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    async def drain(self, patience: float | None = None) -> bool:
        """Wait until no task is left, including those the running ones start; False when
        `patience` seconds passed first (the rest keep running)."""
        try:
            async with asyncio.timeout(patience):
                while self._tasks:
                    await asyncio.wait(list(self._tasks))
        except TimeoutError:
            return False
        return True

    async def cancel(self) -> None:
        """Cancel what is left, daemons included, and wait for it to end."""
        tasks = [*self._tasks, *self._daemons]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())
