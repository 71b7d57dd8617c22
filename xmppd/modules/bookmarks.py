"""XEP-0402: PEP Native Bookmarks, unified with the XEP-0048 bookmarks older clients keep in
XEP-0049 private XML storage (XEP-0402 §5.3, announced as `urn:xmpp:bookmarks:1#compat`).

Native bookmarks need nothing but PEP (pep.py): one item per room in the account's
`urn:xmpp:bookmarks:1` node, published with the publish-options of XEP-0402 §3.3. What this
module adds is that a client that still reads and writes `<storage xmlns='storage:bookmarks'/>`
through jabber:iq:private sees and changes the same bookmarks.

One place for them. The PEP node holds the rooms; a private XML get of `storage:bookmarks` is
answered from it, and a set changes it. Each room converts field for field: the item id is the
`<conference/>`'s jid; name, autojoin, `<nick/>` and `<password/>` are the same in both formats;
elements of other namespaces a client put in a legacy `<conference/>` go into the native one's
`<extensions/>` (XEP-0402 §2: kept by every client) and come back. What the native format cannot
hold (`<url/>` bookmarks, which XEP-0402 §1 dropped, a conference without a usable jid) stays in
private storage under the usual key, and is given back with the rooms. Each set replaces it, so
one stanza's size bounds it; it counts towards the private module's limit like any fragment.

- A set (XEP-0402 §5.3.2) is the whole list: rooms that changed are published, rooms that are
  gone are retracted, and only those are notified ("SHOULD NOT send notifications for unchanged
  items"). Retractions come first, so that a full node never evicts a room that stays. A
  `storage:bookmarks` set must come alone in its query: the private module stores what else a
  query holds, and a copy of the bookmarks there would go stale.
- A get (§5.3.1) lists the node's rooms, oldest first, as XEP-0048 conferences, then what
  private storage keeps. Items that are not native bookmarks are not shown, and a set does not
  remove them: a legacy client replaces only what it can see.
- The node must stay private (XEP-0411 §5, which says the same of this conversion): one this
  module creates gets XEP-0402's options (whitelist, persistent, max items, never sent on
  presence); a set into a node that exists but is readable by others or not persistent is
  refused with conflict, one that would leave more rooms than the node keeps with
  not-acceptable, and neither changes anything.
- Bookmarks stored before this module ran: at each login, rooms still in the private XML copy
  are published to the node unless it has them already (its version is the newer one), before
  the client can ask for anything (XEP-0411 §4: otherwise a client that reads only PEP would not
  know them); the private copy then keeps only what the node cannot hold.

XEP-0411 (announced as `urn:xmpp:bookmarks-conversion:0`): clients of the XEP-0048 1.1 era keep
the whole list in PEP too, as the one item `current` of a node `storage:bookmarks`. That node is
a copy, never the truth: each change of the native node (a client's publish, retract, purge or
delete, seen through `pep-changed`; a private XML set; the login migration above) rewrites
`current` from it and from what private storage keeps, as a private XML get would show them,
and only when that differs from what `current` says (so no notification for nothing). A client's
publish to `storage:bookmarks` is a set like the private XML one: the rooms that changed are
published to the native node, those gone retracted. The writes of this module fire
`pep-changed` as well; they are recognised (`_own_writes`) and not mirrored again, so nothing
loops.

- Kept for every account whose bookmarks change, not only for those that have the node already:
  XEP-0411 §3 makes the server keep both in sync once it announces the feature, and a client
  that comes later reads the node without asking anyone to make it. Nothing is read at login
  for that: an account that never had bookmarks never gets the node. Bookmarks stored natively
  before this conversion existed reach the node at their next change, or when a session asking
  for `storage:bookmarks+notify` (a XEP-0048 PEP client) comes online: only such a login reads
  the private XML copy for it.
- The node is made private (XEP-0411 §5, XEP-0223: whitelist, persistent; one item, never
  sent on presence); one a client made readable by others is left alone, not written into.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from components.pubsub.forms import ACCESS_MODEL, MAX_ITEMS
from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.elements import element, from_text, to_text
from xmppd.errors import StanzaError
from xmppd.jid import InvalidJID, parse_jid
from xmppd.lru import LRU
from xmppd.modules.caps import client_caps
from xmppd.modules.pep import pep_service
from xmppd.modules.private import KV_STORE as PRIVATE_STORE
from xmppd.modules.private import NS as PRIVATE_NS

if TYPE_CHECKING:
    from components.pubsub.node import Item, Node
    from storage.shapes import KeyValue
    from xmppd.events import PepChanged, SessionEvent
    from xmppd.jid import JID
    from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [
    ("XEP-0402", "1.2.0", "complete", "with #compat: XEP-0048 bookmarks in XEP-0049 private XML unified"),
    (
        "XEP-0411",
        "1.1.0",
        "complete",
        "the PEP node storage:bookmarks kept from urn:xmpp:bookmarks:1 and converted back; native bookmarks"
        " older than the conversion reach it at their next change or when a client asks for its events",
    ),
]
NODE = "urn:xmpp:bookmarks:1"
COMPAT = f"{NODE}#compat"
CONVERSION = "urn:xmpp:bookmarks-conversion:0"
LEGACY_NS = "storage:bookmarks"  # also the name of the XEP-0048 PEP node
CURRENT = "current"  # XEP-0048 (1.1+): the id of its one item
STORAGE = f"{{{LEGACY_NS}}}storage"  # also its key in private storage (private.py: Clark notation)
LEGACY_CONFERENCE = f"{{{LEGACY_NS}}}conference"
CONFERENCE = f"{{{NODE}}}conference"
EXTENSIONS = f"{{{NODE}}}extensions"
_LOOKED_AT = 100_000  # accounts remembered as looked at (Bookmarks._looked_at)
PRIORITY = 1  # before the private module, which would store and answer `storage:bookmarks` itself
TRUE = ("true", "1")  # xs:boolean
WHITELIST: dict[str, object] = {ACCESS_MODEL: "whitelist"}  # the precondition on a node that exists
# True while this module writes to PEP: the `pep-changed` its writes fire (inline, in the same
# task) are its own, not changes to convert or mirror again.
_converting: ContextVar[bool] = ContextVar("bookmarks_converting", default=False)


@contextmanager
def _own_writes() -> Iterator[None]:
    token = _converting.set(True)
    try:
        yield
    finally:
        _converting.reset(token)


def setup(mod: ModuleAPI) -> None:
    bookmarks = Bookmarks(mod)
    mod.add_account_feature(COMPAT)
    mod.add_account_feature(CONVERSION)
    mod.on_iq("get", PRIVATE_NS, "query", bookmarks.read, targets=("self",), priority=PRIORITY)
    mod.on_iq("set", PRIVATE_NS, "query", bookmarks.write, targets=("self",), priority=PRIORITY)
    mod.on(events.SESSION_BOUND, bookmarks.session_bound)
    mod.on(events.PEP_CHANGED, bookmarks.pep_changed)
    mod.on(events.CAPS_KNOWN, bookmarks.caps_known)


@dataclass(frozen=True, slots=True)
class Bookmark:
    """One bookmarked room, what both formats say of it (XEP-0402 §2, XEP-0048 §2.1)."""

    jid: str
    name: str | None = None
    autojoin: bool = False
    nick: str | None = None
    password: str | None = None
    extensions: tuple[str, ...] = ()  # elements of other namespaces, as XML text

    @classmethod
    def from_item(cls, item: Item) -> Bookmark | None:
        """A native bookmark, or None for an item that is not one."""
        conference = from_text(item.payload)
        if conference.tag != CONFERENCE or _room(item.id) is None:
            return None
        extensions = conference.find(EXTENSIONS)
        # The id as it is: the item to retract or replace is named by it.
        return cls._of(item.id, conference, NODE, _elements(extensions) if extensions is not None else [])

    @classmethod
    def from_legacy(cls, conference: etree._Element) -> Bookmark | None:
        """A XEP-0048 conference, or None when it has no room JID to be an item's id."""
        jid = _room(conference.get("jid")) if conference.tag == LEGACY_CONFERENCE else None
        if jid is None:
            return None
        extras = [child for child in _elements(conference) if etree.QName(child).namespace != LEGACY_NS]
        return cls._of(jid, conference, LEGACY_NS, extras)

    @classmethod
    def _of(cls, jid: str, conference: etree._Element, ns: str, extras: list[etree._Element]) -> Bookmark:
        return cls(
            jid,
            name=conference.get("name") or None,
            autojoin=conference.get("autojoin", "").strip() in TRUE,
            nick=conference.findtext(f"{{{ns}}}nick"),
            password=conference.findtext(f"{{{ns}}}password"),
            extensions=tuple(to_text(extra) for extra in extras),
        )

    def to_item(self) -> etree._Element:
        """The payload of its item (whose id is the jid)."""
        conference = self._conference(CONFERENCE, {"autojoin": "true"} if self.autojoin else {})
        if self.extensions:
            self._extend(element(EXTENSIONS, parent=conference))
        return conference

    def to_legacy(self) -> etree._Element:
        conference = self._conference(
            LEGACY_CONFERENCE, {"jid": self.jid, "autojoin": "true" if self.autojoin else "false"}
        )
        self._extend(conference)
        return conference

    def _conference(self, tag: str, attributes: dict[str, str]) -> etree._Element:
        ns = tag[1 : tag.index("}")]
        conference = element(tag, {**attributes, **({"name": self.name} if self.name else {})})
        for name, value in (("nick", self.nick), ("password", self.password)):
            if value is not None:
                element(f"{{{ns}}}{name}", parent=conference).text = value
        return conference

    def _extend(self, parent: etree._Element) -> None:
        for extension in self.extensions:
            parent.append(from_text(extension))


