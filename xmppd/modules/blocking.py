"""XEP-0191: Blocking Command.

The list. A user's blocked JIDs live in a key-value store ("blocking", key "list": the JIDs in
the order they were blocked) and in memory: `Blocklists` loads an account's list once and keeps
it, updated on every change, for the accounts in use (least recently used ones are dropped past
`cache_size`), so checking a stanza costs no database round trip. Retrieving the list (§3.2)
marks the resource as interested: block and unblock pushes (§3.3, §3.4, §3.5) go to those.

Enforcement (§3.3), at priority 100, before anything else looks at the stanza:

- outbound, on the sender's host (`pre-message|presence|iq/...`): a stanza from a user to a JID
  the user blocked is not routed; the sender gets not-acceptable with
  `<blocked xmlns='urn:xmpp:blocking:errors'/>` (errors and iq results are dropped: nothing
  answers them, RFC 6120 §8.3.1). Presence the server sends on the user's behalf (broadcast,
  probes, §3.3's "unavailable" aside) never passes the sender's hooks, so presence arriving at
  a local recipient is also checked against the *sender's* list and dropped.
- inbound, on the recipient's host: from a blocked JID, messages get service-unavailable,
  presence of any type is dropped without an answer, iq get/set gets service-unavailable
  (`iq-get|set/<target>` fires before any payload handler), other iqs are dropped: the user
  appears offline to the blocked JID.

Copies (`copies`: one stanza fanned out to many resources, a room's messages and occupant
presence) get the same inbound decision per recipient, as a filter: a recipient who blocked the
sender is taken out without an answer, since an error from an occupant's address tells a room
that occupant is gone (RFC 6121 §8.5.3.2.1); what the server sends for a local user (presence,
PEP notifications: XEP-0163 §4.3.3) also leaves out those the user blocked. An online account's
list is in memory, so that costs a dict lookup per recipient.

A user's own resources never block each other (XEP-0191 §5 note). JID matching is §6's: a full
JID item matches that resource, a bare one any resource, a domain item the domain and every
address at it (`domain/resource` only that resource).

Presence (§3.3, §3.4): blocking sends unavailable presence, from each available resource, to the
newly blocked JIDs that could see the user's presence (subscribers, and entities that got
directed presence); unblocking sends the current presence to the subscribers among the JIDs set
free.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.modules.roster import addressed, send_available_presence
from xmppd.stanza import CLIENT_NS

if TYPE_CHECKING:
    from storage.shapes import KeyValue
    from xmppd.events import CopiesEvent

PROTOCOLS = [("XEP-0191", "1.3")]
NS = "urn:xmpp:blocking"
ERRORS_NS = "urn:xmpp:blocking:errors"
KV_STORE = "blocking"
KV_KEY = "list"
FLAG = "blocklist"  # session flag (set through the registry) once the resource retrieved the list
PRIORITY = 100
OPTIONS = {
    "max_items": Option(1000, "JIDs one account may block; more are refused with policy-violation", minimum=1),
    "cache_size": Option(
        10000, "accounts whose blocklist is kept in memory (the least recently used are dropped)", minimum=1
    ),
}


@dataclass(frozen=True, slots=True)
class Blocklist:
    """One account's blocked JIDs (canonical strings), in the order they were blocked."""

    items: tuple[str, ...] = ()
    members: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", frozenset(self.items))

    def blocks(self, jid: JID) -> bool:
        """§6: whether a stanza to or from `jid` is blocked."""
        blocked = self.members
        if not blocked:
            return False
        # user@domain/resource, user@domain, domain/resource (that very JID), domain.
        return str(jid) in blocked or str(jid.bare) in blocked or jid.domain in blocked


EMPTY = Blocklist()


