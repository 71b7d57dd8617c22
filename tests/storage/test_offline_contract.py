"""The OfflineStore contract (XEP-0160 queues): every test runs against every backend."""

from __future__ import annotations

import asyncio

from storage import Storage

HOST = "example.org"
MESSAGE = "<message xmlns='jabber:client' to='alice@example.org'><body>{}</body></message>"


async def push_all(storage: Storage, user: str, bodies: list[str], limit: int | None = None) -> list[int | None]:
    return [await storage.offline.push(HOST, user, MESSAGE.format(body), limit) for body in bodies]


async def test_an_empty_queue(storage: Storage) -> None:
    assert await storage.offline.fetch(HOST, "alice") == []
    assert await storage.offline.count(HOST, "alice") == 0
    assert await storage.offline.delete(HOST, "alice", []) == 0
    assert await storage.offline.delete(HOST, "alice", [1, 2]) == 0


async def test_messages_come_back_in_arrival_order_with_growing_ids(storage: Storage) -> None:
    ids = await push_all(storage, "alice", ["one", "two", "three"])
    assert all(id_ is not None for id_ in ids)
    assert ids == sorted(ids)  # type: ignore[type-var]
    stored = await storage.offline.fetch(HOST, "alice")
    assert [m.id for m in stored] == ids
    assert [m.stanza for m in stored] == [MESSAGE.format(b) for b in ("one", "two", "three")]
    assert await storage.offline.count(HOST, "alice") == 3


async def test_fetch_pages_by_id(storage: Storage) -> None:
    ids = await push_all(storage, "alice", [str(n) for n in range(5)])
    first = await storage.offline.fetch(HOST, "alice", limit=2)
    assert [m.id for m in first] == ids[:2]
    rest = await storage.offline.fetch(HOST, "alice", after=first[-1].id, limit=10)
    assert [m.id for m in rest] == ids[2:]
    assert await storage.offline.fetch(HOST, "alice", after=rest[-1].id) == []


async def test_queues_are_per_user_and_host(storage: Storage) -> None:
    await storage.offline.push(HOST, "alice", MESSAGE.format("for alice"), None)
    await storage.offline.push(HOST, "bob", MESSAGE.format("for bob"), None)
    await storage.offline.push("other.example", "alice", MESSAGE.format("other alice"), None)
    assert [m.stanza for m in await storage.offline.fetch(HOST, "alice")] == [MESSAGE.format("for alice")]
    assert await storage.offline.count("other.example", "alice") == 1
    # Deleting another user's ids deletes nothing.
    bobs = await storage.offline.fetch(HOST, "bob")
    assert await storage.offline.delete(HOST, "alice", [bobs[0].id]) == 0
    assert await storage.offline.count(HOST, "bob") == 1


async def test_the_limit_refuses_and_writes_nothing(storage: Storage) -> None:
    ids = await push_all(storage, "alice", ["1", "2", "3", "4"], limit=3)
    assert ids[3] is None and None not in ids[:3]
    assert await storage.offline.count(HOST, "alice") == 3
    # No limit always stores; a freed place can be taken again.
    assert await storage.offline.push(HOST, "alice", MESSAGE.format("5"), None) is not None
    assert await storage.offline.push(HOST, "alice", MESSAGE.format("6"), 4) is None
    first = (await storage.offline.fetch(HOST, "alice", limit=1))[0]
    assert await storage.offline.delete(HOST, "alice", [first.id]) == 1
    assert await storage.offline.push(HOST, "alice", MESSAGE.format("7"), 4) is not None


async def test_concurrent_pushes_respect_the_limit_and_keep_ids_in_commit_order(storage: Storage) -> None:
    results = await asyncio.gather(
        *(storage.offline.push(HOST, "alice", MESSAGE.format(n), 5) for n in range(12))
    )
    assert sum(1 for r in results if r is not None) == 5
    assert await storage.offline.count(HOST, "alice") == 5
    stored = await storage.offline.fetch(HOST, "alice")
    assert [m.id for m in stored] == sorted(r for r in results if r is not None)


async def test_delete_by_ids(storage: Storage) -> None:
    ids = await push_all(storage, "alice", ["a", "b", "c", "d"])
    assert await storage.offline.delete(HOST, "alice", [ids[1], ids[3], ids[3]]) == 2  # type: ignore[list-item]
    assert [m.stanza for m in await storage.offline.fetch(HOST, "alice")] == [
        MESSAGE.format("a"),
        MESSAGE.format("c"),
    ]
    assert await storage.offline.delete(HOST, "alice", [ids[1]]) == 0  # type: ignore[list-item]


async def test_ids_are_never_reused(storage: Storage) -> None:
    (first,) = await push_all(storage, "alice", ["a"])
    assert first is not None
    assert await storage.offline.delete(HOST, "alice", [first]) == 1
    (second,) = await push_all(storage, "alice", ["b"])
    assert second is not None and second > first


async def test_many_ids_delete_at_once(storage: Storage) -> None:
    ids = await push_all(storage, "alice", [str(n) for n in range(600)])
    assert await storage.offline.delete(HOST, "alice", [i for i in ids if i is not None]) == 600
    assert await storage.offline.count(HOST, "alice") == 0


async def test_unicode_text_round_trips(storage: Storage) -> None:
    text = "<message xmlns='jabber:client'><body>Grüße 用户 😀 &amp; &lt;tag&gt;</body></message>"
    await storage.offline.push("пример.рф", "jürgen", text, None)
    (stored,) = await storage.offline.fetch("пример.рф", "jürgen")
    assert stored.stanza == text


async def test_deleting_the_account_deletes_its_queue(storage: Storage) -> None:
    assert await storage.accounts.create(HOST, "alice", [])
    await push_all(storage, "alice", ["a", "b"])
    await push_all(storage, "bob", ["c"])
    assert await storage.accounts.delete(HOST, "alice")
    assert await storage.offline.count(HOST, "alice") == 0
    assert await storage.offline.count(HOST, "bob") == 1
