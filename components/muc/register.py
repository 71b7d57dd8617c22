"""XEP-0045 §7.10 registering with a room (XEP-0077 `jabber:iq:register` sent to the room JID)
and §7.12 discovering one's reserved nick (disco#info node `x-roomuser-item`).

Registering makes an account a member of the room, with its nick reserved: nobody else may
enter or register under it (§7.2 Nickname Conflict). Admins and owners keep their affiliation
and only reserve the nick.

Who may register (§7.10 leaves it to the implementation): in an open room, anyone not banned;
in a members-only room, only who is already a member or more (to change the reserved nick),
since its admins decide who gets in (§9.5) and registration requests are not passed to them
for approval (§9.9 is not done). Others get not-allowed (§7.10), also when asking for the form.

A request for the form gets `<registered/>` with the reserved nick as `<username/>` from a
member, or from an admin or owner with a reserved nick (§7.10, XEP-0077 §3.1); otherwise the
muc#register form (config.py), with the nick the requester has in the room proposed. A
submission may come again to change the nick. Errors: bad-request (no valid form, §7.10),
not-acceptable (not something a nick can be: a resourcepart, RFC 7622, as for entering),
conflict (reserved by someone else, §7.10, or in use by someone else's occupant, who would
lose it). A form of type cancel changes nothing (XEP-0004 §3.1: the submission is cancelled).

`<remove/>` (XEP-0077 §3.2) frees the reserved nick and ends a membership (not an admin's or
owner's affiliation: their lists change those, §10); registration-required when there is no
registration to remove, bad-request when `<remove/>` is not alone. In a members-only room the
former member leaves the room with status 321 (§9.4).

A membership that begins or ends here is announced as one an admin grants or revokes
(admin.py): the presence of the account's occupants with the new affiliation.

A room that does not exist, or is still locked for anyone but its owners, is item-not-found.
"""

from __future__ import annotations

import dataclasses

from components.muc.admin import AffiliationChange, requester, room_iq, set_affiliation
from components.muc.config import parse_register, register_form
from components.muc.room import Room
from components.muc.service import MucService
from xmppd.dataforms import DATA_NS
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.hooks import Handler
from xmppd.host import Identity
from xmppd.jid import JID
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.modules.disco import INFO_NS, info_reply

REGISTER_NS = "jabber:iq:register"
NICK_NODE = "x-roomuser-item"
_QUERY = f"{{{REGISTER_NS}}}query"
_REMOVE = f"{{{REGISTER_NS}}}remove"


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on_iq("get", REGISTER_NS, "query", room_iq(service, requirements), targets=("bare",))
    mod.on_iq("set", REGISTER_NS, "query", room_iq(service, submit), targets=("bare",))
    # Before the room's own disco#info (disco.py), which knows no nodes.
    mod.on_iq("get", INFO_NS, "query", reserved_nick(service), targets=("bare",), priority=1)


def registered(room: Room, account: JID) -> bool:
    return account in room.nicks or room.affiliation(account) == "member"


async def requirements(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    sender = _sender(service, room, ev.stanza)
    account = sender.bare
    reply = ev.stanza.reply()
    query = element(_QUERY, parent=reply.element)
    if registered(room, account):
        element(f"{{{REGISTER_NS}}}registered", parent=query)
        nick = room.nicks.get(account)
        if nick:
            element(f"{{{REGISTER_NS}}}username", parent=query).text = nick
        return reply
    _check_allowed(service, room, account)
    occupant = room.by_session.get(sender)
    query.append(register_form(occupant.nick if occupant is not None else None))
    return reply


async def submit(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    sender = _sender(service, room, ev.stanza)
    query = ev.stanza.payload()
    assert query is not None
    if query.find(_REMOVE) is not None:
        if len(query) != 1:
            raise StanzaError("bad-request", "<remove/> comes alone")
        await unregister(service, room, sender)
        return ev.stanza.reply()
    form = query.find(f"{{{DATA_NS}}}x")
    if form is not None and form.get("type") == "cancel":
        return ev.stanza.reply()
    _check_allowed(service, room, sender.bare)
    nick = room.prepared_nick(parse_register(form))
    if nick is None:
        raise StanzaError("not-acceptable", "this cannot be a nick")
    _check_free(room, sender.bare, nick)
    await reserve(service, room, sender, nick)
    return ev.stanza.reply()


def _sender(service: MucService, room: Room, stanza: Stanza) -> JID:
    """Who asks; item-not-found for a room it may not see yet (locked)."""
    sender = stanza.from_
    assert sender is not None
    if service.visible_room(room.jid, sender) is None:
        raise StanzaError("item-not-found", "no such room")
    return sender


def _check_allowed(service: MucService, room: Room, account: JID) -> None:
    affiliation = service.affiliation(room, account)
    if affiliation == "outcast":
        raise StanzaError("not-allowed", "you are banned from this room")
    if room.config.members_only and affiliation == "none":
        raise StanzaError("not-allowed", "the admins of this members-only room decide who becomes a member")


def _check_free(room: Room, account: JID, nick: str) -> None:
    if room.nick_holder(nick) not in (None, account):
        raise StanzaError("conflict", "this nick is reserved by someone else")
    occupant = room.occupants.get(nick)
    if occupant is not None and occupant.jid != account:
        raise StanzaError("conflict", "this nick is in use in the room by someone else")


async def reserve(service: MucService, room: Room, sender: JID, nick: str) -> None:
    account = sender.bare
    if service.affiliation(room, account) == "none":
        change = AffiliationChange(account, "member", "", nick)
        await set_affiliation(service, room, requester(service, room, sender), change)
    else:
        room.nicks[account] = nick
    await service.save(room)


async def unregister(service: MucService, room: Room, sender: JID) -> None:
    account = sender.bare
    if not registered(room, account):
        raise StanzaError("registration-required", "you are not registered with this room")
    if room.affiliation(account) == "member":
        # Nobody but the account itself acts here: no <actor/> in a removal with 321.
        who = dataclasses.replace(requester(service, room, sender), nick=None)
        await set_affiliation(service, room, who, AffiliationChange(account, "none", "", None))
    else:
        del room.nicks[account]
    await service.save(room)
    await service.left(room)  # a temporary room goes with its last occupant


def reserved_nick(service: MucService) -> Handler:
    def answer(ev: StanzaEvent) -> bool:
        """§7.12: the reserved nick as the name of a conference/text identity, or nothing."""
        query = ev.stanza.payload()
        sender, to = ev.stanza.from_, ev.stanza.to
        if query is None or query.get("node") != NICK_NODE or sender is None or to is None:
            return False
        room = service.visible_room(to, sender)
        if room is None:
            return ev.error("item-not-found", "no such room")
        nick = room.nicks.get(sender.bare)
        identities = [Identity("conference", "text", nick)] if nick else []
        ev.respond(info_reply(ev, identities, [], [], NICK_NODE))
        return True

    return answer
