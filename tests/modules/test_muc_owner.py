"""XEP-0045 §10.1, §10.2 and §10.9 through the in-memory server: unlocking a new room (instant or
reserved), cancelling, the configuration form and its submission with what follows from it, and
destroying a room; each only for owners."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from .harness import Client, Harness, error_condition
from .muc_helpers import (
    DATA,
    MEMBERS_ONLY,
    OWNER,
    PERSISTENT,
    ROOM,
    ROOMNAME,
    SERVICE_ADMIN,
    USER,
    WHOIS,
    admin,
    affiliate,
    codes,
    configure,
    data_form,
    entered,
    field,
    form_values,
    in_room,
    item,
    join,
    join_xml,
    message,
    ok,
    query,
    refused,
    rejected,
    room_service,  # noqa: F401  (the fixture h)
    start,
    unavailable,
)

HISTORY = "muc#maxhistoryfetch"
ARCHIVING = "muc#roomconfig_enablearchiving"
BODY = "{jabber:client}body"


def config_form(reply: etree._Element) -> dict[str, list[str]]:
    """The values of the configuration form in an owner's `reply`, which must hold one."""
    form = reply.find(f"{{{OWNER}}}query/{{{DATA}}}x")
    assert form is not None and form.get("type") == "form", etree.tostring(reply)
    return form_values(form)


async def get_form(client: Client) -> etree._Element:
    """The answer to an owner's request for the configuration form."""
    return await query(client, OWNER, "", "get")


def destroyed(stanza: etree._Element) -> etree._Element:
    """The `<destroy/>` of a room's unavailable presence (with affiliation and role none)."""
    assert stanza.get("type") == "unavailable", etree.tostring(stanza)
    assert item(stanza) == {"affiliation": "none", "role": "none"}
    notice = stanza.find(f"{{{USER}}}x/{{{USER}}}destroy")
    assert notice is not None, etree.tostring(stanza)
    return notice


# -- creating (§10.1) ------------------------------------------------------------------------------


async def test_an_instant_room_is_unlocked_by_the_empty_form(h: Harness) -> None:
    alice = await join(h, "alice")
    alice.take()
    assert rejected(await join(h, "bob")) == "item-not-found"
    await configure(alice)
    assert entered(await join(h, "bob", resource="later"))


async def test_a_reserved_room_is_configured_before_anyone_enters(h: Harness) -> None:
    alice = await join(h, "alice")
    alice.take()
    values = config_form(await get_form(alice))
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roomconfig"]
    assert values[MEMBERS_ONLY] == ["0"]
    # Still locked while the owner fills it in.
    assert rejected(await join(h, "bob")) == "item-not-found"
    await configure(alice, field(ROOMNAME, "The Cave") + field(MEMBERS_ONLY, "1"))
    (notice,) = alice.take(message)
    assert notice.get("type") == "groupchat" and notice.get("from") == ROOM and codes(notice) == ["104"]
    assert config_form(await get_form(alice))[ROOMNAME] == ["The Cave"]
    # Unlocked, and members-only now.
    assert rejected(await join(h, "bob", resource="later")) == "registration-required"


async def test_cancelling_the_first_configuration_destroys_the_room(h: Harness) -> None:
    alice = await join(h, "alice")
    alice.take()
    ok(await query(alice, OWNER, data_form(type_="cancel")))
    (gone,) = alice.take()
    assert gone.get("from") == f"{ROOM}/alice"
    assert len(destroyed(gone)) == 0 and not destroyed(gone).attrib
    # It is gone: whoever enters now creates a new room.
    bob = await join(h, "bob")
    assert any("201" in codes(stanza) for stanza in bob.take())


