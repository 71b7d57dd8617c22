"""XEP-0191 blocking command through the in-memory server: the list and its pushes, and the
enforcement of §3.3 in both directions."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from storage.model import RosterItem
from xmppd.jid import parse_jid
from xmppd.modules.blocking import Blocklist, Blocklists
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, count_calls, error_condition, iq_reply, presence

ALICE = "alice@localhost"
BOB = "bob@example.test"
CAROL = "carol@localhost"
NS = "urn:xmpp:blocking"
BLOCKED = "{urn:xmpp:blocking:errors}blocked"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path,
        hosts=("localhost", "example.test"),
        modules=("offline", "carbons", "blocking"),
        options={"blocking": {"max_items": 3}},
    ) as harness:
        for account in (ALICE, BOB, CAROL):
            await harness.account(account)
        yield harness


def message(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}message"


def push(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}iq" and stanza.get("type") == "set"


async def online(h: Harness, jid: str, *, available: bool = True) -> Client:
    client = await h.connect(jid)
    if available:
        await client.send("<presence/>")
    client.take()
    return client


async def command(client: Client, xml: str) -> etree._Element:
    """Send a command; its answer is returned and taken out, the rest stays to be taken."""
    await client.send(f"<iq type='set' id='cmd'>{xml}</iq>")
    replies = [data for data in client.output.writes if b'id="cmd"' in data]
    assert len(replies) == 1, client.output.writes
    client.output.writes.remove(replies[0])
    return etree.fromstring(replies[0])


async def blocklist(client: Client) -> list[str]:
    await client.send(f"<iq type='get' id='list'><blocklist xmlns='{NS}'/></iq>")
    (reply,) = client.take(iq_reply)
    assert reply.get("type") == "result"
    container = reply.find(f"{{{NS}}}blocklist")
    assert container is not None
    return [item.get("jid", "") for item in container]


def items(xml: list[str]) -> str:
    return "".join(f"<item jid='{jid}'/>" for jid in xml)


async def block(client: Client, *jids: str) -> etree._Element:
    return await command(client, f"<block xmlns='{NS}'>{items(list(jids))}</block>")


# -- the list (§3.2 - §3.5) -----------------------------------------------------------------------


async def test_feature_and_empty_list(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    await alice.send("<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    (reply,) = alice.take(iq_reply)
    assert NS in {f.get("var") for f in reply.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert await blocklist(alice) == []


async def test_block_unblock_and_pushes_to_interested_resources(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    laptop = await online(h, f"{ALICE}/laptop")
    tablet = await online(h, f"{ALICE}/tablet")  # never asks for the list: no pushes
    assert await blocklist(phone) == [] and await blocklist(laptop) == []

    reply = await block(phone, BOB, "Carol@LocalHost")  # normalised on the way in
    assert reply.get("type") == "result"
    for client in (phone, laptop):
        (pushed,) = client.take(push)
        assert pushed.get("to") == str(client.jid)
        assert [i.get("jid") for i in pushed.iter(f"{{{NS}}}item")] == [BOB, CAROL]
        assert pushed.find(f"{{{NS}}}block") is not None
    assert tablet.take(push) == []
    assert await blocklist(tablet) == [BOB, CAROL]
    assert await h.storage.kv.get("localhost", "alice", "blocking", "list") == [BOB, CAROL]

    assert (await command(laptop, f"<unblock xmlns='{NS}'>{items([BOB])}</unblock>")).get("type") == "result"
    for client in (phone, laptop, tablet):
        (pushed,) = client.take(push)
        unblock = pushed.find(f"{{{NS}}}unblock")
        assert unblock is not None and [i.get("jid") for i in unblock] == [BOB]
    assert await blocklist(phone) == [CAROL]

    # §3.5: an empty unblock unblocks everyone; the push is empty too.
    assert (await command(phone, f"<unblock xmlns='{NS}'/>")).get("type") == "result"
    (pushed,) = laptop.take(push)
    unblock = pushed.find(f"{{{NS}}}unblock")
    assert unblock is not None and len(unblock) == 0
    assert await blocklist(phone) == []
    assert await h.storage.kv.get("localhost", "alice", "blocking", "list") is None


async def test_bad_commands(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    assert error_condition(await command(alice, f"<block xmlns='{NS}'/>")) == "bad-request"
    assert error_condition(await command(alice, f"<block xmlns='{NS}'><item/></block>")) == "bad-request"
    assert error_condition(await block(alice, "a@b@c")) == "jid-malformed"
    assert error_condition(await block(alice, "a@x", "b@x", "c@x", "d@x")) == "policy-violation"
    assert await blocklist(alice) == []
    # Blocking twice is no error and lists the JID once.
    await block(alice, BOB)
    await block(alice, BOB)
    assert await blocklist(alice) == [BOB]


async def test_the_list_survives_a_new_session(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    await block(phone, BOB)
    await phone.disconnect()
    laptop = await online(h, f"{ALICE}/laptop")
    assert await blocklist(laptop) == [BOB]


# -- inbound: from a blocked JID (§3.3) ----------------------------------------------------------------


async def test_messages_from_a_blocked_jid_bounce_and_never_arrive(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await block(alice, BOB)
    alice.take()
    await bob.send(f"<message to='{ALICE}' type='chat' id='m1'><body>hello?</body></message>")
    await bob.send(f"<message to='{ALICE}/phone' type='chat' id='m2'><body>hello?</body></message>")
    assert alice.take() == []
    errors = bob.take(message)
    assert [(e.get("id"), e.get("type"), error_condition(e)) for e in errors] == [
        ("m1", "error", "service-unavailable"),
        ("m2", "error", "service-unavailable"),
    ]
    # Not stored offline either.
    await alice.disconnect()
    await bob.send(f"<message to='{ALICE}' type='chat' id='m3'><body>offline?</body></message>")
    assert error_condition(bob.take(message)[0]) == "service-unavailable"
    assert await h.storage.offline.count("localhost", "alice") == 0


async def test_presence_from_a_blocked_jid_is_dropped_silently(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await block(alice, BOB)
    alice.take()
    for kind in ("", " type='subscribe'", " type='probe'", " type='unavailable'"):
        await bob.send(f"<presence to='{ALICE}'{kind}/>")
        await bob.send(f"<presence to='{ALICE}/phone'{kind}/>")
    assert alice.take() == []
    assert bob.take(lambda s: s.get("type") == "error") == []
    assert await h.storage.rosters.item("localhost", "alice", BOB) is None  # no pending request


async def test_iq_from_a_blocked_jid(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await block(alice, BOB)
    alice.take()
    # To the resource, and to the account, where the server itself would otherwise answer.
    await bob.send(f"<iq type='get' id='v' to='{ALICE}/phone'><query xmlns='jabber:iq:version'/></iq>")
    await bob.send(f"<iq type='get' id='d' to='{ALICE}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert [(r.get("id"), error_condition(r)) for r in bob.take(iq_reply)] == [
        ("v", "service-unavailable"),
        ("d", "service-unavailable"),
    ]
    # Results and errors are dropped.
    await bob.send(f"<iq type='result' id='r' to='{ALICE}/phone'/>")
    assert alice.take() == [] and bob.take() == []


async def test_domain_and_resource_items_match_per_section_6(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob_desk = await online(h, f"{BOB}/desk")
    bob_phone = await online(h, f"{BOB}/phone")
    await block(alice, f"{BOB}/phone")
    alice.take()
    await bob_phone.send(f"<message to='{ALICE}' type='chat'><body>1</body></message>")
    await bob_desk.send(f"<message to='{ALICE}' type='chat'><body>2</body></message>")
    assert [m.findtext(f"{{{CLIENT_NS}}}body") for m in alice.take(message)] == ["2"]
    await block(alice, "example.test")
    alice.take()
    await bob_desk.send(f"<message to='{ALICE}' type='chat'><body>3</body></message>")
    assert alice.take(message) == []

    blocklist_ = Blocklist(("example.test/res", "x.example", "u@y.example", "u@z.example/r"))
    assert blocklist_.blocks(parse_jid("example.test/res"))
    assert not blocklist_.blocks(parse_jid("example.test/other"))
    assert not blocklist_.blocks(parse_jid("someone@example.test/res"))
    assert blocklist_.blocks(parse_jid("x.example")) and blocklist_.blocks(parse_jid("v@x.example/any"))
    assert blocklist_.blocks(parse_jid("u@y.example")) and blocklist_.blocks(parse_jid("u@y.example/any"))
    assert blocklist_.blocks(parse_jid("u@z.example/r")) and not blocklist_.blocks(parse_jid("u@z.example"))


# -- outbound: to a blocked JID (§3.3) -----------------------------------------------------------------


async def test_stanzas_to_a_blocked_jid_are_refused_with_the_blocked_condition(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await block(alice, BOB)
    alice.take()
    await alice.send(f"<message to='{BOB}' type='chat' id='m'><body>Can you hear me now?</body></message>")
    await alice.send(f"<iq type='get' id='i' to='{BOB}/desk'><ping xmlns='urn:xmpp:ping'/></iq>")
    await alice.send(f"<presence to='{BOB}/desk' id='p'/>")
    await alice.send(f"<presence to='{BOB}' type='subscribe' id='s'/>")
    answers = alice.take()
    assert [a.get("id") for a in answers] == ["m", "i", "p", "s"]
    for answer in answers:
        assert answer.get("type") == "error" and answer.get("from") in (BOB, f"{BOB}/desk")
        error = answer.find(f"{{{CLIENT_NS}}}error")
        assert error is not None and error.get("type") == "cancel"
        assert error_condition(answer) == "not-acceptable" and error.find(BLOCKED) is not None
    assert answers[0].findtext(f"{{{CLIENT_NS}}}body") == "Can you hear me now?"
    assert bob.take() == []
    assert await h.storage.rosters.item("localhost", "alice", BOB) is None  # the subscribe did nothing
    # Errors and results to a blocked JID vanish without an answer.
    await alice.send(f"<iq type='result' id='r' to='{BOB}/desk'/>")
    await alice.send(f"<message type='error' id='e' to='{BOB}'><error type='cancel'>"
                     "<gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    assert alice.take() == [] and bob.take() == []


async def test_own_resources_are_never_blocked(h: Harness) -> None:
    phone = await online(h, f"{ALICE}/phone")
    laptop = await online(h, f"{ALICE}/laptop")
    await block(phone, ALICE, "localhost")
    phone.take()
    laptop.take()
    await phone.send(f"<message to='{ALICE}/laptop' type='chat'><body>note to self</body></message>")
    assert len(laptop.take(message)) == 1 and phone.take() == []
    # Nor is the user's own server: the blocked domain's host JID still answers.
    await phone.send("<iq type='get' id='p' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert [r.get("type") for r in phone.take(iq_reply)] == ["result"]
    # Everyone else at the domain is blocked.
    await phone.send(f"<message to='{CAROL}' type='chat' id='c'><body>x</body></message>")
    assert error_condition(phone.take(message)[0]) == "not-acceptable"


# -- presence on block and unblock (§3.3, §3.4) ----------------------------------------------------------


async def befriend(h: Harness) -> None:
    await h.storage.rosters.put("localhost", "alice", RosterItem(jid=BOB, subscription="both"))
    await h.storage.rosters.put("example.test", "bob", RosterItem(jid=ALICE, subscription="both"))


async def test_a_blocked_contact_sees_the_user_go_offline_and_come_back_on_unblock(h: Harness) -> None:
    await befriend(h)
    bob = await online(h, f"{BOB}/desk")
    alice = await online(h, f"{ALICE}/phone")
    bob.take()
    await block(alice, BOB)
    assert [(p.get("type"), p.get("from")) for p in bob.take(presence)] == [("unavailable", f"{ALICE}/phone")]
    # Later broadcasts skip Bob, and so do the probes of a new login.
    await alice.send("<presence><status>busy</status></presence>")
    laptop = await h.connect(f"{ALICE}/laptop")
    await laptop.send("<presence/>")
    assert bob.take(presence) == []
    # Nor does Bob's presence come back to her: her list leaves out the answer to her probe.
    assert [p.get("from") for p in laptop.take(presence)] == [f"{ALICE}/laptop", f"{ALICE}/phone"]
    # Unblocked: Bob sees both resources again.
    alice.take()
    await command(alice, f"<unblock xmlns='{NS}'/>")
    seen = bob.take(presence)
    assert sorted(p.get("from") or "" for p in seen) == [f"{ALICE}/laptop", f"{ALICE}/phone"]
    assert all(p.get("type") is None for p in seen)


async def test_a_contact_who_blocked_the_user_is_not_seen_at_her_login(h: Harness) -> None:
    await befriend(h)
    bob = await online(h, f"{BOB}/desk")
    await block(bob, ALICE)
    bob.take()
    alice = await online(h, f"{ALICE}/phone", available=False)
    await alice.send("<presence/>")
    # Her probe of Bob is answered by nobody (§3.3: he blocked her), and her broadcast skips him.
    assert [p.get("from") for p in alice.take(presence)] == [f"{ALICE}/phone"]
    assert bob.take(presence) == []
    # Once he unblocks her, his presence reaches her (§3.4), as her next login's probe would.
    await command(bob, f"<unblock xmlns='{NS}'/>")
    assert [p.get("from") for p in alice.take(presence)] == [f"{BOB}/desk"]


async def test_directed_presence_recipients_see_the_user_go(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    carol = await online(h, f"{CAROL}/pad")
    await alice.send(f"<presence to='{CAROL}/pad'/>")
    assert len(carol.take(presence)) == 1
    await block(alice, CAROL)
    assert [(p.get("type"), p.get("from")) for p in carol.take(presence)] == [("unavailable", f"{ALICE}/phone")]


# -- the cache --------------------------------------------------------------------------------------


async def test_checks_read_the_database_once_per_account(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = count_calls(type(h.storage.kv), "get", lambda *args: args[2] == "blocking", monkeypatch)
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    for n in range(10):
        await bob.send(f"<message to='{ALICE}' type='chat'><body>{n}</body></message>")
        await alice.send(f"<message to='{BOB}' type='chat'><body>{n}</body></message>")
    assert sorted((r[0], r[1]) for r in reads) == [("example.test", "bob"), ("localhost", "alice")]
    # A change goes to the cache too: enforced at once, with no further read.
    await block(alice, BOB)
    await bob.send(f"<message to='{ALICE}' type='chat'><body>blocked</body></message>")
    assert error_condition(bob.take(message)[-1]) == "service-unavailable"
    assert len(reads) == 2


async def test_concurrent_checks_of_one_list_share_one_read(h: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    # A login's presence checks the lists of all its contacts online at once, and concurrent
    # logins share contacts: a list being read is waited for, not read again.
    await h.storage.kv.set("localhost", "alice", "blocking", "list", [BOB])
    reads = count_calls(type(h.storage.kv), "get", lambda *args: args[2] == "blocking", monkeypatch)
    lists: Blocklists = h.server.shared["blocking:lists"]
    got = await asyncio.gather(*(lists.get(parse_jid(ALICE)) for _ in range(5)))
    assert reads == [("localhost", "alice", "blocking", "list")]
    assert all(blocklist is got[0] and blocklist.blocks(parse_jid(BOB)) for blocklist in got)
