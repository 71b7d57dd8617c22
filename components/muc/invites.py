"""XEP-0045 §7.8.2 mediated invitations and their declines.

An occupant sends `<message to='room'><x xmlns='…muc#user'><invite to='jid'>…` (type normal,
one or more invites); the room sends each invitee a message of its own with
`<invite from='inviter'>`, the reason and `<continue/>` (§7.9) the inviter gave, and the
room's password if it has one. The inviter is named by its real bare JID: the invitee can tell
who it is (an occupant JID means nothing outside the room), and a decline finds its way back to
that address. Each invitation also carries the XEP-0249 form `<x xmlns='jabber:x:conference'
jid='room'/>`, which §7.8.2 no longer asks for but notes that services still send for
compatibility: clients that know only direct invitations then see one too, and XEP-0249 §4
has clients that get both show one. XEP-0249 invitations themselves go from client to client
and need nothing from the room.

Who may invite: an occupant of the room (else not-acceptable, as for any message to the room
from outside, §7.4). In a members-only room only admins and owners, and members too where the
room allows invitations (muc#roomconfig_allowinvites), else forbidden (§7.8.2, §9.5); there
each invitation makes the invitee a member, since it could not enter otherwise (§9.5 "SHOULD
automatically trigger the addition"). In an open room anyone in it, and never a membership
(§9.5 "MUST NOT"). An invitation is checked whole before any of it is sent: a bad invitee
(no 'to', jid-malformed; an account of this server that does not exist, item-not-found as
§7.8.2 says; a banned one, not-allowed, who could not enter anyway) fails the whole message.

A decline (`<decline to='inviter'>`) from whoever was invited is passed to the address it
names, from the room and with the decliner's bare JID. The room keeps no record of the
invitations it sent, so it cannot tell a decline of its own invitation from any other: the
forwarded decline names its real sender, so nobody can decline in someone else's name.

A room that does not exist (or is still locked, for anyone but its owners) answers both with
item-not-found (§17.2 rule 3).
"""

from __future__ import annotations

import copy

from lxml import etree

from components.muc.presence import USER_NS
from components.muc.room import Room
from components.muc.service import MucService
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.hooks import Handler
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Stanza, StanzaEvent

CONFERENCE_NS = "jabber:x:conference"
_X = f"{{{USER_NS}}}x"
_INVITE = f"{{{USER_NS}}}invite"
_DECLINE = f"{{{USER_NS}}}decline"
_REASON = f"{{{USER_NS}}}reason"
# What of an invite the room passes on: the reason, and the one-to-one chat it continues (§7.9).
_PASSED_ON = (_REASON, f"{{{USER_NS}}}continue")
# Above groupchat (messages.py, priority 0), which would refuse a message of type normal.
PRIORITY = 2


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on("message/bare", invitations_handler(service), PRIORITY)


def invitations_handler(service: MucService) -> Handler:
    async def on_message(ev: StanzaEvent) -> bool:
        """Claims a message of type normal to the room with muc#user invites or a decline."""
        stanza = ev.stanza
        x = stanza.element.find(_X)
        if x is None or stanza.type not in (None, "normal"):
            return False
        invites = x.findall(_INVITE)
        declined = x.find(_DECLINE)
        if not invites and declined is None:
            return False
        sender, to = stanza.from_, stanza.to
        assert sender is not None and to is not None
        room = service.visible_room(to, sender)
        if room is None:
            return ev.error("item-not-found", "no such room")
        try:
            if declined is not None and not invites:
                await decline(service, room, stanza, declined)
            else:
                await invite(service, room, stanza, invites)
        except StanzaError as error:
            return ev.error(error.condition, error.text)
        return True

    return on_message


def may_invite(service: MucService, room: Room, account: JID) -> bool:
    """§7.8.2 and §9.5: anyone in an open room; admins and owners in a members-only one, and its
    members when the room allows it."""
    if not room.config.members_only:
        return True
    affiliation = service.affiliation(room, account)
    return affiliation in ("owner", "admin") or (affiliation == "member" and room.config.allow_invites)


async def invite(service: MucService, room: Room, stanza: Stanza, invites: list[etree._Element]) -> None:
    sender = stanza.from_
    assert sender is not None
    occupant = room.by_session.get(sender)
    if occupant is None:
        raise StanzaError("not-acceptable", "only occupants may invite others to the room")
    if not may_invite(service, room, occupant.jid):
        raise StanzaError("forbidden", "only the room's admins may invite others to this members-only room")
    invitees = [await invitee(service, room, item) for item in invites]
    if room.config.members_only:
        # Members before the invitations leave, so that an invitee can enter on receiving one.
        await make_members(service, room, invitees)
    for item, jid in zip(invites, invitees, strict=True):
        await service.send(invitation(room, occupant.jid, item, jid, stanza.id))


async def make_members(service: MucService, room: Room, invitees: list[JID]) -> None:
    """§9.5: the invitees of a members-only room become members (who is one already, or more,
    stays what it is)."""
    newcomers = [jid.bare for jid in invitees if room.affiliation(jid) == "none"]
    for jid in newcomers:
        room.set_affiliation(jid, "member")
    if newcomers:
        await service.save(room)


async def invitee(service: MucService, room: Room, item: etree._Element) -> JID:
    """Whom an `<invite/>` names, or the StanzaError that refuses it."""
    jid = _address(item, "to")
    if room.affiliation(jid) == "outcast":
        raise StanzaError("not-allowed", f"{jid.bare} is banned from this room")
    mod = service.mod
    if mod.is_user_host(jid.domain) and (jid.local is None or not await mod.account_exists(jid.bare)):
        raise StanzaError("item-not-found", f"{jid} does not exist")
    return jid


def invitation(room: Room, inviter: JID, item: etree._Element, to: JID, id_: str | None) -> Stanza:
    """The room's message to the invitee (§7.8.2), with the XEP-0249 form beside it."""
    message = Stanza.build("message", to=to, from_=room.jid, id_=id_)
    x = element(_X, parent=message.element)
    passed_on = element(_INVITE, {"from": str(inviter)}, parent=x)
    for child in item:
        if child.tag in _PASSED_ON:
            passed_on.append(copy.deepcopy(child))
    direct = {"jid": str(room.jid)}
    reason = item.findtext(_REASON)
    if reason:
        direct["reason"] = reason
    if room.config.password:
        element(f"{{{USER_NS}}}password", parent=x).text = room.config.password
        direct["password"] = room.config.password
    element(f"{{{CONFERENCE_NS}}}x", direct, parent=message.element)
    return message


async def decline(service: MucService, room: Room, stanza: Stanza, declined: etree._Element) -> None:
    sender = stanza.from_
    assert sender is not None
    message = Stanza.build("message", to=_address(declined, "to"), from_=room.jid, id_=stanza.id)
    x = element(_X, parent=message.element)
    passed_on = element(_DECLINE, {"from": str(sender.bare)}, parent=x)
    reason = declined.find(_REASON)
    if reason is not None:
        passed_on.append(copy.deepcopy(reason))
    await service.send(message)


def _address(item: etree._Element, attribute: str) -> JID:
    text = item.get(attribute)
    if not text:
        raise StanzaError("bad-request", f"<{etree.QName(item).localname}/> needs a '{attribute}' address")
    try:
        return parse_jid(text)
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", f"{text!r}: {exc}") from None
