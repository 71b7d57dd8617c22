"""The c2s stream driver: one client stream, whatever transport carries it.

A transport (TCP/TLS in net.py; WebSocket and BOSH next) turns its bytes into batches of stream
events (`StreamOpened`, elements, `StreamClosed`) and frames what the driver sends its own way.
The driver carries out what negotiation (negotiation.py, sans-IO) asks until a resource is bound,
then hands stanzas to the router and other top-level elements to the modules that claim them
(`stream-element/<ns>:<name>`, e.g. XEP-0198's `<r/>`). It handles one event after another and
asks for the next batch only when done, so a fast sender is held back by its transport and one
sender's stanzas keep their order (RFC 6120 §10.1).

When the stream ends, the session ends with it, unless the connection was lost (no closing tag
either way) and a module claims `session-detached` to keep it for resumption.

One client must never hurt the others (issue 10). Until it authenticates a stream holds one of
the server's few pre-auth slots (the server may close the oldest, or shorten its time to
authenticate: `hurry`). Once bound, what it sends is charged to its rate limits (shaping.py) as
it is read, and the driver waits out any debt before reading on, so a flooder is slowed by TCP
itself and closed with policy-violation if it keeps at it. And the driver yields to the event
loop when it has handled stanzas for FAIR_SLICE seconds in a row: one big read would otherwise
hold the loop while everyone else's stanzas wait.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from lxml import etree

from xmppd import events
from xmppd.errors import StreamError
from xmppd.framing import Opening
from xmppd.negotiation import (
    Action,
    Authenticated,
    AuthFailed,
    BindResource,
    C2SNegotiation,
    CheckPlain,
    Close,
    FetchCredentials,
    Open,
    PreAuthStanza,
    ResetParser,
    Send,
    StartTLS,
    StreamElement,
)
from xmppd.sasl import verify_plain
from xmppd.shaping import Flooding, Shaper
from xmppd.xml import Event, StreamClosed

if TYPE_CHECKING:
    from xmppd.jid import JID
    from xmppd.server import Server
    from xmppd.session import Session

log = logging.getLogger("xmppd.c2s")
# A stream that has handled stanzas for this long (seconds) lets the other streams run; the
# clock is looked at every FAIR_SHARE stanzas.
FAIR_SLICE = 0.002
FAIR_SHARE = 32
# Event names of top-level elements by tag (`<r/>` of stream management comes every few stanzas).
_ELEMENT_EVENTS: dict[str, str] = {}
MAX_ELEMENT_EVENTS = 256
_NOTHING: Event = StreamClosed()  # what the stream driver's last event is while it waits
# What a stream reads before it is charged to its rate limits.
CHARGE_EVERY = 16
CHARGE_BYTES = 16 * 1024


class Transport(Protocol):
    """What the driver needs of a transport. `write` and `close` are also what a bound
    session's output ends in (session.Sink)."""

    address: str
    # True once our side ended the stream (a closing tag went out, with or without an error).
    ended: bool
    # Bytes received so far (after TLS), for the rate limits.
    received_bytes: int

    async def read(self) -> list[Event] | None:
        """The next batch of stream events as they arrive; None when the peer is gone. A
        malformed stream gives the events before the fault, then raises StreamError."""

    def open(self, opening: Opening, features: bytes) -> None: ...

    def write(self, data: bytes) -> None:
        """One top-level element, serialised."""

    def close(self, error: StreamError | None = None, opening: Opening | None = None) -> None:
        """End the stream (with an error), then the connection."""

    def drop(self) -> None:
        """Close the connection without another word (idempotent)."""

    def abort(self) -> None:
        """Cut the connection now, whatever is still unsent (a peer that does not read)."""

    def restart(self) -> None:
        """What comes next is a new stream (after STARTTLS or SASL, RFC 6120 §4.3.3)."""

    def quiet(self) -> bool:
        """Nothing received beyond the last complete element (STARTTLS may begin)."""

    def rest(self) -> bool:
        """Nothing came for a while: let go of what the next read can rebuild (the server's
        idle sweep; the parser, between stanzas: most of an idle session's memory). True when
        something was let go now."""

    async def start_tls(self, domain: str | None) -> None:
        """Upgrade to TLS now (after `<proceed/>` went out)."""


