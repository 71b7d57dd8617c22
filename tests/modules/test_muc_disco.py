"""XEP-0045 §6 discovery of the room service and its rooms (with XEP-0059 paging of the room
list), XEP-0307 unique room names, XEP-0410 self-pings and iqs passed to occupants, through the
in-memory server."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from lxml import etree

from components.muc import disco

from .harness import Client, Harness, error_condition
from .muc_helpers import (
    INFO,
    MODERATED,
    MUC,
    OWNER,
    PERSISTENT,
    ROOM,
    ROOMNAME,
    SERVICE,
    WHOIS,
    create_room,
    data_form,
    field,
    form_values,
    in_room,
    iq,
    join,
    join_xml,
    query,
    room_service,  # noqa: F401  (the fixture h)
    start,
)

ITEMS = "http://jabber.org/protocol/disco#items"
RSM = "http://jabber.org/protocol/rsm"
UNIQUE = "http://jabber.org/protocol/muc#unique"


async def get(client: Client, to: str, payload: str) -> etree._Element:
    """The answer to `<iq type='get'>` with `payload`, which is all the client receives."""
    reply = await iq(client, "get", payload, to)
    assert client.take() == []
    return reply


def features(reply: etree._Element) -> set[str]:
    return {feature.get("var", "") for feature in reply.iter(f"{{{INFO}}}feature")}


def identities(reply: etree._Element) -> list[dict[str, str]]:
    return [{str(k): str(v) for k, v in i.attrib.items()} for i in reply.iter(f"{{{INFO}}}identity")]


# -- the service ------------------------------------------------------------------------------------


async def test_the_service_says_what_it_is_and_does(h: Harness) -> None:
    alice = await h.connect("alice@localhost/desk")
    reply = await get(alice, SERVICE, f"<query xmlns='{INFO}'/>")
    assert {"category": "conference", "type": "text", "name": "Chatrooms"} in identities(reply)
    assert {MUC, "http://jabber.org/protocol/muc#stable_id", UNIQUE, RSM} <= features(reply)
    # Nothing a room does on its own is claimed for the service.
    assert "http://jabber.org/protocol/muc#self-ping-optimization" not in features(reply)


async def test_unique_room_names_are_random_and_for_who_may_create(tmp_path: Path) -> None:
    async with start(tmp_path, create_rooms="admins") as h:
        root, alice = await h.connect("root@localhost/desk"), await h.connect("alice@localhost/desk")
        names = set()
        for _ in range(2):
            reply = await get(root, SERVICE, f"<unique xmlns='{UNIQUE}'/>")
            name = reply.findtext(f"{{{UNIQUE}}}unique") or ""
            assert re.fullmatch("[0-9a-f]{32}", name)
            names.add(name)
        assert len(names) == 2
        refused = await get(alice, SERVICE, f"<unique xmlns='{UNIQUE}'/>")
        assert error_condition(refused) == "not-allowed"


async def test_the_room_list_shows_public_rooms_by_name(h: Harness) -> None:
    alice = await create_room(h, field(ROOMNAME, "The Lobby"))
    await alice.send(join_xml("alice", room=f"hidden@{SERVICE}"))
    await query(alice, OWNER, data_form(field("muc#roomconfig_publicroom", "0")), to=f"hidden@{SERVICE}")
    await alice.send(join_xml("alice", room=f"locked@{SERVICE}"))  # never configured
    alice.take()
    reply = await get(alice, SERVICE, f"<query xmlns='{ITEMS}'/>")
    items = [dict(item.attrib) for item in reply.iter(f"{{{ITEMS}}}item")]
    assert items == [{"jid": ROOM, "name": "The Lobby"}]
    assert reply.find(f".//{{{RSM}}}set") is None  # the whole list: no page
    assert error_condition(await get(alice, SERVICE, f"<query xmlns='{ITEMS}' node='x'/>")) == "item-not-found"


async def open_rooms(h: Harness, count: int) -> tuple[Client, list[str]]:
    """`count` public rooms room00@… and on, opened (and left by) alice; their JIDs in order."""
    alice = await h.connect("alice@localhost/desk")
    jids = [f"room{n:02}@{SERVICE}" for n in range(count)]
    for jid in jids:
        await alice.send(join_xml("alice", room=jid))
        await query(alice, OWNER, data_form(field(PERSISTENT, "1")), to=jid)
    alice.take()
    return alice, jids


def page(reply: etree._Element) -> tuple[list[str], dict[str, str | None]]:
    """The room JIDs of a disco#items page, and its <set/> (first, its index, last, count)."""
    rsm = reply.find(f".//{{{RSM}}}set")
    assert rsm is not None, etree.tostring(reply)
    first = rsm.find(f"{{{RSM}}}first")
    summary = {
        "first": rsm.findtext(f"{{{RSM}}}first"),
        "index": first.get("index") if first is not None else None,
        "last": rsm.findtext(f"{{{RSM}}}last"),
        "count": rsm.findtext(f"{{{RSM}}}count"),
    }
    return [item.get("jid", "") for item in reply.iter(f"{{{ITEMS}}}item")], summary


