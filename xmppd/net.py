"""The only asyncio networking: listeners, TLS upgrades, timeouts, one task per connection.

A connection feeds bytes to the sans-IO XmlStream and C2SNegotiation and carries out the
actions they return; once a resource is bound, stanzas go to the router. The task does not
read while the router handles a stanza, so a fast sender is held back by TCP itself, and one
sender's stanzas keep their order (RFC 6120 §10.1).
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import logging
import socket
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.errors import StreamError
from xmppd.negotiation import (
    Action,
    Authenticated,
    AuthFailed,
    BindResource,
    C2SNegotiation,
    CheckPlain,
    Close,
    FetchCredentials,
    PreAuthStanza,
    ResetParser,
    Send,
    StartTLS,
)
from xmppd.sasl import verify_plain
from xmppd.session import Session
from xmppd.xml import STREAM_CLOSE, Event, StreamClosed, XmlStream

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger("xmppd.c2s")
READ_SIZE = 64 * 1024

# asyncio gives every TLS connection a 256 KiB receive buffer (SSLProtocol.max_size), allocated
# and zeroed up front: with ten thousand idle clients that is 2.5 GB holding nothing. A TLS record
# is at most 16 KiB plus overhead (RFC 8446 §5.2), so 17 KiB still reads a whole record at a time.
asyncio.sslproto.SSLProtocol.max_size = 17 * 1024
# A reader this far behind is cut off rather than buffered without end.
MAX_WRITE_BUFFER = 8 * 1024 * 1024


class ConnectionOutput:
    """Coalesces the writes of one event-loop pass into one send() (the kernel call dominates
    the cost of routing a stanza) and cuts off a client that does not read."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "closed", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self._buffer: list[bytes] = []
        self._scheduled = False
        self._loop = asyncio.get_running_loop()
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if self.closed or not self._buffer:
            return
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer.clear()
        transport = self.writer.transport
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing %s: it does not read what it is sent", self.writer.get_extra_info("peername"))
            transport.write(StreamError("policy-violation", "too slow reading").to_xml() + STREAM_CLOSE)
            self.closed = True
            transport.abort()

    def close(self, data: bytes = b"") -> None:
        if self.closed:
            return
        if data:
            self._buffer.append(data)
        self.flush()
        self.closed = True
        self.writer.transport.close()


