"""Fixtures shared across the test suite, one section per part of xmppd.

Keep each section self-contained (its imports and helpers inside it or clearly named) so that
sections can be added and read independently.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, NoReturn

import asyncpg
import pytest

from storage import Storage
from storage.postgres import open_postgres, quote_identifier
from storage.schema import Migration
from storage.sqlite import open_sqlite

# ==================================================================================================
# Storage
#
# `storage`          a migrated Storage on a fresh database, once per backend (sqlite, postgresql).
# `storage_factory`  the fresh database itself: open() as many Storage objects on it as a test needs
#                    (reopen, other migration lists), sql() to look behind the interface.
#
# PostgreSQL: DSN from XMPPD_TEST_PG_DSN, one throwaway schema per test, dropped afterwards. If the
# server is unreachable the postgresql tests are skipped, except under CI=true where they fail.
# ==================================================================================================

PG_DSN = os.environ.get("XMPPD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
_pg_problem: list[str] = []  # the probe's verdict, cached for the session: [] untested, [""] reachable


async def require_postgres() -> None:
    if not _pg_problem:
        try:
            conn = await asyncpg.connect(PG_DSN, timeout=3)
            await conn.close()
            _pg_problem.append("")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _pg_problem.append(f"PostgreSQL unreachable at {PG_DSN} (set XMPPD_TEST_PG_DSN): {exc!r}")
    if _pg_problem[0]:
        missing(_pg_problem[0])


def missing(why: str) -> NoReturn:
    """Something a test needs is not on this machine: a failure under CI=true (CI installs it,
    so it must be there), a skip otherwise."""
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        pytest.fail(why)
    pytest.skip(why)


class StorageFactory:
    """One fresh, empty database for one test; closes what it opened and drops it afterwards."""

    def __init__(self, backend: str, tmp_path: Path) -> None:
        self.backend = backend
        self.sqlite_path = str(tmp_path / "data" / "xmppd.sqlite3")  # "data/" is created on open
        self.pg_schema = f"xmppd_test_{uuid.uuid4().hex}"
        self._opened: list[Storage] = []

    async def open(self, migrations: Sequence[Migration] | None = None) -> Storage:
        storage: Storage
        if self.backend == "sqlite":
            storage = await open_sqlite(self.sqlite_path, migrations=migrations)
        else:
            storage = await open_postgres(PG_DSN, schema=self.pg_schema, pool_size=4, migrations=migrations)
        self._opened.append(storage)
        return storage

    async def sql(self, query: str) -> list[tuple[Any, ...]]:
        """Run one statement on the database directly (committed); returns its rows."""
        if self.backend == "sqlite":
            return await asyncio.to_thread(self._sqlite, query)
        conn = await asyncpg.connect(
            PG_DSN, server_settings={"search_path": quote_identifier(self.pg_schema)}
        )
        try:
            return [tuple(row) for row in await conn.fetch(query)]
        finally:
            await conn.close()

    def _sqlite(self, query: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.sqlite_path) as db:  # commits on success
            rows = db.execute(query).fetchall()
        db.close()
        return rows

    async def cleanup(self) -> None:
        for storage in self._opened:
            await storage.close()
        if self.backend == "postgresql":
            conn = await asyncpg.connect(PG_DSN)
            try:
                await conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(self.pg_schema)} CASCADE")
            finally:
                await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def storage_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StorageFactory]:
    if request.param == "postgresql":
        await require_postgres()
    factory = StorageFactory(request.param, tmp_path)
    try:
        yield factory
    finally:
        await factory.cleanup()


@pytest.fixture
async def storage(storage_factory: StorageFactory) -> Storage:
    opened = await storage_factory.open()
    await opened.migrate()
    return opened