async def test_the_room_list_pages_with_rsm(h: Harness) -> None:
    alice, jids = await open_rooms(h, 25)

    async def rsm(paging: str) -> etree._Element:
        return await get(alice, SERVICE, f"<query xmlns='{ITEMS}'><set xmlns='{RSM}'>{paging}</set></query>")

    # Forwards, page by page with <after/>.
    seen: list[str] = []
    after = ""
    for size in (10, 10, 5):
        listed, summary = page(await rsm(f"<max>10</max>{after}"))
        assert len(listed) == size and summary["count"] == "25"
        assert summary == {"first": listed[0], "index": str(len(seen)), "last": listed[-1], "count": "25"}
        seen += listed
        after = f"<after>{listed[-1]}</after>"
    assert seen == jids
    listed, summary = page(await rsm(f"<max>10</max>{after}"))
    assert listed == [] and summary == {"first": None, "index": None, "last": None, "count": "25"}
    # Backwards: the last page, then the one before it.
    listed, summary = page(await rsm("<max>10</max><before/>"))
    assert listed == jids[15:] and summary["index"] == "15"
    listed, summary = page(await rsm(f"<max>10</max><before>{jids[15]}</before>"))
    assert listed == jids[5:15] and summary["index"] == "5"
    listed, _ = page(await rsm(f"<max>10</max><before>{jids[3]}</before>"))
    assert listed == jids[:3]
    # By index, past the end, the count alone.
    listed, summary = page(await rsm("<max>3</max><index>20</index>"))
    assert listed == jids[20:23] and summary["index"] == "20"
    assert page(await rsm("<max>3</max><index>40</index>"))[0] == []
    listed, summary = page(await rsm("<max>0</max>"))
    assert listed == [] and summary["count"] == "25"
    # An id whose room is gone still says where the next page starts (ids sort like the list).
    listed, _ = page(await rsm(f"<max>2</max><after>room04x@{SERVICE}</after>"))
    assert listed == jids[5:7]
    # A <set/> without <max/> gets the whole list (it is short), with its summary.
    listed, summary = page(await rsm(""))
    assert listed == jids and summary["count"] == "25"
    for bad in ("<max>ten</max>", "<max>-1</max>", "<index>²</index>"):
        assert error_condition(await rsm(bad)) == "bad-request"


