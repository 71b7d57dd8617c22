"""XMPP over WebSocket (RFC 7395): the endpoint on the HTTP side, and the transport of one
WebSocket under the c2s stream driver (stream.py), as net.py's TcpTransport is for TCP.

The endpoint. `serve_websocket` registers it with the HTTP side, which names it in host-meta
(XEP-0156). A request gets the WebSocket handshake only with the `xmpp` subprotocol (§3.1: 400
without it), from an allowed `Origin` (403 otherwise, before the handshake: see `origin_allowed`),
and over TLS or from a loopback address (403 otherwise: see `_secure`). STARTTLS is never offered
on a WebSocket (§3.1: the transport itself is TLS, or the operator's reverse proxy on this
machine terminates it), so the stream is driven with `tls_active=True`. Then it is a client stream
like any other: admission, the pre-auth slot and its timeout, the session, stream management.

Input. One task (`_pump`) receives the WebSocket messages (aiohttp answers pings and the peer's
closing handshake) into a list, as TcpTransport's data_received does with bytes, and `read()`
parses what has arrived, one message at a time (framing.WebSocketParser: each message is one
element, RFC 7395 §3.3.3), into one batch of stream events. So a burst of messages is one batch,
within which the driver shares the event loop fairly, and a closing from elsewhere (server stop,
a resumption elsewhere) wakes the reader at once. The pump stops receiving while READ_SIZE bytes
wait for the driver: aiohttp then stops reading the socket and TCP holds the sender back. A
binary message is a framing error (§3.2): bad-format, after the messages before it.

Output. aiohttp's `send_str` is a coroutine, but the driver and the sessions write synchronously,
one element at a time. Rather than a queue drained by a writer task, the transport frames each
element itself (a text frame, RFC 6455 §5.2: two to ten bytes before the payload) and writes the
frames of one event-loop pass with one write on the connection under the WebSocket (net.py's
CoalescedOutput, shared with TcpTransport): one send() per pass whatever the number of elements, no
task switch, no encoding (the elements are UTF-8 bytes already). The asyncio transport's buffer is
the queue, and its size the high-water mark: a client that does not read is cut off once
MAX_WRITE_BUFFER bytes (net.py's 8 MiB) wait for it, never buffered without end. aiohttp writes its
own control frames (pong, close) on the same connection, each frame whole, so frames never
interleave; compression (RFC 7692) is not negotiated, so every frame is a plain one.

Closing (§3.6). Our side ends with `<close/>` (after a stream error if any, §3.5); the peer answers
with its own `<close/>`, and then we start the WebSocket closing handshake (RFC 6455 §7.1.2). A
peer that does not answer within LINGER seconds is closed all the same, and one that closed first
gets our `<close/>` and our closing frame at once. A WebSocket closed or lost without `<close/>`
leaves the stream implicitly closed: a session with stream management resumption (XEP-0198) stays
resumable, as for a lost TCP connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, hdrs, web
from yarl import URL

from xmppd.errors import StreamError
from xmppd.framing import (
    Opening,
    WebSocketParser,
    ws_close,
    ws_features,
    ws_frame_header,
    ws_is_close,
    ws_open,
    ws_qualified,
)
from xmppd.http import WEBSOCKET_REL
from xmppd.net import LINGER, READ_SIZE, CoalescedOutput
from xmppd.stream import C2SStream
from xmppd.tls import share_tls_read_buffer
from xmppd.xml import Event

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger("xmppd.c2s")
SUBPROTOCOL = "xmpp"  # RFC 7395 §3.1, §6
# Text messages as bytes, without aiohttp decoding them and the parser encoding them again (an
# aiohttp with `decode_text`, as 3.14 has; with an older one they come as str and are encoded here).
_RAW_TEXT: dict[str, Any] = (
    {"decode_text": False} if "decode_text" in inspect.signature(web.WebSocketResponse.__init__).parameters else {}
)


def serve_websocket(server: Server, path: str) -> None:
    """Serve RFC 7395 on `path` of the HTTP side."""
    endpoint = WebSocketEndpoint(server)
    server.http.add_endpoint(WEBSOCKET_REL, path, endpoint.handle)


class WebSocketEndpoint:
    def __init__(self, server: Server) -> None:
        self.server = server

    async def handle(self, request: web.Request) -> web.StreamResponse:
        server = self.server
        if request.headers.get(hdrs.UPGRADE, "").lower() != "websocket":
            return web.Response(
                status=426, headers={hdrs.UPGRADE: "websocket"},
                text="This is an XMPP over WebSocket endpoint (RFC 7395): connect with a WebSocket client.\n",
            )
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            compress=False,
            # One message is one element: past twice the stanza limit aiohttp refuses it (close code
            # 1009) before buffering it whole; up to that, the parser ends the stream properly
            # with policy-violation.
            max_msg_size=2 * server.config.c2s.max_stanza_size,
            # How long our closing handshake waits for the peer's closing frame.
            timeout=LINGER,
            **_RAW_TEXT,
        )
        ready = ws.can_prepare(request)
        if not ready.ok:
            return web.Response(status=400, text="not a valid WebSocket handshake (RFC 6455 §4.1)\n")
        if ready.protocol != SUBPROTOCOL:
            # §3.1: without the subprotocol this is not an XMPP stream; refused rather than answered
            # without the Sec-WebSocket-Protocol header for the client to give up on.
            return web.Response(status=400, text="the 'xmpp' WebSocket subprotocol is required (RFC 7395 §3.1)\n")
        peer = request.remote or ""
        if not origin_allowed(server, request):
            log.info("refused a WebSocket from %s: origin %s not allowed", peer, request.headers.get(hdrs.ORIGIN))
            return web.Response(status=403, text="this origin may not open XMPP streams here\n")
        if not _secure(request, peer):
            log.info("refused a WebSocket from %s: not over TLS", peer)
            return web.Response(status=403, text="XMPP over WebSocket is served over TLS only: use wss://\n")
        await ws.prepare(request)
        transport = WebSocketTransport(server, ws, request, client_address(request, peer))
        try:
            await self._serve(transport)
        finally:
            transport.drop()
            await transport.finish()
        return ws

    async def _serve(self, transport: WebSocketTransport) -> None:
        """As net.py's TcpTransport._serve: admission, then the stream driver."""
        server = self.server
        stream = C2SStream(server, transport, tls_active=True)
        refusal = server.admit(transport.address)
        if refusal:
            log.warning("refused %s: %s", transport.address, refusal)
            stream.refuse(refusal)
            return
        log.info("connected %s (WebSocket)", transport.address)
        try:
            await stream.run(server.stream_started(stream))
        finally:
            server.stream_ended(stream)


