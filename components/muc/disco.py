"""XEP-0045 §6 service discovery of the room service and its rooms, with XEP-0059 paging of the
room list; XEP-0307 unique room names; XEP-0410 self-pings; and iqs to occupants passed on
(§6.6, §17.4).

The service (disco#info: core disco module, from what `setup` and `install` add): identity
conference/text, the muc feature, muc#stable_id (messages keep their id, §7.4), muc#unique
and RSM. Its disco#items are the public rooms (§6.3: not the hidden ones, nor a room still
locked, which does not exist yet), each named by its muc#roomconfig_roomname, in the order of
their JIDs, which are also the RSM ids: an id says where its page starts even once its room
is gone, so paging never fails with item-not-found (XEP-0059 §2.4). Without a `<set/>` the
list is whole up to `PAGE_LIMIT` rooms, and beyond that the first page with a `<set/>` saying
so (§6.3 MAY/SHOULD); no page is longer than that.

A room (§6.4): identity conference/text with its name, the features of its configuration and
of what it does (stable ids, occupant ids, self-ping optimization, registration, voice
requests in a moderated room, the archive and its stanza ids when it archives), and the
muc#roominfo form; the owners' JIDs as contacts only where real JIDs are public anyway. Its
disco#items are always empty (§6.5: occupants are private, as advised by default). A room
that does not exist, or is locked, is item-not-found for anyone but its owners; a node other
than §7.12's (register.py) is item-not-found, but for muc#traffic: this room passes on every
extension, which §18.1.1 answers with service-unavailable.

XEP-0307: a random 128-bit name, not reserved (no room ever collides with it in practice);
not-allowed for whoever may not create rooms (§2 MAY).

Iqs to an occupant JID. A ping to one's own nick is answered by the room (XEP-0410 §3.3, the
self-ping optimization: result when that session is joined under that nick). Any other
get/set from an occupant goes to one session of the target (its latest), from the sender's
occupant JID, so that neither learns the other's real JID (§17.4 rule 3); a vcard-temp get
goes to the target's account instead, whose server answers for it (avatars, XEP-0153). From
anyone else: bad-request for disco (§6.6), not-acceptable otherwise (XEP-0410 §3.2, as for
private messages, §7.5); item-not-found when no occupant has the nick. The answer comes back
to the room with an id the room made: it carries the requester and its id, sealed with a
secret of this service run together with the addresses it was sent between, so the room
keeps no state per request and relays only answers to requests it passed on.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree

from components.muc.config import REGISTER, room_features, roominfo_form
from components.muc.presence import OCCUPANT_ID_NS
from components.muc.register import REGISTER_NS
from components.muc.room import Room
from components.muc.service import MucService
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.hooks import Handler
from xmppd.host import Identity
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.modules import mam
from xmppd.modules.disco import INFO_NS, ITEMS_NS, info_reply

RSM_NS = "http://jabber.org/protocol/rsm"
UNIQUE_NS = "http://jabber.org/protocol/muc#unique"
STABLE_ID = "http://jabber.org/protocol/muc#stable_id"
SELF_PING = "http://jabber.org/protocol/muc#self-ping-optimization"
REQUEST = "http://jabber.org/protocol/muc#request"
TRAFFIC_NODE = "http://jabber.org/protocol/muc#traffic"
PING_NS = "urn:xmpp:ping"
VCARD = "{vcard-temp}vCard"
# The most rooms in one disco#items answer.
PAGE_LIMIT = 100
# Bytes of HMAC-SHA256 in the id of an iq passed on to an occupant.
_MAC_SIZE = 16
_DISCO = (f"{{{INFO_NS}}}query", f"{{{ITEMS_NS}}}query")


def install(mod: ModuleAPI, service: MucService) -> None:
    for feature in (STABLE_ID, UNIQUE_NS, RSM_NS):
        mod.add_feature(feature)
    # Above the core disco module's items of the host, which knows no rooms.
    mod.on_iq("get", ITEMS_NS, "query", room_list(service), priority=1)
    mod.on_iq("get", UNIQUE_NS, "unique", unique_name(service))
    mod.on_iq("get", INFO_NS, "query", room_info(service), targets=("bare",))
    mod.on_iq("get", ITEMS_NS, "query", room_items(service), targets=("bare",))
    mod.on_iq("get", PING_NS, "ping", self_ping(service), targets=("full",))
    mod.on("iq/full", OccupantIqs(service).handle)


# -- the service ---------------------------------------------------------------------------------


def room_list(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        query = ev.stanza.payload()
        assert query is not None
        if query.get("node") is not None:
            return ev.error("item-not-found", "the room list has no nodes")
        try:
            request = parse_rsm(query.find(f"{{{RSM_NS}}}set"))
        except StanzaError as error:
            return ev.error(error.condition, error.text)
        rooms = public_rooms(service)
        ids = [str(room.jid) for room in rooms]
        start, end = select(ids, request)
        reply = ev.stanza.reply()
        listed = element(f"{{{ITEMS_NS}}}query", parent=reply.element)
        for room in rooms[start:end]:
            attributes = {"jid": str(room.jid)}
            if room.config.name:
                attributes["name"] = room.config.name
            element(f"{{{ITEMS_NS}}}item", attributes, parent=listed)
        if request is not None or end - start < len(ids):
            listed.append(result_set(ids, start, end))
        ev.respond(reply)
        return True

    return answer


def public_rooms(service: MucService) -> list[Room]:
    rooms = (room for room in service.rooms.values() if room.config.public and not room.locked)
    return sorted(rooms, key=lambda room: str(room.jid))


def unique_name(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        sender = ev.stanza.from_
        if sender is None or not service.may_create(sender):
            return ev.error("not-allowed", "you may not create rooms on this service")
        reply = ev.stanza.reply()
        element(f"{{{UNIQUE_NS}}}unique", parent=reply.element).text = secrets.token_hex(16)
        ev.respond(reply)
        return True

    return answer


# -- XEP-0059 result set management ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PageRequest:
    """A `<set/>` of a request: `before` is '' for the last page (XEP-0059 §2.5)."""

    max: int | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None


def parse_rsm(rsm: etree._Element | None) -> PageRequest | None:
    if rsm is None:
        return None
    return PageRequest(
        max=_count(rsm, "max"),
        after=rsm.findtext(f"{{{RSM_NS}}}after"),
        before=rsm.findtext(f"{{{RSM_NS}}}before"),
        index=_count(rsm, "index"),
    )


def _count(rsm: etree._Element, name: str) -> int | None:
    text = rsm.findtext(f"{{{RSM_NS}}}{name}")
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.isdigit()):
        raise StanzaError("bad-request", f"<{name}/> must be a number, not {text!r}")
    return int(text)


def select(ids: Sequence[str], request: PageRequest | None) -> tuple[int, int]:
    """The page of the sorted `ids` a request asks for, as (start, end) positions."""
    request = request or PageRequest()
    size = PAGE_LIMIT if request.max is None else min(request.max, PAGE_LIMIT)
    start, end = 0, len(ids)
    if request.after is not None:
        start = bisect_right(ids, request.after)
    elif request.index is not None:
        start = min(request.index, end)
    if request.before:
        end = max(start, bisect_left(ids, request.before))
    if request.before is not None:
        # Paging backwards: the page that ends just before `before` (or at the end).
        return max(start, end - size), end
    return start, min(end, start + size)


def result_set(ids: Sequence[str], start: int, end: int) -> etree._Element:
    rsm = element(f"{{{RSM_NS}}}set")
    if end > start:
        element(f"{{{RSM_NS}}}first", {"index": str(start)}, parent=rsm).text = ids[start]
        element(f"{{{RSM_NS}}}last", parent=rsm).text = ids[end - 1]
    element(f"{{{RSM_NS}}}count", parent=rsm).text = str(len(ids))
    return rsm


# -- a room --------------------------------------------------------------------------------------


def room_info(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        room = _visible(service, ev)
        if room is None:
            return ev.error("item-not-found", "no such room")
        query = ev.stanza.payload()
        assert query is not None
        node = query.get("node")
        if node == TRAFFIC_NODE:
            return ev.error("service-unavailable", "this room passes every extension on")
        if node is not None:
            return ev.error("item-not-found", "this room has no such node")
        config = room.config
        identity = Identity("conference", "text", config.name or None)
        contacts = [str(jid) for jid in room.with_affiliation("owner")] if config.whois == "anyone" else []
        form = roominfo_form(config, len(room.occupants), room.subject, contacts=contacts)
        ev.respond(info_reply(ev, [identity], room_disco_features(room), [form], None))
        return True

    return answer


def room_disco_features(room: Room) -> list[str]:
    config = room.config
    features = [
        *room_features(config),
        INFO_NS, ITEMS_NS, STABLE_ID, OCCUPANT_ID_NS, SELF_PING, REGISTER_NS, REGISTER,
    ]
    if config.moderated:
        features.append(REQUEST)  # voice requests (admin.py)
    if config.archiving:
        features.extend((mam.NS, mam.EXTENDED, mam.SID_NS))
    return features


def room_items(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        query = ev.stanza.payload()
        assert query is not None
        if _visible(service, ev) is None or query.get("node") is not None:
            return ev.error("item-not-found", "no such room")
        reply = ev.stanza.reply()
        element(f"{{{ITEMS_NS}}}query", parent=reply.element)
        ev.respond(reply)
        return True

    return answer


def _visible(service: MucService, ev: StanzaEvent) -> Room | None:
    to, sender = ev.stanza.to, ev.stanza.from_
    return service.visible_room(to, sender) if to is not None and sender is not None else None


# -- iqs to occupants ------------------------------------------------------------------------------


def self_ping(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        """XEP-0410 §3.3; a ping to someone else's nick is passed on like any iq."""
        to, sender = ev.stanza.to, ev.stanza.from_
        room = service.room(to) if to is not None else None
        occupant = room.by_session.get(sender) if room is not None and sender is not None else None
        if occupant is None or to is None or occupant.nick != to.resource:
            return False
        ev.respond(ev.stanza.reply())
        return True

    return answer