async def test_a_long_room_list_comes_in_pages_unasked(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, jids = await open_rooms(h, 5)
    monkeypatch.setattr(disco, "PAGE_LIMIT", 2)
    listed, summary = page(await get(alice, SERVICE, f"<query xmlns='{ITEMS}'/>"))
    assert listed == jids[:2] and summary["count"] == "5"
    # Nobody gets more than a page, whatever it asks for.
    rsm = f"<set xmlns='{RSM}'><max>100</max></set>"
    assert page(await get(alice, SERVICE, f"<query xmlns='{ITEMS}'>{rsm}</query>"))[0] == jids[:2]


# -- a room ---------------------------------------------------------------------------------------


async def test_room_info_tells_its_configuration_and_what_it_does(h: Harness) -> None:
    form = field(ROOMNAME, "The Lobby") + field(MODERATED, "1") + field("muc#roomconfig_roomdesc", "Come in")
    alice, bob = await in_room(h, "alice", "bob", fields=form)
    reply = await get(bob, ROOM, f"<query xmlns='{INFO}'/>")
    assert reply.get("type") == "result" and reply.get("from") == ROOM
    assert identities(reply) == [{"category": "conference", "type": "text", "name": "The Lobby"}]
    assert {
        MUC, "muc_public", "muc_temporary", "muc_open", "muc_moderated", "muc_semianonymous", "muc_unsecured",
        "http://jabber.org/protocol/muc#stable_id", "urn:xmpp:occupant-id:0",
        "http://jabber.org/protocol/muc#self-ping-optimization", "jabber:iq:register",
        "http://jabber.org/protocol/muc#request", "urn:xmpp:mam:2", "urn:xmpp:sid:0", INFO,
    } <= features(reply)
    values = form_values(reply)
    assert values["FORM_TYPE"] == ["http://jabber.org/protocol/muc#roominfo"]
    assert values["muc#roominfo_description"] == ["Come in"] and values["muc#roominfo_occupants"] == ["2"]
    # Owners are contacts only where real JIDs are public anyway.
    assert "muc#roominfo_contactjid" not in values
    await query(alice, OWNER, data_form(field(WHOIS, "anyone") + field("muc#roomconfig_enablearchiving", "0")))
    bob.take()  # the configuration change notice
    reply = await get(bob, ROOM, f"<query xmlns='{INFO}'/>")
    assert form_values(reply)["muc#roominfo_contactjid"] == ["alice@localhost"]
    assert "muc_nonanonymous" in features(reply) and "urn:xmpp:mam:2" not in features(reply)


async def test_room_info_errors_and_nodes(h: Harness) -> None:
    alice = await join(h, "alice")  # a new room, locked until configured
    alice.take()
    bob = await h.connect("bob@localhost/desk")
    for payload in (f"<query xmlns='{INFO}'/>", f"<query xmlns='{ITEMS}'/>"):
        assert error_condition(await get(bob, ROOM, payload)) == "item-not-found"  # it does not exist yet
        assert (await get(alice, ROOM, payload)).get("type") == "result"  # but for its owner
        assert error_condition(await get(bob, f"nowhere@{SERVICE}", payload)) == "item-not-found"
    traffic = f"<query xmlns='{INFO}' node='http://jabber.org/protocol/muc#traffic'/>"
    assert error_condition(await get(alice, ROOM, traffic)) == "service-unavailable"  # §18.1.1: nothing is cut
    assert error_condition(await get(alice, ROOM, f"<query xmlns='{INFO}' node='x'/>")) == "item-not-found"
    assert error_condition(await get(alice, ROOM, f"<query xmlns='{ITEMS}' node='x'/>")) == "item-not-found"


async def test_room_items_keep_the_occupants_private(h: Harness) -> None:
    _alice, bob = await in_room(h, "alice", "bob")
    reply = await get(bob, ROOM, f"<query xmlns='{ITEMS}'/>")
    items = reply.find(f"{{{ITEMS}}}query")
    assert reply.get("type") == "result" and items is not None and len(items) == 0


# -- iqs to occupants -----------------------------------------------------------------------------


async def test_a_self_ping_is_answered_by_the_room(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    ping = "<ping xmlns='urn:xmpp:ping'/>"
    # XEP-0410 §3.3: joined under that nick, the room answers at once (nothing reaches alice).
    answer = await get(bob, f"{ROOM}/bob", ping)
    assert answer.get("type") == "result" and answer.get("from") == f"{ROOM}/bob"
    assert alice.take() == []
    # Not joined (another device of bob's, or after a restart of the room): not-acceptable.
    phone = await h.connect("bob@localhost/phone")
    assert error_condition(await get(phone, f"{ROOM}/bob", ping)) == "not-acceptable"
    assert error_condition(await get(phone, f"nowhere@{SERVICE}/bob", ping)) == "not-acceptable"


async def test_iqs_to_an_occupant_go_through_the_room_both_ways(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    await bob.send(f"<iq type='get' id='v1' to='{ROOM}/alice'><query xmlns='jabber:iq:version'/></iq>")
    # §17.4 rule 3: alice sees bob's occupant JID, never his real one, and the room's own id.
    (asked,) = alice.take()
    assert asked.get("from") == f"{ROOM}/bob" and asked.get("to") == "alice@localhost/desk"
    assert asked.get("type") == "get" and asked.get("id") not in (None, "v1")
    assert asked.find("{jabber:iq:version}query") is not None
    await alice.send(
        f"<iq type='result' id='{asked.get('id')}' to='{ROOM}/bob'>"
        "<query xmlns='jabber:iq:version'><name>Client</name></query></iq>"
    )
    (answer,) = bob.take()
    assert (answer.get("type"), answer.get("id"), answer.get("from"), answer.get("to")) == (
        "result", "v1", f"{ROOM}/alice", "bob@localhost/desk"
    )
    assert answer.findtext("{jabber:iq:version}query/{jabber:iq:version}name") == "Client"
    # An error answer goes back the same way.
    await bob.send(f"<iq type='set' id='s1' to='{ROOM}/alice'><query xmlns='urn:example'/></iq>")
    (asked,) = alice.take()
    await alice.send(
        f"<iq type='error' id='{asked.get('id')}' to='{ROOM}/bob'><error type='cancel'>"
        "<feature-not-implemented xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
    )
    (answer,) = bob.take()
    assert answer.get("id") == "s1" and error_condition(answer) == "feature-not-implemented"


async def test_answers_the_room_did_not_ask_for_are_dropped(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    carol = await join(h, "carol")
    for client in (alice, bob, carol):
        client.take()
    await bob.send(f"<iq type='get' id='v1' to='{ROOM}/alice'><query xmlns='jabber:iq:version'/></iq>")
    (asked,) = alice.take()
    sealed = asked.get("id")
    # The id names bob as the requester: an answer from anyone but whom it was asked of, to
    # anyone but whom it was asked by, or with a made-up id, goes nowhere.
    await carol.send(f"<iq type='result' id='{sealed}' to='{ROOM}/bob'/>")
    await alice.send(f"<iq type='result' id='{sealed}' to='{ROOM}/carol'/>")
    await alice.send(f"<iq type='result' id='{(sealed or '')[:-4]}AAAA' to='{ROOM}/bob'/>")
    await alice.send(f"<iq type='result' id='not-base64!' to='{ROOM}/bob'/>")
    assert bob.take() == [] and carol.take() == []
    await alice.send(f"<iq type='result' id='{sealed}' to='{ROOM}/bob'/>")
    assert [answer.get("id") for answer in bob.take()] == ["v1"]


async def test_iqs_to_occupants_from_outside_or_to_nobody_are_refused(h: Harness) -> None:
    _alice, bob = await in_room(h, "alice", "bob")
    stranger = await h.connect("carol@localhost/desk")
    # §6.6: disco from outside is a bad request; anything else not acceptable (XEP-0410 §3.2).
    assert error_condition(await get(stranger, f"{ROOM}/alice", f"<query xmlns='{INFO}'/>")) == "bad-request"
    version = "<query xmlns='jabber:iq:version'/>"
    assert error_condition(await get(stranger, f"{ROOM}/alice", version)) == "not-acceptable"
    assert error_condition(await get(bob, f"{ROOM}/nobody", version)) == "item-not-found"


async def test_a_vcard_request_goes_to_the_occupants_account(h: Harness) -> None:
    alice, bob = await in_room(h, "alice", "bob")
    # The account's server answers for it (here it has no vCard module: service-unavailable),
    # and none of alice's devices is asked.
    answer = await get(bob, f"{ROOM}/alice", "<vCard xmlns='vcard-temp'/>")
    assert answer.get("from") == f"{ROOM}/alice" and error_condition(answer) == "service-unavailable"
    assert alice.take() == []
