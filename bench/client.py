"""A raw XMPP c2s client on asyncio: connect, STARTTLS or Direct TLS, SCRAM, bind, stream management
(XEP-0198, when asked for), roster, presence; over TCP, or over WebSocket (RFC 7395: WebSocketProtocol,
with the load generator's own RFC 6455 framing from bench/wsframe.py).

Deliberately thin: one asyncio.Protocol per connection, elements parsed only during the login, then
either a byte sink (MarkerScanner) or the parser again for scenarios that need replies (MUC, MAM).
With stream management on, every read also goes through the session's SmCounter, in both modes:
it answers the server's <r/> at once and counts what h counts.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import re
import ssl
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from lxml import etree

from bench import stream as xs
from bench import wsframe
from bench.scram import KeyCache, ScramClient, ScramError

MAX_SKIPPED = 100_000  # stanzas a wait may pass over (presence floods in big rooms and rosters)


class LoginError(Exception):
    """A step of the login failed; the message names the step."""


class NotOffered(LoginError):
    """The server does not offer a feature the login was asked to use."""


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    domain: str
    tls: str = "starttls"  # starttls | direct | none
    mechanism: str = "SCRAM-SHA-256"
    timeout: float = 15.0
    source_ips: tuple[str, ...] = ()  # spread connections over 127.0.0.x to avoid port exhaustion
    # "tcp", or "websocket" (RFC 7395 on port/ws_path; tls "direct" is wss://, "none" ws://)
    transport: str = "tcp"
    ws_path: str = "/xmpp-websocket"


@dataclass(frozen=True)
class Account:
    user: str  # localpart
    password: str
    resource: str = "bench"


def client_ssl_context() -> ssl.SSLContext:
    # The servers use self-signed certificates on loopback: nothing to verify, only the cost to pay.
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class XmppProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.framer = xs.Framer()
        self.events: deque[xs.Event] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.sink: Callable[[bytes], None] | None = None
        self.sm: xs.SmCounter | None = None  # XEP-0198, from <enable/> on
        self.lost = False
        self.lost_waiter: asyncio.Future[None] | None = None
        self.error: Exception | None = None
        # Flow control (asyncio calls pause_writing past the transport's high-water mark): only the
        # flood scenario waits on it, to write as fast as the socket takes its output.
        self.write_paused = False
        self.write_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    # How the stream looks on this connection (WebSocketProtocol frames the same things otherwise).
    def stream_header(self, domain: str, from_jid: str = "") -> bytes:
        return xs.stream_header(domain, from_jid)

    def frame(self, element: bytes) -> bytes:
        """What to write for one element (or, over TCP, any run of them)."""
        return element

    def stream_end(self, final: bytes) -> bytes:
        """What to write to end the stream, after `final` (elements, possibly none)."""
        return final + xs.STREAM_END

    def data_received(self, data: bytes) -> None:
        sm = self.sm
        if sm is not None:
            answers = sm.feed(data)
            if answers and self.transport is not None:
                self.transport.write(answers)
        if self.sink is not None:
            self.sink(data)
            return
        try:
            events = self.framer.feed(data)
        except xs.StreamError as exc:
            self.error = exc
            events = []
        if sm is not None:  # <r/> and <a/> are the counter's: no wait sees them
            events = [ev for ev in events if not (isinstance(ev, etree._Element) and ev.tag in _SM_HANDLED)]
        self.events.extend(events)
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self._wake()
        self.resume_writing()
        if self.lost_waiter is not None and not self.lost_waiter.done():
            self.lost_waiter.set_result(None)

    async def closed(self) -> None:
        """Returns once the connection is closed (by either side)."""
        if not self.lost:
            self.lost_waiter = asyncio.get_running_loop().create_future()
            await self.lost_waiter

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writer()

    def wake_writer(self) -> None:
        if self.write_waiter is not None and not self.write_waiter.done():
            self.write_waiter.set_result(None)

    async def writable(self, deadline: float) -> None:
        """Returns when the transport takes output again, the connection is gone or wake_writer()
        is called, or at the deadline (loop time), whichever is first."""
        if not self.write_paused or self.lost:
            return
        loop = asyncio.get_running_loop()
        self.write_waiter = loop.create_future()
        try:
            async with asyncio.timeout_at(deadline):
                await self.write_waiter
        except TimeoutError:
            pass  # the deadline passed with the socket still full: the caller sees write_paused
        finally:
            self.write_waiter = None

    async def next_event(self, deadline: float) -> xs.Event:
        loop = asyncio.get_running_loop()
        while not self.events:
            if self.error is not None:
                raise self.error
            if self.lost:
                raise ConnectionError("connection closed by server")
            self.waiter = loop.create_future()
            try:
                async with asyncio.timeout_at(deadline):
                    await self.waiter
            finally:
                self.waiter = None
        return self.events.popleft()


_SM_HANDLED = frozenset({xs.qname(xs.NS_SM, "r"), xs.qname(xs.NS_SM, "a")})
_SM_ANSWER = re.compile(rb"<a [^>]*/>")


class WebSocketProtocol(XmppProtocol):
    """XMPP over WebSocket (RFC 7395) on one connection: the upgrade handshake (RFC 6455 §4), then
    frames both ways (bench/wsframe.py). What XmppProtocol does with the bytes of a TCP stream is
    done here with the text messages: the stream management counter and a byte sink get their
    payloads joined (the markers and tags they scan for are inside the messages), the login's waits
    get them parsed one message at a time. The server's pings are answered at once with pongs.

    Ending (RFC 7395 §3.6), by close_websockets: our <close/> (`closing`), the server's <close/>
    (`peer_closed`), then the WebSocket closing handshake (`close_sent`, the server's closing
    frame: `decoder.closed`), after which the server closes the TCP connection (`lost`)."""

    def __init__(self, key: str) -> None:
        super().__init__()
        self.key = key
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.upgraded = False
        self._head = b""
        self.decoder = wsframe.FrameDecoder()
        self.messages = wsframe.MessageFramer()
        self.pongs = 0  # the server's pings answered
        self.closing = False  # our <close/> is out
        self.peer_closed = False  # the server's <close/> came after ours
        self.close_sent = False  # our closing frame is out
        self.close_waiter: asyncio.Future[None] | None = None

    # -- what the client writes ----------------------------------------------------------------

    def stream_header(self, domain: str, from_jid: str = "") -> bytes:
        return wsframe.ws_open(domain, from_jid)

    def frame(self, element: bytes) -> bytes:
        return wsframe.client_frame(wsframe.qualified(element))

    def stream_end(self, final: bytes) -> bytes:
        if self.close_sent:
            return b""
        self.close_sent = True
        out = b"".join(self.frame(a) for a in _SM_ANSWER.findall(final))
        return out + (b"" if self.closing else self.frame(wsframe.WS_CLOSE)) + wsframe.close_frame()

    # -- what the server sends -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self.upgraded:
            self._head += data
            try:
                done, data = wsframe.parse_handshake_response(self._head, self.key)
            except wsframe.WebSocketError as exc:
                if not self.handshake.done():
                    self.handshake.set_exception(exc)
                if self.transport is not None:
                    self.transport.close()
                return
            if not done:
                return
            self.upgraded = True
            self._head = b""
            if not self.handshake.done():
                self.handshake.set_result(None)
            if not data:
                return
        decoder = self.decoder
        try:
            messages = decoder.feed(data)
        except wsframe.WebSocketError as exc:  # a client fails the connection (RFC 6455 §7.1.7)
            self.error = exc
            if self.transport is not None:
                self.transport.abort()
            self._wake()
            return
        if decoder.pings:
            if self.transport is not None and not self.close_sent:
                self.transport.write(b"".join(wsframe.pong_frame(p) for p in decoder.pings))
            self.pongs += len(decoder.pings)
            decoder.pings.clear()
        if messages:
            self._messages(messages)
        if decoder.closed:
            self._closed_by_server()

    def _messages(self, messages: list[bytes]) -> None:
        if self.closing and not self.peer_closed and any(wsframe.is_close(m) for m in messages):
            self.peer_closed = True
            self._wake_closer()
        data = messages[0] if len(messages) == 1 else b"".join(messages)
        sm = self.sm
        if sm is not None:
            answers = sm.feed(data)
            if answers and self.transport is not None:
                self.transport.write(b"".join(self.frame(a) for a in _SM_ANSWER.findall(answers)))
        if self.sink is not None:
            self.sink(data)
            return
        try:
            events = self.messages.feed_messages(messages)
        except xs.StreamError as exc:
            self.error = exc
            events = []
        if sm is not None:
            events = [ev for ev in events if not (isinstance(ev, etree._Element) and ev.tag in _SM_HANDLED)]
        self.events.extend(events)
        self._wake()

    def _closed_by_server(self) -> None:
        """The server's closing frame: answered with ours (RFC 6455 §5.5.1), unless it answers ours;
        the server then closes the TCP connection."""
        if self.transport is not None and not self.close_sent:
            self.close_sent = True
            code = self.decoder.close_code
            self.transport.write(wsframe.close_frame(code if code is not None and code != 1005 else 1000))
        if self.sink is None:
            self.events.append(xs.StreamClosed())  # a wait sees the stream end
        self._wake()
        self._wake_closer()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("connection closed during the WebSocket handshake"))
        super().connection_lost(exc)
        self._wake_closer()

    def _wake_closer(self) -> None:
        if self.close_waiter is not None and not self.close_waiter.done():
            self.close_waiter.set_result(None)


@dataclass
class Session:
    target: Target
    proto: XmppProtocol
    jid: str = ""
    stats: dict[str, float] = field(default_factory=dict)
    # What a wait does with the stanzas it is not waiting for (None: drops them).
    on_stanza: Callable[[etree._Element], None] | None = None

    @property
    def transport(self) -> asyncio.Transport:
        assert self.proto.transport is not None
        return self.proto.transport

    @property
    def sm(self) -> xs.SmCounter | None:
        return self.proto.sm

    def send(self, data: bytes) -> None:
        """Writes data (over WebSocket: one element); with stream management on, counts its stanzas
        and adds the <r/> due."""
        proto = self.proto
        sm = proto.sm
        out = proto.frame(data)
        if sm is not None and sm.enabled:
            due = sm.sent_stanzas(xs.count_stanzas(data)).count(xs.SM_REQUEST)
            out += proto.frame(xs.SM_REQUEST) * due
        self.transport.write(out)

    async def recv(self, deadline: float | None = None) -> xs.Event:
        """The next stream event, by `deadline` (loop time; default: the target's timeout from now)."""
        loop = asyncio.get_running_loop()
        return await self.proto.next_event(loop.time() + self.target.timeout if deadline is None else deadline)

    async def element(self, deadline: float | None = None) -> etree._Element:
        ev = await self.recv(deadline)
        if isinstance(ev, xs.StreamClosed):
            raise ConnectionError("stream closed by server")
        if isinstance(ev, xs.StreamOpened):
            raise LoginError("unexpected stream header")
        if ev.tag == xs.qname(xs.NS_STREAM, "error"):
            raise LoginError("stream error: " + ",".join(etree.QName(c).localname for c in ev))
        return ev

    async def wait_iq(self, iq_id: str) -> etree._Element:
        """Waits for the iq answering iq_id; other stanzas go to on_stanza (or are dropped).
        Bounded: each element within the target's timeout, and at most MAX_SKIPPED of them."""
        for _ in range(MAX_SKIPPED):
            el = await self.element()
            if el.tag == "{jabber:client}iq" and el.get("id") == iq_id:
                return el
            if self.on_stanza is not None:
                self.on_stanza(el)
        raise TimeoutError(f"no answer to iq {iq_id} among {MAX_SKIPPED} stanzas")

    async def listen(self, seconds: float) -> None:
        """Hands what arrives in the next `seconds` to on_stanza (or drops it)."""
        deadline = asyncio.get_running_loop().time() + seconds
        with contextlib.suppress(TimeoutError):
            while True:
                el = await self.element(deadline)
                if self.on_stanza is not None:
                    self.on_stanza(el)

    def use_sink(self, sink: Callable[[bytes], None]) -> None:
        """Stops parsing: every later read goes to sink (and the parser is freed)."""
        self.proto.sink = sink
        self.proto.framer = xs.Framer()
        self.proto.events.clear()

    def close(self) -> None:
        if self.proto.transport is not None and not self.proto.transport.is_closing():
            sm = self.proto.sm
            with contextlib.suppress(Exception):
                # Acknowledge everything first: a server hands unacknowledged messages on (to offline
                # storage, where the next scenario's logins would meet them) when a stream ends.
                self.proto.transport.write(self.proto.stream_end(sm.final_answer() if sm and sm.enabled else b""))
            self.proto.transport.close()


_source_counter = itertools.count()


def _local_addr(target: Target) -> tuple[str, int] | None:
    if not target.source_ips:
        return None
    return (target.source_ips[next(_source_counter) % len(target.source_ips)], 0)


async def open_stream(session: Session, from_jid: str = "") -> etree._Element:
    """Sends a stream header, returns <stream:features/>."""
    session.proto.framer = xs.Framer()
    # Over WebSocket <open/>: no stream restart at the TCP level after SASL either (RFC 7395 §3.4).
    session.send(session.proto.stream_header(session.target.domain, from_jid))
    ev = await session.recv()
    if not isinstance(ev, xs.StreamOpened):
        raise LoginError("expected a stream header")
    features = await session.element()
    if features.tag != xs.qname(xs.NS_STREAM, "features"):
        raise LoginError(f"expected stream features, got {features.tag}")
    return features


async def connect(target: Target, ssl_ctx: ssl.SSLContext | None) -> Session:
    if target.transport == "websocket":
        return await connect_websocket(target, ssl_ctx)
    loop = asyncio.get_running_loop()
    direct = target.tls == "direct"
    _, proto = await loop.create_connection(
        XmppProtocol,
        target.host,
        target.port,
        ssl=ssl_ctx if direct else None,
        server_hostname=target.domain if direct else None,
        local_addr=_local_addr(target),
    )
    return Session(target, proto)


async def connect_websocket(target: Target, ssl_ctx: ssl.SSLContext | None) -> Session:
    """TCP (and TLS for wss://, target.tls "direct"), then the WebSocket upgrade with the `xmpp`
    subprotocol. NotOffered if the server answers the upgrade with anything but 101."""
    loop = asyncio.get_running_loop()
    secure = target.tls == "direct"
    key = base64.b64encode(os.urandom(16)).decode()
    _, proto = await loop.create_connection(
        lambda: WebSocketProtocol(key),
        target.host,
        target.port,
        ssl=ssl_ctx if secure else None,
        server_hostname=target.domain if secure else None,
        local_addr=_local_addr(target),
    )
    session = Session(target, proto)
    host = f"{target.domain}:{target.port}"  # the XMPP domain: Prosody picks its virtual host by it
    session.transport.write(wsframe.handshake_request(host, target.ws_path, key))
    try:
        async with asyncio.timeout(target.timeout):
            await proto.handshake
    except wsframe.HandshakeRefused as exc:
        session.transport.close()
        scheme = "wss" if secure else "ws"
        raise NotOffered(f"no XMPP over WebSocket at {scheme}://{host}{target.ws_path}: {exc}") from exc
    except BaseException:
        session.transport.close()
        raise
    return session


async def close_websockets(sessions: list[Session], limit_s: float) -> Counter[str]:
    """Ends WebSocket sessions as RFC 7395 §3.6 has it, all at once, bounded by limit_s: our
    <close/>, the server's <close/>, our closing frame, the server's closing frame and its closing
    of the connection. Returns how many sessions got each step from the server ("close_answered",
    "close_frames", "closed_by_server"); what is still open at the deadline is closed anyway."""
    protos = [s.proto for s in sessions if isinstance(s.proto, WebSocketProtocol)]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s

    async def until(done: Callable[[WebSocketProtocol], bool]) -> None:
        for p in protos:
            while not done(p) and not p.lost and loop.time() < deadline:
                p.close_waiter = loop.create_future()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout_at(deadline):
                        await p.close_waiter
                p.close_waiter = None

    for p in protos:
        if p.transport is not None and not p.lost and not p.close_sent:
            p.closing = True
            p.transport.write(p.frame(wsframe.WS_CLOSE))
    await until(lambda p: p.peer_closed or p.decoder.closed)
    for p in protos:
        if p.transport is not None and not p.lost and not p.close_sent:
            p.close_sent = True
            p.transport.write(wsframe.close_frame())
    await until(lambda p: False)  # until the server closes the connection
    counts: Counter[str] = Counter(
        close_answered=sum(p.peer_closed for p in protos),
        close_frames=sum(p.decoder.closed for p in protos),
        closed_by_server=sum(p.lost for p in protos),
    )
    for s in sessions:
        s.close()
    return counts


async def starttls(session: Session, features: etree._Element, ssl_ctx: ssl.SSLContext) -> etree._Element:
    if features.find(xs.qname(xs.NS_TLS, "starttls")) is None:
        raise LoginError("server offers no STARTTLS")
    session.send(f"<starttls xmlns='{xs.NS_TLS}'/>".encode())
    answer = await session.element()
    if answer.tag != xs.qname(xs.NS_TLS, "proceed"):
        raise LoginError("STARTTLS refused")
    loop = asyncio.get_running_loop()
    new_transport = await loop.start_tls(
        session.transport, session.proto, ssl_ctx, server_hostname=session.target.domain
    )
    assert isinstance(new_transport, asyncio.Transport)
    session.proto.transport = new_transport
    return await open_stream(session)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def authenticate(session: Session, features: etree._Element, account: Account, cache: KeyCache) -> None:
    mech = session.target.mechanism
    offered = [m.text for m in features.iter(xs.qname(xs.NS_SASL, "mechanism"))]
    if mech not in offered:
        raise LoginError(f"{mech} not offered (server offers {offered})")
    scram = ScramClient(mech, account.user, account.password, cache)
    session.send(xs.sasl_auth(mech, _b64(scram.first())))
    challenge = await _sasl_step(session, "challenge")
    session.send(xs.sasl_response(_b64(scram.final(base64.b64decode(challenge).decode()))))
    success = await _sasl_step(session, "success")
    try:
        scram.verify(base64.b64decode(success).decode())
    except ScramError as exc:
        raise LoginError(f"SASL: {exc}") from exc


async def _sasl_step(session: Session, expected: str) -> str:
    el = await session.element()
    if el.tag != xs.qname(xs.NS_SASL, expected):
        condition = ",".join(etree.QName(c).localname for c in el)
        raise LoginError(f"SASL {etree.QName(el).localname}: {condition}")
    return el.text or ""


async def bind_resource(session: Session, features: etree._Element, resource: str) -> None:
    if features.find(xs.qname(xs.NS_BIND, "bind")) is None:
        raise LoginError("no bind feature")
    session.send(xs.bind(resource))
    result = await session.wait_iq("bind")
    jid = result.findtext(f"{{{xs.NS_BIND}}}bind/{{{xs.NS_BIND}}}jid")
    if result.get("type") != "result" or not jid:
        raise LoginError("bind failed")
    session.jid = jid
    legacy = features.find(xs.qname(xs.NS_SESSION, "session"))
    # RFC 3921 session establishment: only when the server still insists on it.
    if legacy is not None and legacy.find(xs.qname(xs.NS_SESSION, "optional")) is None:
        session.send(xs.iq("set", "sess", f"<session xmlns='{xs.NS_SESSION}'/>"))
        await session.wait_iq("sess")


async def enable_stream_management(session: Session, features: etree._Element, resume: bool = True) -> None:
    """XEP-0198 §3 after binding: <enable/> (asking for resumption), then waits for <enabled/>.
    From then on session.sm counts, answers the server's requests and checks its answers."""
    if features.find(xs.qname(xs.NS_SM, "sm")) is None:
        raise NotOffered(f"{session.target.domain} offers no stream management ({xs.NS_SM})")
    sm = xs.SmCounter()
    session.proto.sm = sm  # before <enable/>: the counter starts at the <enabled/> it sees
    session.send(xs.sm_enable(resume))
    for _ in range(MAX_SKIPPED):
        el = await session.element()
        if el.tag == xs.qname(xs.NS_SM, "enabled"):
            return
        if el.tag == xs.qname(xs.NS_SM, "failed"):
            condition = ",".join(etree.QName(c).localname for c in el)
            raise LoginError(f"stream management refused: {condition or 'no condition'}")
        if session.on_stanza is not None:
            session.on_stanza(el)
    raise TimeoutError(f"no <enabled/> among {MAX_SKIPPED} stanzas")


Ready = Callable[[Session], Awaitable[None]]  # the last step of a login
PRESENCE = b"<presence/>"


async def ping_ready(session: Session) -> None:
    """Ready means the server answered a ping sent last: it handles one session's stanzas in order,
    so by then it has processed the presence (and sent its probes)."""
    session.send(xs.iq("get", "ready", f"<ping xmlns='{xs.NS_PING}'/>", to=session.target.domain))
    await session.wait_iq("ready")


async def login(
    target: Target,
    account: Account,
    cache: KeyCache,
    ssl_ctx: ssl.SSLContext | None,
    *,
    roster: bool = True,
    presence: bytes | None = PRESENCE,
    ready: Ready = ping_ready,
    stream_management: bool = False,
) -> Session:
    """Full login: connect, TLS, SASL, bind, stream management with resumption if asked for
    (NotOffered if the server has none), the roster, the initial presence (None: stay
    unavailable), then `ready`, whose return marks the session ready; session.stats["login_s"] is
    connect-to-ready time."""
    started = time.perf_counter()
    session = await connect(target, ssl_ctx)
    try:
        if target.mechanism == "none":  # the floor router: no TLS, no SASL, identity in the header
            features = await open_stream(session, f"{account.user}@{target.domain}")
        else:
            features = await open_stream(session)
            if target.tls == "starttls":
                assert ssl_ctx is not None
                features = await starttls(session, features, ssl_ctx)
            await authenticate(session, features, account, cache)
            features = await open_stream(session)
        await bind_resource(session, features, account.resource)
        if stream_management:
            await enable_stream_management(session, features)
        if roster:
            session.send(xs.iq("get", "roster", f"<query xmlns='{xs.NS_ROSTER}'/>"))
            result = await session.wait_iq("roster")
            session.stats["roster_items"] = len(result.findall(f"{{{xs.NS_ROSTER}}}query/{{{xs.NS_ROSTER}}}item"))
        if presence is not None:
            session.send(presence)
        await ready(session)
    except BaseException:
        session.close()
        raise
    session.stats["login_s"] = time.perf_counter() - started
    return session
