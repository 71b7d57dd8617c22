"""XMPP over WebSocket (RFC 7395, xmppd/websocket.py) against a real server, on both storage
backends: over plain HTTP on loopback (ws://127.0.0.1) and over HTTPS (wss://localhost).

slixmpp (1.17) has no WebSocket transport, so the WebSocket clients here are tests/integration/
wsclient.py (aiohttp) and xmpp.js (`@xmpp/client` under node, tests/integration/js/); the TCP
clients are slixmpp. Covered: messages both ways between a WebSocket and a TCP client, xmpp.js
logging in and getting a reply, the handshake refusals (no `xmpp` subprotocol, a foreign Origin),
framing errors (a binary message, two elements in one message, garbage) closing that stream only
with its stream error and `<close/>`, stream management resumed on a new WebSocket, host-meta."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from storage import Storage
from tests.integration.conftest import PASSWORD, TIMEOUT, XmppServer, running_server
from tests.integration.tools import node_and_npm, run
from tests.integration.wsclient import CLIENT, FRAMING, SASL, SM, STREAM_ERRORS, STREAMS, WsClient, insecure, q
from xmppd import events
from xmppd.errors import StreamError
from xmppd.events import SessionEvent
from xmppd.http import WEBSOCKET_REL, XRD_NS
from xmppd.jid import parse_jid

pytestmark = pytest.mark.integration

ALICE, BOB, CAROL = "alice@localhost", "bob@localhost", "carol@localhost"
JS = Path(__file__).parent / "js"


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    async with running_server(storage, tmp_path, "[modules.smacks]\nresume_timeout = 10\n") as running:
        for jid in (ALICE, BOB, CAROL):
            await running.account(jid)
        yield running


def endpoint(xmpp: XmppServer, scheme: str) -> str:
    if scheme == "ws":
        return f"ws://127.0.0.1:{xmpp.server.ports['http']}/xmpp-websocket"
    return f"wss://localhost:{xmpp.server.ports['https']}/xmpp-websocket"


def hook_event(xmpp: XmppServer, name: str, jid: str) -> asyncio.Event:
    """Set when `name` (session-detached, session-ended) fires for the session of `jid`; never
    claims it (a priority above stream management's)."""
    seen = asyncio.Event()

    def record(ev: SessionEvent) -> None:
        if str(ev.session.jid) == jid:
            seen.set()

    xmpp.server.hosts["localhost"].hooks.on(name, record, 10)
    return seen


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), TIMEOUT)


# -- (1) a WebSocket client and a TCP client ---------------------------------------------------------


@pytest.mark.parametrize("scheme", ["ws", "wss"])
async def test_a_websocket_client_and_a_tcp_client_talk_both_ways(xmpp: XmppServer, scheme: str) -> None:
    bob = await xmpp.login(BOB)  # slixmpp over TCP with STARTTLS
    alice = await WsClient.connect(endpoint(xmpp, scheme))
    try:
        jid = await alice.login("alice", PASSWORD)
        assert jid == f"{ALICE}/ws"
        ended = hook_event(xmpp, events.SESSION_ENDED, jid)
        await alice.send(f"<presence xmlns='{CLIENT}'/>")
        assert (await alice.expect(q(CLIENT, "presence"))).get("from") == jid  # echoed: available

        await alice.message(bob.boundjid.full, "hello over WebSocket")
        message = await bob.next_message(lambda m: bool(m["body"]))
        assert (message["body"], message["from"].full) == ("hello over WebSocket", jid)

        bob.send_message(mto=jid, mbody="hello over TCP", mtype="chat")
        assert await alice.next_body() == (bob.boundjid.full, "hello over TCP")
        bob.send_message(mto=ALICE, mbody="to the bare JID", mtype="chat")
        assert await alice.next_body() == (bob.boundjid.full, "to the bare JID")

        # The stream ends properly: our <close/>, the server's, then the WebSocket closing.
        closing = await alice.close()
        assert closing[-1].tag == q(FRAMING, "close")
        assert alice.ws.close_code == aiohttp.WSCloseCode.OK
        await wait(ended)
        assert xmpp.server.sessions.get(parse_jid(jid)) is None
    finally:
        await alice.disconnect()