def _room(jid: str | None) -> str | None:
    try:
        return str(parse_jid(jid)) if jid else None
    except InvalidJID:
        return None


def _elements(parent: etree._Element) -> list[etree._Element]:
    """The children that are elements (not comments)."""
    return [child for child in parent if isinstance(child.tag, str)]


def split(storage: etree._Element) -> tuple[dict[str, Bookmark], etree._Element]:
    """A XEP-0048 `<storage/>`: its rooms by JID (a later one wins), and a `<storage/>` with the
    rest, what only private storage can keep."""
    rooms: dict[str, Bookmark] = {}
    rest = element(STORAGE)
    for child in _elements(storage):
        bookmark = Bookmark.from_legacy(child)
        if bookmark is None:
            rest.append(copy.deepcopy(child))
        else:
            rooms[bookmark.jid] = bookmark
    return rooms, rest


def same_list(a: etree._Element, b: etree._Element) -> bool:
    """Whether two XEP-0048 `<storage/>`s say the same: the same rooms, whatever their order and
    spelling (autojoin='1' or 'true'), and the same rest."""
    if a.tag != STORAGE or b.tag != STORAGE:
        return False
    (rooms_a, rest_a), (rooms_b, rest_b) = split(a), split(b)
    return rooms_a == rooms_b and [to_text(x) for x in rest_a] == [to_text(x) for x in rest_b]


