"""The in-memory roster of online accounts: exact write-through, no stale reads kept."""

from __future__ import annotations

import asyncio

from storage import RosterItem
from xmppd.jid import parse_jid
from xmppd.rostercache import CachedRosters
from xmppd.session import Session
from xmppd.sessions import LocalSessions, SessionRegistry


class FakeRosterStore:
    """A roster store in a dict that counts reads; `gate` can hold a read half-way."""

    def __init__(self) -> None:
        self.rosters: dict[tuple[str, str], dict[str, RosterItem]] = {}
        self.versions: dict[tuple[str, str], int] = {}
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.snapshot_taken = asyncio.Event()

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        self.reads += 1
        snapshot = list(self.rosters.get((host, username), {}).values())
        version = self.versions.get((host, username), 0)
        self.snapshot_taken.set()
        if self.gate is not None:
            await self.gate.wait()
        return version, snapshot

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        self.reads += 1
        return self.rosters.get((host, username), {}).get(contact)

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        self.rosters.setdefault((host, username), {})[item.jid] = item
        self.versions[(host, username)] = self.versions.get((host, username), 0) + 1
        return self.versions[(host, username)]

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        if self.rosters.get((host, username), {}).pop(contact, None) is None:
            return None
        self.versions[(host, username)] += 1
        return self.versions[(host, username)]


class NullOutput:
    def write(self, data: bytes) -> None: ...

    def close(self, data: bytes = b"") -> None: ...


def online(sessions: SessionRegistry, jid: str) -> None:
    sessions.bind(Session(None, parse_jid(jid), NullOutput()))  # type: ignore[arg-type]


async def test_online_roster_is_read_once_and_written_through() -> None:
    store, sessions = FakeRosterStore(), LocalSessions()
    await store.put("localhost", "alice", RosterItem("bob@localhost"))
    cache = CachedRosters(store, sessions)
    online(sessions, "alice@localhost/phone")
    assert (await cache.items("localhost", "alice"))[0] == 1
    reads = store.reads
    await cache.put("localhost", "alice", RosterItem("carol@localhost", subscription="to"))
    version, items = await cache.items("localhost", "alice")
    assert version == 2 and [i.jid for i in items] == ["bob@localhost", "carol@localhost"]
    carol = await cache.item("localhost", "alice", "carol@localhost")
    assert carol == RosterItem("carol@localhost", subscription="to")
    assert await cache.remove("localhost", "alice", "bob@localhost") == 3
    assert [i.jid for i in (await cache.items("localhost", "alice"))[1]] == ["carol@localhost"]
    assert store.reads == reads  # all from memory


async def test_offline_accounts_are_not_cached() -> None:
    store, sessions = FakeRosterStore(), LocalSessions()
    cache = CachedRosters(store, sessions)
    await cache.items("localhost", "alice")
    await cache.items("localhost", "alice")
    assert store.reads == 2 and len(cache) == 0


async def test_a_read_that_raced_a_write_is_not_kept() -> None:
    store, sessions = FakeRosterStore(), LocalSessions()
    online(sessions, "alice@localhost/phone")
    cache = CachedRosters(store, sessions)
    store.gate = asyncio.Event()
    slow_read = asyncio.create_task(cache.items("localhost", "alice"))
    await store.snapshot_taken.wait()
    await cache.put("localhost", "alice", RosterItem("bob@localhost"))
    store.gate.set()
    assert (await slow_read)[1] == []  # the stale snapshot is returned to its reader...
    store.gate = None
    assert [i.jid for i in (await cache.items("localhost", "alice"))[1]] == ["bob@localhost"]  # ...never kept


async def test_forget_drops_the_copy() -> None:
    store, sessions = FakeRosterStore(), LocalSessions()
    online(sessions, "alice@localhost/phone")
    cache = CachedRosters(store, sessions)
    await cache.items("localhost", "alice")
    cache.forget("localhost", "alice")
    assert len(cache) == 0