class Blocklists:
    """The blocklists of a server's accounts, loaded once each and kept current (see above)."""

    def __init__(self, store: KeyValue, capacity: int) -> None:
        self._kv = store
        self._lists: LRU[JID, Blocklist] = LRU(capacity)
        # Reads under way, by account: the stanzas that need a list while it is being read wait
        # for that read (a login's presence checks the lists of all its contacts online at
        # once, and twenty concurrent logins share many contacts).
        self._reading: dict[JID, asyncio.Task[Blocklist]] = {}
        # Changes are rare: one lock for the whole server keeps read-modify-write simple.
        self.changing = asyncio.Lock()

    async def get(self, account: JID) -> Blocklist:
        cached = self._lists.get(account)
        if cached is not None:
            return cached
        reading = self._reading.get(account)
        if reading is None:
            reading = self._reading[account] = asyncio.create_task(self._read(account))
            reading.add_done_callback(lambda _: self._reading.pop(account, None))
        # Shielded: one waiter cancelled (its stream gone) does not cancel the others' read.
        return await asyncio.shield(reading)

    async def _read(self, account: JID) -> Blocklist:
        assert account.local is not None
        stored = await self._kv.get(account.domain, account.local, KV_KEY)
        loaded = Blocklist(tuple(stored)) if stored else EMPTY
        # A change that landed while we read is newer than what we read: keep it.
        return self._lists.setdefault(account, loaded)

    def cached(self, account: JID) -> Blocklist | None:
        """The list if it is in memory (None: `get` must load it), without a coroutine: this is
        asked once per recipient of a fan-out."""
        return self._lists.get(account)

    async def save(self, account: JID, blocklist: Blocklist) -> None:
        """Store a changed list; `remember` it afterwards (the cache never holds what the
        database lacks)."""
        assert account.local is not None
        await self._kv.set(account.domain, account.local, KV_KEY, list(blocklist.items) or None)

    def remember(self, account: JID, blocklist: Blocklist) -> None:
        self._lists.put(account, blocklist)

    def forget(self, account: JID) -> None:
        """A deleted account's list leaves memory: one made again with that name blocks nobody."""
        self._lists.pop(account)


def blocklists(mod: ModuleAPI) -> Blocklists:
    """One cache per server, shared by its hosts: a stanza's sender and recipient may live on
    different hosts and both lists matter."""
    return mod.shared("lists", lambda: Blocklists(mod.open_store(KV_STORE, KEY_VALUE), mod.options["cache_size"]))


def exempt(account: JID, other: JID) -> bool:
    """Never blocked, whatever the list says: the account's own resources (§5 note) and its
    own server, which it needs to talk to (to change the list, for one)."""
    return other.bare == account or (other.local is None and other.resource is None and other.domain == account.domain)


def blocked_error(stanza: Stanza) -> Stanza:
    """§3.3: not-acceptable with the blocking application condition."""
    reply = stanza.error_reply(StanzaError("not-acceptable", error_type="cancel"))
    error = reply.element.find(f"{{{CLIENT_NS}}}error")
    assert error is not None
    element(f"{{{ERRORS_NS}}}blocked", parent=error)
    return reply


def setup(mod: ModuleAPI) -> None:
    blocking = Blocking(mod)
    mod.add_feature(NS)
    mod.on_iq("get", NS, "blocklist", blocking.retrieve, targets=("self",))
    mod.on_iq("set", NS, "block", blocking.block, targets=("self",))
    mod.on_iq("set", NS, "unblock", blocking.unblock, targets=("self",))
    for target in ("bare", "full", "host"):
        for kind in ("message", "presence", "iq"):
            mod.on(f"pre-{kind}/{target}", blocking.outbound, PRIORITY)
    for target in ("bare", "full"):
        mod.on(f"message/{target}", blocking.inbound_message, PRIORITY)
        mod.on(f"presence/{target}", blocking.inbound_presence, PRIORITY)
        mod.on(f"iq-get/{target}", blocking.inbound_request, PRIORITY)
        mod.on(f"iq-set/{target}", blocking.inbound_request, PRIORITY)
        mod.on(f"iq/{target}", blocking.inbound_response, PRIORITY)
    mod.on(events.COPIES, blocking.inbound_copies, PRIORITY)
    mod.on(events.ACCOUNT_DELETED, blocking.account_deleted)


