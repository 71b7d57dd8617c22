"""The PostgreSQL connections every store borrows, a pool of our own over bare asyncpg connections.

Every connection has its search_path set to the configured schema when it connects, so the
queries name tables without a schema and one database can hold several xmppd instances (or test
runs) side by side. asyncpg prepares and caches each statement per connection, so the hot queries
cost one round trip.

Why not asyncpg's pool: each release there runs in a task of its own (`asyncio.shield`) under a
timeout, with a session reset, which made a one-row query cost 133 us of client CPU against 66 us
on a bare connection (3,000 `fetchval("SELECT $1::int")` calls each). What this pool does instead:

- a connection comes back after an operation that ended normally: it is as clean as it went out
  (every transaction here is an `async with conn.transaction()` block, no query leaves session
  state behind: settings come with the connection, advisory locks are transaction-scoped, no
  LISTEN, no cursors outside a transaction), so it is simply handed to the next user;
- after an error PostgreSQL reported (a unique violation, say), outside a transaction, it is as
  good as ever and goes back too;
- after anything else (a cancelled task, a lost connection, a transaction left open) its state is
  unknown: it is closed at once (terminate) and a new one is made when one is next needed.

At most `pool_size` connections; a user that finds none free waits its turn (first come, first
served).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

from storage.errors import StorageError

__all__ = ["CONNECT_TIMEOUT", "DRIVER_ERRORS", "Pool", "quote_identifier"]

CONNECT_TIMEOUT = 10.0  # seconds; a server that does not answer should fail startup quickly

DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError)


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class Pool:
    """The connections of one PostgresStorage: opened once, closed once, and StorageError for the
    driver's errors and for any use after close."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self._dsn = ""
        self._size = 0
        self._free: list[Any] = []  # connections ready for use, the most recently used last
        self._count = 0  # connections open or being opened, free or in use
        self._waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self._opened = False
        self._closed = False

    async def open(self, dsn: str, pool_size: int = 10) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        self._dsn, self._size = dsn, pool_size
        # One connection now: an unreachable server fails the start, not the first login.
        self._release(await self._connect(), healthy=True)
        self._opened = True

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """A connection for one operation; driver errors become StorageError."""
        if self._closed or not self._opened:
            raise StorageError("storage is closed")
        conn = await self._acquire()
        try:
            yield conn
        except asyncpg.PostgresError as exc:
            # The server said no; the connection is in step with it, unless a transaction is open.
            self._release(conn, healthy=not conn.is_in_transaction())
            raise StorageError(f"postgresql: {exc}") from exc
        except BaseException as exc:
            self._release(conn, healthy=False)
            if isinstance(exc, DRIVER_ERRORS):
                raise StorageError(f"postgresql: {exc}") from exc
            raise
        self._release(conn, healthy=True)

    async def _acquire(self) -> Any:
        while self._free:
            conn = self._free.pop()
            if not conn.is_closed():
                return conn
            self._count -= 1  # lost while it waited (the server went away): make another
        if self._count < self._size:
            return await self._connect()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            conn = await waiter
        except BaseException:
            if not waiter.done() or waiter.cancelled():
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
            elif waiter.result() is not None:
                self._release(waiter.result(), healthy=True)  # handed over just as we gave up
            else:
                self._hand_on(None)  # so was the right to open one: the next waiter gets it
            raise
        return conn if conn is not None else await self._connect()

    async def _connect(self) -> Any:
        self._count += 1
        try:
            return await asyncpg.connect(
                self._dsn, timeout=CONNECT_TIMEOUT, server_settings={"search_path": quote_identifier(self.schema)}
            )
        except BaseException as exc:
            self._count -= 1
            self._hand_on(None)  # a waiter may try for itself
            if isinstance(exc, DRIVER_ERRORS):
                raise StorageError(f"postgresql: cannot connect: {exc}") from exc
            raise

    def _release(self, conn: Any, *, healthy: bool) -> None:
        if not healthy or self._closed or conn.is_closed():
            conn.terminate()
            self._count -= 1
            self._hand_on(None)  # room for a new connection: the next waiter makes it
            return
        if not self._hand_on(conn):
            self._free.append(conn)

    def _hand_on(self, conn: Any) -> bool:
        """Give `conn` (None: the right to open one) to the first waiter still waiting."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        free, self._free = self._free, []
        for conn in free:
            try:
                await conn.close(timeout=CONNECT_TIMEOUT)
            except DRIVER_ERRORS:
                conn.terminate()
        self._count -= len(free)
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(StorageError("storage is closed"))
        self._waiting.clear()
