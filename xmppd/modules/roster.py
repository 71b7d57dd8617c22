"""RFC 6121 §2: roster management (get, set, remove, pushes), with XEP-0237 roster versioning.

The roster lives in storage (`RosterStore`); every write bumps the user's roster version by one,
and that number is the `ver` we hand out (XEP-0237 leaves its form to the server).

Versioning (RFC 6121 §2.6): the stream feature `<ver xmlns='urn:xmpp:features:rosterver'/>` is
offered. A roster get whose `ver` equals the current version is answered with an empty result
and nothing else (§2.6.3); any other `ver` gets the whole roster. We never answer with an empty
result followed by "diff" pushes, which §2.6.3 allows but does not require: that would need a log
of changes per version, and the complete roster is what clients handle best anyway.

Items that exist only to remember a pending inbound subscription request (RFC 6121 §3.1.3: the
contact's server keeps a record of the request but does not add the item to the roster) are
stored with `listed=False`: they are neither returned nor pushed until the user acts on them.

The helpers at the bottom (`get_item`, `update_item`, `remove_item`, `push`, `roster_lock`,
`send_available_presence`) are what the presence module uses to change subscription state.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Iterable
from dataclasses import replace

from lxml import etree

from storage.model import RosterItem
from xmppd.elements import attribute, element, from_text, text
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.session import Session

PROTOCOLS = [("RFC 6121", "§2 roster management"), ("XEP-0237", "1.3")]
NS = "jabber:iq:roster"
VER_FEATURE_NS = "urn:xmpp:features:rosterver"
OPTIONS = {
    "max_name_length": Option(1023, "longest roster item name accepted, in characters", minimum=1),
    "max_group_length": Option(1023, "longest roster group name accepted, in characters", minimum=1),
}


def setup(mod: ModuleAPI) -> None:
    handlers = RosterHandlers(mod)
    mod.add_stream_feature(ver_feature)
    mod.on_iq("get", NS, "query", handlers.get, targets=("self",))
    mod.on_iq("set", NS, "query", handlers.set, targets=("self",))
    # §2.1.5: a roster belongs to its user only; a request to another account's roster.
    mod.on_iq("get", NS, "query", forbidden, targets=("bare",))
    mod.on_iq("set", NS, "query", forbidden, targets=("bare",))


def ver_feature(_session: Session | None) -> etree._Element:
    return element(f"{{{VER_FEATURE_NS}}}ver")


def forbidden(ev: StanzaEvent) -> bool:
    return ev.error("forbidden")


class RosterHandlers:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.rosters = mod.rosters
        self.max_name = int(mod.options.get("max_name_length", 1023))
        self.max_group = int(mod.options.get("max_group_length", 1023))

    async def get(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        query = ev.stanza.payload()
        if session is None or query is None:
            return ev.error("forbidden")
        user = session.bare
        assert user.local is not None
        # §2.1.6: from now on this resource gets roster pushes. Set before reading, so a change
        # made while we read is pushed rather than lost.
        self.mod.sessions.set_flag(session, "roster")
        version, items = await self.rosters.items(user.domain, user.local)
        reply = ev.stanza.reply()
        client_ver = query.get("ver")
        if client_ver is not None and client_ver == str(version):
            # §2.6.3: nothing changed since the client's cached version: an empty result.
            ev.respond(reply)
            return True
        ev.respond_with(reply, roster_query(version, items).encode())
        return True

    async def set(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        query = ev.stanza.payload()
        if session is None or query is None:
            return ev.error("forbidden")
        user = session.bare
        assert user.local is not None
        items = query.findall(f"{{{NS}}}item")
        if len(items) != 1:
            # §2.3.3: a roster set carries exactly one item.
            return ev.error("bad-request", "a roster set carries exactly one item")
        node = items[0]
        text = node.get("jid")
        if text is None:
            return ev.error("bad-request", "the item has no 'jid'")
        try:
            contact = parse_jid(text)
        except InvalidJID as exc:
            return ev.error("jid-malformed", str(exc))
        if contact.resource is not None:
            return ev.error("bad-request", "roster items are bare JIDs")
        # §2.1.2.5: 'subscription' from a client is ignored unless it is "remove"; 'ask' and
        # 'approved' (§2.1.2.1, §2.1.2.2) are never taken from the client.
        if node.get("subscription") == "remove":
            return await _remove(ev, self.mod, user, contact)
        name = node.get("name") or None  # an empty handle is no handle
        groups = [group.text or "" for group in node.findall(f"{{{NS}}}group")]
        problem = self._invalid(name, groups)
        if problem is not None:
            return ev.error(*problem)
        async with roster_lock(self.mod, user):
            old = await self.rosters.item(user.domain, user.local, str(contact))
            if old is None:
                item = RosterItem(jid=str(contact), name=name, groups=tuple(groups))
            else:
                # §2.4: an update changes name and groups, never the subscription state.
                item = replace(old, name=name, groups=tuple(groups), listed=True)
            version = await self.rosters.put(user.domain, user.local, item)
        # §2.3.2: push to every interested resource (the requester too), then the result.
        push(self.mod, user, item, version)
        ev.respond(ev.stanza.reply())
        return True

    def _invalid(self, name: str | None, groups: list[str]) -> tuple[str, str] | None:
        """§2.3.3: (condition, text) for a name or groups the server refuses."""
        if name is not None and len(name) > self.max_name:
            return "not-acceptable", f"the name is longer than {self.max_name} characters"
        for group in groups:
            if not group:
                # An empty <group/>; leaving all groups is done by sending none.
                return "not-acceptable", "a group name cannot be empty"
            if len(group) > self.max_group:
                return "not-acceptable", f"a group name is longer than {self.max_group} characters"
        if len(set(groups)) != len(groups):
            return "bad-request", "the same group is listed twice"
        return None


async def _remove(ev: StanzaEvent, mod: ModuleAPI, user: JID, contact: JID) -> bool:
    """§2.5: delete the item, push the removal, answer, then cancel the subscriptions."""
    assert user.local is not None
    rosters = mod.rosters
    async with roster_lock(mod, user):
        old = await rosters.item(user.domain, user.local, str(contact))
        if old is None:
            return ev.error("item-not-found")  # §2.5.3
        version = await rosters.remove(user.domain, user.local, str(contact))
    if old.listed and version is not None:
        push(mod, user, None, version, contact=str(contact))
    ev.respond(ev.stanza.reply())
    # §2.5.2: the server cancels the subscriptions in both directions as the user would have
    # (unsubscribe for a subscription to the contact or a pending request of ours, unsubscribed
    # for the contact's subscription or pending request), stamped with the user's bare JID.
    to = old.subscription in ("to", "both")
    from_ = old.subscription in ("from", "both")
    if to or old.ask:
        await mod.send(Stanza.build("presence", to=contact, from_=user, type_="unsubscribe"))
    if from_ or old.pending_in:
        await mod.send(Stanza.build("presence", to=contact, from_=user, type_="unsubscribed"))
    if from_:
        # §3.2.2: a contact whose subscription ends sees the user's resources go unavailable.
        await send_available_presence(mod, user, contact, unavailable=True)
    return True


# -- the roster as data -----------------------------------------------------------------------


def roster_query(version: int, items: Iterable[RosterItem]) -> str:
    """§2.1.4: the `<query/>` of a roster result, the items the user is shown, as XML text: at
    every login, and text costs a fifth of building the elements and serialising them (twenty
    items: 20 us against 100). A roster push carries one item the same way."""
    parts = [f'<query xmlns="{NS}" ver="{version}">']
    for item in items:
        if not item.listed:
            continue
        parts.append(f"<item jid={attribute(item.jid)}")
        if item.name is not None:
            parts.append(f" name={attribute(item.name)}")
        parts.append(f' subscription="{item.subscription}"')
        if item.ask:
            parts.append(' ask="subscribe"')  # §2.1.2.2
        if item.approved:
            parts.append(' approved="true"')  # §2.1.2.1, pre-approval (§3.4)
        if item.groups:
            parts.append(">")
            parts.extend(f"<group>{text(group)}</group>" for group in item.groups)
            parts.append("</item>")
        else:
            parts.append("/>")
    parts.append("</query>")
    return "".join(parts)


# -- helpers for the presence module ------------------------------------------------------------

def roster_lock(mod: ModuleAPI, user: JID) -> asyncio.Lock:
    """The lock that serialises changes to `user`'s roster (rostercache.CachedRosters.lock)."""
    return mod.rosters.lock(user)