def origin_allowed(server: Server, request: web.Request) -> bool:
    """Whether a browser page from the request's `Origin` may open a stream (RFC 6455 §10.2: the
    origin is what tells one web site's scripts from another's; a page on any site could otherwise
    use the browser of a visitor to talk to this server).

    Allowed: no Origin at all (not a browser: a native client or a bot); an origin whose host is
    one of the server's XMPP hosts or the host the request was sent to (the server's own web
    chat, on any port); an origin listed in `[http] websocket_origins` (a web client elsewhere),
    or any if that list holds "*"."""
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None:
        return True
    listed = server.config.http.websocket_origins
    if "*" in listed or origin.rstrip("/").lower() in {entry.rstrip("/").lower() for entry in listed}:
        return True
    try:
        host = URL(origin).host  # "null" (a sandboxed page, a file) has none
    except ValueError:
        return False
    if not host:
        return False
    host = host.lower().rstrip(".")
    return host in server.config.hosts or host == (request.url.host or "").lower().rstrip(".")


def _loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _secure(request: web.Request, peer: str) -> bool:
    """HTTPS, or a connection from this machine: the operator's reverse proxy terminating TLS
    (or a local client). Plain ws:// from elsewhere is refused: SASL PLAIN would cross the network
    in the clear, and nothing on a WebSocket can upgrade to TLS later."""
    return request.secure or _loopback(peer)


def client_address(request: web.Request, peer: str) -> str:
    """The client's address, for the connection limits and the login throttle: the peer's, or
    behind a reverse proxy on this machine (a loopback peer) the address the proxy names last
    in X-Forwarded-For (the one it saw; earlier entries are the client's own say)."""
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded and _loopback(peer):
        last = forwarded.rsplit(",", 1)[-1].strip()
        with contextlib.suppress(ValueError):  # not an address: the proxy's own is what we know
            return str(ipaddress.ip_address(last))
    return peer


