"""XEP-0049: Private XML Storage (jabber:iq:private).

An account keeps XML the server never reads: client preferences, XEP-0048 bookmarks
(`storage:bookmarks`), roster notes. Each fragment is one document in the "private" key-value
store, keyed by its element's name in Clark notation (`{storage:bookmarks}storage`), the value
its XML text. It goes with the account (the kv table is one of the user tables).

- set, to oneself: each child of `<query/>` replaces what is stored under its name (two of one
  name: the later wins, as if sent one after the other). An empty element (no attributes,
  children or text) is what a get answers when nothing is stored, so storing one deletes the
  document. All of an account's fragments together may take `max_size` bytes; a set that
  would take more is refused with not-acceptable, and stores nothing.
- get, to oneself: the fragment stored under the name of the one child (§2.3: one namespace per
  get; more children: bad-request), or that child, emptied, when nothing is stored.
- to anyone else (another account, the server): forbidden (§2.3 and §3: forbidden or
  service-unavailable, "the former is preferable"; §4: nobody but the user's own resources may
  read or change the data).
- a query without a child: not-acceptable (§2.3's MUST; for a get, its example and §3 say
  "Bad Format", a name from before RFC 3920, and the example shows not-acceptable).
- a child that is not "scoped by its own namespace" (§2.1): in no namespace, in jabber:iq:private
  (a child without an xmlns of its own inherits it) or in jabber:client: not-acceptable. §2.3's
  other reserved namespaces (`jabber:*`, `http://jabber.org/*`, vcard-temp) are accepted: that
  refusal is OPTIONAL and would break clients that store under such names.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from lxml import etree

from storage.shapes import KEY_VALUE
from xmppd.elements import element, from_text, to_text
from xmppd.jid import JID
from xmppd.module import ModuleAPI, Option, StanzaEvent
from xmppd.stanza import CLIENT_NS

if TYPE_CHECKING:
    from storage.shapes import KeyValue

PROTOCOLS = [("XEP-0049", "1.2")]
NS = "jabber:iq:private"
KV_STORE = "private"
OPTIONS = {
    "max_size": Option(
        1024 * 1024, "bytes of XML one account may keep in all; a set that would keep more: not-acceptable", minimum=1
    ),
}
_NOT_OWN = (None, NS, CLIENT_NS)  # namespaces a fragment cannot be scoped by (§2.1)


def empty(fragment: etree._Element) -> bool:
    return len(fragment) == 0 and not fragment.attrib and not (fragment.text or "").strip()


def fragments(ev: StanzaEvent) -> list[etree._Element] | None:
    """The children of the query, or None when it was answered with an error."""
    query = ev.stanza.payload()
    assert query is not None
    children = [child for child in query if isinstance(child.tag, str)]
    if not children:
        ev.error("not-acceptable", "the query needs an element in a namespace of its own")
        return None
    for child in children:
        if etree.QName(child).namespace in _NOT_OWN:
            ev.error("not-acceptable", f"{child.tag} is not in a namespace of its own")
            return None
    return children


def setup(mod: ModuleAPI) -> None:
    private = Private(mod)
    mod.add_feature(NS)
    mod.on_iq("get", NS, "query", private.get, targets=("self",))
    mod.on_iq("set", NS, "query", private.set, targets=("self",))
    for type_ in ("get", "set"):
        mod.on_iq(type_, NS, "query", forbidden, targets=("bare", "host"))


def forbidden(ev: StanzaEvent) -> bool:
    return ev.error("forbidden", "private data is read and written by its own account only")  # §3


class Private:
    """The private XML of one host's accounts."""

    def __init__(self, mod: ModuleAPI) -> None:
        self.store: KeyValue = mod.open_store(KV_STORE, KEY_VALUE)
        self.max_size: int = mod.options["max_size"]
        # Sets are rare: one lock per host keeps the read-check-write of the size simple.
        self.changing = asyncio.Lock()

    async def get(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None  # `self` is the sender's own account
        children = fragments(ev)
        if children is None:
            return True
        if len(children) > 1:
            return ev.error("bad-request", "ask for one element at a time")
        (asked,) = children
        account = ev.origin.bare
        assert account.local is not None
        text = await self.store.get(account.domain, account.local, asked.tag)
        reply = ev.stanza.reply()
        query = element(f"{{{NS}}}query", parent=reply.element)
        query.append(from_text(text) if text is not None else element(asked.tag))
        ev.respond(reply)
        return True

    async def set(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None
        children = fragments(ev)
        if children is None:
            return True
        # Clark name -> XML text, None to delete.
        changes = {child.tag: None if empty(child) else to_text(child) for child in children}
        account = ev.origin.bare
        async with self.changing:
            if await self._size_after(account, changes) > self.max_size:
                return ev.error("not-acceptable", f"private XML may take at most {self.max_size} bytes")
            assert account.local is not None
            for key, text in changes.items():
                await self.store.set(account.domain, account.local, key, text)
        ev.respond(ev.stanza.reply())
        return True

    async def _size_after(self, account: JID, changes: dict[str, str | None]) -> int:
        assert account.local is not None
        texts: dict[str, str | None] = {**await self.store.all(account.domain, account.local), **changes}
        return sum(len(text.encode()) for text in texts.values() if text is not None)
