"""XEP-0160: Best Practices for Handling Offline Messages (and RFC 6121 §8.5.2.2.1), with
XEP-0203 delay stamps and the storage hints of XEP-0334.

Theory of operation
-------------------
Storing. Default delivery (message.py) fires `message/offline` when an existing account has no
resource to take a chat or normal message. `decide` (no I/O) says what happens to it:

- stored: chat and normal messages (XEP-0160 §3), also receipts and chat markers without a body,
  so that "delivered" and "read" reach a sender whose contact went offline;
- dropped without a word: standalone chat states (XEP-0160 §3, XEP-0085 §5.8); a typing
  notification is stale by the time anyone could read it, and an error for it would only
  show up as a failed message in the sender's client;
- refused, so the sender gets service-unavailable as RFC 6121 §8.5.2.2.1 says for messages
  that are not stored: messages with the no-store hint (XEP-0334 §4.2). The no-permanent-store
  hint asks only that no permanent archive keep the message; offline storage is the temporary
  kind XEP-0334 §3.3 allows, so such messages are stored. The store hint (§4.4) stores what
  would otherwise be dropped (a chat state someone wants kept).

The stored copy gets `<delay from=host stamp=...>Offline Storage</delay>` (XEP-0160 §2,
XEP-0203). A full queue (`max_messages`) refuses with service-unavailable (XEP-0160 §2 step 3).

Delivering. When a resource becomes a target for messages to its account, i.e. it sends
initial presence with a non-negative priority, or raises a negative priority to a non-negative
one (XEP-0160 §2 step 5: "next sends non-negative available presence"), `available-presence`
from presence.py starts a flush to that resource only. The flush reads the queue oldest first
by id, writes each message to the session, then deletes what it wrote: a crash in between
delivers a message twice rather than losing it. Deleting goes through the `offline-handed`
hook: stream management (XEP-0198) will claim it and delete only once the client has
acknowledged the messages; unclaimed, they are deleted at once.

Empty queues. Most logins find no offline message. An account whose queue a flush found empty is
remembered (`EmptyQueues`, the `cache_size` accounts seen most recently) until a message is
stored for it, and its next login reads nothing. A read that may have overlapped a store does
not count as finding the queue empty. Only this module writes the queue, so the memory stays
exact; a cluster whose nodes store offline messages for each other must clear it on every node
(or turn it off) when one of them stores.

Order. While a flush runs, a new message that would go to that same resource is appended to the
queue instead of overtaking the older ones (priority 0 on `message/bare|full`, below blocking,
the archive and carbons, above default delivery). The flush ends only when the queue is empty
and no such append is still being written.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from lxml import etree

from storage.shapes import QUEUE
from xmppd import events
from xmppd.elements import element
from xmppd.events import AvailableEvent, HandedEvent
from xmppd.jid import JID
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.stanza import CLIENT_NS

if TYPE_CHECKING:
    from xmppd.session import Session

# Each spec is declared by one module only (the DOAP lists it once): XEP-0334's no-copy is
# honoured in carbons.py, no-permanent-store and no-store by the archive too; chat states are
# copied by carbons.py as well.
PROTOCOLS = [
    ("XEP-0160", "1.0.1"),
    ("XEP-0203", "2.0", "complete", "delay stamps on messages delivered from offline storage"),
    ("XEP-0334", "1.0.0", "complete", "offline storage, carbons and the archive honour the hints"),
    ("XEP-0085", "2.1", "complete", "chat states pass through, are copied, never stored offline alone"),
]
FEATURE = "msgoffline"
DELAY_NS = "urn:xmpp:delay"
HINTS_NS = "urn:xmpp:hints"
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
SID_NS = "urn:xmpp:sid:0"
CARBONS_NS = "urn:xmpp:carbons:2"
OPTIONS = {
    "max_messages": Option(
        1000, "messages kept for one account; over it, senders get service-unavailable", minimum=1
    ),
    "cache_size": Option(
        10000, "accounts remembered to have no offline message, so that their logins read nothing", minimum=1
    ),
}
PRIORITY = 0  # below blocking (100), the archive (50) and carbons (10); above default delivery (-1)
BATCH = 100  # messages read from storage at a time while delivering

Decision = Literal["store", "drop", "refuse"]

# What a standalone chat state may carry besides the state itself (XEP-0085 §5.6: a <thread/>),
# plus what servers and hints add on the way.
_ENVELOPE = frozenset(
    (
        f"{{{CLIENT_NS}}}thread",
        f"{{{SID_NS}}}origin-id",
        f"{{{SID_NS}}}stanza-id",
        f"{{{DELAY_NS}}}delay",
        f"{{{CARBONS_NS}}}private",
    )
)


def decide(stanza: Stanza) -> Decision:
    """What becomes of a message for an account with no available resource (see the docstring)."""
    kind = stanza.type or "normal"
    if kind not in ("chat", "normal"):
        return "refuse"  # never stored (XEP-0160 §3); message.py does not even ask
    msg = stanza.element
    if msg.find(f"{{{HINTS_NS}}}no-store") is not None:
        return "refuse"
    if msg.find(f"{{{HINTS_NS}}}store") is not None:
        return "store"
    return "drop" if standalone_chat_state(msg) else "store"


def standalone_chat_state(msg: etree._Element) -> bool:
    """XEP-0085 §5.6: a message carrying a chat state and nothing else of substance."""
    state = False
    for child in msg:
        if not isinstance(child.tag, str):
            continue
        if child.tag.startswith(f"{{{CHATSTATES_NS}}}"):
            state = True
        elif child.tag not in _ENVELOPE and not child.tag.startswith(f"{{{HINTS_NS}}}"):
            return False
    return state


def stamped(msg: etree._Element, host: str, now: datetime) -> etree._Element:
    """A copy of `msg` with the XEP-0203 delay that says where and since when it waited. One that
    waited here already (stream management hands on what a lost session never acknowledged,
    stamped when it first came) keeps that stamp."""
    copied = copy.deepcopy(msg)
    if any(delay.get("from") == host for delay in copied.iterchildren(f"{{{DELAY_NS}}}delay")):
        return copied
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    delay = element(f"{{{DELAY_NS}}}delay", {"from": host, "stamp": stamp}, parent=copied)
    delay.text = "Offline Storage"
    return copied


class EmptyQueues:
    """The accounts whose offline queue is known to be empty (see the module docstring)."""

    def __init__(self, capacity: int) -> None:
        self._empty: LRU[JID, bool] = LRU(capacity)
        self._started = 0  # stores begun, ever
        self._under_way = 0  # stores not finished yet

    def known(self, account: JID) -> bool:
        return self._empty.get(account) is not None

    @contextmanager
    def storing(self, account: JID) -> Iterator[None]:
        """Around every write to the queue."""
        self._empty.pop(account)
        self._started += 1
        self._under_way += 1
        try:
            yield
        finally:
            self._under_way -= 1

    def before_read(self) -> int | None:
        """What `found_empty` needs of the moment a read of a queue begins: None when a store is
        under way, which the read might not see."""
        return None if self._under_way else self._started

    def found_empty(self, account: JID, read_began: int | None) -> None:
        """A read found the account's queue empty: remembered, unless a store began meanwhile."""
        if read_began is not None and read_began == self._started:
            self._empty.put(account, True)


