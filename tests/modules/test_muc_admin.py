"""XEP-0045 §8 and §9 (and the owner/admin lists of §10.3-§10.8) through the in-memory server:
kicking, voice, the moderator role, bans, membership, admin and owner status, the lists, voice
requests, and the permission rules of §5.1/§5.2 with the error each case names."""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from .harness import Harness, error_condition, presence
from .muc_helpers import (
    ADMIN,
    MEMBERS_ONLY,
    MODERATED,
    PERSISTENT,
    ROOM,
    SECRET,
    SERVICE_ADMIN,
    USER,
    WHOIS,
    admin,
    affiliate,
    codes,
    configure,
    create_room,
    data_form,
    entered,
    field,
    form_values,
    in_room,
    item,
    item_element,
    join,
    message,
    ok,
    query,
    refused,
    rejected,
    room_service,  # noqa: F401  (the fixture h)
    start,
    unavailable,
)


def listed(reply: etree._Element) -> list[dict[str, str]]:
    """The attributes of each item of a muc#admin list, which the reply must hold."""
    ok(reply)
    return [{str(k): str(v) for k, v in found.attrib.items()} for found in reply.iter(f"{{{ADMIN}}}item")]


# -- kicking (§8.2) ------------------------------------------------------------------------------


async def test_a_kick_removes_the_occupant_with_307_actor_and_reason(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    reply = await admin(alice, "<item nick='bob' role='none'><reason>Avaunt!</reason></item>")
    ok(reply)
    (own,) = bob.take()
    assert own.get("type") == "unavailable" and own.get("from") == f"{ROOM}/bob"
    assert codes(own) == ["110", "307"]
    assert item(own)["role"] == "none" and item(own)["affiliation"] == "none"
    kicked = item_element(own)
    assert kicked.xpath("./*[local-name()='actor']/@nick") == ["alice"]
    assert kicked.findtext(f"{{{USER}}}reason") == "Avaunt!"
    for other in (alice, carol):
        (seen,) = other.take()
        assert seen.get("type") == "unavailable" and codes(seen) == ["307"]
    # Gone: bob is no occupant any more, and may come back (a kick is no ban).
    listed_nicks = {entry["nick"] for entry in listed(await admin(alice, "<item role='participant'/>", "get"))}
    assert listed_nicks == {"carol"}
    assert entered(await join(h, "bob", resource="again"))


async def test_a_kick_reaches_every_device_of_the_occupant(h: Harness) -> None:
    alice, phone = await in_room(h, "alice", "bob")
    laptop = await join(h, "bob", resource="laptop")
    laptop.take()
    phone.take()
    ok(await admin(alice, "<item nick='bob' role='none'/>"))
    for device in (phone, laptop):
        (own,) = device.take()
        assert own.get("type") == "unavailable" and codes(own) == ["110", "307"]


async def test_who_may_kick_whom(h: Harness) -> None:
    alice, bob, _carol, dave = await in_room(h, "alice", "bob", "carol", "dave")
    # A participant is no moderator (§8: forbidden).
    refused(await admin(bob, "<item nick='carol' role='none'/>"), "forbidden")
    # bob, an unaffiliated moderator, may kick an unaffiliated participant but not a member, nor
    # the owner (§8.2: not-allowed against a higher affiliation), nor a moderator (§5.1.3: admins').
    ok(await admin(alice, "<item nick='bob' role='moderator'/>" + affiliate(dave="member")))
    refused(await admin(bob, "<item nick='dave' role='none'/>"), "not-allowed")
    refused(await admin(bob, "<item nick='alice' role='none'/>"), "not-allowed")
    ok(await admin(alice, "<item nick='carol' role='moderator'/>"))
    refused(await admin(bob, "<item nick='carol' role='none'/>"), "forbidden")
    ok(await admin(alice, "<item nick='carol' role='participant'/>"))
    ok(await admin(bob, "<item nick='carol' role='none'/>"))
    # An admin may not kick an owner; an owner may kick an admin.
    ok(await admin(alice, "<item jid='dave@localhost' affiliation='admin'/>"))
    refused(await admin(dave, "<item nick='alice' role='none'/>"), "not-allowed")
    ok(await admin(alice, "<item nick='dave' role='none'/>"))


# -- voice and the moderator role (§8.3-§8.5, §9.6-§9.8) ------------------------------------------


async def test_voice_is_granted_and_revoked_with_a_presence_to_everyone(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol", fields=field(MODERATED, "1"))
    ok(await admin(alice, "<item nick='bob' role='participant'><reason>worthy</reason></item>"))
    for client in (alice, bob, carol):
        (update,) = client.take()
        assert update.get("from") == f"{ROOM}/bob" and update.get("type") is None
        assert item(update)["role"] == "participant"
        assert item_element(update).findtext(f"{{{USER}}}reason") == "worthy"
    voices = listed(await admin(alice, "<item role='participant'/>", "get"))
    assert voices == [{"nick": "bob", "role": "participant", "affiliation": "none", "jid": "bob@localhost/desk"}]
    ok(await admin(alice, "<item nick='bob' role='visitor'/>"))
    (update,) = carol.take()
    assert item(update)["role"] == "visitor"
    assert {entry["nick"] for entry in listed(await admin(alice, "<item role='visitor'/>", "get"))} == {"bob", "carol"}


async def test_several_roles_in_one_request(h: Harness) -> None:
    alice, _bob, carol = await in_room(h, "alice", "bob", "carol", fields=field(MODERATED, "1"))
    ok(await admin(alice, "<item nick='bob' role='participant'/><item nick='carol' role='participant'/>"))
    assert [p.get("from") for p in carol.take()] == [f"{ROOM}/bob", f"{ROOM}/carol"]


async def test_nobody_silences_an_admin_or_owner_nor_a_higher_affiliation(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='admin'/>"))
    # §8.4: the voice of an admin or owner is not removed "by anyone"; §9.7: nor its moderator role.
    refused(await admin(alice, "<item nick='bob' role='visitor'/>"), "not-allowed")
    refused(await admin(alice, "<item nick='bob' role='participant'/>"), "not-allowed")
    refused(await admin(bob, "<item nick='alice' role='participant'/>"), "not-allowed")
    # A moderator without affiliation may not silence a member.
    ok(await admin(alice, "<item nick='carol' role='moderator'/><item jid='dave@localhost' affiliation='member'/>"))
    dave = await join(h, "dave")
    dave.take()
    refused(await admin(carol, "<item nick='dave' role='visitor'/>"), "not-allowed")


async def test_the_moderator_role_is_given_and_taken_by_admins_only(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, "<item nick='bob' role='moderator'/>"))
    (update,) = carol.take()
    assert item(update) == {"affiliation": "none", "role": "moderator"}  # semi-anonymous: no jid
    # bob is a moderator but no admin: he may not make another (§9.6), nor read their list (§9.8).
    refused(await admin(bob, "<item nick='carol' role='moderator'/>"), "forbidden")
    moderators = listed(await admin(alice, "<item role='moderator'/>", "get"))
    assert {entry["nick"] for entry in moderators} == {"alice", "bob"}
    refused(await admin(bob, "<item role='moderator'/>", "get"), "forbidden")  # §9.8: an admin's list
    ok(await admin(alice, "<item nick='bob' role='participant'/>"))
    (update,) = carol.take()
    assert item(update)["role"] == "participant"


async def test_malformed_role_items(h: Harness) -> None:
    (alice,) = await in_room(h, "alice")
    refused(await admin(alice, "<item nick='nobody' role='none'/>"), "item-not-found")
    refused(await admin(alice, "<item role='none'/>"), "bad-request")
    refused(await admin(alice, "<item nick='alice' role='king'/>"), "bad-request")
    refused(await admin(alice, "<item nick='alice' role='moderator' affiliation='owner'/>"), "bad-request")
    refused(await admin(alice, "<item nick='alice'/>"), "bad-request")
    refused(await admin(alice, ""), "bad-request")
    refused(await admin(alice, "<item role='participant'/><item role='visitor'/>", "get"), "bad-request")
    refused(await admin(alice, "<item role='none'/>", "get"), "bad-request")
    reply = await query(alice, ADMIN, "<item nick='x' role='none'/>", to="nowhere@conference.localhost")
    refused(reply, "item-not-found")


# -- bans (§9.1, §9.2) ---------------------------------------------------------------------------


async def test_a_ban_removes_the_occupant_with_301_and_keeps_it_out(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, "<item jid='bob@localhost/desk' affiliation='outcast'><reason>Treason</reason></item>"))
    (own,) = bob.take()
    assert own.get("type") == "unavailable" and codes(own) == ["110", "301"]
    assert item(own)["affiliation"] == "outcast" and item(own)["role"] == "none"
    (seen,) = carol.take()
    assert codes(seen) == ["301"] and item(seen)["affiliation"] == "outcast"
    (seen,) = alice.take()
    assert item(seen)["jid"] == "bob@localhost/desk"  # the moderator sees who it was
    # The ban list, by bare JID, with the reason.
    bans = await admin(alice, "<item affiliation='outcast'/>", "get")
    assert listed(bans) == [{"affiliation": "outcast", "jid": "bob@localhost"}]
    assert bans.findtext(f".//{{{ADMIN}}}reason") == "Treason"
    bob = await join(h, "bob", resource="other")
    assert rejected(bob) == "forbidden"
    # Lifting the ban lets him in again.
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='none'/>"))
    assert listed(await admin(alice, "<item affiliation='outcast'/>", "get")) == []
    assert entered(await join(h, "bob", resource="third"))


async def test_banning_an_absent_account_tells_those_who_see_real_jids(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ok(await admin(alice, "<item jid='dave@localhost' affiliation='outcast'/>"))
    (notice,) = alice.take()
    assert message(notice) and notice.get("from") == ROOM
    assert item(notice) == {"affiliation": "outcast", "jid": "dave@localhost", "role": "none"}
    assert bob.take() == []  # semi-anonymous: a participant does not learn JIDs
    dave = await join(h, "dave")
    assert rejected(dave) == "forbidden"


async def test_who_may_ban_whom(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    # Neither a participant nor a moderator without admin affiliation may ban (§9: forbidden).
    refused(await admin(bob, "<item jid='carol@localhost' affiliation='outcast'/>"), "forbidden")
    ok(await admin(alice, "<item nick='bob' role='moderator'/>"))
    refused(await admin(bob, "<item jid='carol@localhost' affiliation='outcast'/>"), "forbidden")
    ok(await admin(alice, affiliate(bob="admin", dave="admin")))
    # An admin bans a participant, but not an owner nor another admin (§9.1: not-allowed).
    refused(await admin(bob, "<item jid='alice@localhost' affiliation='outcast'/>"), "not-allowed")
    refused(await admin(bob, "<item jid='dave@localhost' affiliation='outcast'/>"), "not-allowed")
    # Banning oneself is a conflict (§9.1), for admins and owners alike.
    refused(await admin(bob, "<item jid='bob@localhost' affiliation='outcast'/>"), "conflict")
    refused(await admin(alice, "<item jid='alice@localhost' affiliation='outcast'/>"), "conflict")
    ok(await admin(bob, "<item jid='carol@localhost' affiliation='outcast'/>"))
    (own,) = carol.take(unavailable)
    assert codes(own) == ["110", "301"]


# -- membership (§9.3-§9.5) ----------------------------------------------------------------------


async def test_membership_is_announced_and_listed(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol", fields=field(MODERATED, "1"))
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='member'/>"))
    (update,) = carol.take()
    # §5.1.3 note: a member of a moderated room is a participant.
    assert item(update) == {"affiliation": "member", "role": "participant"}
    (own,) = bob.take()
    assert codes(own) == ["110"] and item(own)["affiliation"] == "member"
    members = listed(await admin(alice, "<item affiliation='member'/>", "get"))
    assert members == [{"affiliation": "member", "jid": "bob@localhost", "nick": "bob"}]
    # Losing it in an open room: an affiliation update, and bob keeps his voice.
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='none'/>"))
    (update,) = carol.take()
    assert update.get("type") is None and item(update) == {"affiliation": "none", "role": "participant"}


async def test_revoking_membership_of_a_members_only_room_removes_with_321(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1"))
    ok(await admin(alice, affiliate(bob="member", carol="member")))
    bob, carol = await join(h, "bob"), await join(h, "carol")
    for client in (alice, bob, carol):
        client.take()
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='none'/>"))
    # §9.4: only the removal, no affiliation update before it.
    (own,) = bob.take()
    assert own.get("type") == "unavailable" and codes(own) == ["110", "321"]
    assert item(own)["affiliation"] == "none"
    (seen,) = carol.take()
    assert seen.get("type") == "unavailable" and codes(seen) == ["321"]
    bob = await join(h, "bob", resource="again")
    assert rejected(bob) == "registration-required"


async def test_a_new_member_of_a_members_only_room_is_invited(h: Harness) -> None:
    alice = await create_room(h, field(MEMBERS_ONLY, "1") + field(SECRET, "sesame"))
    dave = await h.connect("dave@localhost/desk")
    await dave.send("<presence/>")
    dave.take()
    ok(await admin(alice, "<item jid='dave@localhost' affiliation='member'><reason>join us</reason></item>"))
    (invitation,) = dave.take(message)
    assert invitation.get("from") == ROOM
    invite = invitation.find(f"{{{USER}}}x/{{{USER}}}invite")
    assert invite is not None and invite.get("from") == "alice@localhost"
    assert invite.findtext(f"{{{USER}}}reason") == "join us"
    assert invitation.findtext(f"{{{USER}}}x/{{{USER}}}password") == "sesame"
    # The owner, who sees real JIDs, hears of the new member too (§10.6's courtesy message).
    (notice,) = alice.take(message)
    assert item(notice) == {"affiliation": "member", "jid": "dave@localhost", "role": "none"}
    # Already a member: no second invitation, nor news for anyone.
    ok(await admin(alice, "<item jid='dave@localhost' affiliation='member'/>"))
    assert dave.take(message) == [] and alice.take() == []


async def test_a_member_item_may_reserve_a_nick(h: Harness) -> None:
    (alice,) = await in_room(h, "alice")
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='member' nick='thirdwitch'/>"))
    members = listed(await admin(alice, "<item affiliation='member'/>", "get"))
    assert members == [{"affiliation": "member", "jid": "bob@localhost", "nick": "thirdwitch"}]
    # Reserved for bob: someone else may neither take it nor reserve it.
    dave = await join(h, "dave", nick="thirdwitch")
    assert rejected(dave) == "conflict"
    refused(await admin(alice, "<item jid='carol@localhost' affiliation='member' nick='thirdwitch'/>"), "conflict")
    # A ban frees it (§9.1), and so does an empty nick (§9.5).
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='outcast'/>"))
    ok(await admin(alice, "<item jid='carol@localhost' affiliation='member' nick='thirdwitch'/>"))
    ok(await admin(alice, "<item jid='carol@localhost' affiliation='member' nick=''/>"))
    assert entered(await join(h, "dave", resource="again", nick="thirdwitch"))


# -- admins and owners (§10.3-§10.8) -------------------------------------------------------------


async def test_owners_grant_and_revoke_admin_and_owner_status(h: Harness) -> None:
    alice, _bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='admin'/>"))
    (update,) = carol.take()
    assert item(update) == {"affiliation": "admin", "role": "moderator"}
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='owner'/>"))
    (update,) = carol.take()
    assert item(update) == {"affiliation": "owner", "role": "moderator"}
    owners = listed(await admin(alice, "<item affiliation='owner'/>", "get"))
    assert {entry["jid"] for entry in owners} == {"alice@localhost", "bob@localhost"}
    # §10.7: a former admin or owner gets the role its new affiliation gives.
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='member'/>"))
    (update,) = carol.take()
    assert item(update) == {"affiliation": "member", "role": "participant"}
    assert listed(await admin(alice, "<item affiliation='admin'/>", "get")) == []


async def test_only_owners_edit_the_admin_and_owner_lists(h: Harness) -> None:
    alice, bob, _carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, affiliate(bob="admin", dave="admin")))
    for items in (
        "<item jid='carol@localhost' affiliation='admin'/>",  # §10.6
        "<item jid='carol@localhost' affiliation='owner'/>",  # §10.3
        "<item jid='dave@localhost' affiliation='member'/>",  # §10.7
        "<item jid='alice@localhost' affiliation='admin'/>",  # §10.4
        "<item jid='bob@localhost' affiliation='member'/>",  # not even his own
    ):
        refused(await admin(bob, items), "forbidden")
    # An admin edits the member list.
    ok(await admin(bob, "<item jid='carol@localhost' affiliation='member'/>"))


async def test_the_last_owner_cannot_leave_ownership(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    refused(await admin(alice, "<item jid='alice@localhost' affiliation='admin'/>"), "conflict")
    refused(await admin(alice, "<item jid='alice@localhost' affiliation='none'/>"), "conflict")
    # With another owner it may (§10.4: SHOULD allow), in the same request too.
    ok(await admin(alice, affiliate(bob="owner", alice="admin")))
    (update,) = bob.take(lambda s: presence(s) and s.get("from") == f"{ROOM}/alice")
    assert (item(update)["affiliation"], item(update)["role"]) == ("admin", "moderator")
    # Now bob is the last one.
    refused(await admin(bob, "<item jid='bob@localhost' affiliation='member'/>"), "conflict")


async def test_a_request_is_applied_whole_or_not_at_all(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol")
    ok(await admin(alice, "<item jid='bob@localhost' affiliation='admin'/>"))
    for client in (alice, bob, carol):
        client.take()
    reply = await admin(
        bob,
        "<item jid='carol@localhost' affiliation='member'/>"
        "<item nick='carol' role='none'/>"
        "<item jid='alice@localhost' affiliation='outcast'/>",
    )
    refused(reply, "not-allowed")
    assert carol.take() == [] and alice.take() == []
    assert listed(await admin(alice, "<item affiliation='member'/>", "get")) == []


async def test_malformed_affiliation_items(h: Harness) -> None:
    (alice,) = await in_room(h, "alice")
    refused(await admin(alice, "<item affiliation='member'/>"), "bad-request")
    refused(await admin(alice, "<item jid='bob@localhost' affiliation='king'/>"), "bad-request")
    refused(await admin(alice, "<item jid='@@' affiliation='member'/>"), "jid-malformed")
    refused(await admin(alice, "<item affiliation='none'/>", "get"), "bad-request")


async def test_service_admins_own_every_room_and_keep_it(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    root = await h.connect(f"{SERVICE_ADMIN}/console")
    # Not in the room, and not on its owner list, yet an owner.
    ok(await admin(root, "<item jid='bob@localhost' affiliation='outcast'/>"))
    (own,) = bob.take()
    assert codes(own) == ["110", "301"] and (item(own)["affiliation"], item(own)["role"]) == ("outcast", "none")
    refused(await admin(alice, f"<item jid='{SERVICE_ADMIN}' affiliation='outcast'/>"), "not-allowed")


# -- reading the lists (§9.2, §9.5, §10.5, §10.8) ------------------------------------------------


async def test_who_may_read_the_affiliation_lists(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ok(await admin(alice, affiliate(bob="member", carol="admin")))
    carol = await join(h, "carol")
    # Semi-anonymous: the lists hold JIDs, so a member may not read them (§5.2 note ***), and the
    # admin and owner lists are the owners' (§10.5, §10.8).
    for affiliation in ("member", "outcast", "admin", "owner"):
        refused(await admin(bob, f"<item affiliation='{affiliation}'/>", "get"), "forbidden")
    ok(await admin(carol, "<item affiliation='member'/>", "get"))
    ok(await admin(carol, "<item affiliation='outcast'/>", "get"))
    refused(await admin(carol, "<item affiliation='admin'/>", "get"), "forbidden")
    # Non-anonymous: members read all but the ban list.
    await configure(alice, field(WHOIS, "anyone"))
    for affiliation in ("member", "admin", "owner"):
        ok(await admin(bob, f"<item affiliation='{affiliation}'/>", "get"))
    refused(await admin(bob, "<item affiliation='outcast'/>", "get"), "forbidden")
    # Unaffiliated: never.
    dave = await join(h, "dave")
    refused(await admin(dave, "<item affiliation='member'/>", "get"), "forbidden")
    refused(await admin(dave, "<item role='participant'/>", "get"), "forbidden")


# -- voice requests (§7.13, §8.6) ----------------------------------------------------------------


def voice_request(extra: str = "") -> str:
    form = field("FORM_TYPE", "http://jabber.org/protocol/muc#request") + field("muc#role", "participant") + extra
    return f"<message to='{ROOM}'>{data_form(form)}</message>"


async def test_a_voice_request_goes_to_the_moderators_and_approval_grants_voice(h: Harness) -> None:
    alice, bob, carol = await in_room(h, "alice", "bob", "carol", fields=field(MODERATED, "1"))
    await carol.send(voice_request())
    assert carol.take() == [] and bob.take() == []
    (request,) = alice.take()
    assert message(request) and request.get("from") == ROOM
    values = form_values(request)
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#request"]
    assert values["muc#jid"] == ["carol@localhost/desk"] and values["muc#roomnick"] == ["carol"]
    assert values["muc#request_allow"] == ["false"]
    # A visitor cannot approve; a moderator can.
    approval = voice_request(field("muc#roomnick", "carol") + field("muc#request_allow", "true"))
    await bob.send(approval)
    (error,) = bob.take()
    assert error.get("type") == "error" and error_condition(error) == "forbidden"
    await alice.send(approval)
    for client in (alice, bob, carol):
        (update,) = client.take()
        assert update.get("from") == f"{ROOM}/carol" and item(update)["role"] == "participant"
    # With voice, a request changes nothing; a refusal neither.
    await carol.send(voice_request())
    assert alice.take(message) == []
    await alice.send(voice_request(field("muc#roomnick", "bob") + field("muc#request_allow", "false")))
    assert bob.take() == []


async def test_voice_requests_from_outside_are_refused(h: Harness) -> None:
    await in_room(h, "alice", fields=field(MODERATED, "1"))
    dave = await h.connect("dave@localhost/desk")
    await dave.send(voice_request())
    (error,) = dave.take()
    assert error.get("type") == "error" and error_condition(error) == "not-acceptable"


# -- persistence -----------------------------------------------------------------------------------


async def test_affiliations_survive_a_restart(tmp_path: Path) -> None:
    async with start(tmp_path) as h:
        alice = await create_room(h, field(PERSISTENT, "1"))
        ok(await admin(alice, "<item jid='bob@localhost' affiliation='outcast'><reason>spam</reason></item>"
                              "<item jid='carol@localhost' affiliation='member' nick='cc'/>"))
    async with start(tmp_path, restart=True) as h:
        alice = await join(h, "alice")
        alice.take()
        bans = await admin(alice, "<item affiliation='outcast'/>", "get")
        assert listed(bans) == [{"affiliation": "outcast", "jid": "bob@localhost"}]
        assert bans.findtext(f".//{{{ADMIN}}}reason") == "spam"
        members = listed(await admin(alice, "<item affiliation='member'/>", "get"))
        assert members == [{"affiliation": "member", "jid": "carol@localhost", "nick": "cc"}]
