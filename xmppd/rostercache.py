"""Rosters of online users kept in memory, in front of the roster store.

Presence needs a roster at every login, broadcast and probe (RFC 6121 §4): for an account with
a bound resource the roster is read from the database once and then served from memory. Every
roster write of this server goes through here (write-through), so the copy stays exact; it is
dropped when the account's last resource goes.

A load that raced with a write is not kept (the write's generation tells), so a slow read can
never put an older roster into the cache. Writes made by other processes (the CLI deleting an
account, later other cluster nodes) are not seen while the account stays online: the cluster
will have to invalidate entries it changes elsewhere.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import defaultdict

from storage import RosterItem, RosterStore
from xmppd.jid import JID, parse_jid
from xmppd.sessions import SessionRegistry

Key = tuple[str, str]  # (host, username)


class CachedRosters:
    """A RosterStore; `forget()` when an account's last session ends."""

    def __init__(self, store: RosterStore, sessions: SessionRegistry) -> None:
        self.store = store
        self.sessions = sessions
        self._rosters: dict[Key, tuple[int, dict[str, RosterItem]]] = {}
        self._generation: defaultdict[Key, int] = defaultdict(int)
        self._locks: weakref.WeakValueDictionary[JID, asyncio.Lock] = weakref.WeakValueDictionary()

    def lock(self, user: JID) -> asyncio.Lock:
        """The lock that serialises read-modify-write changes of `user`'s roster (concurrent
        senders would otherwise lose each other's updates between the read and the write); held
        only around that, never while routing, so a reply coming back cannot deadlock."""
        lock = self._locks.get(user)
        if lock is None:
            lock = self._locks[user] = asyncio.Lock()
        return lock

    async def items(self, host: str, username: str) -> tuple[int, list[RosterItem]]:
        key = (host, username)
        cached = self._rosters.get(key)
        if cached is not None:
            return cached[0], list(cached[1].values())
        generation = self._generation[key]
        version, items = await self.store.items(host, username)
        if self._generation[key] == generation and self.sessions.resources(parse_jid(f"{username}@{host}")):
            self._rosters[key] = (version, {item.jid: item for item in items})
        return version, items

    async def item(self, host: str, username: str, contact: str) -> RosterItem | None:
        cached = self._rosters.get((host, username))
        if cached is not None:
            return cached[1].get(contact)
        return await self.store.item(host, username, contact)

    async def put(self, host: str, username: str, item: RosterItem) -> int:
        key = (host, username)
        self._generation[key] += 1
        version = await self.store.put(host, username, item)
        cached = self._rosters.get(key)
        if cached is not None:
            cached[1][item.jid] = item
            self._rosters[key] = (version, cached[1])
        return version

    async def remove(self, host: str, username: str, contact: str) -> int | None:
        key = (host, username)
        self._generation[key] += 1
        version = await self.store.remove(host, username, contact)
        cached = self._rosters.get(key)
        if cached is not None and version is not None:
            cached[1].pop(contact, None)
            self._rosters[key] = (version, cached[1])
        return version

    def forget(self, host: str, username: str) -> None:
        self._rosters.pop((host, username), None)
        self._generation.pop((host, username), None)

    def __len__(self) -> int:
        return len(self._rosters)

