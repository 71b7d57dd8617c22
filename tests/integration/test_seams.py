"""The core's seams, seen from real clients over TCP+TLS: a component host with only its own
modules, listed in the disco#items of its user host; and a stream-level module
(tests/fixtures/keep.py) that claims top-level elements, wraps a session's output, keeps the
session through a dropped connection and lets a new stream adopt it."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree
from slixmpp.exceptions import IqError

from storage import Storage
from xmppd import events
from xmppd.config import DEFAULT_MODULES
from xmppd.jid import parse_jid

from .conftest import PASSWORD, TIMEOUT, XmppServer, running_server
from .rawclient import RawClient

pytestmark = pytest.mark.integration

KEEP = "urn:xmppd:test:keep"
COMPONENTS = """
[components."echo.localhost"]
modules = ["tests.fixtures.echo"]
"""


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    modules = ", ".join(f'"{name}"' for name in (*DEFAULT_MODULES, "tests.fixtures.keep"))
    async with running_server(storage, tmp_path, COMPONENTS, server_extra=f"modules = [{modules}]") as running:
        yield running


# -- a component host ----------------------------------------------------------------------------


async def test_a_component_is_a_disco_item_of_its_user_host(xmpp: XmppServer) -> None:
    alice = await xmpp.login(await xmpp.account("alice@localhost"))
    items = await alice.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#items", ito="localhost").send(
        timeout=TIMEOUT
    )
    # The configured component, then the room and upload services every host gets by default
    # ([server] conference and upload).
    assert [item.get("jid") for item in items.xml.iter("{http://jabber.org/protocol/disco#items}item")] == [
        "echo.localhost", "conference.localhost", "upload.localhost"
    ]
    info = await alice.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito="echo.localhost").send(
        timeout=TIMEOUT
    )
    query = info.xml.find("{http://jabber.org/protocol/disco#info}query")
    assert query is not None
    identities = [(i.get("category"), i.get("type")) for i in query.iter("{http://jabber.org/protocol/disco#info}identity")]
    features = {f.get("var") for f in query.iter("{http://jabber.org/protocol/disco#info}feature")}
    assert identities == [("component", "generic")]  # not the server's server/im
    assert "urn:xmppd:test:echo" in features
    assert "urn:xmpp:ping" not in features  # the user host's modules are not loaded there


async def test_a_component_gets_only_its_own_modules(xmpp: XmppServer) -> None:
    alice = await xmpp.login(await xmpp.account("alice@localhost"))
    # No roster module on the component: the request is unclaimed there.
    with pytest.raises(IqError) as caught:
        await alice.make_iq_get(queryxmlns="jabber:iq:roster", ito="echo.localhost").send(timeout=TIMEOUT)
    assert caught.value.iq["error"]["condition"] == "service-unavailable"
    # Its own module answers messages to any address at its domain.
    alice.send_message(mto="room@echo.localhost/nick", mbody="hello echo", mtype="chat")
    echoed = await alice.next_message(lambda m: m["from"] == "room@echo.localhost/nick")
    assert echoed["body"] == "hello echo"


async def test_a_component_domain_is_not_a_login_host(xmpp: XmppServer) -> None:
    raw = await RawClient.connect(xmpp.port)
    try:
        await raw.send(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams' to='echo.localhost' version='1.0'>"
        )
        assert b"<host-unknown" in await raw.closed()
    finally:
        raw.close()


# -- a stream-level module ----------------------------------------------------------------------


async def authenticate(raw: RawClient, user: str) -> None:
    """STARTTLS and SASL PLAIN, no bind: where XEP-0198 resumes."""
    await raw.starttls()
    token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
    await raw.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
    await raw.expect(b"<success")
    await raw.open_stream()
    raw.received = b""


async def test_a_module_keeps_a_session_through_a_dropped_connection(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    bob = await xmpp.login(await xmpp.account("bob@localhost"))
    detached = asyncio.Event()
    xmpp.server.hosts["localhost"].hooks.on(events.SESSION_DETACHED, lambda _ev: detached.set(), 10)

    phone = await RawClient.connect(xmpp.port)
    await phone.login("alice", PASSWORD, resource="phone")
    await phone.send(f"<enable xmlns='{KEEP}'/>")
    enabled = await phone.expect(b"<enabled")
    match = re.search(rb"id='([0-9a-f]+)'", enabled)
    assert match is not None
    bob.send_message(mto="alice@localhost/phone", mbody="one", mtype="chat")
    await phone.expect(b"<body>one</body>")
    await phone.send(f"<r xmlns='{KEEP}'/>")
    assert b"h='1'" in await phone.expect(b"<a ")

    phone.writer.transport.abort()  # the train enters a tunnel: no closing tag
    async with asyncio.timeout(TIMEOUT):
        await detached.wait()
    alice_phone = parse_jid("alice@localhost/phone")
    session = xmpp.server.sessions.get(alice_phone)
    assert session is not None and not session.attached  # still bound, no transport
    bob.send_message(mto="alice@localhost/phone", mbody="two", mtype="chat")
    # bob's stanzas are handled in order: once this is answered, "two" has been delivered.
    await bob.make_iq_get(queryxmlns="http://jabber.org/protocol/disco#info", ito="localhost").send(timeout=TIMEOUT)

    again = await RawClient.connect(xmpp.port)
    try:
        await authenticate(again, "alice")
        await again.send(f"<resume xmlns='{KEEP}' previd='{match.group(1).decode()}' h='1'/>")
        received = await again.expect(b"<body>two</body>")
        assert b"<resumed" in received and b"<body>one</body>" not in received
        assert xmpp.server.sessions.get(alice_phone) is session and session.attached
        # The resumed stream carries the session's stanzas from now on.
        bob.send_message(mto="alice@localhost/phone", mbody="three", mtype="chat")
        await again.expect(b"<body>three</body>")
    finally:
        again.close()


async def test_a_resumption_nobody_can_honour_fails(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    raw = await RawClient.connect(xmpp.port)
    try:
        await authenticate(raw, "alice")
        await raw.send(f"<resume xmlns='{KEEP}' previd='nope' h='0'/>")
        assert b"<failed" in await raw.expect(b"<failed")
        # The stream is still negotiating: binding works as usual.
        await raw.send("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        result = etree.fromstring((await raw.expect(b"</iq>"))[raw.received.index(b"<iq"):])
        assert result.get("type") == "result"
    finally:
        raw.close()



async def test_a_stream_that_was_ended_is_not_kept(xmpp: XmppServer) -> None:
    """Only a lost connection is resumable: a closing tag (the client's here) ends the session
    even when a module would keep it."""
    await xmpp.account("alice@localhost")
    ended = asyncio.Event()
    xmpp.server.hosts["localhost"].hooks.on(events.SESSION_ENDED, lambda _ev: ended.set(), 10)
    raw = await RawClient.connect(xmpp.port)
    try:
        await raw.login("alice", PASSWORD, resource="desk")
        await raw.send(f"<enable xmlns='{KEEP}'/>")
        await raw.expect(b"<enabled")
        await raw.send("</stream:stream>")
        assert (await raw.closed()).endswith(b"</stream:stream>")
        async with asyncio.timeout(TIMEOUT):
            await ended.wait()
        assert xmpp.server.sessions.get(parse_jid("alice@localhost/desk")) is None
    finally:
        raw.close()
