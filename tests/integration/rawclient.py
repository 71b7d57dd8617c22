"""A deliberately dumb XMPP client over a real socket, for sending what no library would."""

from __future__ import annotations

import asyncio
import base64

from tests.integration.tools import insecure

TIMEOUT = 10
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
)


class RawClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.received = b""

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def expect(self, marker: bytes) -> bytes:
        """Read until `marker` has arrived; returns everything received so far."""
        async with asyncio.timeout(TIMEOUT):
            while marker not in self.received:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise ConnectionError(f"closed before {marker!r}; got {self.received!r}")
                self.received += chunk
        return self.received

    async def closed(self) -> bytes:
        """Read until the server closes the connection; returns everything received."""
        async with asyncio.timeout(TIMEOUT):
            while chunk := await self.reader.read(65536):
                self.received += chunk
        return self.received

    async def open_stream(self, domain: str = "localhost") -> bytes:
        self.received = b""
        await self.send(HEADER.format(domain=domain))
        return await self.expect(b"</stream:features>")

    async def starttls(self, domain: str = "localhost") -> None:
        await self.open_stream(domain)
        await self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect(b"<proceed")
        await self.writer.start_tls(insecure(), server_hostname=domain)
        await self.open_stream(domain)

    async def login(self, user: str, password: str, domain: str = "localhost", resource: str = "raw") -> None:
        """STARTTLS, SASL PLAIN and bind: the shortest way to a bound stream."""
        await self.starttls(domain)
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        await self.expect(b"<success")
        await self.open_stream(domain)
        self.received = b""
        await self.send(
            "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        await self.expect(b"</iq>")
        self.received = b""

    def close(self) -> None:
        self.writer.close()