class OccupantIqs:
    """Passes iqs to occupants on, and their answers back (see the module docstring)."""

    def __init__(self, service: MucService) -> None:
        self.service = service
        # Ids of passed-on iqs are sealed with it; a restart forgets it and so drops the
        # answers still on their way, which the requesters then see time out.
        self.secret = secrets.token_bytes(32)

    async def handle(self, ev: StanzaEvent) -> bool:
        if ev.stanza.type in ("get", "set"):
            return await self.forward(ev)
        await self.answer(ev.stanza)
        return True  # an answer to nothing we asked is dropped (RFC 6120 §8.3.1)

    async def forward(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        to, sender, payload = stanza.to, stanza.from_, stanza.payload()
        assert to is not None and sender is not None and payload is not None
        room = self.service.room(to)
        occupant = room.by_session.get(sender) if room is not None else None
        if room is None or occupant is None:
            condition = "bad-request" if payload.tag in _DISCO else "not-acceptable"
            return ev.error(condition, "only occupants may send iqs to occupants")
        target = room.occupants.get(to.resource or "")
        if target is None or target.latest is None:
            return ev.error("item-not-found", "no occupant has this nick")
        recipient = target.jid if payload.tag == VCARD and stanza.type == "get" else target.latest
        from_ = room.occupant_jid(occupant.nick)
        sealed = self.seal([str(sender), stanza.id or "", target.nick], from_, recipient)
        passed_on = Stanza.build("iq", to=recipient, from_=from_, type_=stanza.type, id_=sealed)
        passed_on.element.append(copy.deepcopy(payload))
        await self.service.send(passed_on)
        return True

    async def answer(self, stanza: Stanza) -> None:
        """A result or error to an iq the room passed on goes back to who asked."""
        if stanza.to is None or stanza.from_ is None:
            return
        opened = self.unseal(stanza.id or "", stanza.to, stanza.from_)
        if opened is None:
            return
        requester, id_, nick = opened
        try:
            to = parse_jid(requester)
        except InvalidJID:
            return
        reply = Stanza.build("iq", to=to, from_=stanza.to.bare.with_resource(nick), type_=stanza.type, id_=id_)
        for child in stanza.element:
            reply.element.append(copy.deepcopy(child))
        await self.service.send(reply)

    def seal(self, fields: list[str], asker: JID, asked: JID) -> str:
        """The id of an iq from `asker` (an occupant JID) to `asked`, carrying `fields`; only
        `unseal` with the same two addresses (those of the answer, swapped) opens it."""
        data = "\0".join(fields).encode()
        return base64.urlsafe_b64encode(self._mac(data, asker, asked) + data).decode()

    def unseal(self, sealed: str, asker: JID, asked: JID) -> list[str] | None:
        try:
            raw = base64.urlsafe_b64decode(sealed.encode())
        except ValueError:  # binascii.Error: not base64 at all
            return None
        mac, data = raw[:_MAC_SIZE], raw[_MAC_SIZE:]
        if not hmac.compare_digest(mac, self._mac(data, asker, asked)):
            return None
        fields = data.decode().split("\0")  # authentic: our own UTF-8
        return fields if len(fields) == 3 else None

    def _mac(self, data: bytes, asker: JID, asked: JID) -> bytes:
        addresses = f"{asker}\0{asked}\0".encode()
        return hmac.new(self.secret, addresses + data, hashlib.sha256).digest()[:_MAC_SIZE]