def shown(node: Node | None) -> dict[str, Bookmark]:
    """The node's bookmarks a legacy client sees, oldest first."""
    found = (Bookmark.from_item(item) for item in (node.items.values() if node is not None else ()))
    return {bookmark.jid: bookmark for bookmark in found if bookmark is not None}


def _query_children(ev: StanzaEvent) -> list[etree._Element]:
    query = ev.stanza.payload()
    assert query is not None
    return _elements(query)


class Bookmarks:
    """The bookmarks of one host's accounts, in PEP, as private XML storage shows them."""

    def __init__(self, mod: ModuleAPI) -> None:
        self.pep = pep_service(mod)
        self.log = mod.log
        self.store: KeyValue = mod.open_store(PRIVATE_STORE, KEY_VALUE)
        self.caps = client_caps(mod)
        # XEP-0402 §3.3's publish-options: a node this module creates is made so.
        self.options: dict[str, object] = {
            "pubsub#persist_items": True,
            MAX_ITEMS: self.pep.limits.max_items,
            "pubsub#send_last_published_item": "never",
            ACCESS_MODEL: "whitelist",
        }
        # Accounts whose private XML copy was looked at since the server started: a set through
        # private storage is converted at once, so after one look nothing new can wait there, and
        # later logins of the account need no storage read (bounded: the oldest are looked at again).
        self._looked_at: LRU[JID, bool] = LRU(_LOOKED_AT)  # a set: True for each
        # XEP-0048 (1.1+) with XEP-0223: private and persistent; one item, `current`.
        self.legacy_options: dict[str, object] = {**self.options, MAX_ITEMS: 1}
        # Each change reads the node, then publishes and retracts: one at a time per host (they
        # are rare), so two of them never interleave.
        self.changing = asyncio.Lock()

    # -- private XML storage ----------------------------------------------------------------------

    async def read(self, ev: StanzaEvent) -> bool:
        children = _query_children(ev)
        if len(children) != 1 or children[0].tag != STORAGE:
            return False  # not ours: the private module answers
        assert ev.origin is not None  # `self` is the sender's own account
        reply = ev.stanza.reply()
        element(f"{{{PRIVATE_NS}}}query", parent=reply.element).append(await self._storage(ev.origin.bare))
        ev.respond(reply)
        return True

    async def write(self, ev: StanzaEvent) -> bool:
        children = _query_children(ev)
        if not any(child.tag == STORAGE for child in children):
            return False
        if len(children) > 1:
            return ev.error("not-acceptable", "storage:bookmarks is stored in a query of its own")
        assert ev.origin is not None
        account = ev.origin.bare
        async with self.changing:
            try:
                await self._replace(account, children[0])
            except StanzaError as error:
                ev.router.bounce(ev.stanza, error, ev.origin)
                return True
            await self._mirror(account)  # XEP-0411 §3: PEP subscribers are notified of it
        ev.respond(ev.stanza.reply())
        return True

    async def _replace(self, account: JID, storage: etree._Element) -> None:
        """A whole XEP-0048 list, from private XML or the PEP node: what changed goes to the native
        node (XEP-0402 §5.3.2), the rest to private storage; StanzaError with nothing changed."""
        rooms, rest = split(storage)
        node = await self.pep.node(account, NODE)
        current = shown(node)
        changed = {jid: bookmark for jid, bookmark in rooms.items() if current.get(jid) != bookmark}
        await self._change(account, node, changed, gone=current.keys() - rooms.keys())
        await self._keep(account, rest)

    async def _storage(self, account: JID) -> etree._Element:
        """The XEP-0048 list: the native node's rooms, oldest first, then what private storage keeps."""
        storage = element(STORAGE)
        for bookmark in shown(await self.pep.node(account, NODE)).values():
            storage.append(bookmark.to_legacy())
        kept = await self._kept(account)
        if kept is not None:
            storage.extend(split(kept)[1])
        return storage

    # -- what was stored before ------------------------------------------------------------------

    async def session_bound(self, ev: SessionEvent) -> None:
        """Rooms left in the private XML copy go to the node, unless it has them."""
        account = ev.session.bare
        if self._looked_at.get(account):  # marks it used
            return
        kept = await self._kept(account)
        rooms, rest = split(kept) if kept is not None else ({}, element(STORAGE))
        if rooms:
            async with self.changing:
                node = await self.pep.node(account, NODE)
                missing = {jid: bookmark for jid, bookmark in rooms.items() if node is None or jid not in node.items}
                try:
                    await self._change(account, node, missing, gone=set())
                except StanzaError as error:
                    self.log.warning("the bookmarks of %s stay in private storage: %s", account, error)
                    return  # looked at again at the next login
                await self._keep(account, rest)
                await self._mirror(account)
        self._looked_at.put(account, True)

    # -- the XEP-0048 PEP node (XEP-0411) ----------------------------------------------------------

    async def pep_changed(self, ev: PepChanged) -> None:
        if _converting.get() or ev.node not in (NODE, LEGACY_NS):
            return
        async with self.changing:
            if ev.node == LEGACY_NS:
                # Only a published list changes the bookmarks: a purge or a deletion of the copy
                # is a client tidying up, and the next change writes it again.
                if ev.action != "publish" or ev.payload is None or ev.payload.tag != STORAGE:
                    return
                try:
                    await self._replace(ev.account, ev.payload)
                except StanzaError as error:
                    # The copy is then rewritten from the native node, which stays the truth.
                    self.log.warning("%s's %s list not converted: %s", ev.account, LEGACY_NS, error)
            await self._mirror(ev.account)

    async def caps_known(self, ev: SessionEvent) -> None:
        """A XEP-0048 PEP client came online: the copy is made if native bookmarks predate it."""
        if self.caps.wants(ev.session.jid, LEGACY_NS):
            async with self.changing:
                await self._mirror(ev.session.bare)

    async def _mirror(self, account: JID) -> None:
        """Rewrite the item `current` of the `storage:bookmarks` node from the native node and
        private storage, when it says something else; with `changing` held."""
        storage = await self._storage(account)
        node = await self.pep.node(account, LEGACY_NS)
        if node is None:
            if not len(storage):
                return  # no bookmarks, no copy to make
            options = self.legacy_options
        elif not private(node):
            # XEP-0411 §5: only the account may read what is copied there; not converted.
            self.log.warning("%s's %s node is not private: bookmarks not copied into it", account, LEGACY_NS)
            return
        elif (current := node.items.get(CURRENT)) is not None and same_list(from_text(current.payload), storage):
            return
        else:
            options = WHITELIST
        with _own_writes():
            await self.pep.publish(account, LEGACY_NS, CURRENT, storage, options)

    # -- the node --------------------------------------------------------------------------------

    async def _change(self, account: JID, node: Node | None, changed: dict[str, Bookmark], gone: set[str]) -> None:
        """Retract `gone`, then publish `changed`; StanzaError, with nothing changed, when the
        node is not private to the account or cannot hold the result."""
        if not changed and not gone:
            return
        if node is not None:
            if not private(node):
                raise StanzaError("conflict", f"{NODE} is not private (whitelist, persistent): nothing goes into it")
            room = node.config.capacity
            after = len((node.items.keys() - gone) | changed.keys())
        else:
            room = self.pep.limits.max_items
            after = len(changed)
        if after > room:
            raise StanzaError("not-acceptable", f"{NODE} takes at most {room} bookmarks")
        # The options create the node; then they are preconditions it meets.
        options = self.options if node is None else WHITELIST
        with _own_writes():
            for jid in gone:
                await self.pep.retract(account, NODE, jid, notify=True)
            for jid, bookmark in changed.items():
                await self.pep.publish(account, NODE, jid, bookmark.to_item(), options)

    async def _kept(self, account: JID) -> etree._Element | None:
        assert account.local is not None
        text = await self.store.get(account.domain, account.local, STORAGE)
        return from_text(text) if text is not None else None

    async def _keep(self, account: JID, rest: etree._Element) -> None:
        """What only private storage can hold; nothing deletes the document (private.py's rule
        for an empty element)."""
        assert account.local is not None
        await self.store.set(account.domain, account.local, STORAGE, to_text(rest) if len(rest) else None)


def private(node: Node) -> bool:
    """Whether only its account reads the node (XEP-0411 §5) and keeps its items."""
    whitelisted = any(affiliation != "outcast" for affiliation in node.affiliations.values())
    return node.config.access_model == "whitelist" and not whitelisted and node.config.persist_items
