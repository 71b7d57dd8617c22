"""TCP and TLS: the listeners and the transport of one connection (the only asyncio networking
of the c2s side; stream.py drives each stream, whatever its transport).

`TcpTransport` is an asyncio protocol: bytes in, through the sans-IO XmlStream, batches of
stream events out to the stream driver; the driver's stream events out, framed as an XML stream
(framing.py). It keeps the received bytes itself, so it knows, without asking asyncio's
internals, whether a client sent anything after `<starttls/>` (those bytes would be lost in the
TLS upgrade: such a stream is refused). Reading pauses when more than READ_SIZE bytes wait for
the driver, so a fast sender is held back by TCP itself.

Writes of one event-loop pass are coalesced into one send() (the kernel call dominates the cost
of routing a stanza), and a client that does not read is cut off when MAX_WRITE_BUFFER bytes
wait for it, never buffered without end.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import socket
from typing import TYPE_CHECKING, cast

from xmppd.errors import StreamError
from xmppd.framing import Opening, tcp_close, tcp_open
from xmppd.stream import C2SStream
from xmppd.tls import share_tls_read_buffer
from xmppd.xml import Event, XmlStream

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger("xmppd.c2s")
READ_SIZE = 64 * 1024
# A reader this far behind is cut off rather than buffered without end.
MAX_WRITE_BUFFER = 8 * 1024 * 1024
# Seconds a closed stream keeps reading (and dropping) what its peer still sends: see close().
LINGER = 1.0


class CoalescedOutput(abc.ABC):
    """The output half of a client transport (TCP here, WebSocket in websocket.py): what is
    written in one event-loop pass goes out as one write to the connection at the end of the pass
    (the stanzas routed in one pass cost one system call and one TLS record), and a peer that does
    not read what it is sent is cut off once MAX_WRITE_BUFFER bytes wait for it (`_too_slow`)."""

    address: str
    closed: bool
    _transport: asyncio.Transport | None

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        # Written in this loop pass, not yet sent.
        self._out: list[bytes] = []
        self._flush_scheduled = False

    def _queue(self, data: bytes) -> None:
        self._out.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        out, transport = self._out, self._transport
        if self.closed or not out or transport is None:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        if transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("closing %s: it does not read what it is sent", self.address)
            self._too_slow(transport)

    @abc.abstractmethod
    def _too_slow(self, transport: asyncio.Transport) -> None:
        """End the stream of a peer that does not read (policy-violation) and cut the connection."""


class TcpTransport(CoalescedOutput, asyncio.Protocol):
    def __init__(self, server: Server, *, direct_tls: bool) -> None:
        super().__init__()
        self.server = server
        self.direct_tls = direct_tls
        self.parser = XmlStream(
            server.config.c2s.max_stanza_size, max_attributes=server.config.c2s.max_attributes,
            max_children=server.config.c2s.max_children, max_depth=server.config.c2s.max_depth,
        )
        self.address = ""
        self.closed = False
        self.received_bytes = 0
        # We ended the stream (closing tag sent): whatever follows, it is not resumable.
        self.ended = False
        self.task: asyncio.Task[None] | None = None
        self._transport: asyncio.Transport | None = None
        # Received, not yet parsed; the last chunk parsed.
        self._received: list[bytes] = []
        self._received_size = 0
        self._last = b""
        self._eof = False
        self._parse_error: StreamError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._linger: asyncio.TimerHandle | None = None
        self._paused = False

    # -- asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        share_tls_read_buffer(transport)  # Direct TLS
        peer = transport.get_extra_info("peername")
        self.address = peer[0] if isinstance(peer, tuple) else str(peer)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.task = self._loop.create_task(self._serve())

    def data_received(self, data: bytes) -> None:
        if self._linger is not None:
            return  # the stream is over: what the peer still sends is read and dropped
        self._received.append(data)
        size = len(data)
        self._received_size += size
        self.received_bytes += size
        if self._received_size > READ_SIZE and self._transport is not None and not self._paused:
            self._paused = True
            self._transport.pause_reading()  # resumed when the driver asks for more
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        if self._linger is not None and self._transport is not None:
            self._transport.close()
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        self._wake()

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # -- the connection's task -------------------------------------------------------------
    async def _serve(self) -> None:
        server = self.server
        stream = C2SStream(server, self, tls_active=self.direct_tls)
        refusal = server.admit(self.address)
        if refusal:
            log.warning("refused %s: %s", self.address, refusal)
            stream.refuse(refusal)
            self.drop()
            return
        log.info("connected %s%s", self.address, " (Direct TLS)" if self.direct_tls else "")
        try:
            await stream.run(server.stream_started(stream))
        finally:
            server.stream_ended(stream)

    # -- Transport: input ------------------------------------------------------------------
    async def read(self) -> list[Event] | None:
        if self._parse_error is not None:
            raise self._parse_error
        while not self._received:
            if self._eof:
                return None
            if self._paused:
                assert self._transport is not None
                self._paused = False
                self._transport.resume_reading()
            self._wakeup = self._loop.create_future()
            await self._wakeup
        received = self._received
        data = received[0] if len(received) == 1 else b"".join(received)
        received.clear()
        self._received_size = 0
        self._last = data
        try:
            return self.parser.feed(data)
        except StreamError as error:
            # What came before the fault is handled first; the next read raises.
            self._parse_error = error
            return error.partial

    def restart(self) -> None:
        self.parser.reset()

    def rest(self) -> bool:
        return not self._received and self.parser.release()

    def quiet(self) -> bool:
        # asyncio's start_tls would drop bytes already received: a client that pipelined data
        # after <starttls/> would lose it silently, so the driver refuses such a stream.
        return not self._received and not self._eof and self._last.rstrip().endswith(b">")

    async def start_tls(self, domain: str | None) -> None:
        self.flush()
        assert self._transport is not None
        context = self.server.tls.starttls(domain)
        upgraded = await self._loop.start_tls(
            self._transport, self, context, server_side=True,
            ssl_handshake_timeout=self.server.config.c2s.auth_timeout,
        )
        if upgraded is None:
            raise ConnectionResetError("the connection closed during the TLS handshake")
        share_tls_read_buffer(upgraded)
        self._transport = upgraded

    # -- Transport: output -----------------------------------------------------------------
    def open(self, opening: Opening, features: bytes) -> None:
        self.write(tcp_open(opening, features))

    def write(self, data: bytes) -> None:
        if not self.closed:
            self._queue(data)

    def _too_slow(self, transport: asyncio.Transport) -> None:
        if not self.ended:  # a stream we are closing anyway has its closing tag already
            transport.write(tcp_close(StreamError("policy-violation", "too slow reading")))
        self.closed = self.ended = True
        transport.abort()

    def close(self, error: StreamError | None = None, opening: Opening | None = None) -> None:
        """Our closing tag (after the error), then a lingering close: closing a socket that still
        has unread input makes the kernel send a reset, which can destroy the error on its way to
        the peer (a flooder has plenty unread). So what arrives is read and dropped until the peer
        closes its side (then we close ours) or LINGER seconds pass (then the connection is cut)."""
        if self.closed:
            return
        self._out.append(tcp_close(error, opening))
        self.ended = True
        self.flush()
        self.closed = True
        transport = self._transport
        if transport is None or self._eof or transport.is_closing():
            self._close_now()
            return
        self._received.clear()
        # A peer still talking after LINGER seconds is not listening: cut (a TLS close would
        # wait for its close_notify).
        self._linger = self._loop.call_later(LINGER, transport.abort)
        transport.resume_reading()

    def drop(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._close_now()

    def _close_now(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        self.closed = True
        if self._linger is not None:
            self._linger.cancel()
        if self._transport is not None:
            self._transport.abort()


async def listen(server: Server, interfaces: tuple[str, ...], port: int, *, direct_tls: bool) -> asyncio.Server:
    """Accept client connections; each gets a TcpTransport and a stream task."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: TcpTransport(server, direct_tls=direct_tls),
        host=list(interfaces),
        port=port,
        ssl=server.tls.direct() if direct_tls else None,
        reuse_address=True,
        ssl_handshake_timeout=server.config.c2s.auth_timeout if direct_tls else None,
    )
