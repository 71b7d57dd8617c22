"""Group commit: many concurrent writers, one storage write per batch.

`await writer.write(item)` returns once the item is durable. Items that arrive while a batch is
being written wait together and go out as the next batch, in arrival order, so the number of
transactions adapts to the load: one item per write when traffic is light (no added latency
beyond one event-loop pass), hundreds per write under load (one round trip and one commit for all
of them instead of one each). Batches are written one after another, never side by side, so what
is durable is always a prefix of what was submitted: an item is never committed before one that
was submitted earlier.

If a batch fails, its items are retried one by one, so that one bad item (a duplicate key) fails
only its own writer. No task lives longer than there is work: the first write starts one, which
ends when the queue is empty.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger("xmppd.batching")


class WriterStopped(Exception):
    """The writer's task was cancelled (shutdown) before the item was written."""


class BatchWriter(Generic[T]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[None]],
        *,
        max_batch: int = 500,
        delay: float = 0.0,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]] | None = None,
    ) -> None:
        """`flush(items)` writes a batch atomically. `delay` (seconds) holds a batch open a
        little longer to gather more items; 0 takes what one event-loop pass has gathered.
        `spawn` starts the writing task (the server's, so that stopping waits for the batch
        in flight before the storage closes); by default a plain task."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._flush = flush
        self.max_batch = max_batch
        self.delay = max(0.0, delay)
        self._queue: list[tuple[T, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._spawn = spawn
        # Counters for benchmarks and the curious.
        self.batches = 0
        self.items = 0

    async def write(self, item: T) -> None:
        """Queue the item and wait until it has been written (or raise what writing raised)."""
        await self.submit(item)

    def submit(self, item: T) -> asyncio.Future[None]:
        """Queue the item; the future is done once it has been written (or has what writing
        raised). Whoever submits must await it, or see to its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.append((item, future))
        if self._task is None:
            self._task = self._spawn(self._drain()) if self._spawn is not None else loop.create_task(self._drain())
        return future

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def _drain(self) -> None:
        batch: list[tuple[T, asyncio.Future[None]]] = []
        try:
            while self._queue:
                # Let the writers that are ready in this loop pass (or within `delay`) join.
                await asyncio.sleep(self.delay if self.delay and len(self._queue) < self.max_batch else 0)
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                await self._write(batch)
                batch = []
        finally:
            self._task = None
            # Only reached with work left when cancelled: nobody may wait forever.
            for _item, future in [*batch, *self._queue]:
                if not future.done():
                    future.set_exception(WriterStopped("the writer stopped before writing this item"))
            self._queue.clear()

    async def _write(self, batch: list[tuple[T, asyncio.Future[None]]]) -> None:
        try:
            await self._flush([item for item, _future in batch])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][1], exc)
                return
            log.warning("a batch of %d failed (%s); writing its items one by one", len(batch), exc)
            for entry in batch:
                await self._write([entry])
            return
        self.batches += 1
        self.items += len(batch)
        for _item, future in batch:
            _settle(future, None)


def _settle(future: asyncio.Future[None], error: Exception | None) -> None:
    if future.done():  # the writer gave up waiting (cancelled); the item is written all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