class StreamHandle(Protocol):
    """What a module gets of a stream (`PreAuthEvent.stream`, `StreamElementEvent.stream`)."""

    address: str

    @property
    def account(self) -> JID | None:
        """The account this stream authenticated as (None before SASL succeeds); after binding
        the bound full JID."""

    def send(self, data: bytes) -> None:
        """One top-level element (an answer before binding, `<a/>`, `<resumed/>`)."""

    def close(self, error: StreamError | None = None) -> None: ...

    def adopt(self, session: Session) -> None:
        """This stream now carries `session` (XEP-0198 resumption): the session is attached to
        it and negotiation is over; the stream that had it, if any, is closed."""


class C2SStream:
    def __init__(self, server: Server, transport: Transport, *, tls_active: bool) -> None:
        self.server = server
        self.transport = transport
        self.address = transport.address
        self.negotiation = C2SNegotiation(server.negotiation_policy, tls_active=tls_active)
        self.session: Session | None = None
        self.reason = "closed"
        self.task: asyncio.Task[None] | None = None
        self._deadline: asyncio.Timeout | None = None

    # -- the life of a stream ------------------------------------------------------------
    async def run(self, auth_timeout: float) -> None:
        self.task = asyncio.current_task()
        try:
            try:
                async with asyncio.timeout(auth_timeout) as self._deadline:
                    rest = await self._negotiate()
            except TimeoutError:
                self._close(self.negotiation.fail(StreamError("connection-timeout", "authentication took too long")))
                return
            if rest is not None:
                await self._route(rest)
            else:
                self._lost("peer closed the connection")
        except StreamError as error:
            self._close(self.negotiation.fail(error))
        except (ConnectionError, OSError) as exc:
            self._lost(f"connection lost: {exc.__class__.__name__}")
        except Exception:
            # A bug must cost one stream, never the server or the other clients.
            log.exception("internal error on the stream from %s", self.address)
            self._close(self.negotiation.fail(StreamError("internal-server-error")))
        finally:
            self.transport.drop()
            await self._finish()

    async def _finish(self) -> None:
        session = self.session
        if session is None:
            log.info("disconnected %s before binding: %s", self.address, self.reason)
        elif session.link.transport is self.transport:  # not resumed on another stream
            # Only a lost connection is resumable, not a stream that was ended (by either side:
            # we answer the client's closing tag with ours).
            await self.server.transport_gone(session, self.reason, resumable=not self.transport.ended)

    def refuse(self, reason: str) -> None:
        """Turn the connection away (over the connection limits, or evicted for a newer one)."""
        self._close(self.negotiation.fail(StreamError("policy-violation", reason)))

    def hurry(self, seconds: float) -> None:
        """Leave at most `seconds` more to authenticate (the pre-auth slots are filling up)."""
        deadline = self._deadline
        if deadline is not None and not self.negotiation.authenticated:
            when = asyncio.get_running_loop().time() + seconds
            current = deadline.when()
            if current is None or current > when:
                deadline.reschedule(when)

    def shutdown(self, error: StreamError) -> None:
        """End the stream from our side (server stop); the read loop then sees the close."""
        self.reason = error.condition
        if self.session is not None:
            self.transport.close(error)
        else:
            self._close(self.negotiation.fail(error))

    def _lost(self, reason: str) -> None:
        if self.reason == "closed":  # not ended by us (shutdown, replaced, error)
            self.reason = reason

    def _close(self, close: Close) -> None:
        self.reason = close.reason
        self.transport.close(close.error, close.opening)

    # -- before binding ------------------------------------------------------------------
    async def _negotiate(self) -> list[Event] | None:
        """Drive negotiation until a resource is bound (the events read after the bind) or the
        stream ends (None)."""
        read = self.transport.read
        while (batch := await read()) is not None:
            for index, event in enumerate(batch):
                rest = batch[index + 1 :]
                outcome = await self._carry_out(self.negotiation.receive(event), pipelined=bool(rest))
                if outcome == "closed":
                    return None
                if outcome == "restart":
                    if rest:
                        raise StreamError("policy-violation", "data sent before the stream restart")
                    break
                if outcome == "bound":
                    return rest
        return None

    async def _carry_out(self, actions: list[Action], *, pipelined: bool) -> str:
        outcome = ""
        transport = self.transport
        if any(isinstance(action, StartTLS) for action in actions) and (pipelined or not transport.quiet()):
            # Refused before <proceed/> goes out: after it, the client speaks TLS (RFC 6120
            # §5.4.2.3) and would never read the error.
            raise StreamError("policy-violation", "data sent after <starttls/> before the TLS handshake")
        while actions:
            action, actions = actions[0], actions[1:]
            match action:
                case Send(data):
                    transport.write(data)
                case Open(opening, features):
                    transport.open(opening, features)
                case StartTLS():
                    await transport.start_tls(self.negotiation.domain)
                    actions = self.negotiation.tls_established() + actions
                case ResetParser():
                    transport.restart()
                    outcome = "restart"
                case FetchCredentials(domain, username, hash_name):
                    if self._locked_out(domain, username):
                        actions = self.negotiation.refused() + actions
                        continue
                    credentials = await self.server.storage.accounts.credentials(domain, username, hash_name)
                    actions = self.negotiation.credentials_loaded(credentials) + actions
                case CheckPlain(domain, username, password):
                    if self._locked_out(domain, username):
                        actions = self.negotiation.refused() + actions
                        continue
                    verified = await self._check_plain(domain, username, password)
                    actions = self.negotiation.plain_checked(verified) + actions
                case AuthFailed(username, condition, data):
                    await self._auth_failed(username, condition, data)
                case Authenticated(jid):
                    self.server.throttle.success(self.address, str(jid))
                    self.server.stream_authenticated(self)
                    log.info("authenticated %s from %s", jid, self.address)
                case BindResource(jid, iq_id):
                    self.session = await self.server.bind(jid, transport, self.address)
                    actions = self.negotiation.bound(self.session.jid, iq_id) + actions
                    outcome = "bound"
                case PreAuthStanza(domain, element):
                    await self.server.pre_auth_stanza(domain, element, self)
                case StreamElement(element):
                    await self._stream_element(element)
                    if self.session is not None:  # adopted a session: negotiation is over
                        outcome = "bound"
                case Close(error, reason, opening):
                    self.reason = reason
                    transport.close(error, opening)
                    return "closed"
        return outcome

    def _locked_out(self, domain: str, username: str) -> bool:
        if not self.server.throttle.refused(self.address, f"{username}@{domain}"):
            return False
        log.warning("refused a login to %s@%s from %s: too many failed attempts", username, domain, self.address)
        return True

    async def _check_plain(self, domain: str, username: str, password: str) -> bool:
        credentials = await self.server.storage.accounts.credentials(domain, username, "sha256")
        if credentials is None:
            return False
        # PBKDF2 takes milliseconds: keep it off the event loop.
        return await asyncio.to_thread(verify_plain, password, credentials)

    async def _auth_failed(self, username: str | None, condition: str, data: bytes) -> None:
        if condition == "temporary-auth-failure":
            # Refused without a password check (locked out): not another failure, or knocking
            # would keep the lockout going for ever.
            self.transport.write(data)
            return
        account = f"{username}@{self.negotiation.domain}" if username else None
        delay = self.server.throttle.failure(self.address, account)
        log.info("authentication failed for %s from %s: %s", username or "?", self.address, condition)
        if delay:
            await asyncio.sleep(delay)  # slows down guessing; not a synchronisation
        self.transport.write(data)

    # -- after binding -------------------------------------------------------------------
    async def _route(self, batch: list[Event]) -> None:
        """After binding: `batch` (what came with the bind), then each batch as it is read."""
        session = self.session
        assert session is not None
        limits = self.server.config.c2s
        loop = asyncio.get_running_loop()
        shaper = Shaper(
            stanza_rate=limits.stanza_rate, stanza_burst=limits.stanza_burst, byte_rate=limits.byte_rate,
            byte_burst=limits.byte_burst, max_throttled=limits.max_throttled_seconds, now=loop.time(),
        )
        process, read, transport = self.server.router.process, self.transport.read, self.transport
        charged_bytes = transport.received_bytes
        uncharged = 0
        share = FAIR_SHARE
        slice_end = loop.time() + FAIR_SLICE
        while True:
            # The per-stanza path: kept inline, it runs for every stanza of every client.
            for event in batch:
                if not isinstance(event, etree._Element):
                    if isinstance(event, StreamClosed):
                        self.reason = "stream closed by client"
                        transport.close()
                        return
                    raise StreamError("invalid-xml", "unexpected stream event")
                if session.closed or session.link.transport is not transport:
                    raise ConnectionResetError("the session was replaced or moved to another stream")
                if await process(session, event):
                    session.received += 1
                else:
                    await self._stream_element(event)
                share -= 1
                if not share:
                    share = FAIR_SHARE
                    if loop.time() >= slice_end:
                        await asyncio.sleep(0)  # let the other streams run
                        slice_end = loop.time() + FAIR_SLICE
            # Nothing of the batch stays referenced while the stream waits: a stanza keeps the
            # parser that read it alive (~10 KB that an idle stream lets go: XmlStream.release).
            batch.clear()
            event = _NOTHING
            next_batch = await read()
            if next_batch is None:
                break
            batch = next_batch
            slice_end = loop.time() + FAIR_SLICE  # reading has (almost always) let the others run
            # Charged by the dozen: a charge per read would cost more than the limits save.
            uncharged += len(batch)
            received = transport.received_bytes
            if uncharged >= CHARGE_EVERY or received - charged_bytes >= CHARGE_BYTES:
                try:
                    wait = shaper.charge(uncharged, received - charged_bytes, loop.time())
                except Flooding as flooding:
                    log.warning("closing %s (%s): %s", session, self.address, flooding)
                    raise StreamError("policy-violation", "too many stanzas or bytes for too long") from None
                uncharged, charged_bytes = 0, received
                if wait:
                    await asyncio.sleep(wait)  # not reading meanwhile: TCP holds the sender back
        self._lost("peer closed the connection")

    async def _stream_element(self, element: etree._Element) -> None:
        """Offer a top-level element that is not a stanza to the modules that claim it."""
        tag = element.tag
        name = _ELEMENT_EVENTS.get(tag) if isinstance(tag, str) else None
        if name is None:
            qname = etree.QName(element)
            name = events.stream_element(qname.namespace, qname.localname)
            if len(_ELEMENT_EVENTS) < MAX_ELEMENT_EVENTS:  # a client inventing tags cannot grow it
                _ELEMENT_EVENTS[tag] = name
        host = self.session.host if self.session is not None else self.server.hosts.get(self.negotiation.domain or "")
        event = events.StreamElementEvent(element, self, self.session)
        if host is None or not await host.hooks.fire(name, event):
            raise StreamError("unsupported-stanza-type", f"{etree.QName(element).localname} is not a stanza")

    # -- StreamHandle ----------------------------------------------------------------------
    @property
    def account(self) -> JID | None:
        return self.negotiation.jid

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self, error: StreamError | None = None) -> None:
        self.transport.close(error)

    def adopt(self, session: Session) -> None:
        previous = session.link.transport
        session.attach(self.transport)
        if previous is not None and previous is not self.transport:
            previous.close(StreamError("conflict", "the session was resumed on another stream"))
        self.session = session
        self.negotiation.resumed(session.jid)