class Blocking:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.sessions = mod.sessions
        self.lists = blocklists(mod)
        self.max_items: int = mod.options["max_items"]

    # -- enforcement (§3.3) ------------------------------------------------------------------------

    async def outbound(self, ev: StanzaEvent) -> bool:
        origin, to = ev.origin, ev.stanza.to
        if origin is None or to is None or exempt(origin.bare, to):
            return False
        if not (await self.lists.get(origin.bare)).blocks(to):
            return False
        stanza = ev.stanza
        if stanza.type != "error" and not (stanza.kind == "iq" and stanza.type == "result"):
            origin.send(blocked_error(stanza).element)
        return True

    async def _blocked_by_recipient(self, stanza: Stanza) -> bool:
        to, sender = stanza.to, stanza.from_
        if to is None or sender is None or exempt(to.bare, sender):
            return False
        return (await self.lists.get(to.bare)).blocks(sender)

    async def inbound_message(self, ev: StanzaEvent) -> bool:
        if not await self._blocked_by_recipient(ev.stanza):
            return False
        return ev.error("service-unavailable")  # §3.3; an error is dropped, never answered

    async def inbound_presence(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        to = stanza.to
        if (
            stanza.type in (None, "unavailable", "probe")
            and to is not None
            and not self.sessions.available(to.bare)
        ):
            # Availability and probes for an account with no available resource go nowhere
            # (RFC 6121 §4.2.2, §4.3.2): no list to load for them. Subscription requests are
            # kept for later, so those are checked below.
            return False
        if await self._blocked_by_recipient(stanza):
            return True  # §3.3: no answer, no error
        sender, to = stanza.from_, stanza.to
        if ev.origin is not None or sender is None or to is None or sender.local is None:
            return False  # a client's own stanzas were checked on the way out
        if exempt(sender.bare, to) or not self.mod.is_user_host(sender.domain):
            return False
        # Presence the server sends for a local user (broadcast, probe): the user's own list.
        return (await self.lists.get(sender.bare)).blocks(to)

    async def inbound_request(self, ev: StanzaEvent) -> bool:
        if not await self._blocked_by_recipient(ev.stanza):
            return False
        return ev.error("service-unavailable")

    async def inbound_response(self, ev: StanzaEvent) -> bool:
        # get/set were handled above; results and errors from a blocked JID are dropped.
        return ev.stanza.type in ("result", "error") and await self._blocked_by_recipient(ev.stanza)

    async def inbound_copies(self, ev: CopiesEvent) -> None:
        """`_blocked_by_recipient` and, for a local sender, `inbound_presence`'s check of the
        sender's own list, for each recipient of a fan-out; those blocked are left out without
        an answer (see the module's docstring)."""
        sender = ev.stanza.from_
        assert sender is not None
        lists = self.lists
        kept: list[JID] = []
        for jid in ev.recipients:
            account = jid.bare
            blocklist = lists.cached(account)
            if blocklist is None:
                blocklist = await lists.get(account)
            # `blocks` first: most lists are empty, and that answers at once.
            if blocklist.blocks(sender) and not exempt(account, sender):
                continue
            kept.append(jid)
        if sender.local is not None and self.mod.is_user_host(sender.domain) and kept:
            # What the server sends for a local user (presence, PEP notifications): not to those
            # the user blocked.
            own = lists.cached(sender.bare)
            if own is None:
                own = await lists.get(sender.bare)
            if own.members:  # most lists are empty
                kept = [jid for jid in kept if exempt(sender.bare, jid) or not own.blocks(jid)]
        ev.recipients[:] = kept

    def account_deleted(self, ev: events.AccountEvent) -> None:
        self.lists.forget(ev.account)  # its stored list went with the account

    # -- the list (§3.2 - §3.5) -------------------------------------------------------------------

    async def retrieve(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        if session is None:
            return ev.error("forbidden")
        self.sessions.set_flag(session, FLAG)  # from now on it gets pushes (§3.3)
        blocklist = await self.lists.get(session.bare)
        reply = ev.stanza.reply()
        container = element(f"{{{NS}}}blocklist", parent=reply.element)
        for jid in blocklist.items:
            element(f"{{{NS}}}item", {"jid": jid}, parent=container)
        ev.respond(reply)
        return True

    async def block(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        if session is None:
            return ev.error("forbidden")
        jids = self._items(ev)
        if jids is None:
            return True
        if not jids:
            return ev.error("bad-request", "block at least one JID")  # §3.3
        user = session.bare
        async with self.lists.changing:
            current = await self.lists.get(user)
            added = [jid for jid in dict.fromkeys(jids) if str(jid) not in current.members]
            if len(current.items) + len(added) > self.max_items:
                return ev.error("policy-violation", f"at most {self.max_items} blocked JIDs")
            updated = Blocklist(current.items + tuple(str(jid) for jid in added))
            await self.lists.save(user, updated)
            # §3.3: those who could see the user's presence see it go; sent before the cache
            # knows the new list, which would stop these very stanzas.
            await self._presence(user, added, unavailable=True)
            self.lists.remember(user, updated)
        ev.respond(ev.stanza.reply())
        self._push(user, "block", jids)
        return True

    async def unblock(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        if session is None:
            return ev.error("forbidden")
        jids = self._items(ev)
        if jids is None:
            return True
        user = session.bare
        async with self.lists.changing:
            current = await self.lists.get(user)
            if jids:
                gone = {str(jid) for jid in jids}
                freed = [parse_jid(item) for item in current.items if item in gone]
                updated = Blocklist(tuple(item for item in current.items if item not in gone))
            else:  # §3.5: unblock all
                freed = [parse_jid(item) for item in current.items]
                updated = EMPTY
            await self.lists.save(user, updated)
            self.lists.remember(user, updated)
            # §3.4: now that they pass, subscribers among the freed JIDs get the presence.
            await self._presence(user, freed, unavailable=False)
        ev.respond(ev.stanza.reply())
        self._push(user, "unblock", jids)
        return True

    def _items(self, ev: StanzaEvent) -> list[JID] | None:
        """The JIDs of a block/unblock command; None when it was answered with an error."""
        payload = ev.stanza.payload()
        assert payload is not None
        jids: list[JID] = []
        for item in payload.findall(f"{{{NS}}}item"):
            text = item.get("jid")
            if text is None:
                ev.error("bad-request", "an item needs a 'jid'")
                return None
            try:
                jids.append(parse_jid(text))
            except InvalidJID as exc:
                ev.error("jid-malformed", str(exc))
                return None
        return jids

    def _push(self, user: JID, command: str, jids: Iterable[JID]) -> None:
        """§3.3-§3.5: the change, to every resource that retrieved the list."""
        for session in self.sessions.resources(user):
            if FLAG not in session.flags:
                continue
            iq = Stanza.build("iq", to=session.jid, from_=user, type_="set", id_="push-" + secrets.token_hex(6))
            container = element(f"{{{NS}}}{command}", parent=iq.element)
            for jid in jids:
                element(f"{{{NS}}}item", {"jid": str(jid)}, parent=container)
            session.send(iq.element)

    async def _presence(self, user: JID, jids: list[JID], *, unavailable: bool) -> None:
        """Unavailable (block) or current (unblock) presence of the user's available resources to
        the entities among `jids` that may see it: subscribers, and on block also those that got
        directed presence."""
        if not jids or not self.sessions.available(user):
            return
        matcher = Blocklist(tuple(str(jid) for jid in jids))
        assert user.local is not None
        _version, roster = await self.mod.rosters.items(user.domain, user.local)
        targets: dict[JID, None] = {}
        for item in roster:
            if item.subscription in ("from", "both"):
                contact = parse_jid(item.jid)
                if matcher.blocks(contact):
                    targets[contact] = None
                # A blocked resource of a subscriber: that resource alone.
                targets.update((jid, None) for jid in jids if jid.resource is not None and jid.bare == contact)
        for target in targets:
            await send_available_presence(self.mod, user, target, unavailable=unavailable)
        if unavailable:
            for session in self.sessions.available(user):
                for target in list(session.directed):
                    if matcher.blocks(target) and target not in targets:
                        session.directed.discard(target)
                        gone = Stanza.build("presence", to=None, from_=session.jid, type_="unavailable")
                        await self.mod.send(addressed(gone.element, session.jid, target))
