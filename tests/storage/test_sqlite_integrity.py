"""A damaged SQLite file, or one that is no database at all, is refused with a message that names
the file and says what to do (restore from a backup, or salvage with sqlite3's .recover): by the
quick_check the server runs at start (SqliteStorage.check_integrity), on opening, and by any
operation that meets the damage. Real files in tmp_path, damaged after the database was closed."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from storage import LATEST_SCHEMA, StorageError, open_storage
from storage.errors import DamagedDatabaseError
from storage.sqlite import SqliteStorage


async def make_database(path: Path, accounts: int = 50) -> None:
    """A migrated database with some accounts, closed: its WAL checkpointed into the main file."""
    async with await open_storage("sqlite", sqlite_path=str(path)) as storage:
        await storage.migrate()
        for n in range(accounts):
            assert await storage.accounts.create("example.org", f"user{n}", [])
    assert_checkpointed(path)


def assert_checkpointed(path: Path) -> None:
    assert not Path(f"{path}-wal").exists(), "the last connection's close should checkpoint the WAL away"


def layout(path: Path) -> tuple[int, int, dict[str, int]]:
    """(page size, page count, root page of each table and index) of a closed database."""
    db = sqlite3.connect(path)
    try:
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
        page_count = db.execute("PRAGMA page_count").fetchone()[0]
        roots = dict(db.execute("SELECT name, rootpage FROM sqlite_master WHERE rootpage > 0").fetchall())
    finally:
        db.close()
    return page_size, page_count, roots


def overwrite_page(path: Path, page: int, page_size: int) -> None:
    """Overwrite one whole page (numbered from 1) with garbage, as a bad disk block or a stray write would."""
    with path.open("r+b") as file:
        file.seek((page - 1) * page_size)
        file.write(random.Random(page).randbytes(page_size))


async def opened(path: Path) -> SqliteStorage:
    storage = await open_storage("sqlite", sqlite_path=str(path))
    assert isinstance(storage, SqliteStorage)
    return storage


async def refusal(path: Path, operation: Callable[[SqliteStorage], Awaitable[object]]) -> DamagedDatabaseError:
    """The DamagedDatabaseError that `operation` meets on the database at `path`."""
    storage = await opened(path)
    try:
        with pytest.raises(DamagedDatabaseError) as caught:
            await operation(storage)
    finally:
        await storage.close()
    return caught.value


def assert_names_the_file_and_the_way_out(error: StorageError, path: Path) -> None:
    message = str(error)
    assert str(path) in message
    assert "restore it from a backup" in message
    assert f'sqlite3 {path} ".recover" | sqlite3 {path}.recovered' in message


async def test_a_sound_database_passes(tmp_path: Path) -> None:
    path = tmp_path / "xmppd.sqlite3"
    await make_database(path)
    storage = await opened(path)
    try:
        await storage.check_integrity()
        assert await storage.schema_version() == LATEST_SCHEMA
    finally:
        await storage.close()


async def test_an_emptied_file_is_not_damaged_but_empty(tmp_path: Path) -> None:
    """Zero bytes is an empty database to SQLite: refusing that one is the server's business
    (prepare_schema, with the evidence of the data directory), not the integrity check's."""
    path = tmp_path / "xmppd.sqlite3"
    await make_database(path)
    path.write_bytes(b"")
    storage = await opened(path)
    try:
        await storage.check_integrity()
        assert await storage.schema_version() == 0
    finally:
        await storage.close()


async def test_a_page_overwritten_in_the_middle_of_the_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "xmppd.sqlite3"
    await make_database(path)
    page_size, page_count, _roots = layout(path)
    overwrite_page(path, page_count // 2, page_size)
    storage = await opened(path)
    try:
        with pytest.raises(DamagedDatabaseError) as caught:
            await storage.check_integrity()
    finally:
        await storage.close()
    assert str(caught.value).startswith(f"the SQLite database {path} is damaged (")
    assert_names_the_file_and_the_way_out(caught.value, path)


async def test_quick_check_findings_are_quoted(tmp_path: Path) -> None:
    """An index's root page overwritten: quick_check answers with findings (rather than failing),
    and the first of them goes into the message."""
    path = tmp_path / "xmppd.sqlite3"
    await make_database(path)
    page_size, _count, roots = layout(path)
    overwrite_page(path, roots["archive_user"], page_size)
    error = await refusal(path, SqliteStorage.check_integrity)
    assert f"is damaged (quick_check: Page {roots['archive_user']}: " in str(error)
    assert "***" not in str(error)
    assert_names_the_file_and_the_way_out(error, path)


async def test_an_operation_that_meets_the_damage_says_the_same(tmp_path: Path) -> None:
    """Without the check at start (an admin command), a query on a damaged table is no bare
    'database disk image is malformed' either."""
    path = tmp_path / "xmppd.sqlite3"
    await make_database(path)
    page_size, _count, roots = layout(path)
    overwrite_page(path, roots["accounts"], page_size)
    error = await refusal(path, lambda storage: storage.accounts.list())
    assert "is damaged (database disk image is malformed)" in str(error)
    assert_names_the_file_and_the_way_out(error, path)


async def test_a_file_of_random_bytes_is_refused_on_opening(tmp_path: Path) -> None:
    folder = tmp_path / "a data dir"  # a space: the commands in the message are quoted for a shell
    folder.mkdir()
    path = folder / "xmppd.sqlite3"
    path.write_bytes(random.Random(0).randbytes(64 * 1024))
    with pytest.raises(DamagedDatabaseError) as caught:
        await open_storage("sqlite", sqlite_path=str(path))
    message = str(caught.value)
    assert message.startswith(f"{path} is not an SQLite database (file is not a database); ")
    assert "storage.sqlite_path" in message and "restore it from a backup" in message
    assert f"sqlite3 '{path}' \".recover\" | sqlite3 '{path}.recovered'" in message


async def test_other_sqlite_errors_stay_plain_storage_errors(tmp_path: Path) -> None:
    storage = await opened(tmp_path / "xmppd.sqlite3")
    try:
        with pytest.raises(StorageError, match="no such table") as caught:
            await storage.accounts.list()  # never migrated
    finally:
        await storage.close()
    assert not isinstance(caught.value, DamagedDatabaseError)