async def get_item(mod: ModuleAPI, user: JID, contact: JID) -> RosterItem | None:
    assert user.local is not None
    return await mod.rosters.item(user.domain, user.local, str(contact.bare))


async def update_item(mod: ModuleAPI, user: JID, item: RosterItem) -> int:
    """Store the item and push it to the user's interested resources (if the user sees it)."""
    assert user.local is not None
    version = await mod.rosters.put(user.domain, user.local, item)
    if item.listed:
        push(mod, user, item, version)
    return version


async def remove_item(mod: ModuleAPI, user: JID, contact: str, *, was_listed: bool) -> int | None:
    """Delete the item; push the removal if the user could see it."""
    assert user.local is not None
    version = await mod.rosters.remove(user.domain, user.local, contact)
    if version is not None and was_listed:
        push(mod, user, None, version, contact=contact)
    return version


def push(mod: ModuleAPI, user: JID, item: RosterItem | None, version: int, *, contact: str = "") -> None:
    """§2.1.6 roster push of `item` (None: the removal of `contact`) to every interested
    resource of `user`, with the new `ver` (XEP-0237 / §2.6)."""
    pushed = item if item is not None else RosterItem(jid=contact, subscription="remove")
    query = roster_query(version, [pushed]).encode()
    for session in mod.sessions.resources(user):
        if not session.interested or session.closed:
            continue
        iq = Stanza.build("iq", to=session.jid, from_=user, type_="set", id_="push-" + secrets.token_hex(6))
        iq.element.append(from_text(query))
        session.send(iq.element)


def addressed(presence: etree._Element | bytes, from_: JID, to: JID | None) -> Stanza:
    """A copy of a presence, an element or a session's serialised one, with new addresses (the
    original is never changed)."""
    copied = copy.deepcopy(presence) if isinstance(presence, etree._Element) else from_text(presence)
    copied.set("from", str(from_))
    if to is None:
        if "to" in copied.attrib:
            del copied.attrib["to"]
    else:
        copied.set("to", str(to))
    return Stanza(copied, "presence", to, from_)


async def send_available_presence(mod: ModuleAPI, user: JID, to: JID, *, unavailable: bool = False) -> int:
    """Route the current presence of each of `user`'s available resources to `to` (or, with
    `unavailable`, an unavailable presence from each); returns how many were sent."""
    sessions = mod.sessions.available(user)
    for session in sessions:
        if unavailable:
            await mod.send(Stanza.build("presence", to=to, from_=session.jid, type_="unavailable"))
        else:
            assert session.presence is not None
            # As a copy: a local account's bare JID stands for its available resources, and the
            # stanza is serialised once for all of them (Router.deliver_copies).
            await mod.send_copies(addressed(session.presence, session.jid, None), [to])
    return len(sessions)
