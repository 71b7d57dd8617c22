"""Stores by shape (`Storage.open_store`, storage/shapes.py): every test runs against every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from storage import ARCHIVE, KEY_VALUE, LATEST_SCHEMA, MAP, QUEUE, SchemaError, Shape, Storage
from storage.schema import load_migrations
from tests.conftest import StorageFactory
from tests.storage.test_contract import REFUSED, VALUES

HOST = "example.org"
OTHER_HOST = "other.example"
UNICODE_HOST = "пример.рф"
ROOMS = "muc_rooms"

# --- opening ---------------------------------------------------------------------------------------


async def test_open_store_is_cheap_and_stable(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    assert prefs.name == "prefs"
    assert storage.open_store("prefs", KEY_VALUE) is prefs
    rooms = storage.open_store(ROOMS, MAP)
    assert rooms.name == ROOMS
    assert storage.open_store(ROOMS, MAP) is rooms
    # One name in two shapes is two different stores.
    assert storage.open_store("prefs", MAP) is not prefs


async def test_two_handles_on_one_name_see_the_same_documents(storage: Storage) -> None:
    await storage.open_store("prefs", KEY_VALUE).set(HOST, "alice", "lang", "de")
    await storage.open_store(ROOMS, MAP).set(HOST, "lobby", {"persistent": True})
    assert await storage.open_store("prefs", KEY_VALUE).get(HOST, "alice", "lang") == "de"
    assert await storage.open_store(ROOMS, MAP).get(HOST, "lobby") == {"persistent": True}


async def test_archive_and_queue_are_the_existing_stores(storage: Storage) -> None:
    assert storage.open_store("archive", ARCHIVE) is storage.archive
    queue = storage.open_store("offline", QUEUE)
    assert queue is storage.offline
    pushed = await queue.push(HOST, "alice", "<message/>", None)
    assert [m.id for m in await storage.offline.fetch(HOST, "alice")] == [pushed]


async def test_single_table_shapes_refuse_other_names(storage: Storage) -> None:
    with pytest.raises(ValueError, match=r"no ARCHIVE store named 'muc'.*'archive'.*no namespace column"):
        storage.open_store("muc", ARCHIVE)
    with pytest.raises(ValueError, match=r"no QUEUE store named 'queue'.*'offline'.*no namespace column"):
        storage.open_store("queue", QUEUE)
    with pytest.raises(ValueError, match="'archive'"):
        storage.open_store("offline", ARCHIVE)
    with pytest.raises(ValueError, match="'offline'"):
        storage.open_store("archive", QUEUE)


@pytest.mark.parametrize("shape", ["map", "key-value", "blob", None, 1])
async def test_unknown_shape_is_refused(storage: Storage, shape: Any) -> None:
    with pytest.raises(ValueError, match=r"unknown store shape .*KEY_VALUE, MAP, ARCHIVE, QUEUE"):
        storage.open_store("prefs", shape)


@pytest.mark.parametrize("shape", list(Shape))
async def test_empty_or_non_string_name_is_refused(storage: Storage, shape: Shape) -> None:
    for name in ("", None, 3):
        with pytest.raises(ValueError, match="non-empty string"):
            storage.open_store(name, shape)  # type: ignore[arg-type]


# --- KEY_VALUE ------------------------------------------------------------------------------------


async def test_key_value_set_get_overwrite_delete(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    assert await prefs.get(HOST, "alice", "x") is None
    for value in VALUES:
        await prefs.set(HOST, "alice", "x", value)
        got = await prefs.get(HOST, "alice", "x")
        assert got == value and type(got) is type(value)
    await prefs.set(HOST, "alice", "x", None)
    assert await prefs.get(HOST, "alice", "x") is None
    assert await prefs.all(HOST, "alice") == {}
    await prefs.set(HOST, "alice", "x", None)  # deleting a missing key is fine


async def test_key_value_is_isolated_by_name_user_and_host(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    vcard = storage.open_store("vcard", KEY_VALUE)
    await prefs.set(HOST, "alice", "k", "alice's prefs")
    await vcard.set(HOST, "alice", "k", "alice's vcard")
    await prefs.set(HOST, "bob", "k", "bob's prefs")
    await prefs.set(OTHER_HOST, "alice", "k", "the other alice's prefs")

    assert await prefs.all(HOST, "alice") == {"k": "alice's prefs"}
    assert await vcard.all(HOST, "alice") == {"k": "alice's vcard"}
    assert await prefs.get(HOST, "bob", "k") == "bob's prefs"
    assert await prefs.get(OTHER_HOST, "alice", "k") == "the other alice's prefs"
    assert await vcard.all(HOST, "bob") == {}

    await prefs.set(HOST, "alice", "k", None)  # deletes in one namespace of one account only
    assert await prefs.get(HOST, "alice", "k") is None
    assert await vcard.get(HOST, "alice", "k") == "alice's vcard"
    assert await prefs.get(HOST, "bob", "k") == "bob's prefs"
    assert await prefs.get(OTHER_HOST, "alice", "k") == "the other alice's prefs"


async def test_key_value_name_is_the_kv_namespace(storage: Storage) -> None:
    """A module still on storage.kv and one on open_store see the same documents (the way over)."""
    blocking = storage.open_store("blocking", KEY_VALUE)
    await storage.kv.set(HOST, "alice", "blocking", "list", ["spam@example.com"])
    assert await blocking.get(HOST, "alice", "list") == ["spam@example.com"]
    await blocking.set(HOST, "alice", "list", ["spam@example.com", "ads@example.net"])
    assert await storage.kv.all(HOST, "alice", "blocking") == {"list": ["spam@example.com", "ads@example.net"]}


async def test_key_value_all_in_code_point_order(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    keys = ["zeta", "Zeta", "émile", "alpha", "😀", "日本", "a"]
    for index, key in enumerate(keys):
        await prefs.set(UNICODE_HOST, "jürgen", key, index)
    got = await prefs.all(UNICODE_HOST, "jürgen")
    assert list(got) == sorted(keys)
    assert got == {key: index for index, key in enumerate(keys)}


async def test_key_value_refuses_what_json_cannot_hold(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    await prefs.set(HOST, "alice", "k", "kept")
    for value, error in REFUSED:
        with pytest.raises(error):
            await prefs.set(HOST, "alice", "k", value)
        with pytest.raises(error):
            await prefs.set(HOST, "alice", "new", value)
    assert await prefs.all(HOST, "alice") == {"k": "kept"}  # nothing written, nothing replaced


# --- MAP ------------------------------------------------------------------------------------------


async def test_map_set_get_overwrite_delete(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    assert await rooms.get(HOST, "lobby") is None
    for value in VALUES:
        await rooms.set(HOST, "lobby", value)
        got = await rooms.get(HOST, "lobby")
        assert got == value and type(got) is type(value)
    await rooms.set(HOST, "lobby", None)
    assert await rooms.get(HOST, "lobby") is None
    assert await rooms.all(HOST) == {}
    assert await rooms.keys(HOST) == []
    await rooms.set(HOST, "lobby", None)  # deleting a missing key is fine


async def test_map_all_and_keys(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    keys = ["zeta", "Zeta", "émile", "alpha", "😀", "日本", "a"]
    for index, key in enumerate(keys):
        await rooms.set(UNICODE_HOST, key, {"n": index})
    assert await rooms.keys(UNICODE_HOST) == sorted(keys)
    got = await rooms.all(UNICODE_HOST)
    assert list(got) == sorted(keys)
    assert got == {key: {"n": index} for index, key in enumerate(keys)}


async def test_map_is_isolated_by_name_and_host(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    caps = storage.open_store("caps", MAP)
    await rooms.set(HOST, "k", "rooms here")
    await caps.set(HOST, "k", "caps here")
    await rooms.set(OTHER_HOST, "k", "rooms there")

    assert await rooms.all(HOST) == {"k": "rooms here"}
    assert await caps.all(HOST) == {"k": "caps here"}
    assert await rooms.all(OTHER_HOST) == {"k": "rooms there"}
    assert await caps.keys(OTHER_HOST) == []

    await rooms.set(HOST, "k", None)
    assert await rooms.get(HOST, "k") is None
    assert await caps.get(HOST, "k") == "caps here"
    assert await rooms.get(OTHER_HOST, "k") == "rooms there"


async def test_map_and_key_value_of_one_name_are_apart(storage: Storage) -> None:
    await storage.open_store("shared", MAP).set(HOST, "k", "per host")
    await storage.open_store("shared", KEY_VALUE).set(HOST, "alice", "k", "per account")
    assert await storage.open_store("shared", MAP).all(HOST) == {"k": "per host"}
    assert await storage.open_store("shared", KEY_VALUE).all(HOST, "alice") == {"k": "per account"}


async def test_map_values_come_back_as_json(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    await rooms.set(HOST, "k", {"tuple": (1, 2), 3: "int key"})
    assert await rooms.get(HOST, "k") == {"tuple": [1, 2], "3": "int key"}
    value = {"z": 1, "a": 2, "m": {"y": 1, "b": 2}}  # object keys keep their order
    await rooms.set(HOST, "k", value)
    got = await rooms.get(HOST, "k")
    assert got is not None
    assert list(got) == ["z", "a", "m"] and list(got["m"]) == ["y", "b"]


async def test_map_refuses_what_json_cannot_hold(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    await rooms.set(HOST, "k", "kept")
    for value, error in REFUSED:
        with pytest.raises(error):
            await rooms.set(HOST, "k", value)
        with pytest.raises(error):
            await rooms.set(HOST, "new", value)
    assert await rooms.all(HOST) == {"k": "kept"}


async def test_map_documents_live_in_the_maps_table(storage: Storage, storage_factory: StorageFactory) -> None:
    """Behind the interface: migration 0004's table holds them, keyed by host, not by any account."""
    await storage.open_store(ROOMS, MAP).set(HOST, "lobby", {"persistent": True})
    await storage.open_store("prefs", KEY_VALUE).set(HOST, "alice", "lobby", 1)
    assert await storage_factory.sql("SELECT host, store, key FROM maps") == [(HOST, ROOMS, "lobby")]
    assert await storage_factory.sql("SELECT host, username, store, key FROM kv") == [
        (HOST, "alice", "prefs", "lobby")
    ]


