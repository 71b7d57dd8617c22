"""BOSH (XEP-0124, XEP-0206; xmppd/bosh.py) against a real server, on each storage backend, spoken
by hand with aiohttp's client: a session opened (SASL PLAIN, restart, bind) over HTTP on loopback
and over HTTPS, messages both ways with a TCP client while the BOSH side long-polls, a session
the client terminates (the server ends it), one that stops polling (it ends after `inactivity`),
the server stopping with a request held, bad input (an unknown sid, a malformed or oversized
body, plain HTTP for an HTTPS session) that ends at most the session it concerns, and host-meta
naming the endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from storage import Storage
from tests.integration.tools import insecure
from xmppd import events
from xmppd.bosh import BoshService, Settings
from xmppd.events import SessionEvent
from xmppd.http import BOSH_REL
from xmppd.jid import parse_jid

from .conftest import PASSWORD, TIMEOUT, XmppServer, running_server

pytestmark = pytest.mark.integration

BOSH_NS = "http://jabber.org/protocol/httpbind"
XBOSH_NS = "urn:xmpp:xbosh"
STREAMS_NS = "http://etherx.jabber.org/streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
CLIENT = "{jabber:client}"


def bosh_url(xmpp: XmppServer, *, https: bool = False) -> str:
    if https:
        return f"https://localhost:{xmpp.server.ports['https']}/http-bind"
    return f"http://127.0.0.1:{xmpp.server.ports['http']}/http-bind"


async def post(http: aiohttp.ClientSession, url: str, data: bytes) -> etree._Element:
    """One request; every answer is an HTTP 200 with a <body/> and CORS headers."""
    headers = {"Content-Type": "text/xml; charset=utf-8"}
    async with http.post(url, data=data, headers=headers, ssl=insecure()) as response:
        assert response.status == 200
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.headers["Content-Type"].startswith("text/xml")
        answer = etree.fromstring(await response.read())
    assert answer.tag == f"{{{BOSH_NS}}}body"
    return answer


class BoshClient:
    """A BOSH client by hand: one request at a time while logging in, then a poller that keeps
    one request waiting at the server (hold 1) and puts what arrives in a queue."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.url = url
        self.rid = secrets.randbelow(2**40) + 2**20
        self.sid: str | None = None
        self.jid = ""
        self.stanzas: asyncio.Queue[etree._Element] = asyncio.Queue()
        self.terminated: etree._Element | None = None
        self._poller: asyncio.Task[None] | None = None

    def body(self, *payloads: str, rid: int | None = None, **attributes: str) -> bytes:
        if rid is None:
            rid, self.rid = self.rid, self.rid + 1
        attrs = {"rid": str(rid), **({"sid": self.sid} if self.sid else {}), **attributes}
        text = "".join(f" {name}='{value}'" for name, value in attrs.items())
        return f"<body{text} xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}'>{''.join(payloads)}</body>".encode()

    async def request(self, *payloads: str, **attributes: str) -> etree._Element:
        return await post(self.http, self.url, self.body(*payloads, **attributes))

    async def connect(self, jid: str, password: str = PASSWORD, resource: str = "web") -> etree._Element:
        """Session request, SASL PLAIN, restart, bind: the session request's answer."""
        local, domain = jid.split("@")
        created = await self.request(to=domain, wait="30", hold="1", ver="1.6", **{"xmpp:version": "1.0"})
        self.sid = created.get("sid")
        mechanisms = [m.text for m in created.iter(f"{{{SASL_NS}}}mechanism")]
        assert "PLAIN" in mechanisms  # over HTTPS or loopback the stream counts as encrypted
        plain = base64.b64encode(f"\0{local}\0{password}".encode()).decode()
        (success,) = await self.request(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{plain}</auth>")
        assert success.tag == f"{{{SASL_NS}}}success"
        (features,) = await self.request(to=domain, **{"xmpp:restart": "true", "xml:lang": "en"})
        assert features.tag == f"{{{STREAMS_NS}}}features" and features.find(f"{{{BIND_NS}}}bind") is not None
        bound = await self.request(
            f"<iq type='set' id='bind1' xmlns='jabber:client'><bind xmlns='{BIND_NS}'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        result = bound.find(f"{CLIENT}iq")
        assert result is not None and result.get("type") == "result"
        self.jid = result.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid") or ""
        assert self.jid == f"{jid}/{resource}"
        return created

    def start_polling(self) -> None:
        self._poller = asyncio.create_task(self._poll())

    async def stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
            self._poller = None

    async def _poll(self) -> None:
        while self.terminated is None:
            self._received(await self.request())

    async def send(self, *stanzas: str, **attributes: str) -> etree._Element:
        """A request with stanzas; its answer's stanzas go to the queue like the poller's."""
        answer = await self.request(*stanzas, **attributes)
        self._received(answer)
        return answer

    def _received(self, answer: etree._Element) -> None:
        if answer.get("type") == "terminate":
            self.terminated = answer
        for child in answer:
            self.stanzas.put_nowait(child)

    async def next_stanza(self, match: Callable[[etree._Element], bool]) -> etree._Element:
        async with asyncio.timeout(TIMEOUT):
            while True:
                stanza = await self.stanzas.get()
                if match(stanza):
                    return stanza


class SessionWatch:
    """Waits for `session-ended` of one JID (no sleeps)."""

    def __init__(self, xmpp: XmppServer, host: str = "localhost") -> None:
        self.ended: dict[str, asyncio.Event] = {}
        xmpp.server.hosts[host].hooks.on(events.SESSION_ENDED, self._on_ended, 10)

    def _on_ended(self, ev: SessionEvent) -> None:
        self.ended.setdefault(str(ev.session.jid), asyncio.Event()).set()

    async def wait(self, jid: str) -> None:
        async with asyncio.timeout(TIMEOUT):
            await self.ended.setdefault(jid, asyncio.Event()).wait()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bosh_service(xmpp: XmppServer) -> BoshService:
    service = xmpp.server.http.routes[("POST", "/http-bind")].__self__  # type: ignore[attr-defined]
    assert isinstance(service, BoshService)
    return service


def is_chat(text: str) -> Callable[[etree._Element], bool]:
    return lambda stanza: stanza.tag == f"{CLIENT}message" and stanza.findtext(f"{CLIENT}body") == text


# -- a session -----------------------------------------------------------------------------------
@pytest.mark.parametrize("https", [False, True], ids=["http-loopback", "https"])
async def test_a_session_is_opened_authenticated_and_bound(
    xmpp: XmppServer, http: aiohttp.ClientSession, https: bool
) -> None:
    await xmpp.account("web@localhost")
    client = BoshClient(http, bosh_url(xmpp, https=https))
    created = await client.connect("web@localhost")
    assert created.get("sid") and created.get("from") == "localhost"
    assert (created.get("wait"), created.get("hold"), created.get("requests")) == ("30", "1", "2")
    assert created.get(f"{{{XBOSH_NS}}}version") == "1.0"
    assert created.get(f"{{{XBOSH_NS}}}restartlogic") == "true"
    session = xmpp.server.sessions.get(parse_jid(client.jid))
    assert session is not None and session.address in ("127.0.0.1", "::1")
    # Initial presence comes back to its sender (RFC 6121 §4.2.2) in the answer to that request.
    answer = await client.send("<presence xmlns='jabber:client'/>")
    assert answer[0].tag == f"{CLIENT}presence" and answer[0].get("from") == client.jid


async def test_messages_both_ways_with_a_tcp_client_while_long_polling(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    await xmpp.account("web@localhost")
    await xmpp.account("tcp@localhost")
    tcp = await xmpp.login("tcp@localhost")
    client = BoshClient(http, bosh_url(xmpp))
    await client.connect("web@localhost")
    client.start_polling()
    try:
        # Without xmlns, as many BOSH clients send stanzas: they are jabber:client (XEP-0206's wrapper note).
        await client.send(f"<message to='{tcp.boundjid.full}' type='chat'><body>hello tcp</body></message>")
        received = await tcp.next_message(lambda m: m["body"] == "hello tcp")
        assert received["from"].full == client.jid

        # The poll waiting at the server carries the message back as soon as it is routed.
        tcp.send_message(mto=client.jid, mbody="hello bosh", mtype="chat")
        message = await client.next_stanza(is_chat("hello bosh"))
        assert message.get("from") == tcp.boundjid.full and message.get("to") == client.jid

        for n in range(3):  # in order, one after another
            tcp.send_message(mto=client.jid, mbody=f"n{n}", mtype="chat")
        for n in range(3):
            await client.next_stanza(is_chat(f"n{n}"))
    finally:
        await client.stop_polling()


async def test_a_terminated_session_is_ended_by_the_server(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    await xmpp.account("web@localhost")
    watch = SessionWatch(xmpp)
    client = BoshClient(http, bosh_url(xmpp))
    await client.connect("web@localhost")
    await client.send("<presence xmlns='jabber:client'/>")
    jid = parse_jid(client.jid)
    assert xmpp.server.sessions.get(jid) is not None

    answer = await client.request("<presence xmlns='jabber:client' type='unavailable'/>", type="terminate")
    assert answer.get("type") == "terminate" and answer.get("condition") is None
    await watch.wait(client.jid)
    assert xmpp.server.sessions.get(jid) is None
    # The session is gone: a later request finds nothing (XEP-0124 §13).
    after = await client.request()
    assert (after.get("type"), after.get("condition")) == ("terminate", "item-not-found")


async def test_a_client_that_stops_polling_is_gone_after_the_inactivity_period(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    await xmpp.account("web@localhost")
    bosh_service(xmpp).settings = Settings(inactivity=1)
    watch = SessionWatch(xmpp)
    client = BoshClient(http, bosh_url(xmpp))
    created = await client.connect("web@localhost")
    assert created.get("inactivity") == "1"
    await watch.wait(client.jid)  # no request after the bind's answer: the server's timer ends it
    assert xmpp.server.sessions.get(parse_jid(client.jid)) is None
    assert (await client.request()).get("condition") == "item-not-found"


async def test_stopping_the_server_answers_the_request_it_holds(
    storage: Storage, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    async with running_server(storage, tmp_path) as xmpp:
        await xmpp.account("web@localhost")
        await xmpp.account("tcp@localhost")
        tcp = await xmpp.login("tcp@localhost")
        client = BoshClient(http, bosh_url(xmpp))
        await client.connect("web@localhost")
        message = f"<message xmlns='jabber:client' to='{tcp.boundjid.full}'><body>bye</body></message>"
        held = asyncio.create_task(client.request(message))
        # Once the message has arrived, the server has read the request: it holds it (nothing to say).
        await tcp.next_message(lambda m: m["body"] == "bye")
    # Stopped: every stream is closed with system-shutdown before the HTTP side stops.
    answer = await asyncio.wait_for(held, TIMEOUT)
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "system-shutdown")


# -- bad input -----------------------------------------------------------------------------------------
async def test_an_unknown_sid_is_item_not_found(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    answer = await post(http, bosh_url(xmpp), f"<body rid='42' sid='no-such-session' xmlns='{BOSH_NS}'/>".encode())
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "item-not-found")


async def test_a_malformed_body_ends_only_its_own_session(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    for account in ("broken@localhost", "web@localhost", "tcp@localhost"):
        await xmpp.account(account)
    watch = SessionWatch(xmpp)
    tcp = await xmpp.login("tcp@localhost")
    broken = BoshClient(http, bosh_url(xmpp))
    await broken.connect("broken@localhost")
    other = BoshClient(http, bosh_url(xmpp))
    await other.connect("web@localhost")

    # Not well-formed (a session request too: there is no session to end).
    answer = await post(http, bosh_url(xmpp), b"<body rid='1' xmlns='http://jabber.org/protocol/httpbind'><iq>")
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "bad-request")
    answer = await post(http, broken.url, broken.body("<message to='tcp@localhost'><body>x</message>"))
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "bad-request")
    await watch.wait(broken.jid)
    assert xmpp.server.sessions.get(parse_jid(broken.jid)) is None
    assert (await broken.request()).get("condition") == "item-not-found"

    # The other BOSH session and the TCP client go on.
    other.start_polling()
    try:
        await other.send(f"<message xmlns='jabber:client' to='{tcp.boundjid.full}' type='chat'><body>still here</body>"
                         "</message>")
        await tcp.next_message(lambda m: m["body"] == "still here")
        tcp.send_message(mto=other.jid, mbody="so am I", mtype="chat")
        await other.next_stanza(is_chat("so am I"))
    finally:
        await other.stop_polling()
    assert xmpp.server.sessions.get(parse_jid(other.jid)) is not None


async def test_an_oversized_body_ends_its_session_with_a_stream_error(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    await xmpp.account("web@localhost")
    watch = SessionWatch(xmpp)
    client = BoshClient(http, bosh_url(xmpp))
    await client.connect("web@localhost")
    big = "x" * (xmpp.server.config.c2s.max_stanza_size + 10_000)
    answer = await client.request(f"<message xmlns='jabber:client' to='web@localhost'><body>{big}</body></message>")
    assert (answer.get("type"), answer.get("condition")) == ("terminate", "remote-stream-error")
    error = answer.find(f"{{{STREAMS_NS}}}error")
    assert error is not None and error.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
    await watch.wait(client.jid)


async def test_a_session_opened_over_https_is_not_continued_over_plain_http(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    await xmpp.account("web@localhost")
    client = BoshClient(http, bosh_url(xmpp, https=True))
    await client.connect("web@localhost")
    async with http.post(bosh_url(xmpp), data=client.body("<presence xmlns='jabber:client'/>")) as response:
        assert response.status == 403  # XEP-0124 §19.1: refused, and the session is left alone
    client.rid -= 1  # that request never counted: the client sends it again, over HTTPS
    answer = await client.send("<presence xmlns='jabber:client'/>")
    assert answer[0].tag == f"{CLIENT}presence"


async def test_a_bad_session_request_is_refused(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    url = bosh_url(xmpp)
    no_to = await post(http, url, f"<body rid='7' wait='10' hold='1' xmlns='{BOSH_NS}'/>".encode())
    assert (no_to.get("type"), no_to.get("condition")) == ("terminate", "improper-addressing")
    unknown = await post(
        http, url,
        f"<body rid='7' to='nowhere.example' wait='10' hold='1' xmpp:version='1.0' xmlns='{BOSH_NS}' "
        f"xmlns:xmpp='{XBOSH_NS}'/>".encode(),
    )
    assert (unknown.get("type"), unknown.get("condition")) == ("terminate", "host-unknown")


# -- the endpoint ----------------------------------------------------------------------------------------
async def test_host_meta_names_the_bosh_endpoint_which_answers_cors_preflights(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    base = f"http://127.0.0.1:{xmpp.server.ports['http']}"
    async with http.get(f"{base}/.well-known/host-meta.json") as response:
        links = {link["rel"]: link["href"] for link in json.loads(await response.read())["links"]}
    assert links[BOSH_REL] == f"{base}/http-bind"
    async with http.get(f"{base}/.well-known/host-meta") as response:
        assert f'rel="{BOSH_REL}" href="{base}/http-bind"' in await response.text()
    async with http.options(f"{base}/http-bind") as response:
        assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
    async with http.get(f"{base}/http-bind") as response:
        assert response.status == 200 and "BOSH" in await response.text()
