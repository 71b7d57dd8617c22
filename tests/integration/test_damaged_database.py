"""A server refuses to start on a database that was lost or damaged while it was stopped, and says
what to do; a genuinely first start still sets the database up by itself (the one-command start).

"Ran before" is read from the data directory as it was before this start: server.secret (written
only by a start that got past the storage checks) and the self-signed certificate. `xmppd serve`
runs as a real subprocess where its exit code (3, storage error) and message matter."""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from storage import LATEST_SCHEMA, SchemaError, Storage
from storage.errors import DamagedDatabaseError
from storage.postgres import quote_identifier
from tests.conftest import StorageFactory
from tests.integration.conftest import write_config
from tests.integration.tools import xmppd
from xmppd.config import load_config
from xmppd.server import Server

pytestmark = pytest.mark.integration

EXIT_STORAGE = 3


def emptied_message(evidence: str, database: str) -> str:
    return (
        f"{evidence} from an earlier start, but {database} is empty (deleted, emptied or replaced while"
        " xmppd was stopped?): xmppd will not silently start over with no accounts. Restore the database"
        " from a backup, or run `xmppd migrate` to create a fresh, empty schema on purpose"
    )


async def run_once(config: Path) -> None:
    """Start the server on its configured storage, as `xmppd serve` does, and stop it again."""
    server = Server(load_config(config))
    await server.start()
    await server.stop()


def empty_sqlite(path: Path) -> None:
    """What the probe did to the stopped server: the main file emptied (its WAL went with it)."""
    path.write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


async def empty_database(factory: StorageFactory, storage: Storage) -> None:
    await storage.close()
    if factory.backend == "sqlite":
        empty_sqlite(Path(factory.sqlite_path))
    else:
        await factory.sql(f"DROP SCHEMA {quote_identifier(factory.pg_schema)} CASCADE")


# -- in process, each backend ----------------------------------------------------------------------


async def test_a_first_start_in_an_empty_data_dir_sets_the_database_up(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    storage = await storage_factory.open()  # empty, not migrated
    server = Server(load_config(write_config(tmp_path)), storage=storage)
    secret = tmp_path / "data" / "server.secret"
    assert not secret.exists()  # Server() made its secret but leaves the writing to a start that passes
    await server.start()
    try:
        assert await storage.schema_version() == LATEST_SCHEMA
        assert secret.exists() and len(secret.read_bytes()) == 32
    finally:
        await server.stop()


async def test_a_server_that_ran_before_refuses_an_emptied_database(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    config = load_config(write_config(tmp_path))
    data = tmp_path / "data"
    first = await storage_factory.open()
    server = Server(config, storage=first)
    await server.start()
    await server.stop()
    await empty_database(storage_factory, first)

    emptied = await storage_factory.open()
    refused = Server(config, storage=emptied)
    with pytest.raises(SchemaError) as caught:
        await refused.start()
    evidence = f"{data / 'server.secret'}, {data / 'selfsigned.crt'} and {data / 'selfsigned.key'} exist"
    assert str(caught.value) == emptied_message(evidence, emptied.describe())
    assert not refused.listeners
    assert await emptied.schema_version() == 0  # nothing was created behind the operator's back

    # Starting over on purpose: migrate (what `xmppd migrate` runs), then the server accepts it.
    await emptied.migrate()
    again = Server(config, storage=emptied)
    await again.start()
    try:
        assert await emptied.accounts.list() == []
    finally:
        await again.stop()


async def test_the_secret_of_an_earlier_start_alone_is_enough(
    storage_factory: StorageFactory, tmp_path: Path
) -> None:
    """Every host with a configured certificate: no self-signed one, the secret is the evidence."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "server.secret").write_bytes(random.Random(1).randbytes(32))
    emptied = await storage_factory.open()
    server = Server(load_config(write_config(tmp_path)), storage=emptied)
    with pytest.raises(SchemaError) as caught:
        await server.start()
    assert str(caught.value) == emptied_message(f"{data / 'server.secret'} exists", emptied.describe())
    assert await emptied.schema_version() == 0


async def test_a_start_refused_before_it_began_leaves_no_evidence(tmp_path: Path) -> None:
    """A first start that failed on its database writes no secret, so that once the file is fixed
    the next start is still a first start, not 'a server that ran before'."""
    config = write_config(tmp_path)
    database = tmp_path / "data" / "xmppd.sqlite3"
    database.parent.mkdir()
    database.write_bytes(random.Random(2).randbytes(16 * 1024))
    server = Server(load_config(config))
    with pytest.raises(DamagedDatabaseError, match="is not an SQLite database"):
        await server.start()
    assert sorted(p.name for p in database.parent.iterdir()) == ["xmppd.sqlite3"]
    database.unlink()
    await run_once(config)
    assert (tmp_path / "data" / "server.secret").exists()


# -- `xmppd serve` and `xmppd migrate`, SQLite as configured -----------------------------------------


async def test_serve_refuses_an_emptied_database_until_migrate_starts_over(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    data = tmp_path / "data"
    database = data / "xmppd.sqlite3"
    await run_once(config)
    empty_sqlite(database)
    expected = emptied_message(
        f"{data / 'server.secret'}, {data / 'selfsigned.crt'} and {data / 'selfsigned.key'} exist", str(database)
    )

    code, _out, err = await xmppd(config, "serve")
    assert code == EXIT_STORAGE
    assert f"xmppd: storage error: {expected}\n" in err
    assert "Traceback" not in err
    # The admin commands do not quietly create a schema there either.
    code, _out, err = await xmppd(config, "users")
    assert (code, err) == (EXIT_STORAGE, f"xmppd: storage error: {expected}\n")
    db = sqlite3.connect(database)
    assert db.execute("SELECT count(*) FROM sqlite_master").fetchone() == (0,)  # still no tables
    db.close()

    code, out, err = await xmppd(config, "migrate")
    assert (code, out) == (0, f"applied migrations {', '.join(map(str, range(1, LATEST_SCHEMA + 1)))}\n"), err
    await run_once(config)  # accepted now: the emptied database was started over on purpose


@pytest.mark.parametrize("damage", ["a page overwritten", "random bytes"])
async def test_serve_refuses_a_damaged_database(tmp_path: Path, damage: str) -> None:
    config = write_config(tmp_path)
    database = tmp_path / "data" / "xmppd.sqlite3"
    await run_once(config)
    if damage == "random bytes":
        database.write_bytes(random.Random(3).randbytes(64 * 1024))
        found = f"xmppd: storage error: {database} is not an SQLite database (file is not a database); "
    else:
        db = sqlite3.connect(database)
        page_size, page_count = (db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("page_size", "page_count"))
        db.close()
        with database.open("r+b") as file:
            file.seek((page_count // 2 - 1) * page_size)
            file.write(random.Random(4).randbytes(page_size))
        found = f"xmppd: storage error: the SQLite database {database} is damaged ("

    code, _out, err = await xmppd(config, "serve")
    assert code == EXIT_STORAGE
    assert found in err
    assert f'restore it from a backup, or salvage what is readable with: sqlite3 {database} ".recover"' in err
    assert "Traceback" not in err
