"""The storage contract: every test runs against every backend (see the `storage` fixture)."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from storage import LATEST_SCHEMA, RosterItem, SchemaError, ScramCredentials, Storage, StorageError
from storage.schema import Migration, load_migrations
from tests.conftest import StorageFactory

HOST = "example.org"

# Hosts, users and contacts beyond ASCII: accents, Cyrillic, CJK, and a character outside the BMP.
UNICODE_HOST = "пример.рф"
UNICODE_USERS = ("jürgen", "用户", "ångström", "emoji😀")


def creds(hash_name: str = "sha256", seed: int = 1) -> ScramCredentials:
    size = 32 if hash_name == "sha256" else 20
    return ScramCredentials(
        hash_name=hash_name,
        salt=bytes([seed]) * 16,
        iterations=4096 + seed,
        stored_key=bytes([seed, 0, 255]) + bytes(size - 3),  # NUL and 0xff bytes round-trip too
        server_key=bytes([255 - seed]) * size,
    )


def engine_migrations(storage_factory: StorageFactory) -> tuple[Migration, ...]:
    return load_migrations("sqlite" if storage_factory.backend == "sqlite" else "postgres")


# --- schema and migrations ------------------------------------------------------------------------


async def test_empty_database_needs_migrate(storage_factory: StorageFactory) -> None:
    storage = await storage_factory.open()
    assert await storage.schema_version() == 0
    with pytest.raises(SchemaError, match=r"^database is empty: run `xmppd migrate`$"):
        await storage.check_schema()


async def test_migrate_from_empty_to_latest(storage_factory: StorageFactory) -> None:
    storage = await storage_factory.open()
    assert await storage.migrate() == list(range(1, LATEST_SCHEMA + 1))
    assert await storage.schema_version() == LATEST_SCHEMA
    await storage.check_schema()


async def test_migrate_twice_is_a_no_op(storage: Storage) -> None:
    await storage.accounts.create(HOST, "alice", [creds()])
    assert await storage.migrate() == []
    assert await storage.schema_version() == LATEST_SCHEMA
    assert await storage.accounts.exists(HOST, "alice")


async def test_older_schema_is_reported_then_migrated(storage_factory: StorageFactory) -> None:
    current = engine_migrations(storage_factory)
    old = await storage_factory.open()
    await old.migrate()
    await old.accounts.create(HOST, "alice", [creds()])

    upcoming = (*current, Migration(LATEST_SCHEMA + 1, "extra", "CREATE TABLE extra_test (x INTEGER);\n"))
    new = await storage_factory.open(migrations=upcoming)
    expected = f"schema version {LATEST_SCHEMA}, this xmppd needs {LATEST_SCHEMA + 1}: run `xmppd migrate`"
    with pytest.raises(SchemaError) as info:
        await new.check_schema()
    assert str(info.value) == expected
    assert (info.value.current, info.value.expected) == (LATEST_SCHEMA, LATEST_SCHEMA + 1)

    assert await new.migrate() == [LATEST_SCHEMA + 1]
    await new.check_schema()
    assert await new.accounts.exists(HOST, "alice")
    assert await storage_factory.sql("SELECT count(*) FROM extra_test") == [(0,)]


async def test_newer_schema_is_refused(storage: Storage, storage_factory: StorageFactory) -> None:
    await storage_factory.sql(f"INSERT INTO schema_version (version) VALUES ({LATEST_SCHEMA + 1})")
    expected = (
        f"schema version {LATEST_SCHEMA + 1} is newer than this xmppd knows ({LATEST_SCHEMA}): upgrade xmppd"
    )
    with pytest.raises(SchemaError) as info:
        await storage.check_schema()
    assert str(info.value) == expected
    with pytest.raises(SchemaError, match="upgrade xmppd"):
        await storage.migrate()


async def test_failed_migration_changes_nothing(storage_factory: StorageFactory) -> None:
    broken = Migration(LATEST_SCHEMA + 1, "broken", "CREATE TABLE half_done (x INTEGER);\nTHIS IS NOT SQL;\n")
    storage = await storage_factory.open(migrations=(*engine_migrations(storage_factory), broken))
    with pytest.raises(StorageError):
        await storage.migrate()
    # The good migrations before it were applied and kept; the broken one left no trace.
    assert await storage.schema_version() == LATEST_SCHEMA
    with pytest.raises(Exception, match="half_done"):
        await storage_factory.sql("SELECT count(*) FROM half_done")


async def test_data_survives_close_and_reopen(storage: Storage, storage_factory: StorageFactory) -> None:
    await storage.accounts.create(UNICODE_HOST, "jürgen", [creds("sha1"), creds("sha256")])
    await storage.rosters.put(UNICODE_HOST, "jürgen", RosterItem("bob@example.org", "Bob", "both"))
    await storage.kv.set(UNICODE_HOST, "jürgen", "prefs", "lang", {"value": "de"})
    await storage.close()

    reopened = await storage_factory.open()
    await reopened.check_schema()
    assert await reopened.accounts.credentials(UNICODE_HOST, "jürgen", "sha1") == creds("sha1")
    assert await reopened.rosters.items(UNICODE_HOST, "jürgen") == (
        1,
        [RosterItem("bob@example.org", "Bob", "both")],
    )
    assert await reopened.kv.get(UNICODE_HOST, "jürgen", "prefs", "lang") == {"value": "de"}


async def test_closed_storage_raises_storage_error(storage: Storage) -> None:
    await storage.close()
    await storage.close()  # idempotent
    with pytest.raises(StorageError, match="closed"):
        await storage.accounts.exists(HOST, "alice")
    with pytest.raises(StorageError, match="closed"):
        await storage.schema_version()


# --- accounts -------------------------------------------------------------------------------------


async def test_create_and_duplicate(storage: Storage) -> None:
    assert not await storage.accounts.exists(HOST, "alice")
    assert await storage.accounts.create(HOST, "alice", [creds("sha256", 1)])
    assert await storage.accounts.exists(HOST, "alice")
    # A second create changes nothing, not even the credentials.
    assert not await storage.accounts.create(HOST, "alice", [creds("sha256", 2)])
    assert await storage.accounts.credentials(HOST, "alice", "sha256") == creds("sha256", 1)


async def test_same_username_on_two_hosts_are_two_accounts(storage: Storage) -> None:
    assert await storage.accounts.create(HOST, "alice", [creds(seed=1)])
    assert await storage.accounts.create("other.example", "alice", [creds(seed=2)])
    assert await storage.accounts.credentials("other.example", "alice", "sha256") == creds(seed=2)
    assert await storage.accounts.delete(HOST, "alice")
    assert await storage.accounts.exists("other.example", "alice")


async def test_credentials_per_hash(storage: Storage) -> None:
    await storage.accounts.create(HOST, "alice", [creds("sha1", 3), creds("sha256", 4)])
    assert await storage.accounts.credentials(HOST, "alice", "sha1") == creds("sha1", 3)
    assert await storage.accounts.credentials(HOST, "alice", "sha256") == creds("sha256", 4)
    assert await storage.accounts.credentials(HOST, "alice", "sha512") is None
    assert await storage.accounts.credentials(HOST, "nobody", "sha256") is None


async def test_account_without_credentials(storage: Storage) -> None:
    assert await storage.accounts.create(HOST, "bot", [])
    assert await storage.accounts.exists(HOST, "bot")
    assert await storage.accounts.credentials(HOST, "bot", "sha256") is None


async def test_duplicate_hash_names_are_refused(storage: Storage) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        await storage.accounts.create(HOST, "alice", [creds("sha1", 1), creds("sha1", 2)])
    assert not await storage.accounts.exists(HOST, "alice")


async def test_set_credentials_replaces_all(storage: Storage) -> None:
    await storage.accounts.create(HOST, "alice", [creds("sha1", 1), creds("sha256", 1)])
    assert await storage.accounts.set_credentials(HOST, "alice", [creds("sha256", 9)])
    assert await storage.accounts.credentials(HOST, "alice", "sha256") == creds("sha256", 9)
    assert await storage.accounts.credentials(HOST, "alice", "sha1") is None
    assert not await storage.accounts.set_credentials(HOST, "nobody", [creds()])
    assert not await storage.accounts.exists(HOST, "nobody")


async def test_delete_removes_everything_of_the_user(storage: Storage) -> None:
    for user in ("alice", "bob"):
        await storage.accounts.create(HOST, user, [creds("sha1"), creds("sha256")])
        await storage.rosters.put(HOST, user, RosterItem("carol@example.net", subscription="both"))
        await storage.kv.set(HOST, user, "blocking", "list", ["spam@example.com"])

    assert await storage.accounts.delete(HOST, "alice")
    assert not await storage.accounts.exists(HOST, "alice")
    assert await storage.accounts.credentials(HOST, "alice", "sha1") is None
    assert await storage.rosters.items(HOST, "alice") == (0, [])
    assert await storage.kv.all(HOST, "alice", "blocking") == {}
    assert not await storage.accounts.delete(HOST, "alice")

    # Bob is untouched.
    assert await storage.accounts.credentials(HOST, "bob", "sha1") == creds("sha1")
    assert await storage.rosters.items(HOST, "bob") == (
        1,
        [RosterItem("carol@example.net", subscription="both")],
    )
    assert await storage.kv.get(HOST, "bob", "blocking", "list") == ["spam@example.com"]


async def test_delete_leaves_no_row_in_any_user_table(
    storage: Storage, storage_factory: StorageFactory
) -> None:
    """Guards future migrations: a new per-user table must be emptied by delete() too."""
    await storage.accounts.create(HOST, "alice", [creds("sha1"), creds("sha256")])
    await storage.rosters.put(HOST, "alice", RosterItem("carol@example.net"))
    await storage.kv.set(HOST, "alice", "prefs", "x", 1)
    await storage.accounts.delete(HOST, "alice")

    tables = await user_tables(storage_factory)
    assert {"accounts", "scram_credentials", "roster_items", "roster_versions", "kv"} <= set(tables)
    # The deletion log names the deleted account on purpose (and nothing else of it).
    tables.remove("account_deletions")
    for table in tables:
        rows = await storage_factory.sql(
            f"SELECT count(*) FROM {table} WHERE host = '{HOST}' AND username = 'alice'"
        )
        assert rows == [(0,)], table


async def test_deletions_are_logged_in_order_for_other_processes(storage: Storage) -> None:
    assert await storage.accounts.latest_deletion() == 0
    assert await storage.accounts.deletions_after(0) == []
    for user in ("alice", "bob"):
        await storage.accounts.create(HOST, user, [creds("sha1")])
    first = await storage.accounts.delete(HOST, "alice")
    assert first is not None and first >= 1
    # No account, no entry: the log says which accounts stopped existing.
    assert await storage.accounts.delete(HOST, "alice") is None
    second = await storage.accounts.delete(HOST, "bob")
    assert second is not None and second > first
    # An account made again and deleted again is logged again.
    await storage.accounts.create(HOST, "alice", [creds("sha1")])
    third = await storage.accounts.delete(HOST, "alice")
    assert third is not None and third > second

    assert await storage.accounts.latest_deletion() == third
    assert await storage.accounts.deletions_after(0) == [
        (first, HOST, "alice"), (second, HOST, "bob"), (third, HOST, "alice")
    ]
    assert await storage.accounts.deletions_after(second) == [(third, HOST, "alice")]
    assert await storage.accounts.deletions_after(third) == []


async def user_tables(storage_factory: StorageFactory) -> list[str]:
    """Every table with both a host and a username column."""
    if storage_factory.backend == "sqlite":
        names = [
            row[0] for row in await storage_factory.sql("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        found = []
        for name in names:
            columns = {row[1] for row in await storage_factory.sql(f"PRAGMA table_info({name})")}
            if {"host", "username"} <= columns:
                found.append(name)
        return found
    rows = await storage_factory.sql(
        "SELECT table_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND column_name IN ('host', 'username')"
        " GROUP BY table_name HAVING count(*) = 2"
    )
    return [row[0] for row in rows]


async def test_list_sorted_and_by_host(storage: Storage) -> None:
    users = [(HOST, "zoe"), (HOST, "Alice"), (HOST, "alice"), ("a.example", "mallory")]
    users += [(UNICODE_HOST, user) for user in UNICODE_USERS]
    for host, user in users:
        await storage.accounts.create(host, user, [creds()])
    # Sorted by code point on every backend, whatever the database's locale.
    assert await storage.accounts.list() == sorted(users)
    assert await storage.accounts.list(HOST) == [(HOST, "Alice"), (HOST, "alice"), (HOST, "zoe")]
    assert await storage.accounts.list(UNICODE_HOST) == sorted((UNICODE_HOST, u) for u in UNICODE_USERS)
    assert await storage.accounts.list("nowhere.example") == []


async def test_unicode_hosts_and_usernames_round_trip(storage: Storage) -> None:
    for seed, user in enumerate(UNICODE_USERS, start=1):
        assert await storage.accounts.create(UNICODE_HOST, user, [creds(seed=seed)])
    for seed, user in enumerate(UNICODE_USERS, start=1):
        assert await storage.accounts.exists(UNICODE_HOST, user)
        assert await storage.accounts.credentials(UNICODE_HOST, user, "sha256") == creds(seed=seed)
        await storage.rosters.put(UNICODE_HOST, user, RosterItem(f"{user}@{UNICODE_HOST}", name=user))
        assert await storage.rosters.item(UNICODE_HOST, user, f"{user}@{UNICODE_HOST}") == RosterItem(
            f"{user}@{UNICODE_HOST}", name=user
        )
        await storage.kv.set(UNICODE_HOST, user, "störe", "kéy", {"ключ": user})
        assert await storage.kv.all(UNICODE_HOST, user, "störe") == {"kéy": {"ключ": user}}
    assert not await storage.accounts.exists(UNICODE_HOST, "jurgen")  # no folding happens here


# --- rosters --------------------------------------------------------------------------------------


async def test_never_written_roster(storage: Storage) -> None:
    assert await storage.rosters.items(HOST, "alice") == (0, [])
    assert await storage.rosters.item(HOST, "alice", "bob@example.org") is None
    assert await storage.rosters.remove(HOST, "alice", "bob@example.org") is None
    assert await storage.rosters.items(HOST, "alice") == (0, [])


async def test_roster_item_fields_round_trip(storage: Storage) -> None:
    items = [
        RosterItem("bob@example.org"),
        RosterItem(
            "carol@example.net",
            name="Carol ☕",
            subscription="both",
            ask=True,
            pending_in=True,
            approved=True,
            groups=("Friends", "Работа", "Friends 2"),
            listed=False,
        ),
        RosterItem("dave@example.com", name="", subscription="to", groups=("z", "a")),
        RosterItem("erin@example.com", subscription="from"),
    ]
    for item in items:
        await storage.rosters.put(HOST, "alice", item)
    for item in items:
        assert await storage.rosters.item(HOST, "alice", item.jid) == item
    assert (await storage.rosters.items(HOST, "alice"))[1] == items


async def test_roster_versions_are_monotonic(storage: Storage) -> None:
    assert await storage.rosters.put(HOST, "alice", RosterItem("bob@example.org")) == 1
    assert await storage.rosters.put(HOST, "alice", RosterItem("carol@example.net")) == 2
    assert await storage.rosters.put(HOST, "alice", RosterItem("bob@example.org", subscription="to")) == 3
    assert await storage.rosters.remove(HOST, "alice", "carol@example.net") == 4
    assert await storage.rosters.remove(HOST, "alice", "carol@example.net") is None  # no bump
    assert await storage.rosters.items(HOST, "alice") == (
        4,
        [RosterItem("bob@example.org", subscription="to")],
    )
    assert await storage.rosters.remove(HOST, "alice", "bob@example.org") == 5
    # An emptied roster keeps its version: a client's cached version 4 is stale, not current.
    assert await storage.rosters.items(HOST, "alice") == (5, [])
    assert await storage.rosters.put(HOST, "alice", RosterItem("bob@example.org")) == 6


async def test_roster_versions_are_per_user(storage: Storage) -> None:
    assert await storage.rosters.put(HOST, "alice", RosterItem("bob@example.org")) == 1
    assert await storage.rosters.put(HOST, "alice", RosterItem("carol@example.net")) == 2
    assert await storage.rosters.put(HOST, "bob", RosterItem("alice@example.org")) == 1
    assert await storage.rosters.put("other.example", "alice", RosterItem("bob@example.org")) == 1
    assert [i.jid for i in (await storage.rosters.items(HOST, "bob"))[1]] == ["alice@example.org"]


async def test_roster_order_is_first_added_and_stable(storage: Storage) -> None:
    jids = ["zed@example.org", "amy@example.org", "mia@example.org", "bob@example.org"]
    for jid in jids:
        await storage.rosters.put(HOST, "alice", RosterItem(jid))
    # Updating an item does not move it; removing and re-adding puts it last.
    await storage.rosters.put(HOST, "alice", RosterItem("zed@example.org", name="Zed", subscription="both"))
    await storage.rosters.remove(HOST, "alice", "amy@example.org")
    await storage.rosters.put(HOST, "alice", RosterItem("amy@example.org"))
    expected = ["zed@example.org", "mia@example.org", "bob@example.org", "amy@example.org"]
    for _ in range(3):
        version, items = await storage.rosters.items(HOST, "alice")
        assert (version, [item.jid for item in items]) == (7, expected)


async def test_concurrent_roster_changes_get_distinct_versions(storage: Storage) -> None:
    count = 20
    versions = await asyncio.gather(
        *(storage.rosters.put(HOST, "alice", RosterItem(f"c{i}@example.org")) for i in range(count))
    )
    assert sorted(versions) == list(range(1, count + 1))
    removed = await asyncio.gather(
        *(storage.rosters.remove(HOST, "alice", f"c{i}@example.org") for i in range(0, count, 2))
    )
    assert sorted(v for v in removed if v is not None) == list(range(count + 1, count + count // 2 + 1))
    version, items = await storage.rosters.items(HOST, "alice")
    assert version == count + count // 2
    assert len(items) == count // 2


async def test_invalid_subscription_is_refused(storage: Storage) -> None:
    with pytest.raises(StorageError):
        await storage.rosters.put(HOST, "alice", RosterItem("bob@example.org", subscription="maybe"))
    assert await storage.rosters.items(HOST, "alice") == (0, [])  # nothing bumped either


# --- key-value ------------------------------------------------------------------------------------

VALUES: list[Any] = [
    {"items": ["a@example.org", "b@example.org"], "enabled": True, "n": 3, "ratio": 0.5, "none": None},
    ["nested", ["list", {"deep": [1, 2.25, -7]}]],
    'a string with ünïcode and 😀 and "quotes" and \\backslashes\\ and \\u0000 spelled out',
    "control characters: \x00 \x01 \n \t \x7f \u2028",
    1e16,  # a float that jsonb would have turned into an integer
    42,
    -1.5e300,
    False,
    0,
    "",
    [],
    {},
    2**62,
]


async def test_kv_set_get_overwrite_delete(storage: Storage) -> None:
    assert await storage.kv.get(HOST, "alice", "prefs", "x") is None
    for value in VALUES:
        await storage.kv.set(HOST, "alice", "prefs", "x", value)
        got = await storage.kv.get(HOST, "alice", "prefs", "x")
        assert got == value and type(got) is type(value)
    await storage.kv.set(HOST, "alice", "prefs", "x", None)
    assert await storage.kv.get(HOST, "alice", "prefs", "x") is None
    await storage.kv.set(HOST, "alice", "prefs", "x", None)  # deleting a missing key is fine


async def test_kv_all_is_per_user_and_store(storage: Storage) -> None:
    for index, value in enumerate(VALUES):
        await storage.kv.set(HOST, "alice", "prefs", f"k{index}", value)
    await storage.kv.set(HOST, "alice", "vcard", "k0", "other store")
    await storage.kv.set(HOST, "bob", "prefs", "k0", "other user")
    assert await storage.kv.all(HOST, "alice", "prefs") == {f"k{i}": v for i, v in enumerate(VALUES)}
    assert await storage.kv.all(HOST, "alice", "vcard") == {"k0": "other store"}
    assert await storage.kv.all(HOST, "bob", "prefs") == {"k0": "other user"}
    assert await storage.kv.all(HOST, "carol", "prefs") == {}


async def test_kv_values_come_back_as_json(storage: Storage) -> None:
    await storage.kv.set(HOST, "alice", "s", "k", {"tuple": (1, 2), 3: "int key"})
    assert await storage.kv.get(HOST, "alice", "s", "k") == {"tuple": [1, 2], "3": "int key"}
    # Object keys keep their order.
    value = {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}
    await storage.kv.set(HOST, "alice", "s", "k", value)
    got = await storage.kv.get(HOST, "alice", "s", "k")
    assert got is not None
    assert list(got) == ["z", "a", "m"] and list(got["m"]) == ["y", "b"]


async def test_kv_set_many_writes_in_order_in_one_go(storage: Storage) -> None:
    await storage.kv.set(HOST, "carol", "pep", "gone", "before")
    await storage.kv.set_many([
        (HOST, "alice", "pep", "a", 1),
        (HOST, "bob", "pep", "a", {"bob": True}),
        (HOST, "alice", "pep", "a", 2),  # a later write of a key wins
        (HOST, "carol", "pep", "gone", None),  # deletes mix with upserts, in order
        (HOST, "alice", "pep", "b", None),
        (HOST, "alice", "pep", "b", "back"),
    ])
    assert await storage.kv.all(HOST, "alice", "pep") == {"a": 2, "b": "back"}
    assert await storage.kv.all(HOST, "bob", "pep") == {"a": {"bob": True}}
    assert await storage.kv.all(HOST, "carol", "pep") == {}
    await storage.kv.set_many([])  # nothing to write is fine

    # All or nothing: one value that cannot be stored refuses the batch before anything is written.
    with pytest.raises(ValueError):
        await storage.kv.set_many([(HOST, "dave", "pep", "ok", 1), (HOST, "dave", "pep", "bad", math.nan)])
    assert await storage.kv.all(HOST, "dave", "pep") == {}


async def test_kv_set_many_of_one_write_upserts_or_deletes_it(storage: Storage) -> None:
    # A batch writer's batch is often a single write: an engine may take a shorter path for it.
    await storage.kv.set_many([(HOST, "erin", "pep", "k", {"first": 1})])
    await storage.kv.set_many([(HOST, "erin", "pep", "k", {"second": 2})])
    assert await storage.kv.all(HOST, "erin", "pep") == {"k": {"second": 2}}
    await storage.kv.set_many([(HOST, "erin", "pep", "k", None)])
    assert await storage.kv.all(HOST, "erin", "pep") == {}
    with pytest.raises(ValueError):
        await storage.kv.set_many([(HOST, "erin", "pep", "bad", math.nan)])
    assert await storage.kv.all(HOST, "erin", "pep") == {}


# What JSON (or the database's text) cannot hold, and the error it is refused with.
REFUSED: list[tuple[Any, type[Exception]]] = [
    (math.nan, ValueError),
    ({"x": [math.inf]}, ValueError),
    ("lone surrogate \ud800", ValueError),
    ({"\udfff": 1}, ValueError),
    ({1, 2}, TypeError),
    (b"bytes", TypeError),
]


async def test_kv_refuses_what_json_cannot_hold(storage: Storage) -> None:
    # The same refusals on every backend, before anything is written.
    for value, error in REFUSED:
        with pytest.raises(error):
            await storage.kv.set(HOST, "alice", "s", "k", value)
    assert await storage.kv.all(HOST, "alice", "s") == {}
