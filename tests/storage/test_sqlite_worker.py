"""The SQLite connection's worker thread: calls in order, errors and cancellations handed back."""

from __future__ import annotations

import asyncio
import functools
import threading

import pytest

from storage.errors import StorageError
from storage.sqlite.connection import Connection, Worker


async def test_calls_run_in_order_in_one_thread_other_than_the_loops() -> None:
    worker = Worker("test-worker")
    seen: list[tuple[int, int]] = []

    def note(n: int) -> int:
        seen.append((n, threading.get_ident()))
        return n

    try:
        results = await asyncio.gather(*(worker.submit(functools.partial(note, n)) for n in range(50)))
    finally:
        worker.stop()
    assert results == list(range(50))
    assert [n for n, _ in seen] == list(range(50))
    assert {ident for _, ident in seen} != {threading.get_ident()} and len({ident for _, ident in seen}) == 1


async def test_an_error_reaches_its_caller_and_the_next_call_runs() -> None:
    worker = Worker("test-worker")

    def fail() -> None:
        raise ValueError("no")

    try:
        with pytest.raises(ValueError, match="no"):
            await worker.submit(fail)
        assert await worker.submit(lambda: 7) == 7
    finally:
        worker.stop()


async def test_a_cancelled_caller_leaves_the_call_to_finish_and_the_worker_to_serve() -> None:
    worker = Worker("test-worker")
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(10)
        finished.set()
        return "done"

    try:
        task = asyncio.ensure_future(worker.submit(slow))
        await asyncio.to_thread(started.wait, 10)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await worker.submit(lambda: "next") == "next"
        assert finished.is_set()  # the cancelled call ran to its end, before the next one
    finally:
        worker.stop()


async def test_a_closed_connection_refuses_calls() -> None:
    conn = Connection(":memory:")
    await conn.open()
    assert await conn.run(lambda db: db.execute("SELECT 40 + 2").fetchone()[0]) == 42
    await conn.close()
    with pytest.raises(StorageError, match="storage is closed"):
        await conn.run(lambda db: db.execute("SELECT 1").fetchone())
