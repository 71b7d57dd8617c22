"""RFC 6121 rosters (§2), subscriptions (§3, Appendix A) and presence (§4) through an in-memory
server: stanzas in through the router, what each session received out."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage.model import RosterItem
from xmppd import events
from xmppd.events import CopiesEvent
from xmppd.jid import parse_jid
from xmppd.modules import presence as presence_module
from xmppd.modules.roster import VER_FEATURE_NS
from xmppd.router import StanzaEvent
from xmppd.stanza import Stanza

from .harness import (
    Client,
    Harness,
    error_condition,
    iq_reply,
    presence,
    pushed_items,
    roster_push,
    summary,
)

ALICE = "alice@localhost"
BOB = "bob@example.test"  # on the other served host: subscriptions cross hosts through the router
CAROL = "carol@localhost"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test")) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        yield harness


async def get_roster(client: Client, ver: str | None = None) -> etree._Element:
    attribute = "" if ver is None else f" ver='{ver}'"
    await client.send(f"<iq type='get' id='get1'><query xmlns='jabber:iq:roster'{attribute}/></iq>")
    replies = client.take(iq_reply)
    assert len(replies) == 1
    return replies[0]


_ids = itertools.count()


async def set_item(client: Client, item: str) -> etree._Element:
    """Send a roster set; its answer is returned and taken out, the rest stays to be taken."""
    id_ = f"set{next(_ids)}"
    await client.send(f"<iq type='set' id='{id_}'><query xmlns='jabber:iq:roster'>{item}</query></iq>")
    replies = [data for data in client.output.writes if f'id="{id_}"'.encode() in data]
    assert len(replies) == 1, client.output.writes
    client.output.writes.remove(replies[0])
    return etree.fromstring(replies[0])


async def stored(h: Harness, user: str, contact: str) -> RosterItem | None:
    jid = parse_jid(user)
    assert jid.local is not None
    return await h.storage.rosters.item(jid.domain, jid.local, contact)


async def online(h: Harness, jid: str, *, roster: bool = True, available: bool = True) -> Client:
    client = await h.connect(jid)
    if roster:
        await get_roster(client)
    if available:
        await client.send("<presence/>")
    client.take()
    return client


# -- §2 roster management ---------------------------------------------------------------------


async def test_roster_get_is_empty_with_version_and_marks_interested(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    assert not alice.session.interested
    reply = await get_roster(alice)
    assert reply.get("type") == "result" and reply.get("id") == "get1"
    assert reply.get("to") == f"{ALICE}/phone"
    query = reply.find("{jabber:iq:roster}query")
    assert query is not None and query.get("ver") == "0" and len(query) == 0
    assert alice.session.interested


async def test_roster_set_pushes_to_interested_resources_only(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    laptop = await online(h, f"{ALICE}/laptop", roster=False)  # available, but never asked
    tablet = await online(h, f"{ALICE}/tablet", available=False)  # asked, not available
    reply = await set_item(
        phone, f"<item jid='{BOB}' name='Bob'><group>Friends</group><group>Work</group></item>"
    )
    assert reply.get("type") == "result"
    for client in (phone, tablet):
        pushes = client.take(roster_push)
        assert len(pushes) == 1
        assert pushes[0].get("to") == str(client.jid)
        assert pushes[0].get("from") in (None, ALICE)  # §2.1.6: no 'from', or the bare JID
        assert pushes[0].find("{jabber:iq:roster}query").get("ver") == "1"  # type: ignore[union-attr]
        assert pushed_items(pushes[0]) == [
            {"jid": BOB, "name": "Bob", "subscription": "none", "groups": "Friends,Work"}
        ]
    assert laptop.take() == []
    roster = await get_roster(phone)
    assert roster.find("{jabber:iq:roster}query").get("ver") == "1"  # type: ignore[union-attr]
    assert pushed_items(roster) == [
        {"jid": BOB, "name": "Bob", "subscription": "none", "groups": "Friends,Work"}
    ]


async def test_roster_update_keeps_subscription_and_ignores_client_subscription(h: Harness) -> None:
    await h.storage.rosters.put(
        "localhost", "alice", RosterItem(jid=BOB, subscription="both", groups=("Old",))
    )
    # (Not available: her probe would make Bob's server, which knows nothing of her, answer
    # "unsubscribed" and correct her roster, §4.3.2.)
    alice = await online(h, f"{ALICE}/phone", available=False)
    await set_item(
        alice, f"<item jid='{BOB}' name='Robert' subscription='none' ask='subscribe' approved='true'/>"
    )
    assert pushed_items(alice.take(roster_push)[0]) == [
        {"jid": BOB, "name": "Robert", "subscription": "both"}
    ]
    item = await stored(h, ALICE, BOB)
    assert item is not None
    assert (item.subscription, item.ask, item.approved, item.groups) == ("both", False, False, ())
    # A new item: whatever 'subscription' the client claims, it starts at "none".
    await set_item(alice, f"<item jid='{CAROL}' subscription='both'/>")
    assert pushed_items(alice.take(roster_push)[0]) == [{"jid": CAROL, "subscription": "none"}]


async def test_roster_versioning(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    feature = [provider(alice.session) for provider in h.server.hosts["localhost"].stream_features]
    assert any(f is not None and f.tag == f"{{{VER_FEATURE_NS}}}ver" for f in feature)
    await set_item(alice, f"<item jid='{BOB}'/>")
    await set_item(alice, f"<item jid='{CAROL}'/>")
    alice.take()
    # §2.6.3: the client's version is current: an empty result, nothing else.
    reply = await get_roster(alice, ver="2")
    assert reply.get("type") == "result" and len(reply) == 0
    assert alice.take() == []
    # An old version (or the empty string, "no cache") gets the whole roster and its version.
    for ver in ("1", ""):
        reply = await get_roster(alice, ver=ver)
        assert reply.find("{jabber:iq:roster}query").get("ver") == "2"  # type: ignore[union-attr]
        assert [item["jid"] for item in pushed_items(reply)] == [BOB, CAROL]


async def test_roster_remove_pushes_and_bumps_version(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await set_item(alice, f"<item jid='{BOB}'/>")
    alice.take()
    reply = await set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    assert reply.get("type") == "result"
    pushes = alice.take(roster_push)
    assert len(pushes) == 1
    assert pushes[0].find("{jabber:iq:roster}query").get("ver") == "2"  # type: ignore[union-attr]
    assert pushed_items(pushes[0]) == [{"jid": BOB, "subscription": "remove"}]
    assert await stored(h, ALICE, BOB) is None
    # §2.5.3: removing what is not there.
    reply = await set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    assert reply.get("type") == "error" and error_condition(reply) == "item-not-found"


async def test_roster_remove_cancels_subscriptions_both_ways(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    await set_item(alice, f"<item jid='{BOB}' subscription='remove'/>")
    # §2.5.2: unsubscribe and unsubscribed reach Bob, and Alice goes unavailable for him.
    received = [summary(s) for s in bob.take(presence)]
    assert ("unsubscribe", ALICE, BOB) in received
    assert ("unsubscribed", ALICE, BOB) in received
    assert ("unavailable", f"{ALICE}/phone", BOB) in received
    item = await stored(h, BOB, ALICE)
    assert item is not None and item.subscription == "none" and item.listed
    assert await stored(h, ALICE, BOB) is None
    # Bob's side went unavailable for Alice too (§3.3.3); her roster has no item to change.
    assert ("unavailable", f"{BOB}/pc", ALICE) in [summary(s) for s in alice.take(presence)]


@pytest.mark.parametrize(
    ("query", "condition"),
    [
        (f"<item jid='{BOB}'/><item jid='{CAROL}'/>", "bad-request"),  # §2.3.3: one item only
        ("", "bad-request"),
        ("<item name='no jid'/>", "bad-request"),
        ("<item jid='not@valid@jid'/>", "jid-malformed"),
        (f"<item jid='{BOB}/resource'/>", "bad-request"),
        (f"<item jid='{BOB}'><group>A</group><group>A</group></item>", "bad-request"),  # §2.3.3
        (f"<item jid='{BOB}'><group></group></item>", "not-acceptable"),  # §2.3.3
        (f"<item jid='{BOB}' name='{'n' * 1024}'/>", "not-acceptable"),  # §2.3.3
        (f"<item jid='{BOB}'><group>{'g' * 1024}</group></item>", "not-acceptable"),  # §2.3.3
    ],
)
async def test_roster_set_errors(h: Harness, query: str, condition: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send(f"<iq type='set' id='bad'><query xmlns='jabber:iq:roster'>{query}</query></iq>")
    replies = alice.take()
    assert len(replies) == 1
    assert replies[0].get("type") == "error" and replies[0].get("id") == "bad"
    assert error_condition(replies[0]) == condition
    _version, items = await h.storage.rosters.items("localhost", "alice")
    assert items == []


@pytest.mark.parametrize("kind", ["get", "set"])
async def test_another_users_roster_is_forbidden(h: Harness, kind: str) -> None:
    alice = await online(h, f"{ALICE}/phone")
    item = f"<item jid='{CAROL}'/>" if kind == "set" else ""
    await alice.send(
        f"<iq type='{kind}' id='x' to='{BOB}'><query xmlns='jabber:iq:roster'>{item}</query></iq>"
    )
    replies = alice.take()
    assert len(replies) == 1 and error_condition(replies[0]) == "forbidden"  # §2.1.5


async def test_roster_query_to_own_bare_jid_is_allowed(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send(f"<iq type='get' id='own' to='{ALICE}'><query xmlns='jabber:iq:roster'/></iq>")
    replies = alice.take()
    assert len(replies) == 1 and replies[0].get("type") == "result"


# -- §3 subscriptions -----------------------------------------------------------------------


async def subscribe_both_ways(alice: Client, bob: Client) -> None:
    await alice.send(f"<presence type='subscribe' to='{BOB}'/>")
    await bob.send(f"<presence type='subscribed' to='{ALICE}'/>")
    await bob.send(f"<presence type='subscribe' to='{ALICE}'/>")
    await alice.send(f"<presence type='subscribed' to='{BOB}'/>")
    alice.take()
    bob.take()


async def test_full_subscription_handshake_ends_in_both(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")

    # §3.1.2: Alice asks; her roster shows the pending request; Bob gets it stamped with her
    # bare JID (her client sent it from the full JID).
    await alice.send(f"<presence type='subscribe' to='{BOB}/pc' id='s1'/>")
    assert [pushed_items(p) for p in alice.take(roster_push)] == [
        [{"jid": BOB, "subscription": "none", "ask": "subscribe"}]
    ]
    requests = bob.take()
    assert [summary(s) for s in requests] == [("subscribe", ALICE, BOB)]
    assert requests[0].get("id") == "s1"
    assert bob.take(roster_push) == []  # §3.1.3: no roster item for a mere request
    bob_roster = await get_roster(bob)
    assert pushed_items(bob_roster) == []

    # §3.1.5: Bob approves: his roster gets Alice with "from", she gets "to" and his presence.
    await bob.send(f"<presence type='subscribed' to='{ALICE}'/>")
    assert [pushed_items(p) for p in bob.take(roster_push)] == [[{"jid": ALICE, "subscription": "from"}]]
    received = alice.take()
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": BOB, "subscription": "to"}]]
    presences = [summary(s) for s in received if presence(s)]
    assert presences == [("subscribed", BOB, ALICE), (None, f"{BOB}/pc", ALICE)]

    # And the other way round.
    await bob.send(f"<presence type='subscribe' to='{ALICE}'/>")
    assert [pushed_items(p) for p in bob.take(roster_push)] == [
        [{"jid": ALICE, "subscription": "from", "ask": "subscribe"}]
    ]
    received = alice.take()
    assert [summary(s) for s in received if presence(s)] == [("subscribe", BOB, ALICE)]
    # Her item for Bob shows no pending request: "Pending In" is not a roster attribute.
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": BOB, "subscription": "to"}]]
    await alice.send(f"<presence type='subscribed' to='{BOB}'/>")
    assert [pushed_items(p) for p in alice.take(roster_push)] == [[{"jid": BOB, "subscription": "both"}]]
    received = bob.take()
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": ALICE, "subscription": "both"}]]
    assert [summary(s) for s in received if presence(s)] == [
        ("subscribed", ALICE, BOB),
        (None, f"{ALICE}/phone", BOB),
    ]

    for user, contact in ((ALICE, BOB), (BOB, ALICE)):
        item = await stored(h, user, contact)
        assert item is not None
        assert (item.subscription, item.ask, item.pending_in, item.listed) == ("both", False, False, True)

    # Nothing more happens on a repeated approval (A.2.3: no state change, not routed).
    await alice.send(f"<presence type='subscribed' to='{BOB}'/>")
    assert alice.take() == [] and bob.take() == []


async def test_pre_approval(h: Harness) -> None:
    features = [p(None) for p in h.server.hosts["example.test"].stream_features]
    assert any(f is not None and f.tag == "{urn:xmpp:features:pre-approval}sub" for f in features)
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    # §3.4: Bob approves Alice before she asks: recorded, pushed, not routed.
    await bob.send(f"<presence type='subscribed' to='{ALICE}'/>")
    assert [pushed_items(p) for p in bob.take(roster_push)] == [
        [{"jid": ALICE, "subscription": "none", "approved": "true"}]
    ]
    assert alice.take() == []
    # Her request is answered at once on his behalf; he is not asked.
    await alice.send(f"<presence type='subscribe' to='{BOB}'/>")
    received = bob.take()
    assert [s for s in received if presence(s)] == []
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": ALICE, "subscription": "from"}]]
    received = alice.take()
    assert [summary(s) for s in received if presence(s)] == [
        ("subscribed", BOB, ALICE),
        (None, f"{BOB}/pc", ALICE),
    ]
    item = await stored(h, ALICE, BOB)
    assert item is not None and item.subscription == "to" and not item.ask
    item = await stored(h, BOB, ALICE)
    assert item is not None and item.subscription == "from" and not item.approved


async def test_pre_approval_withdrawn_by_unsubscribed(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await bob.send(f"<presence type='subscribed' to='{ALICE}'/>")
    await bob.send(f"<presence type='unsubscribed' to='{ALICE}'/>")  # A.2.4 [1]
    assert [pushed_items(p) for p in bob.take(roster_push)] == [
        [{"jid": ALICE, "subscription": "none", "approved": "true"}],
        [{"jid": ALICE, "subscription": "none"}],
    ]
    assert alice.take() == []
    await alice.send(f"<presence type='subscribe' to='{BOB}'/>")
    assert [summary(s) for s in bob.take(presence)] == [("subscribe", ALICE, BOB)]


async def test_unsubscribe_and_unsubscribed(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)

    # §3.3: Alice stops watching Bob: both -> from for her, both -> to for him. He sees the
    # request; his server answers "unsubscribed" (no change for her, dropped) and his resources
    # go unavailable for her (§3.3.3).
    await alice.send(f"<presence type='unsubscribe' to='{BOB}'/>")
    received = alice.take()
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": BOB, "subscription": "from"}]]
    assert [summary(s) for s in received if presence(s)] == [("unavailable", f"{BOB}/pc", ALICE)]
    received = bob.take()
    assert [summary(s) for s in received if presence(s)] == [("unsubscribe", ALICE, BOB)]
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": ALICE, "subscription": "to"}]]
    # Bob still sees Alice; Alice no longer sees Bob.
    await alice.send("<presence><show>away</show></presence>")
    assert [summary(s) for s in bob.take(presence)] == [(None, f"{ALICE}/phone", BOB)]
    alice.take()  # her own echo
    await bob.send("<presence><show>dnd</show></presence>")
    assert alice.take(presence) == []
    bob.take()

    # §3.2: Alice cancels Bob's subscription to her.
    await alice.send(f"<presence type='unsubscribed' to='{BOB}'/>")
    assert [pushed_items(p) for p in alice.take(roster_push)] == [[{"jid": BOB, "subscription": "none"}]]
    received = bob.take()
    assert [summary(s) for s in received if presence(s)] == [
        ("unsubscribed", ALICE, BOB),
        ("unavailable", f"{ALICE}/phone", BOB),
    ]
    assert [pushed_items(p) for p in received if roster_push(p)] == [[{"jid": ALICE, "subscription": "none"}]]
    for user, contact in ((ALICE, BOB), (BOB, ALICE)):
        item = await stored(h, user, contact)
        assert item is not None and item.subscription == "none" and item.listed


async def test_pending_request_is_redelivered_at_initial_presence(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc", available=False)
    await alice.send(f"<presence type='subscribe' to='{BOB}'><status>it is Alice</status></presence>")
    assert bob.take() == []  # not available: kept as "Pending In"
    item = await stored(h, BOB, ALICE)
    assert item is not None and item.pending_in and not item.listed
    await bob.send("<presence/>")
    requests = [summary(s) for s in bob.take(presence) if s.get("type") == "subscribe"]
    assert requests == [("subscribe", ALICE, BOB)]
    # Again at every initial presence until answered (§3.1.3).
    later = await h.connect(f"{BOB}/laptop")
    await later.send("<presence/>")
    assert [summary(s) for s in later.take(presence) if s.get("type") == "subscribe"] == [
        ("subscribe", ALICE, BOB)
    ]
    await bob.send(f"<presence type='unsubscribed' to='{ALICE}'/>")  # denied
    assert await stored(h, BOB, ALICE) is None  # the record is gone, nothing was ever listed
    assert bob.take(roster_push) == []
    assert [summary(s) for s in alice.take(presence)] == [("unsubscribed", BOB, ALICE)]
    item = await stored(h, ALICE, BOB)
    assert item is not None and item.subscription == "none" and not item.ask
    third = await h.connect(f"{BOB}/tablet")
    await third.send("<presence/>")
    assert [s for s in third.take(presence) if s.get("type") == "subscribe"] == []


async def test_subscribe_to_unknown_account_is_answered_unsubscribed(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send("<presence type='subscribe' to='nobody@example.test'/>")
    received = alice.take()
    assert [summary(s) for s in received if presence(s)] == [("unsubscribed", "nobody@example.test", ALICE)]
    assert [pushed_items(p) for p in received if roster_push(p)] == [
        [{"jid": "nobody@example.test", "subscription": "none", "ask": "subscribe"}],
        [{"jid": "nobody@example.test", "subscription": "none"}],
    ]
    # Other subscription stanzas and presence to unknown accounts are silently ignored.
    for kind in ("subscribed", "unsubscribe"):
        await alice.send(f"<presence type='{kind}' to='ghost@localhost'/>")
    await alice.send("<presence to='ghost@localhost'/>")
    assert alice.take(presence) == []


# -- §4 presence ---------------------------------------------------------------------------


async def test_initial_presence_broadcast_probes_and_own_resources(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    carol = await online(h, f"{CAROL}/pc")
    await subscribe_both_ways(alice, bob)
    # Carol watches Alice only one way ("to" for Carol, "from" for Alice).
    await carol.send(f"<presence type='subscribe' to='{ALICE}'/>")
    await alice.send(f"<presence type='subscribed' to='{CAROL}'/>")
    for client in (alice, bob, carol):
        client.take()

    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence><priority>5</priority><status>on the laptop</status></presence>")
    assert laptop.session.priority == 5
    received = [summary(s) for s in laptop.take(presence)]
    # §4.2.2: her own echo, the other resource, and Bob's answer to the probe (Carol's
    # presence is not for her: she has no subscription to Carol).
    assert (None, f"{ALICE}/laptop", f"{ALICE}/laptop") in received
    assert (None, f"{ALICE}/phone", f"{ALICE}/laptop") in received
    assert (None, f"{BOB}/pc", ALICE) in received
    assert not any(frm and frm.startswith(CAROL) for _t, frm, _to in received)
    assert [summary(s) for s in bob.take(presence)] == [(None, f"{ALICE}/laptop", BOB)]
    carol_got = carol.take(presence)
    assert [summary(s) for s in carol_got] == [(None, f"{ALICE}/laptop", CAROL)]
    assert carol_got[0].findtext("{jabber:client}status") == "on the laptop"
    # The probe was sent from her bare JID (§4.3), so the answer reaches all her resources.
    assert [summary(s) for s in alice.take(presence)] == [
        (None, f"{ALICE}/laptop", f"{ALICE}/phone"),
        (None, f"{BOB}/pc", ALICE),
    ]

    # §4.4.2: an update goes the same way, without probes.
    await laptop.send("<presence><show>away</show></presence>")
    assert [summary(s) for s in laptop.take(presence)] == [(None, f"{ALICE}/laptop", f"{ALICE}/laptop")]
    assert [summary(s) for s in bob.take(presence)] == [(None, f"{ALICE}/laptop", BOB)]
    assert [summary(s) for s in carol.take(presence)] == [(None, f"{ALICE}/laptop", CAROL)]
    assert [summary(s) for s in alice.take(presence)] == [(None, f"{ALICE}/laptop", f"{ALICE}/phone")]
    assert laptop.session.priority == 0

    # §4.5.2: unavailable to the same people; the resource is no longer available.
    await laptop.send("<presence type='unavailable'/>")
    assert not laptop.session.available
    assert [summary(s) for s in bob.take(presence)] == [("unavailable", f"{ALICE}/laptop", BOB)]
    assert [summary(s) for s in alice.take(presence)] == [
        ("unavailable", f"{ALICE}/laptop", f"{ALICE}/phone")
    ]


async def test_session_end_broadcasts_unavailable(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    laptop = await online(h, f"{ALICE}/laptop")
    bob.take()
    alice.take()
    await laptop.disconnect()
    assert [summary(s) for s in bob.take(presence)] == [("unavailable", f"{ALICE}/laptop", BOB)]
    assert [summary(s) for s in alice.take(presence)] == [
        ("unavailable", f"{ALICE}/laptop", f"{ALICE}/phone")
    ]
    # A session that never became available leaves silently.
    quiet = await online(h, f"{ALICE}/quiet", available=False)
    await quiet.disconnect()
    assert bob.take() == [] and alice.take() == []


async def test_a_broadcast_written_with_a_prefix_reaches_contacts(h: Harness) -> None:
    # Namespace prefixes are the client's choice (the same stanza as `<presence>`); contacts
    # get it in the default namespace, with its payload.
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    await alice.send("<c:presence xmlns:c='jabber:client'><c:show>dnd</c:show></c:presence>")
    (got,) = bob.take(presence)
    assert summary(got) == (None, f"{ALICE}/phone", BOB)
    assert got.findtext("{jabber:client}show") == "dnd"


async def test_directed_presence_and_its_unavailable(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    carol = await online(h, f"{CAROL}/pc")
    await subscribe_both_ways(alice, bob)
    # §4.6: to a full JID and a bare JID with no subscription; to Bob, who is subscribed.
    await alice.send(f"<presence to='{CAROL}/pc'><show>chat</show></presence>")
    assert [summary(s) for s in carol.take(presence)] == [(None, f"{ALICE}/phone", f"{CAROL}/pc")]
    await alice.send(f"<presence to='{BOB}'/>")
    assert [summary(s) for s in bob.take(presence)] == [(None, f"{ALICE}/phone", BOB)]
    assert alice.session.directed == {parse_jid(f"{CAROL}/pc")}
    # Going offline reaches the directed entity once, and Bob once.
    await alice.disconnect()
    assert [summary(s) for s in carol.take(presence)] == [("unavailable", f"{ALICE}/phone", f"{CAROL}/pc")]
    assert [summary(s) for s in bob.take(presence)] == [("unavailable", f"{ALICE}/phone", BOB)]


async def test_directed_unavailable_forgets_the_entity(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    carol = await online(h, f"{CAROL}/pc")
    await alice.send(f"<presence to='{CAROL}'/>")
    await alice.send(f"<presence to='{CAROL}' type='unavailable'/>")
    assert [summary(s) for s in carol.take(presence)] == [
        (None, f"{ALICE}/phone", CAROL),
        ("unavailable", f"{ALICE}/phone", CAROL),
    ]
    assert alice.session.directed == set()
    await alice.send("<presence type='unavailable'/>")
    assert carol.take() == []


async def test_presence_to_full_and_bare_jids(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    carol_pc = await online(h, f"{CAROL}/pc")
    carol_phone = await online(h, f"{CAROL}/phone")
    carol_idle = await online(h, f"{CAROL}/idle", available=False)
    carol_pc.take()  # the initial presence of her other resource
    await alice.send(f"<presence to='{CAROL}/phone'/>")  # §8.5.3.1: that resource only
    assert carol_pc.take() == [] and carol_idle.take() == []
    assert len(carol_phone.take(presence)) == 1
    await alice.send(f"<presence to='{CAROL}'/>")  # §8.5.2.1.1: every available resource
    assert len(carol_pc.take(presence)) == 1 and len(carol_phone.take(presence)) == 1
    assert carol_idle.take() == []
    await alice.send(f"<presence to='{CAROL}/gone'/>")  # §8.5.3.2.1: silently ignored
    await alice.send("<presence to='ghost@localhost'/>")
    assert alice.take() == []


async def test_a_probe_is_answered_with_the_last_presence_as_sent(h: Harness) -> None:
    # A session keeps its last presence serialised (xmppd/session.py); what a prober gets is
    # still that presence, children and extensions included, addressed anew (RFC 6121 §4.3.2).
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    await alice.send(
        "<presence><show>dnd</show><status>in a meeting</status><priority>3</priority>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://example.org' ver='abc='/>"
        "</presence>"
    )
    bob.take()
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(BOB), type_="probe"), None
    )
    answers = bob.take(presence)
    assert [summary(s) for s in answers] == [(None, f"{ALICE}/phone", BOB)]
    answer = answers[0]
    assert answer.findtext("{jabber:client}show") == "dnd"
    assert answer.findtext("{jabber:client}status") == "in a meeting"
    assert answer.findtext("{jabber:client}priority") == "3"
    caps = answer.find("{http://jabber.org/protocol/caps}c")
    assert caps is not None and caps.get("ver") == "abc="
    # A second resource of Alice learns about the first one from the same kept presence.
    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence/>")
    from_phone = [s for s in laptop.take(presence) if s.get("from") == f"{ALICE}/phone"]
    assert len(from_phone) == 1 and from_phone[0].get("to") == f"{ALICE}/laptop"
    assert from_phone[0].findtext("{jabber:client}status") == "in a meeting"


async def test_probes(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    # §4.3.2: from a subscriber: the last presence of each available resource.
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(BOB), type_="probe"), None
    )
    assert [summary(s) for s in bob.take(presence)] == [(None, f"{ALICE}/phone", BOB)]
    # ... and nothing when there is none (§4.3.2 allows silence; we keep no last unavailable).
    await alice.disconnect()
    bob.take()
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(BOB), type_="probe"), None
    )
    assert bob.take(presence) == []
    # From someone not subscribed to an online contact: "unsubscribed", which puts a prober
    # that wrongly believes itself subscribed right (§4.3.2).
    await online(h, f"{ALICE}/phone")
    carol = await online(h, f"{CAROL}/pc")
    await h.storage.rosters.put("localhost", "carol", RosterItem(jid=ALICE, subscription="to"))
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(CAROL), type_="probe"), None
    )
    item = await stored(h, CAROL, ALICE)
    assert item is not None and item.subscription == "none"
    assert [summary(s) for s in carol.take(presence)] == [("unsubscribed", ALICE, CAROL)]
    # A contact that is offline (or does not exist) gets no answer and no database lookup.
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid("ghost@localhost"), from_=parse_jid(CAROL), type_="probe"), None
    )
    assert carol.take(presence) == []


@pytest.mark.parametrize(
    ("priority", "ok"),
    [
        ("0", True),
        ("127", True),
        ("-128", True),
        ("+3", True),
        ("128", False),
        ("-129", False),
        ("high", False),
        ("", False),
        ("1.5", False),
    ],
)
async def test_priority_validation(h: Harness, priority: str, ok: bool) -> None:
    alice = await online(h, f"{ALICE}/phone", available=False)
    await alice.send(f"<presence id='p'><priority>{priority}</priority></presence>")
    received = alice.take()
    if ok:
        assert alice.session.available and alice.session.priority == int(priority)
    else:
        assert not alice.session.available
        assert [error_condition(s) for s in received] == ["bad-request"]
        assert received[0].get("type") == "error" and received[0].get("id") == "p"


async def test_presence_errors_and_bad_types(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    carol = await online(h, f"{CAROL}/pc")
    await carol.send(f"<presence type='error' to='{ALICE}/phone'><error type='cancel'/></presence>")
    assert [s.get("type") for s in alice.take()] == ["error"]  # passes through
    await carol.send(f"<presence type='bogus' to='{ALICE}'/>")
    assert [error_condition(s) for s in carol.take()] == ["bad-request"]
    await carol.send("<presence type='subscribe'/>")  # no addressee
    assert [error_condition(s) for s in carol.take()] == ["bad-request"]
    assert alice.take() == []


# -- Appendix A, every (state, stanza) pair ----------------------------------------------------

# The tables as RFC 6121 prints them: existing state | routed or delivered? | new state ("-"
# for "no state change"). Outbound (A.2): what the user's server does with what the user sends.
OUTBOUND_TABLES = {
    "subscribe": """
        None                  | yes | None + Pending Out
        None + Pending Out    | yes | -
        None + Pending In     | yes | None + Pending Out/In
        None + Pending Out/In | yes | -
        To                    | yes | -
        To + Pending In       | yes | -
        From                  | yes | From + Pending Out
        From + Pending Out    | yes | -
        Both                  | yes | -
    """,
    "unsubscribe": """
        None                  | yes | -
        None + Pending Out    | yes | None
        None + Pending In     | yes | -
        None + Pending Out/In | yes | None + Pending In
        To                    | yes | None
        To + Pending In       | yes | None + Pending In
        From                  | yes | -
        From + Pending Out    | yes | From
        Both                  | yes | From
    """,
    "subscribed": """
        None                  | no  | -
        None + Pending Out    | no  | -
        None + Pending In     | yes | From
        None + Pending Out/In | yes | From + Pending Out
        To                    | no  | -
        To + Pending In       | yes | Both
        From                  | no  | -
        From + Pending Out    | no  | -
        Both                  | no  | -
    """,
    "unsubscribed": """
        None                  | no  | -
        None + Pending Out    | no  | -
        None + Pending In     | yes | None
        None + Pending Out/In | yes | None + Pending Out
        To                    | no  | -
        To + Pending In       | yes | To
        From                  | yes | None
        From + Pending Out    | yes | None + Pending Out
        Both                  | yes | To
    """,
}
# Inbound (A.3): what the contact's server does with what arrives for its user; the fourth
# column is the auto-reply the server sends on the user's behalf ("*" in A.3.1 and A.3.2).
INBOUND_TABLES = {
    "subscribe": """
        None                  | yes | None + Pending In     |
        None + Pending Out    | yes | None + Pending Out/In |
        None + Pending In     | no  | -                     |
        None + Pending Out/In | no  | -                     |
        To                    | yes | To + Pending In       |
        To + Pending In       | no  | -                     |
        From                  | no  | -                     | subscribed
        From + Pending Out    | no  | -                     | subscribed
        Both                  | no  | -                     | subscribed
    """,
    "unsubscribe": """
        None                  | no  | -                  |
        None + Pending Out    | no  | -                  |
        None + Pending In     | yes | None               | unsubscribed
        None + Pending Out/In | yes | None + Pending Out | unsubscribed
        To                    | no  | -                  |
        To + Pending In       | yes | To                 | unsubscribed
        From                  | yes | None               | unsubscribed
        From + Pending Out    | yes | None + Pending Out | unsubscribed
        Both                  | yes | To                 | unsubscribed
    """,
    "subscribed": """
        None                  | no  | -               |
        None + Pending Out    | yes | To              |
        None + Pending In     | no  | -               |
        None + Pending Out/In | yes | To + Pending In |
        To                    | no  | -               |
        To + Pending In       | no  | -               |
        From                  | no  | -               |
        From + Pending Out    | yes | Both            |
        Both                  | no  | -               |
    """,
    "unsubscribed": """
        None                  | no  | -                 |
        None + Pending Out    | yes | None              |
        None + Pending In     | no  | -                 |
        None + Pending Out/In | yes | None + Pending In |
        To                    | yes | None              |
        To + Pending In       | yes | None + Pending In |
        From                  | no  | -                 |
        From + Pending Out    | yes | From              |
        Both                  | yes | From              |
    """,
}

# How each state reads in a roster item: (subscription, ask, pending_in).
ITEM_FLAGS = {
    "None": ("none", False, False),
    "None + Pending Out": ("none", True, False),
    "None + Pending In": ("none", False, True),
    "None + Pending Out/In": ("none", True, True),
    "To": ("to", False, False),
    "To + Pending In": ("to", False, True),
    "From": ("from", False, False),
    "From + Pending Out": ("from", True, False),
    "Both": ("both", False, False),
}


def rows(tables: dict[str, str]) -> list[tuple[str, str, bool, str | None, str | None]]:
    result = []
    for kind, table in tables.items():
        for line in table.strip().splitlines():
            cells = [cell.strip() for cell in line.split("|")]
            reply = cells[3] or None if len(cells) > 3 else None
            result.append((kind, cells[0], cells[1] == "yes", None if cells[2] == "-" else cells[2], reply))
    return result


def as_item(state: str, contact: str, *, approved: bool = False) -> RosterItem:
    subscription, ask, pending_in = ITEM_FLAGS[state]
    return RosterItem(
        jid=contact, subscription=subscription, ask=ask, pending_in=pending_in, approved=approved
    )


def state_of_item(item: RosterItem | None) -> str:
    if item is None:
        return "None"
    flags = (item.subscription, item.ask, item.pending_in)
    return next(state for state, value in ITEM_FLAGS.items() if value == flags)


class Spy:
    """Stands in front of the contact's host: records what reaches it and stops it there, so
    that only the user's side of each table is exercised. Presence the user's server fans out
    comes as copies (`copies`), which are offered only for a contact with an available
    resource: `watching` brings one online first."""

    def __init__(self, h: Harness, host: str) -> None:
        self.seen: list[Stanza] = []
        hooks = h.server.hosts[host].hooks
        for target in ("bare", "full"):
            hooks.on(f"presence/{target}", self.record, 100)
        hooks.on(events.COPIES, self.record_copies, 100)

    @classmethod
    async def watching(cls, h: Harness, contact: str) -> Spy:
        await online(h, contact)
        return cls(h, parse_jid(contact).domain)

    def record(self, ev: StanzaEvent) -> bool:
        self.seen.append(ev.stanza)
        return True

    def record_copies(self, ev: CopiesEvent) -> bool:
        for jid in ev.recipients:
            copy = Stanza(etree.fromstring(ev.template.copy(jid)), ev.stanza.kind, jid, ev.stanza.from_)
            self.seen.append(copy)
        return True


def test_appendix_a_tables_cover_every_pair() -> None:
    for tables in (OUTBOUND_TABLES, INBOUND_TABLES):
        pairs = {(kind, state) for kind, state, *_rest in rows(tables)}
        assert pairs == {(kind, state) for kind in presence_module.SUBSCRIPTION_TYPES for state in ITEM_FLAGS}
    # The module's state names are the RFC's.
    assert set(presence_module.STATES) == set(ITEM_FLAGS)


@pytest.mark.parametrize("row", rows(OUTBOUND_TABLES), ids=lambda row: f"{row[0]}-{row[1]}")
async def test_appendix_a2_outbound(h: Harness, row: tuple[str, str, bool, str | None, str | None]) -> None:
    kind, state, routed, new_state, _reply = row
    # Online first: with the item in place, her initial presence would probe Bob, whose server
    # knows nothing of her and would correct her state with "unsubscribed" (§4.3.2).
    alice = await online(h, f"{ALICE}/phone")
    await h.storage.rosters.put("localhost", "alice", as_item(state, BOB))
    spy = await Spy.watching(h, f"{BOB}/pc")
    await alice.send(f"<presence type='{kind}' to='{BOB}'/>")
    after = await stored(h, ALICE, BOB)
    pushes = alice.take(roster_push)
    if new_state is None and kind == "subscribed" and state in ("None", "None + Pending Out", "To"):
        # A.2.3 [1]: recorded as a pre-approval (§3.4), the state itself unchanged.
        assert after is not None and after.approved and state_of_item(after) == state
        assert len(pushes) == 1
    else:
        assert state_of_item(after) == (new_state or state)
        assert len(pushes) == (0 if new_state is None else 1)
    subscriptions = [s for s in spy.seen if s.type == kind]
    assert len(subscriptions) == (1 if routed else 0)
    if routed:
        assert (str(subscriptions[0].from_), str(subscriptions[0].to)) == (ALICE, BOB)  # stamped bare
    # §3.1.5 / §3.2.2: granting or revoking "from" sends presence or unavailable presence.
    others = [(s.type, str(s.from_)) for s in spy.seen if s.type != kind]
    had_from, has_from = (
        state in ("From", "From + Pending Out", "Both"),
        (new_state or state) in ("From", "From + Pending Out", "Both"),
    )
    if has_from and not had_from:
        assert others == [(None, f"{ALICE}/phone")]
    elif had_from and not has_from:
        assert others == [("unavailable", f"{ALICE}/phone")]
    else:
        assert others == []


@pytest.mark.parametrize("row", rows(INBOUND_TABLES), ids=lambda row: f"{row[0]}-{row[1]}")
async def test_appendix_a3_inbound(h: Harness, row: tuple[str, str, bool, str | None, str | None]) -> None:
    kind, state, delivered, new_state, reply = row
    # Online first: with the item in place, her initial presence would probe Bob, whose server
    # knows nothing of her and would correct her state with "unsubscribed" (§4.3.2).
    alice = await online(h, f"{ALICE}/phone")
    await h.storage.rosters.put("localhost", "alice", as_item(state, BOB))
    spy = await Spy.watching(h, f"{BOB}/pc")
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(BOB), type_=kind), None
    )
    after = await stored(h, ALICE, BOB)
    assert state_of_item(after) == (new_state or state)
    received = alice.take()
    assert len([s for s in received if roster_push(s)]) == (0 if new_state is None else 1)
    assert [summary(s) for s in received if presence(s)] == ([(kind, BOB, ALICE)] if delivered else [])
    replies = [
        (s.type, str(s.from_), str(s.to)) for s in spy.seen if s.type in presence_module.SUBSCRIPTION_TYPES
    ]
    assert replies == ([(reply, ALICE, BOB)] if reply else [])


@pytest.mark.parametrize(
    ("state", "new_state"), [("None", "From"), ("None + Pending Out", "From + Pending Out"), ("To", "Both")]
)
async def test_appendix_a3_inbound_subscribe_when_pre_approved(
    h: Harness, state: str, new_state: str
) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await h.storage.rosters.put("localhost", "alice", as_item(state, BOB, approved=True))
    spy = await Spy.watching(h, f"{BOB}/pc")
    await h.server.router.deliver(
        Stanza.build("presence", to=parse_jid(ALICE), from_=parse_jid(BOB), type_="subscribe"), None
    )
    after = await stored(h, ALICE, BOB)
    assert state_of_item(after) == new_state and after is not None and not after.approved
    received = alice.take()
    assert [s for s in received if presence(s)] == []  # §3.4: not delivered
    assert len([s for s in received if roster_push(s)]) == 1
    assert [(s.type, str(s.from_)) for s in spy.seen] == [("subscribed", ALICE), (None, f"{ALICE}/phone")]


@pytest.mark.parametrize("state", list(ITEM_FLAGS))
@pytest.mark.parametrize("kind", sorted(presence_module.SUBSCRIPTION_TYPES))
def test_pure_transitions_agree_with_the_tables(kind: str, state: str) -> None:
    item = as_item(state, BOB)
    (out,) = [r for r in rows(OUTBOUND_TABLES) if r[:2] == (kind, state)]
    outcome = presence_module.outbound(kind, item, BOB)
    assert (outcome.forward, outcome.after) == (out[2], out[3] or state)
    (inn,) = [r for r in rows(INBOUND_TABLES) if r[:2] == (kind, state)]
    outcome = presence_module.inbound(kind, item, BOB)
    assert (outcome.forward, outcome.after, outcome.reply) == (inn[2], inn[3] or state, inn[4])


async def test_directed_presence_before_initial_presence_is_tracked(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await subscribe_both_ways(alice, bob)
    quiet = await online(h, f"{ALICE}/quiet", available=False)
    await quiet.send(f"<presence to='{BOB}'/>")  # Bob is subscribed, but no broadcast will cover it
    assert quiet.session.directed == {parse_jid(BOB)}
    bob.take()
    await quiet.disconnect()
    assert [summary(s) for s in bob.take(presence)] == [("unavailable", f"{ALICE}/quiet", BOB)]
    assert alice.take(presence) == []


async def test_removing_an_unlisted_request_denies_it(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/pc")
    await alice.send(f"<presence type='subscribe' to='{BOB}'/>")
    bob.take()
    reply = await set_item(bob, f"<item jid='{ALICE}' subscription='remove'/>")
    assert reply.get("type") == "result"
    assert bob.take(roster_push) == []  # he never saw an item: nothing to push
    assert [summary(s) for s in alice.take(presence)] == [("unsubscribed", BOB, ALICE)]
    item = await stored(h, ALICE, BOB)
    assert item is not None and state_of_item(item) == "None"
