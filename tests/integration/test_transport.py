"""The TCP transport and the stream driver against a real server, on each storage backend:
STARTTLS with and without bytes pipelined after it (they would be lost in the TLS upgrade, so such
a stream is refused), a top-level element nobody claims after binding, and a connection dropped
without a closing tag; in both of the last two the session ends (no default module keeps it)."""

from __future__ import annotations

import asyncio

import pytest

from xmppd import events
from xmppd.events import SessionEvent
from xmppd.jid import parse_jid

from .conftest import PASSWORD, TIMEOUT, XmppServer
from .rawclient import RawClient
from .tools import insecure

pytestmark = pytest.mark.integration

STARTTLS = "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
CLOSE_TAG = b"</stream:stream>"


class SessionWatch:
    """Records `session-detached` (without claiming it) and `session-ended` on a host, so a test
    waits for a session to end instead of sleeping."""

    def __init__(self, xmpp: XmppServer, host: str = "localhost") -> None:
        self.detached: list[str] = []
        self.ended: list[tuple[str, str]] = []
        self._ended = asyncio.Event()
        hooks = xmpp.server.hosts[host].hooks
        hooks.on(events.SESSION_DETACHED, self._on_detached, 10)
        hooks.on(events.SESSION_ENDED, self._on_ended, 10)

    def _on_detached(self, ev: SessionEvent) -> None:
        self.detached.append(str(ev.session.jid))  # returns None: not claimed

    def _on_ended(self, ev: SessionEvent) -> None:
        self.ended.append((str(ev.session.jid), ev.reason))
        self._ended.set()

    async def wait_ended(self) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self._ended.wait()


# -- STARTTLS --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pipelined",
    ["<message/>", "<message to='alice@localhost'><body>early</body></message>", "<mess", "<iq"],
    ids=["empty-message", "message", "partial-element", "partial-iq"],
)
async def test_data_pipelined_after_starttls_is_a_policy_violation(xmpp: XmppServer, pipelined: str) -> None:
    client = await RawClient.connect(xmpp.port)
    try:
        await client.open_stream()
        client.received = b""
        await client.send(STARTTLS + pipelined)  # one write: the server reads both together
        data = await client.closed()
        # The refusal arrives as plain XML: the server never started a TLS handshake.
        assert b"<stream:error" in data and b"policy-violation" in data
        assert data.endswith(CLOSE_TAG)
    finally:
        client.close()


@pytest.mark.parametrize("pipelined", ["<message/>", "<mess"], ids=["element", "partial-element"])
async def test_a_pipelined_starttls_is_refused_without_proceed(xmpp: XmppServer, pipelined: str) -> None:
    client = await RawClient.connect(xmpp.port)
    try:
        await client.open_stream()
        client.received = b""
        await client.send(STARTTLS + pipelined)
        data = await client.closed()
        assert b"policy-violation" in data
        assert b"<proceed" not in data
    finally:
        client.close()


@pytest.mark.parametrize("trailer", ["", "\n", "  \r\n\t"], ids=["alone", "newline", "whitespace"])
async def test_starttls_alone_proceeds_to_a_tls_stream(xmpp: XmppServer, trailer: str) -> None:
    client = await RawClient.connect(xmpp.port)
    try:
        features = await client.open_stream()
        assert b"<starttls" in features and b"<mechanisms" not in features
        client.received = b""
        await client.send(STARTTLS + trailer)  # whitespace between elements is no data
        proceed = await client.expect(b"<proceed")
        assert b"<stream:error" not in proceed
        await client.writer.start_tls(insecure(), server_hostname="localhost")
        assert client.writer.get_extra_info("ssl_object") is not None
        features = await client.open_stream()
        assert b"<mechanisms" in features and b"PLAIN" in features
        assert b"<starttls" not in features
    finally:
        client.close()


# -- a bound stream ends: the session ends with it -------------------------------------------------


async def test_an_unclaimed_top_level_element_closes_the_stream_and_ends_the_session(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    watch = SessionWatch(xmpp)
    jid = parse_jid("alice@localhost/raw")
    client = await RawClient.connect(xmpp.port)
    try:
        await client.login("alice", PASSWORD)  # STARTTLS over a real TLS connection, SASL, bind
        assert client.writer.get_extra_info("ssl_object") is not None
        assert xmpp.server.sessions.get(jid) is not None
        # A top-level element of a namespace no module claims.
        await client.send("<nudge xmlns='urn:example:unknown'/>")
        data = await client.closed()
        assert b"<stream:error" in data and b"unsupported-stanza-type" in data
        assert data.endswith(CLOSE_TAG)
        await watch.wait_ended()
    finally:
        client.close()
    assert [ended for ended, _reason in watch.ended] == [str(jid)]
    assert watch.detached == []  # we ended the stream: it was never resumable
    assert xmpp.server.sessions.get(jid) is None
    assert xmpp.server.sessions.resources(jid.bare) == []
    assert len(xmpp.server.sessions) == 0


@pytest.mark.parametrize("how", ["fin", "rst"])
async def test_a_dropped_connection_ends_the_session(xmpp: XmppServer, how: str) -> None:
    await xmpp.account("alice@localhost")
    watch = SessionWatch(xmpp)
    jid = parse_jid("alice@localhost/raw")
    client = await RawClient.connect(xmpp.port)
    try:
        await client.login("alice", PASSWORD)
        assert xmpp.server.sessions.get(jid) is not None
        # Gone without </stream:stream>: a TCP close, or a reset.
        if how == "fin":
            client.writer.close()
        else:
            client.writer.transport.abort()
        await watch.wait_ended()
    finally:
        client.close()
    # A lost connection is offered for keeping (`session-detached`); nobody claims it by default.
    assert watch.detached == [str(jid)]
    assert [ended for ended, _reason in watch.ended] == [str(jid)]
    assert xmpp.server.sessions.get(jid) is None
    assert len(xmpp.server.sessions) == 0
    # The account logs in again on the same resource without a conflict.
    again = await RawClient.connect(xmpp.port)
    try:
        await again.login("alice", PASSWORD)
        assert xmpp.server.sessions.get(jid) is not None
    finally:
        again.close()


# -- idle streams ----------------------------------------------------------------------------------


async def test_idle_streams_let_go_of_their_parser_and_read_on_as_before(xmpp: XmppServer) -> None:
    for jid in ("alice@localhost", "bob@localhost"):
        await xmpp.account(jid)
    alice = await xmpp.login("alice@localhost")
    bob = await xmpp.login("bob@localhost")
    received: asyncio.Queue[str] = asyncio.Queue()
    for client in (alice, bob):
        client.add_event_handler("message", lambda msg: received.put_nowait(msg["body"]))
    server = xmpp.server
    seen = server.rest_idle_streams({})  # the sweep's first look: nothing rested yet
    assert all(stream.transport.parser._parser is not None for stream in server.streams)  # type: ignore[attr-defined]
    server.rest_idle_streams(seen)  # nothing came since: both rest
    assert len(server.streams) == 2
    assert all(stream.transport.parser._parser is None for stream in server.streams)  # type: ignore[attr-defined]

    # Both streams read on from where they were, in the namespaces of their stream headers.
    alice.send_message(mto="bob@localhost", mbody="still there?", mtype="chat")
    assert await asyncio.wait_for(received.get(), TIMEOUT) == "still there?"
    bob.send_message(mto="alice@localhost", mbody="yes", mtype="chat")
    assert await asyncio.wait_for(received.get(), TIMEOUT) == "yes"
