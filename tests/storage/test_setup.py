"""Storage pieces outside the shared contract: migration files, messages, opening each backend."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import asyncpg
import pytest

from storage import LATEST_SCHEMA, SchemaError, StorageError, open_storage
from storage.postgres import quote_identifier
from storage.schema import ENGINES, Migration, check_sequence, load_migrations, schema_problem
from storage.sqlite import SqliteStorage, split_script
from tests.conftest import PG_DSN, require_postgres


def test_every_engine_has_the_same_numbered_migrations() -> None:
    shapes = {engine: [(m.version, m.name) for m in load_migrations(engine)] for engine in ENGINES}
    assert shapes["sqlite"] == shapes["postgres"]
    assert [version for version, _ in shapes["sqlite"]] == list(range(1, LATEST_SCHEMA + 1))


def test_migration_numbering_is_checked() -> None:
    with pytest.raises(RuntimeError, match="not numbered"):
        check_sequence([Migration(1, "a", ""), Migration(3, "c", "")])
    with pytest.raises(ValueError, match="at least one"):
        SqliteStorage(":memory:", migrations=[])


@pytest.mark.parametrize(
    ("current", "expected", "message"),
    [
        (0, 3, "database is empty: run `xmppd migrate`"),
        (1, 3, "schema version 1, this xmppd needs 3: run `xmppd migrate`"),
        (4, 3, "schema version 4 is newer than this xmppd knows (3): upgrade xmppd"),
    ],
)
def test_schema_messages(current: int, expected: int, message: str) -> None:
    problem = schema_problem(current, expected)
    assert isinstance(problem, SchemaError) and isinstance(problem, StorageError)
    assert str(problem) == message
    assert (problem.current, problem.expected) == (current, expected)
    assert schema_problem(expected, expected) is None


def test_split_script_keeps_trigger_bodies_whole() -> None:
    script = (
        "-- header\nCREATE TABLE t (x INTEGER);\n"
        "CREATE TRIGGER tr AFTER INSERT ON t BEGIN\n  UPDATE t SET x = 1;\n  SELECT 1;\nEND;\n-- trailer\n"
    )
    statements = split_script(script)
    assert len(statements) == 2 and statements[1].endswith("END;")
    with pytest.raises(StorageError, match="incomplete"):
        split_script("CREATE TABLE t (x INTEGER)\n")


async def test_open_storage_arguments() -> None:
    with pytest.raises(ValueError, match="unknown storage backend 'mysql'"):
        await open_storage("mysql")
    with pytest.raises(ValueError, match="sqlite_path"):
        await open_storage("sqlite")
    with pytest.raises(ValueError, match="postgres_dsn"):
        await open_storage("postgresql")


async def test_unreachable_postgres_is_a_storage_error() -> None:
    with pytest.raises(StorageError, match="cannot connect"):
        await open_storage("postgresql", postgres_dsn="postgresql://postgres@127.0.0.1:1/test")


async def test_sqlite_file_setup(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "xmppd.sqlite3"
    async with await open_storage("sqlite", sqlite_path=str(path)) as storage:
        await storage.migrate()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    db.close()


async def test_sqlite_in_memory() -> None:
    async with await open_storage("sqlite", sqlite_path=":memory:") as storage:
        assert await storage.migrate() == list(range(1, LATEST_SCHEMA + 1))
        assert await storage.accounts.create("example.org", "alice", [])
        assert await storage.accounts.list() == [("example.org", "alice")]


async def test_sqlite_foreign_keys_are_on(tmp_path: Path) -> None:
    async with await open_storage("sqlite", sqlite_path=str(tmp_path / "x.db")) as storage:
        await storage.migrate()
        await storage.accounts.create("example.org", "alice", [])
        assert isinstance(storage, SqliteStorage)
        rows = await storage._conn.run(lambda db: db.execute("PRAGMA foreign_keys").fetchall())
        assert rows == [(1,)]


async def test_sqlite_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not an sqlite database, not at all" * 100)
    with pytest.raises(StorageError, match="not a database"):
        storage = await open_storage("sqlite", sqlite_path=str(path))
        await storage.schema_version()


async def test_postgres_schema_name_is_quoted() -> None:
    await require_postgres()
    schema = f'xmppd Test "{uuid.uuid4().hex}"'
    try:
        async with await open_storage(
            "postgresql", postgres_dsn=PG_DSN, postgres_schema=schema, pool_size=2
        ) as storage:
            assert await storage.migrate() == list(range(1, LATEST_SCHEMA + 1))
            assert await storage.accounts.create("example.org", "alice", [])
            await storage.check_schema()
    finally:
        conn = await asyncpg.connect(PG_DSN)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
        finally:
            await conn.close()