async def test_concurrent_map_writes_all_land(storage: Storage) -> None:
    rooms = storage.open_store(ROOMS, MAP)
    await asyncio.gather(*(rooms.set(HOST, f"room{n:02}", {"n": n}) for n in range(20)))
    assert await rooms.all(HOST) == {f"room{n:02}": {"n": n} for n in range(20)}


# --- with accounts and over time ------------------------------------------------------------------


async def test_account_deletion_takes_key_value_documents_not_map_documents(storage: Storage) -> None:
    prefs = storage.open_store("prefs", KEY_VALUE)
    rooms = storage.open_store(ROOMS, MAP)
    for user in ("alice", "bob"):
        await storage.accounts.create(HOST, user, [])
        await prefs.set(HOST, user, "lang", user)
    # A map key that happens to be the user's name is still the host's document.
    await rooms.set(HOST, "alice", {"owner": "alice@example.org"})
    await rooms.set(HOST, "lobby", {"owner": "alice@example.org"})

    assert await storage.accounts.delete(HOST, "alice")
    assert await prefs.all(HOST, "alice") == {}
    assert await prefs.get(HOST, "bob", "lang") == "bob"
    assert await rooms.all(HOST) == {
        "alice": {"owner": "alice@example.org"},
        "lobby": {"owner": "alice@example.org"},
    }


