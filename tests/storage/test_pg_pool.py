"""storage/postgres/connection.py's pool on a real PostgreSQL: how many connections it opens, who
waits, and which connections it keeps after an error (those in step with the server) and which
it drops (after a cancellation or a lost connection), so that the next operation always works."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from storage import StorageError
from storage.postgres.connection import Pool
from tests.conftest import PG_DSN, require_postgres


@pytest.fixture
async def pool() -> AsyncIterator[Pool]:
    await require_postgres()
    opened = Pool("public")
    await opened.open(PG_DSN, pool_size=2)
    yield opened
    await opened.close()


async def backend_pid(pool: Pool) -> int:
    async with pool.connection() as conn:
        pid: int = await conn.fetchval("SELECT pg_backend_pid()")
    return pid


class Holders:
    """Tasks that each take a connection and keep it until `release` is set."""

    def __init__(self, pool: Pool, count: int) -> None:
        self.pool = pool
        self.pids: list[int] = []
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.tasks = [asyncio.create_task(self._hold(count)) for _ in range(count)]

    async def _hold(self, count: int) -> None:
        async with self.pool.connection() as conn:
            self.pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
            if len(self.pids) == count:
                self.holding.set()
            await self.release.wait()


async def test_at_most_pool_size_connections_and_the_others_wait_their_turn(pool: Pool) -> None:
    holders = Holders(pool, 2)
    await holders.holding.wait()
    pids, release = holders.pids, holders.release
    third = asyncio.create_task(backend_pid(pool))
    done, _ = await asyncio.wait([third], timeout=0.2)
    assert not done  # both connections are taken: it waits
    release.set()
    assert await third in pids  # served with one of the two, not a third connection
    await asyncio.gather(*holders.tasks)


async def test_an_error_from_the_server_keeps_the_connection(pool: Pool) -> None:
    before = await backend_pid(pool)
    with pytest.raises(StorageError, match="division by zero"):
        async with pool.connection() as conn:
            await conn.fetchval("SELECT 1 / 0")
    assert await backend_pid(pool) == before


async def test_a_cancelled_operation_drops_its_connection_and_the_next_one_works(pool: Pool) -> None:
    started = asyncio.Event()
    pids: list[int] = []

    async def slow() -> None:
        async with pool.connection() as conn:
            pids.append(await conn.fetchval("SELECT pg_backend_pid()"))
            started.set()
            await conn.execute("SELECT pg_sleep(30)")

    task = asyncio.create_task(slow())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # Its state was unknown (a query under way): closed, not handed to the next user.
    assert await backend_pid(pool) != pids[0]


async def test_a_waiter_that_gives_up_leaves_its_turn_to_the_next(pool: Pool) -> None:
    holders = Holders(pool, 2)
    await holders.holding.wait()
    impatient = asyncio.create_task(backend_pid(pool))
    patient = asyncio.create_task(backend_pid(pool))
    await asyncio.sleep(0)  # one loop pass: both tasks run up to their wait, in this order
    impatient.cancel()
    holders.release.set()
    assert await patient in holders.pids
    await asyncio.gather(*holders.tasks)
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_a_connection_the_server_ended_is_replaced(pool: Pool) -> None:
    victim = await backend_pid(pool)
    admin = await asyncpg.connect(PG_DSN)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
    finally:
        await admin.close()
    # The first use finds out (as with any pool); the connection goes and the next use works.
    try:
        again = await backend_pid(pool)
    except StorageError:
        again = await backend_pid(pool)
    assert again != victim


async def test_a_closed_pool_refuses_work(pool: Pool) -> None:
    await pool.close()
    with pytest.raises(StorageError, match="closed"):
        async with pool.connection():
            pass
