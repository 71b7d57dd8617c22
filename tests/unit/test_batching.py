"""The group-commit writer: batching, order, failure isolation, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from xmppd.batching import BatchWriter, WriterStopped


async def until(condition: Callable[[], bool]) -> None:
    """Yield to the loop until `condition` holds: waits for a state, never for time."""
    for _ in range(100):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


class FakeStore:
    """Records each flush; `gate` holds a flush open until the test releases it."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.committed: list[int] = []
        self.gate: asyncio.Event | None = None
        self.bad: set[int] = set()

    async def flush(self, items: list[int]) -> None:
        self.batches.append(list(items))
        if self.gate is not None:
            await self.gate.wait()
        if self.bad & set(items):
            raise RuntimeError(f"bad item in {items}")
        self.committed.extend(items)


async def test_writers_of_one_loop_pass_share_a_flush() -> None:
    store = FakeStore()
    writer = BatchWriter(store.flush)
    await asyncio.gather(*(writer.write(i) for i in range(10)))
    assert store.batches == [list(range(10))]
    assert (writer.batches, writer.items) == (1, 10)


async def test_a_single_write_goes_out_alone_and_at_once() -> None:
    store = FakeStore()
    writer = BatchWriter(store.flush)
    await writer.write(1)
    await writer.write(2)
    assert store.batches == [[1], [2]]


async def test_writes_during_a_flush_form_the_next_batch_in_order() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = BatchWriter(store.flush)
    first = asyncio.ensure_future(writer.write(0))
    await until(lambda: store.batches == [[0]])  # in flight
    later = [asyncio.ensure_future(writer.write(i)) for i in range(1, 6)]
    await until(lambda: writer.pending == 5)
    assert store.batches == [[0]]  # waiting for the first to commit
    assert not any(f.done() for f in [first, *later])
    store.gate.set()
    await asyncio.gather(first, *later)
    assert store.batches == [[0], [1, 2, 3, 4, 5]]
    assert store.committed == list(range(6))


async def test_max_batch() -> None:
    store = FakeStore()
    writer = BatchWriter(store.flush, max_batch=4)
    await asyncio.gather(*(writer.write(i) for i in range(10)))
    assert store.batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


async def test_delay_gathers_more() -> None:
    store = FakeStore()
    writer = BatchWriter(store.flush, delay=0.05)

    async def late(i: int) -> None:
        await until(lambda: writer._task is not None)  # the batch has opened
        for _ in range(5):
            # Loop passes after which a batch without delay would have been flushed: this one
            # is still held open, waiting out its delay.
            await asyncio.sleep(0)
            assert not store.batches
        await writer.write(i)

    await asyncio.gather(writer.write(0), late(1))
    assert store.batches == [[0, 1]]


async def test_a_bad_item_fails_only_its_own_writer() -> None:
    store = FakeStore()
    store.bad = {3}
    writer = BatchWriter(store.flush)
    results = await asyncio.gather(*(writer.write(i) for i in range(5)), return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["NoneType"] * 3 + ["RuntimeError", "NoneType"]
    assert store.committed == [0, 1, 2, 4]
    # And the writer goes on.
    await writer.write(7)
    assert store.committed[-1] == 7


async def test_a_cancelled_writer_does_not_disturb_the_others() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = BatchWriter(store.flush)
    impatient = asyncio.ensure_future(writer.write(1))
    patient = asyncio.ensure_future(writer.write(2))
    await until(lambda: store.batches == [[1, 2]])  # both in the flush held open by the gate
    impatient.cancel()
    store.gate.set()
    await patient
    assert store.committed == [1, 2]  # written all the same
    assert impatient.cancelled()


async def test_stopping_the_writer_fails_whoever_waits() -> None:
    store = FakeStore()
    store.gate = asyncio.Event()
    writer = BatchWriter(store.flush)
    waiting = [asyncio.ensure_future(writer.write(i)) for i in range(3)]
    await until(lambda: store.batches == [[0, 1, 2]])  # in a flush held open by the gate
    queued = asyncio.ensure_future(writer.write(9))
    await until(lambda: writer.pending == 1)  # queued behind it
    task = writer._task
    assert task is not None
    task.cancel()
    for future in [*waiting, queued]:
        with pytest.raises(WriterStopped):
            await future
    assert writer.pending == 0 and writer._task is None


def test_max_batch_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_batch"):
        BatchWriter(FakeStore().flush, max_batch=0)
