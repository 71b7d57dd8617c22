"""XEP-0045 §8 (moderators) and §9 (admins), with the owner and admin lists of §10.3-§10.8:
roles changed by nick (kick, voice, moderator), affiliations changed by bare JID (ban,
membership, admin, owner) and both listed, through `<query xmlns='…muc#admin'>`; and voice
requests (§7.13, §8.6).

Who may change whom (§5.1, §5.2 and the use cases; the first rule that applies decides):

- roles, asked by a moderator (else forbidden, §8):
  an admin or owner never loses voice nor the moderator role short of a kick (not-allowed:
  §8.4 "by anyone", §9.8); nobody loses anything to a moderator of lower affiliation
  (not-allowed: §8.2, §8.4, §9.7); giving or taking the moderator role, and kicking a
  moderator, is for admins and owners (forbidden: the §5.1.3 chart, §9.6, §9.7).
- affiliations, asked by an admin or owner (else forbidden, §9): banning oneself is a conflict
  (§9.1); a service admin owns every room whatever the room says, so its affiliation is not
  changed (not-allowed); an admin may not ban an admin or owner (not-allowed, §9.1), change one
  otherwise or make one (forbidden: the admin and owner lists are owners' own, §10.3-§10.8);
  and the room keeps an owner (conflict, §10.4/§10.5). So nobody changes their own affiliation
  but an owner leaving ownership to the others.

A set is checked whole before any of it is applied, so that its items take effect all or none
(§9.2: the service "SHOULD NOT apply any of the requested changes"). Errors for what is not a
valid request: bad-request (no items, an item with both or neither of role and affiliation,
§17.4 rule 4, or without its nick or jid), jid-malformed, item-not-found (no occupant has the
nick).

What follows a change: the affected occupant's presence to everyone with its new role and
affiliation; removal with 307 (kick), 301 (ban) or 321 (membership revoked in a members-only
room, §9.4: that presence only, no affiliation update before it); and for an account not in
the room, the item alone in a message to those who see real JIDs (§10.3, §10.6 MAY: clients
keep the member list of a members-only room from these), plus the invitation §9.5 asks for
when it becomes a member of a members-only room.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from lxml import etree

from components.muc.presence import USER_NS, audiences, broadcast
from components.muc.room import AFFILIATION_RANK, AFFILIATIONS, ROLE_RANK, ROLES, Occupant, Room
from components.muc.service import MucService
from xmppd.dataforms import DATA_NS, add_field, submitted_fields
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.hooks import Handler
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Stanza, StanzaEvent

ADMIN_NS = "http://jabber.org/protocol/muc#admin"
REQUEST_FORM = "http://jabber.org/protocol/muc#request"
_ITEM = f"{{{ADMIN_NS}}}item"
_PRIVILEGED = ("owner", "admin")
_WITHOUT_NICK = ("outcast", "none")
# Who may read an affiliation list (§9.2, §9.5, §10.5, §10.8); in a non-anonymous room the
# members may also read all but the ban list (§9.5 note, §10.5/§10.8 "MAY process").
_LIST_READERS = {"outcast": _PRIVILEGED, "member": _PRIVILEGED, "admin": ("owner",), "owner": ("owner",)}


@dataclass(frozen=True, slots=True)
class Requester:
    """Who sent a request, as the permission rules see it."""

    account: JID  # bare
    affiliation: str  # service admins: owner
    role: str  # the highest of its occupants' roles; none when it is not in the room
    nick: str | None  # shown as the actor of kicks and bans


@dataclass(frozen=True, slots=True)
class RoleChange:
    occupant: Occupant
    role: str
    reason: str


@dataclass(frozen=True, slots=True)
class AffiliationChange:
    account: JID  # bare
    affiliation: str
    reason: str
    nick: str | None  # the nick to reserve ('' frees it, §9.5); None leaves it as it is


Change = RoleChange | AffiliationChange
RoomIq = Callable[[MucService, StanzaEvent, Room], Awaitable[Stanza]]


def install(mod: ModuleAPI, service: MucService) -> None:
    mod.on_iq("get", ADMIN_NS, "query", room_iq(service, get_list), targets=("bare",))
    mod.on_iq("set", ADMIN_NS, "query", room_iq(service, set_items), targets=("bare",))
    # Before messages.py's groupchat handler, which would refuse a message of type normal.
    mod.on("message/bare", voice_handler(service), priority=1)


def room_iq(service: MucService, handle: RoomIq) -> Handler:
    """An iq to a room JID: `handle` returns the result or raises StanzaError."""

    async def handler(ev: StanzaEvent) -> bool:
        to, sender = ev.stanza.to, ev.stanza.from_
        room = service.visible_room(to, sender) if to is not None and sender is not None else None
        if room is None:
            return ev.error("item-not-found", "no such room")
        try:
            result = await handle(service, ev, room)
        except StanzaError as error:
            return ev.error(error.condition, error.text)
        ev.respond(result)
        return True

    return handler


def requester(service: MucService, room: Room, sender: JID) -> Requester:
    account = sender.bare
    occupants = room.occupants_of(account)
    own = room.by_session.get(sender)
    role = max((occupant.role for occupant in occupants), key=ROLE_RANK.__getitem__, default="none")
    nick = own.nick if own is not None else _nick_in_use(room, account)
    return Requester(account, service.affiliation(room, account), role, nick)


# -- lists ------------------------------------------------------------------------------------


async def get_list(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    """§8.5, §9.2, §9.5, §9.8, §10.5, §10.8: one item naming the role or affiliation to list."""
    assert ev.stanza.from_ is not None
    items = _items(ev.stanza)
    if len(items) != 1:
        raise StanzaError("bad-request", "ask for one list: one item with a role or an affiliation")
    who = requester(service, room, ev.stanza.from_)
    role, affiliation = items[0].get("role"), items[0].get("affiliation")
    if role is not None and affiliation is None:
        _check_role_list(who, role)
        listed = role_items(service, room, role)
    elif affiliation is not None and role is None:
        _check_affiliation_list(room, who, affiliation)
        listed = affiliation_items(room, affiliation)
    else:
        raise StanzaError("bad-request", "a list is asked for by a role or by an affiliation")
    reply = ev.stanza.reply()
    query = element(f"{{{ADMIN_NS}}}query", parent=reply.element)
    query.extend(listed)
    return reply


def _check_role_list(who: Requester, role: str) -> None:
    """The voice list (and the visitors) are for moderators (§8.5), the moderator list for
    admins (§9.8)."""
    if role not in ("moderator", "participant", "visitor"):
        raise StanzaError("bad-request", f"there is no list of the role {role!r}")
    if who.role != "moderator" or (role == "moderator" and who.affiliation not in _PRIVILEGED):
        raise StanzaError("forbidden", f"you may not get the {role} list")


def _check_affiliation_list(room: Room, who: Requester, affiliation: str) -> None:
    if affiliation not in _LIST_READERS:
        raise StanzaError("bad-request", f"there is no list of the affiliation {affiliation!r}")
    if who.affiliation in _LIST_READERS[affiliation]:
        return
    member = AFFILIATION_RANK[who.affiliation] >= AFFILIATION_RANK["member"]
    if not (affiliation != "outcast" and room.config.whois == "anyone" and member):
        raise StanzaError("forbidden", f"you may not get the {affiliation} list")


def affiliation_items(room: Room, affiliation: str) -> list[etree._Element]:
    """§17.4 rule 6: affiliation, bare JID, the nick (reserved, or in use) but for outcasts,
    no role; and the reason it was given (§9.2)."""
    items = []
    for account in room.with_affiliation(affiliation):
        item = element(_ITEM, {"affiliation": affiliation, "jid": str(account)})
        nick = None if affiliation == "outcast" else room.nicks.get(account) or _nick_in_use(room, account)
        if nick:
            item.set("nick", nick)
        reason = room.reasons.get(account)
        if reason:
            element(f"{{{ADMIN_NS}}}reason", parent=item).text = reason
        items.append(item)
    return items


def _nick_in_use(room: Room, account: JID) -> str | None:
    occupants = room.occupants_of(account)
    return occupants[0].nick if occupants else None


def role_items(service: MucService, room: Room, role: str) -> list[etree._Element]:
    """§17.4 rule 5: nick, role, affiliation and the full JID of each occupant with the role."""
    items = []
    for occupant in room.occupants.values():
        if occupant.role == role:
            attributes = {"nick": occupant.nick, "role": role, "affiliation": service.affiliation(room, occupant.jid)}
            if occupant.latest is not None:
                attributes["jid"] = str(occupant.latest)
            items.append(element(_ITEM, attributes))
    return items


# -- changes ----------------------------------------------------------------------------------


async def set_items(service: MucService, ev: StanzaEvent, room: Room) -> Stanza:
    assert ev.stanza.from_ is not None
    who = requester(service, room, ev.stanza.from_)
    changes = [parse_item(room, item) for item in _items(ev.stanza)]
    if not changes:
        raise StanzaError("bad-request", "a muc#admin set has at least one item")
    check(service, room, who, changes)
    await apply(service, room, who, changes)
    return ev.stanza.reply()


def _items(stanza: Stanza) -> list[etree._Element]:
    query = stanza.payload()
    return [] if query is None else list(query.iterchildren(_ITEM))


def parse_item(room: Room, item: etree._Element) -> Change:
    role, affiliation = item.get("role"), item.get("affiliation")
    reason = item.findtext(f"{{{ADMIN_NS}}}reason") or ""
    if role is not None and affiliation is None:
        return RoleChange(_occupant(room, item.get("nick")), _known(role, ROLES, "role"), reason)
    if affiliation is not None and role is None:
        affiliation = _known(affiliation, AFFILIATIONS, "affiliation")
        # §9.1: an outcast has no reserved nick, and §9.5: an unaffiliated user none either.
        nick = _nick(room, item) if affiliation not in _WITHOUT_NICK else None
        return AffiliationChange(_account(item.get("jid")), affiliation, reason, nick)
    raise StanzaError("bad-request", "an item changes either a role (by nick) or an affiliation (by jid)")


def _known(value: str, allowed: Sequence[str], what: str) -> str:
    if value not in allowed:
        raise StanzaError("bad-request", f"{value!r} is not a {what}")
    return value


def _occupant(room: Room, nick: str | None) -> Occupant:
    if nick is None:
        raise StanzaError("bad-request", "a role is changed by nick")
    occupant = room.occupants.get(room.prepared_nick(nick) or "")
    if occupant is None:
        raise StanzaError("item-not-found", f"no occupant has the nick {nick!r}")
    return occupant


def _account(jid: str | None) -> JID:
    if jid is None:
        raise StanzaError("bad-request", "an affiliation is changed by jid")
    try:
        # §10.3: "a request that identifies a user by its full JID" means its bare JID.
        return parse_jid(jid).bare
    except InvalidJID as exc:
        raise StanzaError("jid-malformed", f"{jid!r}: {exc}") from None


def _nick(room: Room, item: etree._Element) -> str | None:
    nick = item.get("nick")
    if not nick:
        return nick
    prepared = room.prepared_nick(nick)
    if prepared is None:
        raise StanzaError("jid-malformed", f"{nick!r} cannot be a nick")
    return prepared


def check(service: MucService, room: Room, who: Requester, changes: Sequence[Change]) -> None:
    """Raise the StanzaError of the first change `who` may not make (see the module docstring)."""
    for change in changes:
        if isinstance(change, RoleChange):
            check_role(service, room, who, change)
        else:
            check_affiliation(service, room, who, change)
    _check_owner_remains(room, changes)


def _check_owner_remains(room: Room, changes: Sequence[Change]) -> None:
    """§10.4, §10.5: an owner may not leave ownership (nor take it from the others) when that
    would leave the room without an owner."""
    owners = set(room.with_affiliation("owner"))
    remaining = set(owners)
    for change in changes:
        if isinstance(change, AffiliationChange):
            if change.affiliation == "owner":
                remaining.add(change.account)
            else:
                remaining.discard(change.account)
    if owners and not remaining:
        raise StanzaError("conflict", "the room would have no owner left: make another owner first")


def check_role(service: MucService, room: Room, who: Requester, change: RoleChange) -> None:
    if who.role != "moderator":
        raise StanzaError("forbidden", "only moderators change roles")
    target = service.affiliation(room, change.occupant.jid)
    current = change.occupant.role
    loses = ROLE_RANK[change.role] < ROLE_RANK[current]
    if loses and change.role != "none" and target in _PRIVILEGED:
        raise StanzaError("not-allowed", f"an {target} keeps voice and the moderator role")
    if loses and AFFILIATION_RANK[target] > AFFILIATION_RANK[who.affiliation]:
        raise StanzaError("not-allowed", f"{change.occupant.nick} has a higher affiliation than you")
    moderator_change = "moderator" in (change.role, current) and change.role != current
    if moderator_change and who.affiliation not in _PRIVILEGED:
        raise StanzaError("forbidden", "only admins and owners give or take the moderator role")


def check_affiliation(service: MucService, room: Room, who: Requester, change: AffiliationChange) -> None:
    if who.affiliation not in _PRIVILEGED:
        raise StanzaError("forbidden", "only admins and owners change affiliations")
    if change.account == who.account and change.affiliation == "outcast":
        raise StanzaError("conflict", "you cannot ban yourself")
    if service.is_admin(change.account):
        raise StanzaError("not-allowed", f"{change.account} administers this service and owns every room")
    if change.nick and room.nick_holder(change.nick) not in (None, change.account):
        raise StanzaError("conflict", f"the nick {change.nick!r} is reserved by someone else")
    if who.affiliation == "owner":
        return
    current = room.affiliation(change.account)
    if current in _PRIVILEGED and change.affiliation == "outcast":
        raise StanzaError("not-allowed", f"an admin cannot ban an {current}")
    if current in _PRIVILEGED or change.affiliation in _PRIVILEGED:
        raise StanzaError("forbidden", "only owners edit the admin and owner lists")


async def apply(service: MucService, room: Room, who: Requester, changes: Sequence[Change]) -> None:
    for change in changes:
        if isinstance(change, RoleChange):
            await set_role(service, room, who, change)
        else:
            await set_affiliation(service, room, who, change)
    if any(isinstance(change, AffiliationChange) for change in changes):
        await service.save(room)
    await service.left(room)  # a temporary room goes with its last occupant, kicked or not


async def set_role(service: MucService, room: Room, who: Requester, change: RoleChange) -> None:
    occupant = change.occupant
    if room.occupants.get(occupant.nick) is not occupant:
        return  # removed by an earlier item of the same request
    if change.role == "none":
        await remove(service, room, occupant, "307", actor=who.nick, reason=change.reason)
    elif change.role != occupant.role:
        occupant.role = change.role
        await broadcast(service, room, occupant, reason=change.reason)


async def set_affiliation(service: MucService, room: Room, who: Requester, change: AffiliationChange) -> None:
    account = change.account
    before = room.affiliation(account)
    room.set_affiliation(account, change.affiliation, change.reason)
    _reserve(room, change)
    if before == change.affiliation:
        return  # a new reason or nick: nothing anyone sees changes
    occupants = room.occupants_of(account)
    if not occupants:
        await _announce(service, room, change)
        # "if the user is not currently affiliated with the room" (§9.5)
        if room.config.members_only and change.affiliation == "member" and before in ("none", "outcast"):
            await service.send(_invitation(room, who, change))
    for occupant in occupants:
        if change.affiliation == "outcast":
            await remove(service, room, occupant, "301", actor=who.nick, reason=change.reason)
        elif change.affiliation == "none" and room.config.members_only:
            await remove(service, room, occupant, "321", actor=who.nick, reason=change.reason)
        else:
            occupant.role = role_after(room, occupant.role, before, change.affiliation)
            await broadcast(service, room, occupant, reason=change.reason)


def _reserve(room: Room, change: AffiliationChange) -> None:
    """§9.1: a ban frees the outcast's reserved nick; so does the end of any affiliation, as a
    reserved nick is a registered member's (§9.5). A nick given with the item reserves it, an
    empty one frees it (§9.5)."""
    if change.affiliation in _WITHOUT_NICK or change.nick == "":
        room.nicks.pop(change.account, None)
    elif change.nick is not None:
        room.nicks[change.account] = change.nick


def role_after(room: Room, role: str, before: str, after: str) -> str:
    """§5.1.3 note: the role an affiliation gives is gained with it (an admin becomes a
    moderator, a member of a moderated room a participant); the role one loses with an
    affiliation is the implementation's choice: a former admin or owner falls back to what its
    new affiliation gives, anyone else keeps what it has."""
    gained = room.default_role(after)
    if before in _PRIVILEGED and after not in _PRIVILEGED:
        return gained
    return max(role, gained, key=ROLE_RANK.__getitem__)


async def remove(
    service: MucService, room: Room, occupant: Occupant, code: str, *, actor: str | None = None, reason: str = ""
) -> None:
    """Take an occupant out of the room (kick 307, ban 301, 321 and 322): unavailable presence
    with the code to everyone, with 110 to its own sessions (§8.2, §9.1, §9.4, §10.2)."""
    # What the occupant last sent (show, status) is no part of being removed.
    nothing = Stanza.build("presence", to=None, from_=None, type_="unavailable").element
    await broadcast(
        service, room, occupant, type_="unavailable", codes=[code], payload=nothing, actor=actor, reason=reason
    )
    room.remove_occupant(occupant)


async def _announce(service: MucService, room: Room, change: AffiliationChange) -> None:
    """The new affiliation of an account that is not in the room, to the occupants who may see
    its JID (§10.3, §10.6: a message from the room with the item alone)."""
    real, _anonymous = audiences(room, None)
    if real:
        notice = Stanza.build("message", to=None, from_=room.jid)
        x = element(f"{{{USER_NS}}}x", parent=notice.element)
        attributes = {"affiliation": change.affiliation, "jid": str(change.account), "role": "none"}
        element(f"{{{USER_NS}}}item", attributes, parent=x)
        await service.send_copies(notice, real)


def _invitation(room: Room, who: Requester, change: AffiliationChange) -> Stanza:
    """§9.5: the invitation a new member of a members-only room gets, to its bare JID."""
    invitation = Stanza.build("message", to=change.account, from_=room.jid)
    x = element(f"{{{USER_NS}}}x", parent=invitation.element)
    invite = element(f"{{{USER_NS}}}invite", {"from": str(who.account)}, parent=x)
    if change.reason:
        element(f"{{{USER_NS}}}reason", parent=invite).text = change.reason
    if room.config.password:
        element(f"{{{USER_NS}}}password", parent=x).text = room.config.password
    return invitation


# -- voice requests (§7.13, §8.6) -------------------------------------------------------------


def voice_handler(service: MucService) -> Handler:
    async def on_message(ev: StanzaEvent) -> bool:
        """A muc#request form to the room: a visitor asking for voice, or a moderator's answer."""
        form = _request_form(ev.stanza)
        to, sender = ev.stanza.to, ev.stanza.from_
        if form is None or to is None or sender is None:
            return False
        room = service.room(to)
        if room is None:
            return ev.error("item-not-found", "no such room")
        try:
            values = submitted_fields(form, REQUEST_FORM)
            if "muc#request_allow" in values:
                await approve(service, room, sender, values)
            else:
                await request_voice(service, room, sender, values)
        except StanzaError as error:
            return ev.error(error.condition, error.text)
        return True

    return on_message


