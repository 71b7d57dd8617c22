"""XEP-0045 §7.10 registering with a room and §7.12 discovering one's reserved nick, through the
in-memory server."""

from __future__ import annotations

from lxml import etree

from .harness import Client, Harness, error_condition, iq_reply, presence
from .muc_helpers import (
    ADMIN,
    DATA,
    INFO,
    MEMBERS_ONLY,
    ROOM,
    SERVICE,
    USER,
    admin,
    codes,
    create_room,
    data_form,
    field,
    iq,
    item,
    join,
    join_xml,
    room_service,  # noqa: F401  (the fixture h)
)

REGISTER = "jabber:iq:register"
NICK_NODE = "x-roomuser-item"
ROOMNICK = "muc#register_roomnick"


async def ask_form(client: Client, to: str = ROOM) -> etree._Element:
    return await iq(client, "get", f"<query xmlns='{REGISTER}'/>", to)


async def register(client: Client, nick: str, to: str = ROOM) -> etree._Element:
    form = data_form(field("FORM_TYPE", "http://jabber.org/protocol/muc#register") + field(ROOMNICK, nick))
    return await iq(client, "set", f"<query xmlns='{REGISTER}'>{form}</query>", to)


async def reserved_nick(client: Client, to: str = ROOM) -> list[str | None]:
    """§7.12: the names of the identities the room answers the node with."""
    reply = await iq(client, "get", f"<query xmlns='{INFO}' node='{NICK_NODE}'/>", to)
    assert reply.get("type") == "result", etree.tostring(reply)
    return [identity.get("name") for identity in reply.iter(f"{{{INFO}}}identity")]


async def member_nick(owner: Client, account: str) -> str | None:
    """The nick the member list (muc#admin, read by the owner) gives `account`: None when it is
    no member, '' when it has no nick."""
    reply = await admin(owner, "<item affiliation='member'/>", "get")
    for listed in reply.iter(f"{{{ADMIN}}}item"):
        if listed.get("jid") == account:
            return listed.get("nick") or ""
    return None


async def test_registering_makes_a_member_with_a_reserved_nick(h: Harness) -> None:
    alice = await create_room(h)
    bob = await h.connect("bob@localhost/desk")
    assert await reserved_nick(bob) == []  # §7.12: nothing reserved yet, an empty answer
    reply = await ask_form(bob)
    form = reply.find(f"{{{REGISTER}}}query/{{{DATA}}}x")
    assert form is not None and form.get("type") == "form"
    fields = {f.get("var"): f for f in form.iter(f"{{{DATA}}}field")}
    assert fields["FORM_TYPE"].findtext(f"{{{DATA}}}value") == "http://jabber.org/protocol/muc#register"
    assert fields[ROOMNICK].find(f"{{{DATA}}}required") is not None
    assert (await register(bob, "Bobby")).get("type") == "result"
    assert await member_nick(alice, "bob@localhost") == "Bobby"
    assert await reserved_nick(bob) == ["Bobby"]
    # Registered: the room says so, with the nick (§7.10, XEP-0077 §3.1).
    reply = await ask_form(bob)
    query = reply.find(f"{{{REGISTER}}}query")
    assert query is not None and query.find(f"{{{REGISTER}}}registered") is not None
    assert query.findtext(f"{{{REGISTER}}}username") == "Bobby" and query.find(f"{{{DATA}}}x") is None
    # Registering again changes the nick, and frees the old one.
    assert (await register(bob, "Bob")).get("type") == "result"
    assert await reserved_nick(bob) == ["Bob"]
    carol = await h.connect("carol@localhost/desk")
    assert (await register(carol, "Bobby")).get("type") == "result"
    # Nobody else enters or registers under a reserved nick; its owner enters under it as a member.
    assert error_condition(await register(carol, "Bob")) == "conflict"
    await carol.send(join_xml("Bob"))
    (refused,) = carol.take()
    assert error_condition(refused) == "conflict"
    await bob.send(join_xml("Bob"))
    (own,) = [p for p in bob.take(presence) if "110" in codes(p)]
    assert item(own)["affiliation"] == "member"


async def test_registering_in_the_room_is_announced_and_the_nick_proposed(h: Harness) -> None:
    alice = await create_room(h)
    bob = await join(h, "bob", nick="bobby")
    bob.take()
    alice.take()
    reply = await ask_form(bob)
    proposed = [f for f in reply.iter(f"{{{DATA}}}field") if f.get("var") == ROOMNICK]
    assert [f.findtext(f"{{{DATA}}}value") for f in proposed] == ["bobby"]
    reply = await iq(bob, "set", f"<query xmlns='{REGISTER}'>{data_form(field(ROOMNICK, 'bobby'))}</query>")
    (own,) = bob.take(presence)
    assert reply.get("type") == "result"
    # §7.10: the new affiliation in bob's presence, to everyone.
    (seen,) = alice.take(presence)
    assert seen.get("from") == f"{ROOM}/bobby" and item(seen)["affiliation"] == "member"
    assert "110" in codes(own) and item(own)["affiliation"] == "member"