# -- (2) xmpp.js under node ---------------------------------------------------------------------------


async def install_xmpp_js(npm: str) -> None:
    """tests/integration/js/node_modules from the committed lock file (`npm ci`)."""
    if (JS / "node_modules" / "@xmpp" / "client" / "package.json").is_file():
        return
    install = "ci" if (JS / "package-lock.json").is_file() else "install"
    code, out, err = await run(npm, install, "--no-audit", "--no-fund", "--ignore-scripts", cwd=JS)
    assert code == 0, f"npm {install} failed:\n{out}\n{err}"


async def node_flags(node: str) -> list[str]:
    """Node 20 and 21 have the WebSocket global (which xmpp.js uses) behind a flag."""
    _code, version, _err = await run(node, "--version", within=30)
    major = int(version.strip().lstrip("v").split(".")[0])
    return ["--experimental-websocket"] if major < 22 else []


async def test_xmpp_js_logs_in_over_websocket_and_gets_a_reply_from_a_tcp_client(xmpp: XmppServer) -> None:
    node, npm = node_and_npm("xmpp.js (@xmpp/client) over WebSocket")
    await install_xmpp_js(npm)
    bob = await xmpp.login(BOB)

    async def answer() -> tuple[str, str]:
        message = await bob.next_message(lambda m: bool(m["body"]))
        bob.send_message(mto=message["from"], mbody=f"echo: {message['body']}", mtype="chat")
        return message["from"].full, str(message["body"])

    answered = asyncio.create_task(answer())
    code, out, err = await run(
        node, *await node_flags(node), str(JS / "client.mjs"), endpoint(xmpp, "ws"), ALICE, PASSWORD,
        bob.boundjid.full, within=60,
    )
    assert code == 0, f"xmpp.js failed:\n{out}\n{err}"
    assert await asyncio.wait_for(answered, TIMEOUT) == (f"{ALICE}/js", "hello from xmpp.js")
    assert f"online {ALICE}/js" in out
    assert f"reply: {bob.boundjid.full} echo: hello from xmpp.js" in out


# -- (3) what is refused, and that it costs only the stream that sent it ------------------------------


async def check_others_unaffected(xmpp: XmppServer, bystander: WsClient) -> None:
    """Another WebSocket client's session still works: a TCP client's message reaches it."""
    carol = await xmpp.login(CAROL)
    carol.send_message(mto=bystander.jid, mbody="still there?", mtype="chat")
    assert await bystander.next_body() == (carol.boundjid.full, "still there?")


@pytest.fixture
async def bystander(xmpp: XmppServer) -> AsyncIterator[WsClient]:
    client = await WsClient.connect(endpoint(xmpp, "ws"))
    try:
        await client.login("bob", PASSWORD)
        yield client
        await client.close()
    finally:
        await client.disconnect()


@pytest.mark.parametrize("protocols", [(), ("chat",)], ids=["none", "another"])
async def test_a_handshake_without_the_xmpp_subprotocol_is_refused(
    xmpp: XmppServer, bystander: WsClient, protocols: tuple[str, ...]
) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await WsClient.connect(endpoint(xmpp, "ws"), protocols=protocols)
    assert info.value.status == 400
    await check_others_unaffected(xmpp, bystander)