class WebSocketTransport(CoalescedOutput):
    """One XMPP stream over one WebSocket: stream.py's Transport (and session.py's Sink)."""

    def __init__(self, server: Server, ws: web.WebSocketResponse, request: web.Request, address: str) -> None:
        super().__init__()
        c2s = server.config.c2s
        self.parser = WebSocketParser(
            c2s.max_stanza_size, max_attributes=c2s.max_attributes, max_children=c2s.max_children,
            max_depth=c2s.max_depth,
        )
        self.address = address
        self.closed = False
        # We ended the stream (<close/> sent): whatever follows, it is not resumable.
        self.ended = False
        self.received_bytes = 0
        self._ws = ws
        # The connection under the WebSocket, which our frames are written to (see the docstring).
        self._transport = request.transport
        if self._transport is not None:
            share_tls_read_buffer(self._transport)  # wss://: the HTTPS side's TLS connection
        # Messages received, not yet parsed (None: a binary message), and their bytes.
        self._received: list[bytes | None] = []
        self._received_size = 0
        self._eof = False  # the WebSocket is closed or lost: nothing more will come
        self._error: StreamError | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._resume: asyncio.Future[None] | None = None  # the pump waits on it while READ_SIZE bytes wait
        self._cut = False  # the connection was aborted: no closing handshake to wait for
        self._pump = self._loop.create_task(self._receive())

    # -- input -------------------------------------------------------------------------------
    async def _receive(self) -> None:
        ws = self._ws
        try:
            while True:
                if self._received_size > READ_SIZE and not self.closed:
                    self._resume = self._loop.create_future()
                    await self._resume  # read() takes what is here, or the stream ends
                    continue
                message = await ws.receive()
                kind = message.type
                if kind is WSMsgType.TEXT:
                    data = message.data
                    if type(data) is str:  # an aiohttp without decode_text
                        data = data.encode()
                    size = len(data)
                    if self.closed:
                        # Our <close/> is out: what still comes is dropped, but the peer's
                        # <close/> completes the closing (§3.6), and finish() goes on at once.
                        if ws_is_close(data):
                            self.parser.peer_closed = True
                            return
                        continue
                    self._received.append(data)
                elif kind is WSMsgType.BINARY:
                    size = len(message.data)
                    if self.closed:
                        continue
                    self._received.append(None)
                else:  # CLOSE (aiohttp answered it), CLOSING, CLOSED, ERROR: the WebSocket is done
                    return
                self.received_bytes += size
                self._received_size += size
                wakeup = self._wakeup
                if wakeup is not None and not wakeup.done():
                    wakeup.set_result(None)
        except (ConnectionError, RuntimeError) as exc:  # aiohttp on a connection already gone
            log.debug("WebSocket from %s: %r", self.address, exc)
        finally:
            self._eof = True
            self._wake()

    def _wake(self) -> None:
        for future in (self._wakeup, self._resume):
            if future is not None and not future.done():
                future.set_result(None)

    async def read(self) -> list[Event] | None:
        if self._error is not None:
            raise self._error
        while not self._received:
            if self._eof or self.closed:
                return None
            self._wakeup = self._loop.create_future()
            await self._wakeup
        if self.closed:
            return None
        received = self._received
        self._received = []
        self._received_size = 0
        resume = self._resume
        if resume is not None and not resume.done():
            resume.set_result(None)
        parse = self.parser.message
        if len(received) == 1:  # the common case, kept short
            data = received[0]
            return parse(data) if data is not None else self.parser.binary()
        events: list[Event] = []
        for data in received:
            try:
                events += parse(data) if data is not None else self.parser.binary()
            except StreamError as error:
                # A faulty message is refused whole; those before it are handled first, and the
                # next read raises.
                if not events:
                    raise
                self._error = error
                break
        return events

    def restart(self) -> None:
        self.parser.reset()  # after SASL the client opens a new stream with <open/> (§3.4)

    def rest(self) -> bool:
        return not self._received and self.parser.release()

    def quiet(self) -> bool:
        return True  # nothing is ever pipelined into a TLS handshake here: STARTTLS is not offered

    async def start_tls(self, domain: str | None) -> None:
        raise StreamError("unsupported-feature", "no STARTTLS on a WebSocket (RFC 7395 §3.1)")

    # -- output ------------------------------------------------------------------------------
    def open(self, opening: Opening, features: bytes) -> None:
        if self.closed:
            return
        # Two messages (§3.4): <open/>, then the features.
        self._frame(ws_open(opening))
        self._frame(ws_features(features))

    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._frame(ws_qualified(data))

    def _frame(self, message: bytes) -> None:
        self._queue(ws_frame_header(len(message)))
        self._queue(message)  # two parts, one join at the flush: no copy of the message here

    def _too_slow(self, transport: asyncio.Transport) -> None:
        if not self.ended:  # a stream we are closing anyway has its <close/> already
            for message in ws_close(StreamError("policy-violation", "too slow reading")):
                transport.write(ws_frame_header(len(message)) + message)
        self.closed = self.ended = self._cut = True
        transport.abort()
        self._wake()

    def close(self, error: StreamError | None = None, opening: Opening | None = None) -> None:
        """Our `<close/>` (after the error), sent now; the closing handshake goes on in finish()."""
        if self.closed:
            return
        for message in ws_close(error, opening):
            self._frame(message)
        self.ended = True
        self.flush()
        self.closed = True
        self._received.clear()
        self._received_size = 0
        self._wake()

    def drop(self) -> None:
        if self.closed:
            return
        self.flush()
        self.closed = True
        self._received.clear()
        self._wake()

    def abort(self) -> None:
        self.closed = self._cut = True
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()
        self._wake()

    async def finish(self) -> None:
        """After the stream: the closing handshake (§3.6). After our `<close/>` the peer's answer
        is awaited (LINGER seconds at most), then the WebSocket is closed (aiohttp waits as long
        for the peer's closing frame, then closes the connection)."""
        pump = self._pump
        if self.ended and not self.parser.peer_closed and not self._cut and not pump.done():
            await asyncio.wait((pump,), timeout=LINGER)
        # The pump leaves the receiving to close(): aiohttp's close() takes a receive() pending in
        # another task for the end of the closing handshake and would not wait for the peer's frame.
        pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await pump
        with contextlib.suppress(ConnectionError):
            await self._ws.close()