def _request_form(stanza: Stanza) -> etree._Element | None:
    if stanza.type not in (None, "normal"):
        return None
    for form in stanza.element.iterchildren(f"{{{DATA_NS}}}x"):
        for field in form.iterchildren(f"{{{DATA_NS}}}field"):
            if field.get("var") == "FORM_TYPE" and field.findtext(f"{{{DATA_NS}}}value") == REQUEST_FORM:
                return form
    return None


async def request_voice(service: MucService, room: Room, sender: JID, values: dict[str, list[str]]) -> None:
    """§7.13: the request goes to the moderators as the approval form of §8.6."""
    occupant = room.by_session.get(sender)
    if occupant is None:
        raise StanzaError("not-acceptable", "only occupants may ask for voice")
    if values.get("muc#role") != ["participant"]:
        raise StanzaError("bad-request", "a voice request asks for the role participant (muc#role)")
    if occupant.role != "visitor":
        return  # it has voice already
    moderators = [jid for jid, other in room.by_session.items() if other.role == "moderator"]
    await service.send_copies(_approval_form(room, occupant, sender), moderators)


def _approval_form(room: Room, occupant: Occupant, sender: JID) -> Stanza:
    stanza = Stanza.build("message", to=None, from_=room.jid)
    form = element(f"{{{DATA_NS}}}x", {"type": "form"}, parent=stanza.element)
    element(f"{{{DATA_NS}}}title", parent=form).text = "Voice request"
    element(f"{{{DATA_NS}}}instructions", parent=form).text = (
        'To grant voice to this person, check "Grant voice to this person?" and submit the form.'
    )
    add_field(form, "FORM_TYPE", "hidden", None, [REQUEST_FORM])
    add_field(form, "muc#role", "list-single", "Requested role", ["participant"])
    add_field(form, "muc#jid", "jid-single", "User ID", [str(sender)])
    add_field(form, "muc#roomnick", "text-single", "Room Nickname", [occupant.nick])
    add_field(form, "muc#request_allow", "boolean", "Grant voice to this person?", ["false"])
    return stanza


async def approve(service: MucService, room: Room, sender: JID, values: dict[str, list[str]]) -> None:
    """§8.6: an approval grants voice, as §8.3 does; a refusal changes nothing."""
    if values["muc#request_allow"] not in (["1"], ["true"]):
        return
    nick = values.get("muc#roomnick", [])
    change = RoleChange(_occupant(room, nick[0] if len(nick) == 1 else None), "participant", "")
    who = requester(service, room, sender)
    check(service, room, who, [change])
    await apply(service, room, who, [change])