async def test_a_page_from_a_foreign_origin_is_refused(xmpp: XmppServer, bystander: WsClient) -> None:
    for origin in ("https://evil.example", "null"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await WsClient.connect(endpoint(xmpp, "ws"), origin=origin)
        assert info.value.status == 403
    # The server's own pages may: an XMPP host of it, or the host the request went to.
    port = xmpp.server.ports["http"]
    for origin in ("https://localhost", "https://example.test:8443", f"http://127.0.0.1:{port}"):
        async with await WsClient.connect(endpoint(xmpp, "ws"), origin=origin) as client:
            await client.open_stream()
    await check_others_unaffected(xmpp, bystander)


async def test_pages_from_listed_origins_are_allowed(xmpp: XmppServer, bystander: WsClient) -> None:
    configured = xmpp.server.config
    listed = dataclasses.replace(configured.http, websocket_origins=("https://chat.example.org",))
    xmpp.server.config = dataclasses.replace(configured, http=listed)
    async with await WsClient.connect(endpoint(xmpp, "ws"), origin="https://chat.example.org") as client:
        await client.open_stream()
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await WsClient.connect(endpoint(xmpp, "ws"), origin="https://other.example.org")
    assert info.value.status == 403
    anyone = dataclasses.replace(configured.http, websocket_origins=("*",))
    xmpp.server.config = dataclasses.replace(configured, http=anyone)
    async with await WsClient.connect(endpoint(xmpp, "ws"), origin="https://other.example.org") as client:
        await client.open_stream()
    xmpp.server.config = configured
    await check_others_unaffected(xmpp, bystander)


BAD_MESSAGES = {
    "binary": (b"<message xmlns='jabber:client'/>", "bad-format"),
    "two-elements": ("<message xmlns='jabber:client' to='bob@localhost'><body>1</body></message>"
                     "<message xmlns='jabber:client' to='bob@localhost'><body>2</body></message>", "not-well-formed"),
    "garbage": ("this is not XML", "not-well-formed"),
    "cut-short": ("<message xmlns='jabber:client' to='bob@localhost'><body>", "not-well-formed"),
}


def stream_error(elements: list[etree._Element]) -> str:
    """The condition of the stream error among what the server sent before closing."""
    errors = [e for e in elements if e.tag == q(STREAMS, "error")]
    assert len(errors) == 1, [etree.tostring(e) for e in elements]
    return etree.QName(errors[0][0]).localname if errors[0][0].tag.startswith(f"{{{STREAM_ERRORS}}}") else "?"


async def send_bad(client: WsClient, bad: str) -> None:
    data, _condition = BAD_MESSAGES[bad]
    if isinstance(data, bytes):
        await client.send_binary(data)
    else:
        await client.send(data)


@pytest.mark.parametrize("bad", list(BAD_MESSAGES))
async def test_a_framing_error_ends_that_stream_with_a_stream_error_and_close(
    xmpp: XmppServer, bystander: WsClient, bad: str
) -> None:
    alice = await WsClient.connect(endpoint(xmpp, "ws"))
    try:
        jid = await alice.login("alice", PASSWORD)
        ended = hook_event(xmpp, events.SESSION_ENDED, jid)
        await send_bad(alice, bad)
        elements = await alice.closed()
        assert stream_error(elements) == BAD_MESSAGES[bad][1]
        assert elements[-1].tag == q(FRAMING, "close")  # the error, then <close/> (RFC 7395 §3.5, §3.6)
        assert alice.ws.closed and alice.ws.close_code == aiohttp.WSCloseCode.OK
        # Nothing of a faulty message was handled: bob never got "1".
        await wait(ended)  # ended by us: not kept for a resumption
    finally:
        await alice.disconnect()
    await check_others_unaffected(xmpp, bystander)
    assert bystander.log and not any(">1</body>" in text for text in bystander.log)


async def test_a_framing_error_before_the_stream_opened_comes_after_our_open(
    xmpp: XmppServer, bystander: WsClient
) -> None:
    async with await WsClient.connect(endpoint(xmpp, "ws")) as client:
        await client.send_binary(b"\x00\x01")
        elements = await client.closed()
        # RFC 7395 §3.5: our <open/>, the error, <close/> (each a message of its own).
        assert [e.tag for e in elements] == [q(FRAMING, "open"), q(STREAMS, "error"), q(FRAMING, "close")]
        assert stream_error(elements) == "bad-format"
    await check_others_unaffected(xmpp, bystander)


async def test_the_server_ending_a_stream_closes_the_websocket_after_the_clients_close(xmpp: XmppServer) -> None:
    # As at server stop: the stream is ended from outside its own task, while it waits to read.
    async with await WsClient.connect(endpoint(xmpp, "ws")) as alice:
        jid = await alice.login("alice", PASSWORD)
        ended = hook_event(xmpp, events.SESSION_ENDED, jid)
        (stream,) = [s for s in xmpp.server.streams if s.session is not None and str(s.session.jid) == jid]
        stream.shutdown(StreamError("system-shutdown", "the server is stopping"))
        elements = await alice.closed()  # answers the server's <close/> with its own
        assert stream_error(elements) == "system-shutdown"
        assert elements[-1].tag == q(FRAMING, "close")
        # Then the server closed the WebSocket with a proper closing handshake (RFC 7395 §3.6).
        assert alice.ws.closed and alice.ws.close_code == aiohttp.WSCloseCode.OK
        await wait(ended)


# -- (4) stream management over WebSocket -------------------------------------------------------------


@pytest.mark.parametrize("how", ["websocket-closed", "connection-cut"])
async def test_a_dropped_websocket_is_resumed_on_a_new_one(xmpp: XmppServer, how: str) -> None:
    bob = await xmpp.login(BOB, plugins=("xep_0030",))
    alice = await WsClient.connect(endpoint(xmpp, "ws"))
    again: WsClient | None = None
    try:
        jid = await alice.login("alice", PASSWORD)
        await alice.send(f"<enable xmlns='{SM}' resume='true'/>")
        enabled = await alice.expect(q(SM, "enabled"))
        assert enabled.get("resume") == "true" and enabled.get("id")
        bob.send_message(mto=jid, mbody="before", mtype="chat")
        assert await alice.next_body() == (bob.boundjid.full, "before")  # alice has handled 1 stanza

        # Gone without <close/>: the client closes its WebSocket (a page reloaded), or the server
        # cuts the connection (as stream management does to a client that stopped answering).
        session = xmpp.server.sessions.get(parse_jid(jid))
        assert session is not None
        detached = hook_event(xmpp, events.SESSION_DETACHED, jid)
        if how == "websocket-closed":
            await alice.disconnect()
        else:
            session.abort()
            with pytest.raises(ConnectionError):
                await alice.receive()
        await wait(detached)
        for n in (1, 2):
            bob.send_message(mto=jid, mbody=f"while away {n}", mtype="chat")
        await bob.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)  # bob's messages were routed

        again = await WsClient.connect(endpoint(xmpp, "ws"))
        await again.authenticate("alice", PASSWORD)
        await again.send(f"<resume xmlns='{SM}' previd='{enabled.get('id')}' h='1'/>")
        resumed = await again.expect(q(SM, "resumed"))
        assert resumed.get("previd") == enabled.get("id")
        assert await again.next_body() == (bob.boundjid.full, "while away 1")
        assert await again.next_body() == (bob.boundjid.full, "while away 2")
        assert xmpp.server.sessions.get(parse_jid(jid)) is session  # the same session, on a new WebSocket

        await again.message(bob.boundjid.full, "back")
        message = await bob.next_message(lambda m: bool(m["body"]))
        assert (message["body"], message["from"].full) == ("back", jid)
        bob.send_message(mto=jid, mbody="after", mtype="chat")
        assert await again.next_body() == (bob.boundjid.full, "after")  # nothing replayed twice before it
        await again.close()
    finally:
        await alice.disconnect()
        if again is not None:
            await again.disconnect()


# -- (5) discovery ------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_host_meta_names_the_endpoint_and_it_answers(xmpp: XmppServer, scheme: str) -> None:
    base = f"http://127.0.0.1:{xmpp.server.ports['http']}" if scheme == "http" else \
        f"https://localhost:{xmpp.server.ports['https']}"
    expected = endpoint(xmpp, "ws" if scheme == "http" else "wss")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/.well-known/host-meta.json", ssl=insecure()) as response:
            assert response.status == 200
            links = {link["rel"]: link["href"] for link in json.loads(await response.read())["links"]}
        async with http.get(f"{base}/.well-known/host-meta", ssl=insecure()) as response:
            xrd = etree.fromstring(await response.read())
    assert links[WEBSOCKET_REL] == expected
    assert {link.get("rel"): link.get("href") for link in xrd.iter(f"{{{XRD_NS}}}Link")}[WEBSOCKET_REL] == expected
    async with await WsClient.connect(links[WEBSOCKET_REL]) as client:
        features = await client.open_stream()
        assert features.find(q(SASL, "mechanisms")) is not None
