"""XEP-0198 stream management with real clients over TLS, on both storage backends: slixmpp's
xep_0198 plugin enabling and acknowledging, a connection cut with messages in flight and then
resumed (nothing lost, nothing twice), a session left to expire (its messages at the next login),
a bogus resumption, and the probe that resets its connection at the first offline message."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import Storage
from tests.integration.conftest import PASSWORD, TIMEOUT, Client, XmppServer, running_server
from tests.integration.rawclient import RawClient
from xmppd import events
from xmppd.events import SessionEvent
from xmppd.jid import parse_jid

pytestmark = pytest.mark.integration

ALICE = "alice@localhost"
BOB = "bob@localhost"
SM = "urn:xmpp:sm:3"
OFFLINE_BACKLOG = 200


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    # A session whose connection drops stays resumable for 2 s: long enough to resume here.
    async with running_server(storage, tmp_path, "[modules.smacks]\nresume_timeout = 2\n") as running:
        for jid in (ALICE, BOB):
            await running.account(jid)
        yield running


async def managed_login(xmpp: XmppServer, jid: str, *, direct_tls: bool = False) -> Client:
    client = xmpp.client(jid, plugins=("xep_0198",), direct_tls=direct_tls)
    enabled = client.wait_for("sm_enabled")
    started = client.wait_for("session_start")
    client.connect("127.0.0.1", xmpp.direct_tls_port if direct_tls else xmpp.port)
    await asyncio.wait_for(enabled, TIMEOUT)
    await asyncio.wait_for(started, TIMEOUT)
    return client


def session_ended(xmpp: XmppServer, jid: str) -> asyncio.Event:
    """Set when the server ends the session of `jid` (a full JID)."""
    ended = asyncio.Event()

    def seen(ev: SessionEvent) -> None:
        if str(ev.session.jid) == jid:
            ended.set()

    xmpp.server.hosts["localhost"].hooks.on(events.SESSION_ENDED, seen)
    return ended


async def bodies(client: Client, count: int) -> list[str]:
    return [str((await client.next_message(lambda m: bool(m["body"])))["body"]) for _ in range(count)]


async def test_acknowledgements_both_ways(xmpp: XmppServer) -> None:
    alice = await managed_login(xmpp, ALICE)
    bob = await xmpp.login(BOB, plugins=("xep_0030",))
    acked = asyncio.Queue[object]()
    alice.add_event_handler("stanza_acked", acked.put_nowait)

    for n in range(12):  # the server asks alice for acks after every 5
        bob.send_message(mto=alice.boundjid.full, mbody=str(n), mtype="chat")
    assert await bodies(alice, 12) == [str(n) for n in range(12)]
    for n in range(7):  # slixmpp asks the server after every 5 of its own
        alice.send_message(mto=BOB, mbody=f"a{n}", mtype="chat")
    assert await bodies(bob, 7) == [f"a{n}" for n in range(7)]
    alice.plugin["xep_0198"].request_ack()
    for _ in range(7):
        await asyncio.wait_for(acked.get(), TIMEOUT)  # the server's <a/> acknowledged each one
    assert alice.plugin["xep_0198"].last_ack == 7
    assert alice.is_connected()


@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
async def test_a_cut_connection_is_resumed_with_nothing_lost_or_twice(xmpp: XmppServer, direct_tls: bool) -> None:
    alice = await managed_login(xmpp, ALICE, direct_tls=direct_tls)
    bob = await xmpp.login(BOB, plugins=("xep_0030",))
    full = alice.boundjid.full
    for n in range(3):
        bob.send_message(mto=full, mbody=str(n), mtype="chat")
    assert await bodies(alice, 3) == ["0", "1", "2"]

    # The server cuts the connection without a word (as a dead network looks to it) and keeps
    # the session; what bob sends meanwhile waits for the resumption.
    gone = alice.wait_for("disconnected")
    session = xmpp.server.sessions.get(parse_jid(full))
    assert session is not None
    session.abort()
    await asyncio.wait_for(gone, TIMEOUT)
    for n in range(3, 6):
        bob.send_message(mto=full, mbody=str(n), mtype="chat")
    await bob.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)  # bob's messages were routed

    resumed = alice.wait_for("session_resumed")
    alice.connect("127.0.0.1", xmpp.direct_tls_port if direct_tls else xmpp.port)
    await asyncio.wait_for(resumed, TIMEOUT)
    assert await bodies(alice, 3) == ["3", "4", "5"]
    bob.send_message(mto=full, mbody="after", mtype="chat")
    assert await bodies(alice, 1) == ["after"]  # nothing replayed twice before it
    assert xmpp.server.sessions.get(parse_jid(full)) is session


async def test_a_session_not_resumed_in_time_leaves_its_messages_for_the_next_login(xmpp: XmppServer) -> None:
    alice = await managed_login(xmpp, ALICE)
    bob = await xmpp.login(BOB, plugins=("xep_0030",))
    full = alice.boundjid.full
    ended = session_ended(xmpp, full)
    session = xmpp.server.sessions.get(parse_jid(full))
    assert session is not None
    session.abort()
    for n in range(3):
        bob.send_message(mto=full, mbody=str(n), mtype="chat")
    await asyncio.wait_for(ended.wait(), TIMEOUT)  # resume_timeout passed
    alice.abort()

    again = await xmpp.login(ALICE)
    assert await bodies(again, 3) == ["0", "1", "2"]  # from offline storage, in order


async def test_a_bogus_resumption_fails_and_the_client_binds(xmpp: XmppServer) -> None:
    raw = await RawClient.connect(xmpp.port)
    await authenticate(raw, "alice")
    await raw.send(f"<resume xmlns='{SM}' previd='no-such-session' h='0'/>")
    answer = await raw.expect(b"</failed>")
    assert b"<item-not-found" in answer
    raw.received = b""
    await raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    assert b"<jid>alice@localhost/" in await raw.expect(b"</iq>")
    raw.close()


async def test_an_impossible_ack_ends_that_stream_only(xmpp: XmppServer) -> None:
    bob = await xmpp.login(BOB)
    raw = await RawClient.connect(xmpp.port)
    await raw.login("alice", PASSWORD, resource="raw")
    await raw.send(f"<enable xmlns='{SM}'/>")
    await raw.expect(b"<enabled")
    await raw.send(f"<a xmlns='{SM}' h='9'/>")  # nothing was sent to it yet
    closing = await raw.closed()
    assert b"<undefined-condition" in closing and b"<handled-count-too-high" in closing  # XEP-0198 §5
    raw.close()
    other = await xmpp.login(ALICE)
    bob.send_message(mto=other.boundjid.full, mbody="fine", mtype="chat")
    assert await bodies(other, 1) == ["fine"]  # nobody else noticed


async def test_offline_messages_survive_a_reset_at_the_first_one(xmpp: XmppServer) -> None:
    bob = await xmpp.login(BOB, plugins=("xep_0030",))
    for n in range(OFFLINE_BACKLOG):
        bob.send_message(mto=ALICE, mbody=str(n), mtype="chat")
    await bob.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)

    probe = await RawClient.connect(xmpp.port)
    await probe.login("alice", PASSWORD, resource="probe")
    ended = session_ended(xmpp, f"{ALICE}/probe")
    await probe.send(f"<enable xmlns='{SM}'/><presence/>")
    await probe.expect(b"<message")
    probe.writer.transport.abort()  # a reset at the first message handed over
    await asyncio.wait_for(ended.wait(), TIMEOUT)

    alice = await xmpp.login(ALICE)
    received = await bodies(alice, OFFLINE_BACKLOG)
    assert received == [str(n) for n in range(OFFLINE_BACKLOG)]  # none lost


async def authenticate(raw: RawClient, user: str) -> None:
    """STARTTLS and SASL PLAIN, then the restarted stream's features (no bind yet)."""
    await raw.starttls()
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    await raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await raw.expect(b"<success")
    features = await raw.open_stream()
    assert re.search(rb"<sm xmlns=.urn:xmpp:sm:3", features)
    raw.received = b""