async def test_cancelling_a_later_configuration_changes_nothing(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ok(await query(alice, OWNER, data_form(type_="cancel")))
    assert alice.take() == [] and bob.take() == []
    assert config_form(await get_form(alice))[MEMBERS_ONLY] == ["0"]


# -- configuring (§10.2) ---------------------------------------------------------------------------


async def test_only_owners_configure(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ok(await admin(alice, affiliate(bob="admin")))
    refused(await get_form(bob), "forbidden")
    refused(await query(bob, OWNER, data_form(field(MEMBERS_ONLY, "1"))), "forbidden")
    refused(await query(bob, OWNER, data_form(type_="cancel")), "forbidden")
    refused(await query(alice, OWNER, "", "get", to="nowhere@conference.localhost"), "item-not-found")
    # A service admin owns every room, from outside it too.
    root = await h.connect(f"{SERVICE_ADMIN}/console")
    ok(await get_form(root))


async def test_changes_are_announced_with_their_status_codes(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    await configure(alice, field(WHOIS, "anyone") + field(ARCHIVING, "0"))
    for client in (alice, bob):
        (notice,) = client.take()
        assert message(notice) and notice.get("type") == "groupchat" and notice.get("from") == ROOM
        assert codes(notice) == ["104", "171", "172"]
        assert notice.find(f"{{{USER}}}x/{{{USER}}}item") is None
    # The same configuration again: nothing to announce.
    await configure(alice, field(WHOIS, "anyone"))
    assert bob.take() == []


async def test_a_room_made_members_only_removes_its_non_members_with_322(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, affiliate(carol="member")))
    for client in (alice, bob, carol):
        client.take()
    await configure(alice, field(MEMBERS_ONLY, "1"))
    # bob goes first, so the announcement is for those who stay.
    (own,) = bob.take()
    assert own.get("from") == f"{ROOM}/bob" and codes(own) == ["110", "322"]
    assert own.get("type") == "unavailable" and item(own)["role"] == "none"
    for client in (alice, carol):
        removal, announcement = client.take()
        assert removal.get("type") == "unavailable" and codes(removal) == ["322"]
        assert message(announcement) and codes(announcement) == ["104"]


async def test_bad_forms_are_refused_and_change_nothing(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    reply = await query(alice, OWNER, data_form(field(MEMBERS_ONLY, "perhaps")))
    refused(reply, "not-acceptable")
    refused(await query(alice, OWNER, data_form(type_="form")), "bad-request")
    refused(await query(alice, OWNER, ""), "bad-request")
    assert bob.take() == []
    assert config_form(await get_form(alice))[MEMBERS_ONLY] == ["0"]


async def test_a_persistent_room_outlives_its_occupants_until_it_stops_being_persistent(tmp_path: Path) -> None:
    async with start(tmp_path) as h:
        alice = await join(h, "alice")
        await configure(alice, field(PERSISTENT, "1") + field(ROOMNAME, "kept"))
    async with start(tmp_path, restart=True) as h:
        alice = await h.connect("alice@localhost/desk")
        assert config_form(await get_form(alice))[ROOMNAME] == ["kept"]
        await alice.send(join_xml("alice"))
        await configure(alice, field(PERSISTENT, "0"))
    async with start(tmp_path, restart=True) as h:
        alice = await h.connect("alice@localhost/desk")
        refused(await get_form(alice), "item-not-found")


async def test_the_history_length_follows_the_configuration(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob", fields=field(ARCHIVING, "0"))
    for text in ("one", "two", "three"):
        await bob.send(f"<message to='{ROOM}' type='groupchat'><body>{text}</body></message>")
    await configure(alice, field(HISTORY, "2"))
    carol = await join(h, "carol")
    bodies = [stanza.findtext(BODY) for stanza in carol.take(message) if stanza.find(BODY) is not None]
    assert bodies == ["two", "three"]


# -- destroying (§10.9) ----------------------------------------------------------------------------


async def test_destroying_tells_each_occupant_once_and_forgets_the_room(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol", fields=field(PERSISTENT, "1"))
    laptop = await join(h, "bob", resource="laptop")
    for client in (alice, bob, carol, laptop):
        client.take()
    reply = await query(
        alice,
        OWNER,
        "<destroy jid='cave@conference.localhost'><reason>Macbeth doth come.</reason>"
        "<password>cauldron</password></destroy>",
    )
    ok(reply)
    for client, nick in ((alice, "alice"), (bob, "bob"), (laptop, "bob"), (carol, "carol")):
        (gone,) = client.take()  # its own removal only, no one else's
        assert gone.get("from") == f"{ROOM}/{nick}"
        notice = destroyed(gone)
        assert notice.get("jid") == "cave@conference.localhost"
        assert notice.findtext(f"{{{USER}}}reason") == "Macbeth doth come."
        assert notice.findtext(f"{{{USER}}}password") == "cauldron"
    # Persistent or not, it is gone.
    refused(await get_form(alice), "item-not-found")


async def test_only_owners_destroy_and_the_venue_must_be_an_address(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ok(await admin(alice, affiliate(bob="admin")))
    refused(await query(bob, OWNER, "<destroy/>"), "forbidden")
    refused(await query(alice, OWNER, "<destroy jid='@bad'/>"), "jid-malformed")
    assert [stanza for stanza in bob.take() if unavailable(stanza)] == []
    ok(await query(alice, OWNER, "<destroy/>"))
    (gone,) = bob.take()
    assert not destroyed(gone).attrib and error_condition(gone) is None