async def test_documents_survive_close_and_reopen(storage: Storage, storage_factory: StorageFactory) -> None:
    await storage.open_store("prefs", KEY_VALUE).set(UNICODE_HOST, "jürgen", "lang", {"value": "de"})
    await storage.open_store(ROOMS, MAP).set(UNICODE_HOST, "комната", {"persistent": True})
    await storage.close()

    reopened = await storage_factory.open()
    await reopened.check_schema()
    assert await reopened.open_store("prefs", KEY_VALUE).get(UNICODE_HOST, "jürgen", "lang") == {"value": "de"}
    assert await reopened.open_store(ROOMS, MAP).all(UNICODE_HOST) == {"комната": {"persistent": True}}


async def test_upgrade_to_the_maps_schema_keeps_data(storage_factory: StorageFactory) -> None:
    engine = "sqlite" if storage_factory.backend == "sqlite" else "postgres"
    migrations = load_migrations(engine)
    maps_version = next(m.version for m in migrations if m.name == "maps")
    old = await storage_factory.open(migrations=migrations[: maps_version - 1])
    assert await old.migrate() == list(range(1, maps_version))
    await old.open_store("prefs", KEY_VALUE).set(HOST, "alice", "lang", "de")
    await old.close()

    new = await storage_factory.open()
    with pytest.raises(SchemaError, match=f"schema version {maps_version - 1}, this xmppd needs {LATEST_SCHEMA}"):
        await new.check_schema()
    assert await new.migrate() == list(range(maps_version, LATEST_SCHEMA + 1))
    await new.check_schema()
    assert await new.open_store("prefs", KEY_VALUE).get(HOST, "alice", "lang") == "de"
    rooms = new.open_store(ROOMS, MAP)
    await rooms.set(HOST, "lobby", {"persistent": True})
    assert await rooms.get(HOST, "lobby") == {"persistent": True}