class Connection:
    def __init__(
        self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, direct_tls: bool
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        peer = writer.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        self.parser = XmlStream(server.config.c2s.max_stanza_size)
        self.negotiation = C2SNegotiation(server.negotiation_policy, tls_active=direct_tls)
        self.output = ConnectionOutput(writer)
        self.session: Session | None = None
        self.reason = "closed"
        self.task: asyncio.Task[None] | None = None
        self._parse_error: StreamError | None = None

    def shutdown(self, error: StreamError) -> None:
        """End the stream from our side (server stop): the read loop then sees the close."""
        self.reason = error.condition
        if self.session is not None:
            self.session.close(error.to_xml() + STREAM_CLOSE)
        else:
            self._close(self.negotiation.fail(error))

    async def run(self) -> None:
        try:
            try:
                async with asyncio.timeout(self.server.config.c2s.auth_timeout):
                    bound = await self._negotiate()
            except TimeoutError:
                self._close(self.negotiation.fail(StreamError("connection-timeout", "authentication took too long")))
                return
            if bound:
                await self._route_stanzas()
        except StreamError as error:
            self._close(self.negotiation.fail(error))
        except (ConnectionError, asyncio.IncompleteReadError, OSError) as exc:
            self.reason = f"connection lost: {exc.__class__.__name__}"
        except Exception:
            # A bug must cost one stream, never the server or the other clients.
            log.exception("internal error on the stream from %s", self.address)
            self._close(self.negotiation.fail(StreamError("internal-server-error")))
        finally:
            self.output.close()
            if self.session is not None:
                await self.server.session_ended(self.session, self.reason)
            else:
                log.info("disconnected %s before binding: %s", self.address, self.reason)

    # -- before binding ---------------------------------------------------------------------
    async def _negotiate(self) -> bool:
        """Drive negotiation until a resource is bound (True) or the stream ends (False)."""
        while True:
            data = await self.reader.read(READ_SIZE)
            if not data:
                self._closed_by_peer()
                return False
            events = self._parse(data)
            for index, event in enumerate(events):
                outcome = await self._carry_out(self.negotiation.receive(event), data)
                if outcome == "closed":
                    return False
                if outcome == "reset":
                    if index != len(events) - 1:
                        raise StreamError("policy-violation", "data sent before the stream restart")
                    break
                if outcome == "bound":
                    for stanza in events[index + 1 :]:
                        await self._stanza(stanza)
                    self._raise_parse_error()
                    return True
            self._raise_parse_error()

    async def _carry_out(self, actions: list[Action], data: bytes) -> str:
        outcome = ""
        while actions:
            action, actions = actions[0], actions[1:]
            match action:
                case Send(payload):
                    self.output.write(payload)
                case StartTLS():
                    await self._start_tls(data)
                    actions = self.negotiation.tls_established() + actions
                case ResetParser():
                    self.parser.reset()
                    outcome = "reset"
                case FetchCredentials(domain, username, hash_name):
                    credentials = await self.server.storage.accounts.credentials(domain, username, hash_name)
                    actions = self.negotiation.credentials_loaded(credentials) + actions
                case CheckPlain(domain, username, password):
                    verified = await self._check_plain(domain, username, password)
                    actions = self.negotiation.plain_checked(verified) + actions
                case AuthFailed(username, condition, payload):
                    await self._auth_failed(username, condition, payload)
                case Authenticated(jid):
                    self.server.throttle.success(self.address)
                    log.info("authenticated %s from %s", jid, self.address)
                case BindResource(jid, iq_id):
                    self.session = await self.server.bind(jid, self.output, self.address)
                    actions = self.negotiation.bound(self.session.jid, iq_id) + actions
                    outcome = "bound"
                case PreAuthStanza(domain, element):
                    await self.server.pre_auth_stanza(domain, element, self.output, self.address)
                case Close(payload, reason):
                    self.reason = reason
                    self.output.close(payload)
                    return "closed"
        return outcome

    async def _start_tls(self, data: bytes) -> None:
        # asyncio's start_tls drops bytes already read: a client that pipelined data after
        # <starttls/> would lose it silently, so such a stream is refused instead.
        if not data.rstrip().endswith(b">") or self.reader.at_eof() or len(self.reader._buffer):  # type: ignore[attr-defined]
            raise StreamError("policy-violation", "data sent after <starttls/> before the TLS handshake")
        self.output.flush()
        await self.writer.drain()
        context = self.server.tls.starttls(self.negotiation.domain)
        await self.writer.start_tls(context)

    async def _check_plain(self, domain: str, username: str, password: str) -> bool:
        credentials = await self.server.storage.accounts.credentials(domain, username, "sha256")
        if credentials is None:
            return False
        # PBKDF2 takes milliseconds: keep it off the event loop.
        return await asyncio.to_thread(verify_plain, password, credentials)

    async def _auth_failed(self, username: str | None, condition: str, payload: bytes) -> None:
        delay = self.server.throttle.failure(self.address)
        log.info("authentication failed for %s from %s: %s", username or "?", self.address, condition)
        if delay:
            await asyncio.sleep(delay)
        self.output.write(payload)

    # -- after binding --------------------------------------------------------------------
    async def _route_stanzas(self) -> None:
        read = self.reader.read
        feed = self._parse
        while True:
            data = await read(READ_SIZE)
            if not data:
                self._closed_by_peer()
                return
            for event in feed(data):
                if isinstance(event, StreamClosed):
                    self.reason = "stream closed by client"
                    self.output.close(STREAM_CLOSE)
                    return
                await self._stanza(event)
            self._raise_parse_error()

    def _parse(self, data: bytes) -> list[Event]:
        """Parse a read; an error is raised only after the stanzas before it are handled."""
        try:
            return self.parser.feed(data)
        except StreamError as error:
            self._parse_error = error
            return error.partial

    def _raise_parse_error(self) -> None:
        if self._parse_error is not None:
            raise self._parse_error

    async def _stanza(self, event: object) -> None:
        if not isinstance(event, etree._Element):
            raise StreamError("invalid-xml", "unexpected stream event")
        assert self.session is not None
        if self.session.closed:
            raise ConnectionResetError("session replaced")
        await self.server.router.process(self.session, event)

    def _closed_by_peer(self) -> None:
        if self.reason == "closed":  # not ended by us (shutdown, replaced, error)
            self.reason = "peer closed the connection"

    def _close(self, close: Close) -> None:
        self.reason = close.reason
        self.output.close(close.data)


async def listen(server: Server, interfaces: tuple[str, ...], port: int, *, direct_tls: bool) -> asyncio.Server:
    """Accept client connections; each becomes a Connection task."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection = Connection(server, reader, writer, direct_tls=direct_tls)
        refusal = server.admit(connection.address)
        if refusal:
            log.warning("refused %s: %s", connection.address, refusal)
            connection._close(connection.negotiation.fail(StreamError("policy-violation", refusal)))
            return
        log.info("connected %s%s", connection.address, " (Direct TLS)" if direct_tls else "")
        connection.task = asyncio.current_task()
        server.connections.add(connection)
        try:
            await connection.run()
        finally:
            server.connections.discard(connection)
            server.release(connection.address)

    ssl_context = server.tls.direct() if direct_tls else None
    return await asyncio.start_server(
        accept, host=list(interfaces), port=port, ssl=ssl_context, reuse_address=True, limit=READ_SIZE,
        ssl_handshake_timeout=server.config.c2s.auth_timeout if direct_tls else None,
    )
