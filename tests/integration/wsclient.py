"""A plain XMPP over WebSocket (RFC 7395) client on aiohttp, one element per message, for the
tests: slixmpp (1.17) has no WebSocket transport. It logs in with SASL PLAIN (offered on a
WebSocket: it is TLS, or loopback) and can send what no library would (binary frames, two
elements in one message)."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Sequence
from typing import Any

import aiohttp
from lxml import etree

from tests.integration.tools import insecure

TIMEOUT = 10
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
CLIENT = "jabber:client"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
STREAMS = "http://etherx.jabber.org/streams"
STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
SM = "urn:xmpp:sm:3"


def q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


class WsClient:
    def __init__(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.http, self.ws = http, ws
        self.jid = ""
        # Every text message received, as it came.
        self.log: list[str] = []
        self._closing = False  # our <close/> went out

    @classmethod
    async def connect(
        cls, url: str, *, protocols: Sequence[str] = ("xmpp",), origin: str | None = None
    ) -> WsClient:
        http = aiohttp.ClientSession()
        try:
            ws = await http.ws_connect(
                url, protocols=tuple(protocols), headers={"Origin": origin} if origin else None,
                ssl=insecure() if url.startswith("wss:") else True, timeout=aiohttp.ClientWSTimeout(ws_close=TIMEOUT),
            )
        except BaseException:
            await http.close()
            raise
        return cls(http, ws)

    # -- sending --------------------------------------------------------------------------------
    async def send(self, data: str) -> None:
        await self.ws.send_str(data)

    async def send_binary(self, data: bytes) -> None:
        await self.ws.send_bytes(data)

    # -- receiving ------------------------------------------------------------------------------
    async def receive(self) -> etree._Element:
        """The next message, parsed on its own (each is a complete document, RFC 7395 §3.3.3)."""
        message = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise ConnectionError(f"no more messages: {message.type.name} {message.data!r}; got {self.log}")
        self.log.append(message.data)
        return etree.fromstring(message.data.encode())

    async def expect(self, tag: str) -> etree._Element:
        """The next element named `tag` (Clark notation), skipping others."""
        element = await self.receive()
        while element.tag != tag:
            element = await self.receive()
        return element

    async def closed(self) -> list[etree._Element]:
        """Everything the server sends until it closes the WebSocket; our `<close/>` answers its
        own (RFC 7395 §3.6)."""
        elements = []
        while True:
            try:
                element = await self.receive()
            except ConnectionError:
                return elements
            elements.append(element)
            if element.tag == q(FRAMING, "close") and not self._closing and not self.ws.closed:
                self._closing = True
                await self.send(f"<close xmlns='{FRAMING}'/>")

    # -- a stream -------------------------------------------------------------------------------
    async def open_stream(self, domain: str = "localhost") -> etree._Element:
        """`<open/>`; returns the features (after the server's `<open/>`)."""
        await self.send(f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>")
        opened = await self.receive()
        assert opened.tag == q(FRAMING, "open"), self.log
        assert opened.get("from") == domain and opened.get("version") == "1.0" and opened.get("id")
        features = await self.receive()
        assert features.tag == q(STREAMS, "features"), self.log
        return features

    async def authenticate(self, user: str, password: str, domain: str = "localhost") -> etree._Element:
        """SASL PLAIN, then the restarted stream's features."""
        features = await self.open_stream(domain)
        mechanisms = [m.text for m in features.iter(q(SASL, "mechanism"))]
        assert "PLAIN" in mechanisms, mechanisms
        assert features.find(q("urn:ietf:params:xml:ns:xmpp-tls", "starttls")) is None  # never on a WebSocket
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        success = await self.receive()
        assert success.tag == q(SASL, "success"), self.log
        return await self.open_stream(domain)

    async def login(self, user: str, password: str, domain: str = "localhost", resource: str = "ws") -> str:
        """Authenticate and bind; returns the bound full JID."""
        await self.authenticate(user, password, domain)
        await self.send(
            f"<iq xmlns='{CLIENT}' type='set' id='bind'><bind xmlns='{BIND}'><resource>{resource}</resource>"
            "</bind></iq>"
        )
        result = await self.receive()
        # The server's own answer declares jabber:client too: each message stands alone.
        assert result.tag == q(CLIENT, "iq") and result.get("type") == "result", self.log
        self.jid = result.findtext(f"{q(BIND, 'bind')}/{q(BIND, 'jid')}") or ""
        return self.jid

    async def message(self, to: str, body: str) -> None:
        await self.send(f"<message xmlns='{CLIENT}' to='{to}' type='chat'><body>{body}</body></message>")

    async def next_body(self) -> tuple[str, str]:
        """(from, body) of the next message with a body."""
        while True:
            element = await self.expect(q(CLIENT, "message"))
            body = element.findtext(q(CLIENT, "body"))
            if body is not None:
                return element.get("from", ""), body

    async def close(self) -> list[etree._Element]:
        """End the stream properly: `<close/>`, the server's answer, the WebSocket closing.
        Returns what the server sent meanwhile, its `<close/>` last."""
        elements = []
        if not self.ws.closed:
            self._closing = True
            await self.send(f"<close xmlns='{FRAMING}'/>")
            elements = await self.closed()
        await self.disconnect()
        return elements

    async def disconnect(self) -> None:
        """Close the WebSocket (a clean closing handshake) without closing the XMPP stream."""
        await self.ws.close()
        await self.http.close()

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.disconnect()