async def test_registration_errors(h: Harness) -> None:
    alice = await create_room(h)
    carol = await join(h, "carol")
    carol.take()
    bob = await h.connect("bob@localhost/desk")
    # A nick in use by someone else's occupant, or that cannot be a nick.
    assert error_condition(await register(bob, "carol")) == "conflict"
    assert error_condition(await register(bob, "x" * 1100)) == "not-acceptable"
    # §7.10: no valid form is a bad request; a cancelled one changes nothing.
    for form in ("", data_form(type_="form"), data_form()):
        payload = f"<query xmlns='{REGISTER}'>{form}</query>"
        assert error_condition(await iq(bob, "set", payload)) == "bad-request", payload
    cancel = f"<query xmlns='{REGISTER}'>{data_form(type_='cancel')}</query>"
    assert (await iq(bob, "set", cancel)).get("type") == "result"
    assert await member_nick(alice, "bob@localhost") is None
    # No such room; a room that is still locked does not exist for anyone but its owner.
    nowhere = f"nowhere@{SERVICE}"
    assert error_condition(await ask_form(bob, nowhere)) == "item-not-found"
    assert error_condition(await register(bob, "bob", nowhere)) == "item-not-found"
    await carol.send(join_xml("carol", room=f"new@{SERVICE}"))
    carol.take()
    assert error_condition(await ask_form(bob, f"new@{SERVICE}")) == "item-not-found"
    await bob.send(f"<iq type='get' id='n' to='new@{SERVICE}'><query xmlns='{INFO}' node='{NICK_NODE}'/></iq>")
    assert error_condition(bob.take(iq_reply)[0]) == "item-not-found"
    assert await reserved_nick(carol, f"new@{SERVICE}") == []


async def test_who_may_register(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1"))
    bob = await h.connect("bob@localhost/desk")
    # Members-only: the admins make members (§9.5), not registration.
    assert error_condition(await ask_form(bob)) == "not-allowed"
    assert error_condition(await register(bob, "bob")) == "not-allowed"
    await admin(alice, "<item jid='bob@localhost' affiliation='member'/>")
    await admin(alice, "<item jid='carol@localhost' affiliation='outcast'/>")
    alice.take()
    # A member may reserve (or change) its nick; an owner too, and stays an owner.
    assert (await register(bob, "bob")).get("type") == "result"
    assert (await register(alice, "boss")).get("type") == "result"
    assert await reserved_nick(alice) == ["boss"]
    await alice.send(join_xml("boss"))
    assert item([p for p in alice.take(presence) if "110" in codes(p)][-1])["affiliation"] == "owner"
    # The banned may not.
    carol = await h.connect("carol@localhost/desk")
    assert error_condition(await ask_form(carol)) == "not-allowed"


async def test_unregistering(h: Harness) -> None:
    alice = await create_room(h)
    bob = await h.connect("bob@localhost/desk")
    remove = f"<query xmlns='{REGISTER}'><remove/></query>"
    assert error_condition(await iq(bob, "set", remove)) == "registration-required"
    await register(bob, "bob")
    both = f"<query xmlns='{REGISTER}'><remove/><username>bob</username></query>"
    assert error_condition(await iq(bob, "set", both)) == "bad-request"
    assert (await iq(bob, "set", remove)).get("type") == "result"
    assert await member_nick(alice, "bob@localhost") is None
    assert await reserved_nick(bob) == []
    # An owner's nick goes, the ownership stays.
    await register(alice, "boss")
    assert (await iq(alice, "set", remove)).get("type") == "result"
    assert await reserved_nick(alice) == []
    assert (await ask_form(alice)).find(f"{{{REGISTER}}}query/{{{DATA}}}x") is not None


async def test_a_member_who_unregisters_leaves_a_members_only_room(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1"))
    await admin(alice, "<item jid='bob@localhost' affiliation='member'/>")
    bob = await join(h, "bob")
    bob.take()
    alice.take()
    reply = await iq(bob, "set", f"<query xmlns='{REGISTER}'><remove/></query>")
    (gone,) = bob.take(presence)
    assert reply.get("type") == "result"
    # §9.4: out with 321, as when an admin revokes the membership, but with no actor.
    assert gone.get("type") == "unavailable" and {"110", "321"} <= set(codes(gone))
    assert gone.find(f"{{{USER}}}x/{{{USER}}}item/{{{USER}}}actor") is None
    (seen,) = alice.take(presence)
    assert seen.get("from") == f"{ROOM}/bob" and "321" in codes(seen)