@dataclass(slots=True)
class _Flush:
    """A delivery under way to one resource, and the appends to the queue it must wait for."""

    session: Session
    appending: int = 0
    appended: asyncio.Event = field(default_factory=asyncio.Event)


def setup(mod: ModuleAPI) -> None:
    offline = Offline(mod)
    mod.add_feature(FEATURE)
    mod.on(events.MESSAGE_OFFLINE, offline.store)
    mod.on("message/bare", offline.keep_order, PRIORITY)
    mod.on("message/full", offline.keep_order, PRIORITY)
    mod.on(events.AVAILABLE_PRESENCE, offline.available)


class Offline:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.store_ = mod.open_store("offline", QUEUE)
        self.sessions = mod.sessions
        self.limit: int = mod.options["max_messages"]
        self.flushing: dict[JID, _Flush] = {}
        self.empty = EmptyQueues(mod.options["cache_size"])

    # -- storing ------------------------------------------------------------------------------

    async def store(self, ev: StanzaEvent) -> bool:
        decision = decide(ev.stanza)
        if decision == "drop":
            return True
        if decision == "refuse":
            return False  # message.py answers service-unavailable
        to = ev.stanza.to
        assert to is not None and to.local is not None
        text = etree.tostring(stamped(ev.stanza.element, ev.host.name, self.mod.now()), encoding="unicode")
        with self.empty.storing(to.bare):
            pushed = await self.store_.push(to.domain, to.local, text, self.limit)
        if pushed is None:
            # XEP-0160 §2 step 3: the queue is full.
            return ev.error("service-unavailable", "the recipient's offline message queue is full")
        return True

    async def keep_order(self, ev: StanzaEvent) -> bool:
        """A message for a resource that is still getting its offline messages waits behind them."""
        stanza = ev.stanza
        assert stanza.to is not None
        flush = self.flushing.get(stanza.to.bare)
        if flush is None or decide(stanza) != "store":
            return False
        if ev.recipients != [flush.session]:
            return False
        bare = stanza.to.bare
        assert bare.local is not None
        # Appended without the limit: the account is online, this is only a detour.
        text = etree.tostring(stanza.element, encoding="unicode")
        flush.appending += 1
        try:
            with self.empty.storing(bare):
                await self.store_.push(bare.domain, bare.local, text, None)
        finally:
            flush.appending -= 1
            if flush.appending == 0:
                flush.appended.set()
        return True

    # -- delivering ---------------------------------------------------------------------------

    async def available(self, ev: AvailableEvent) -> None:
        session = ev.session
        was_reachable = not ev.initial and ev.previous_priority >= 0
        if session.priority >= 0 and not was_reachable:
            await self.flush(session)

    async def flush(self, session: Session) -> None:
        """XEP-0160 §2 step 5: the stored messages, oldest first, to `session` only."""
        bare = session.bare
        if bare in self.flushing or self.empty.known(bare):
            return  # another resource of the account is getting them, or there are none
        assert bare.local is not None
        host, user = bare.domain, bare.local
        flush = self.flushing[bare] = _Flush(session)
        cursor = 0
        try:
            while self._reachable(session):
                read_began = self.empty.before_read()
                batch = await self.store_.fetch(host, user, after=cursor, limit=BATCH)
                if not batch:
                    if flush.appending == 0:
                        if cursor == 0:  # (after a batch, its deletion may wait for acks: XEP-0198)
                            self.empty.found_empty(bare, read_began)
                        return
                    flush.appended.clear()
                    await flush.appended.wait()
                    continue
                if not self._reachable(session):
                    break
                for message in batch:
                    session.send_bytes(message.stanza.encode())  # serialised by us when stored
                cursor = batch[-1].id
                await self._handed(session, host, user, [message.id for message in batch])
        finally:
            del self.flushing[bare]
        # The resource went away mid-way: the rest goes to another one, if any is there.
        for other in self.sessions.top_resources(bare):
            await self.flush(other)
            break

    @staticmethod
    def _reachable(session: Session) -> bool:
        return not session.closed and session.available and session.priority >= 0

    async def _handed(self, session: Session, host: str, user: str, ids: list[int]) -> None:
        async def delete() -> int:
            return await self.store_.delete(host, user, ids)

        if not await self.mod.fire(events.OFFLINE_HANDED, HandedEvent(session, ids, delete)):
            await delete()
