"""BOSH (XEP-0124 1.11.2) carrying client streams as XEP-0206 (XMPP over BOSH) under the stream driver.

Two layers. The sans-IO core (`parse_body`, `BoshSession`, `lookup`) takes request bodies and the
time (`now`) and answers with bytes; it never touches asyncio or a socket, so it is tested by
feeding it bodies. The adapter (`BoshTransport`, `BoshService`, `serve_bosh`) is aiohttp and
asyncio: one POST handler, a timer per session, and one `C2SStream` per BOSH session run as a
task, as net.py runs one per TCP connection. The driver sees a `stream.Transport` like any
other: `read()` gives the payloads of the client's next request as stream events.

Theory of operation. A session is a sequence of requests numbered by `rid`. The core keeps them
in three places, in rid order:

    early     received ahead of a missing rid (within the window): wait for the gap to fill
    queued    in order, their payloads not yet read by the driver
    held      read by the driver, not yet answered: the only ones that may be answered

A request is answered (oldest first, XEP-0124 §8, §14.2) when there is output for it, when more
than `hold` are held (the client wants its older one back to send the new one), or when it has
waited `wait` seconds (an empty `<body/>`). Answering only requests whose payloads the driver has
read keeps TCP's backpressure: while the driver does not read (rate limits, a slow storage write)
the client gets no answers and, having at most `requests` outstanding, stops sending.

    the session request  -> StreamOpened(to, version)        (+ its payloads)
    xmpp:restart='true'  -> StreamOpened (a new stream after SASL, XEP-0206; its body is empty)
    a request            -> its payloads, elements in jabber:client (or their own namespace)
    type='terminate'     -> its payloads, then StreamClosed (XEP-0124 §13)

What the driver sends is queued for the next answer: `open` queues `<stream:features/>` (the first
answer also carries the session attributes: sid, wait, hold, requests, inactivity, polling, ver,
from, xmpp:version, xmpp:restartlogic), `write` one element, `close` ends the session with a
`type='terminate'` answer carrying what was queued, then the stream error if any (XEP-0206,
"remote-stream-error"; host-unknown and system-shutdown have binding conditions of their own).
After a terminate, requests find no session (item-not-found).

Errors are terminal binding conditions (XEP-0124 §17.2) in an HTTP 200: item-not-found for an
unknown sid, a rid beyond the window (`requests` above the last in-order rid), a repeated rid
whose answer is no longer kept, or a gap that stays open for 2 x `wait` seconds; bad-request for
a body that is not a well-formed `<body/>` (the project's parser: no DTD, comments or PIs) or
with bad attributes; policy-violation for more than `requests` unanswered requests at once
(§11; one more is allowed to terminate); remote-stream-error with a `<stream:error>` inside for the
parser's limits (stanza size, attributes, children, depth), as over TCP. A repeated rid is answered
again with the kept answer (§14.3); the last `requests` answers are kept. A session with no
request outstanding for `inactivity` seconds ends as a lost connection would (a module may keep
it for resumption, XEP-0198).

Decisions where the XEPs are silent, or leave a choice:
- One stream per session (no 'stream' attribute, §16); no acknowledgements ('ack' ignored), no
  key sequence ('key'/'newkey' ignored: sessions run over HTTPS or loopback), no pause (no
  'maxpause' offered, 'pause' ignored), 'route' ignored, no 'accept' (no request compression).
- 'polling' is advertised and not enforced: the overactivity rule bounds what a client may have
  outstanding, and its bytes are charged to the session's rate limits like TCP input.
- `hold` is at most 1 and `requests` is 2 (both as §7.2 recommends); `wait` at most `[http] bosh_max_wait`.
  A polling session (wait or hold 0) gets 2 x POLLING more seconds of inactivity (§12).
- Clients that put stanzas in the httpbind namespace (no xmlns: XEP-0206's note on the <body/> wrapper) have them moved
  to jabber:client; elements we send without a namespace of their own (negotiation's bind result)
  get xmlns='jabber:client', since inside `<body/>` they would otherwise be in httpbind's.
- A restart body with payloads is a bad-request (XEP-0206: a restart body MUST be empty).
- Legacy clients (no 'ver') get binding conditions, not HTTP error codes.
- A request for a session created over HTTPS that comes over plain HTTP is refused with 403 and
  the session is left alone (XEP-0124 §19.1: close the connection, do not terminate).
- A body whose XML is broken still ends the session its start tag names (the sid read with a
  recovering parser): the client is told the session is terminated, so it must be.
- Held requests answered because the session was cut (`abort`) get remote-connection-failed;
  other requests pending when one ends the session get other-request.

Security. XEP-0206 leaves encryption to the HTTP layer: streams are negotiated with `tls_active`
True, so PLAIN is offered and no STARTTLS. That holds only if the HTTP request was encrypted or
came from this machine (a reverse proxy terminating TLS in front, or a local client): a request
over plain HTTP from another address is refused with 403 (`channel`). A loopback peer is taken to be
a reverse proxy: its X-Forwarded-For names the client (the address the per-address limits count,
as Prosody's trusted_proxies defaults do), and an X-Forwarded-Proto of "http" is refused too.

Limits: `[http] bosh_max_wait` (60 s), `bosh_inactivity` (60 s) and `bosh_max_pending` (4 MiB of
output waiting for a client that stopped polling; past it the session ends with policy-violation,
like a slow reader over TCP); the constants POLLING 5 s, MAX_HOLD 1 and REQUESTS 2; and a body at
most `[c2s] max_stanza_size` + BODY_SLACK bytes (a body is parsed as one element with the
per-element limits of [c2s], its stanzas one level deeper than over TCP).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import ipaddress
import logging
import re
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, auto
from typing import TYPE_CHECKING, TypeVar

from aiohttp import web
from lxml import etree

from xmppd.errors import STREAMS_NS, StreamError
from xmppd.framing import CLIENT_NS, Opening
from xmppd.http import BOSH_REL, CORS, cors_preflight
from xmppd.stream import C2SStream
from xmppd.xml import Event, StreamClosed, StreamOpened, XmlStream

if TYPE_CHECKING:
    from xmppd.config import C2SConfig
    from xmppd.server import Server


log = logging.getLogger("xmppd.bosh")

BOSH_NS = "http://jabber.org/protocol/httpbind"
XBOSH_NS = "urn:xmpp:xbosh"
XML_NS = "http://www.w3.org/XML/1998/namespace"
BODY_TAG = f"{{{BOSH_NS}}}body"
# The highest BOSH version implemented (XEP-0124 §7.2: answered with the lower of it and the client's).
VERSION = (1, 11)
# The defaults of a Settings (what serve_bosh gives comes from [http]: bosh_max_wait,
# bosh_inactivity, bosh_max_pending; config.py's HTTPConfig has the same defaults).
MAX_WAIT = 60
MAX_HOLD = 1
REQUESTS = 2
INACTIVITY = 60
POLLING = 5
MAX_PENDING = 4 * 1024 * 1024
# Room for the <body/> wrapper and its attributes around at most max_stanza_size bytes of stanzas.
BODY_SLACK = 8 * 1024
# XEP-0124 §14.1: rids never go beyond 2^53 - 1.
MAX_RID = 2**53 - 1
CONTENT_TYPE = "text/xml; charset=utf-8"
# The binding conditions that stand for a stream error of the same name; any other stream error is
# remote-stream-error with the <stream:error/> inside (XEP-0206, "remote-stream-error").
BINDING_CONDITIONS = frozenset({"host-unknown", "system-shutdown"})
# The other way, for the stream driver's account of why a session ended.
_STREAM_CONDITIONS = {"bad-request": "bad-format", "policy-violation": "policy-violation"}

_DIGITS = re.compile(r"[0-9]{1,16}")
_VERSION = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})")
# What the session request's 'content' may ask the Content-Type of answers to be (XEP-0124 §7.1).
_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}(?:\s*;\s*[A-Za-z0-9_.-]+=[A-Za-z0-9_.-]+)*")
# A leading XML declaration, allowed before <body/> but not where we put the body (after our header).
_XML_DECLARATION = re.compile(rb"\s*<\?xml\s[^?]*\?>")
# The start tag of an element we send: its name and attributes (values are quoted, '>' may occur
# in them), to see whether it declares its namespace.
_START_TAG = re.compile(rb"""<([^\s/>]+)((?:\s+[^\s=/>]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*/?>""")
_DEFAULT_NS_DECLARED = re.compile(rb"\sxmlns\s*=")
_STREAM_HEADER = f"<stream:stream xmlns:stream='{STREAMS_NS}'>".encode()
_STREAM_FOOTER = b"</stream:stream>"
# Reads only the attributes of a body that failed to parse (which session it names).
_RECOVER = etree.XMLParser(recover=True, resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


# -- errors -------------------------------------------------------------------------------------
class BoshError(Exception):
    """A terminal binding condition (XEP-0124 §17.2): the answer ends the session. With `error`,
    the condition is remote-stream-error and the stream error goes inside (XEP-0206, "remote-stream-error")."""

    def __init__(
        self, condition: str, text: str = "", error: StreamError | None = None, cause: StreamError | None = None
    ) -> None:
        super().__init__(f"{condition}: {text}" if text else condition)
        self.condition = condition
        self.text = text
        self.error = error
        self.cause = cause

    def response(self) -> bytes:
        return terminate(self.condition, error=self.error)

    def stream_error(self) -> StreamError:
        """What the stream driver is told (the reason it logs for the session's end)."""
        if self.error is not None:
            return self.error
        if self.cause is not None:
            return self.cause
        condition = _STREAM_CONDITIONS.get(self.condition, "undefined-condition")
        return StreamError(condition, f"BOSH {self.condition}: {self.text}" if self.text else f"BOSH {self.condition}")


def terminate(condition: str | None = None, payloads: list[bytes] | None = None, *,
              error: StreamError | None = None) -> bytes:
    """A `type='terminate'` body (XEP-0124 §13, §17.2), with what it carries."""
    attributes = [("type", "terminate")]
    if condition:
        attributes.append(("condition", condition))
    content = list(payloads or [])
    if error is not None:
        content.append(error.to_xml())
    return _render(attributes, content)


def stream_condition(error: StreamError | None) -> str | None:
    """The binding condition that ends a session for a stream error."""
    if error is None:
        return None
    return error.condition if error.condition in BINDING_CONDITIONS else "remote-stream-error"


def _render(attributes: list[tuple[str, str]], payloads: list[bytes], *, xmpp_ns: bool = False,
            stream_ns: bool = False) -> bytes:
    parts = [f"<body xmlns='{BOSH_NS}'"]
    if xmpp_ns:
        parts.append(f" xmlns:xmpp='{XBOSH_NS}'")
    if stream_ns:
        parts.append(f" xmlns:stream='{STREAMS_NS}'")
    parts += [f" {name}='{_escape(value)}'" for name, value in attributes]
    head = "".join(parts).encode()
    if not payloads:
        return head + b"/>"
    return head + b">" + b"".join(payloads) + b"</body>"


def _escape(value: str) -> str:
    return value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;").replace(">", "&gt;")


# -- request bodies ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Limits:
    """What one request body may hold: its bytes, then the parser's per-element limits (xml.py)."""

    max_body: int = 256 * 1024 + BODY_SLACK
    max_attributes: int = 64
    max_children: int = 512
    max_depth: int = 32

    @classmethod
    def from_config(cls, c2s: C2SConfig) -> Limits:
        return cls(
            max_body=c2s.max_stanza_size + BODY_SLACK, max_attributes=c2s.max_attributes,
            max_children=c2s.max_children, max_depth=c2s.max_depth,
        )


@dataclass(frozen=True, slots=True)
class Body:
    """A client's `<body/>`: its attributes (namespaced ones in Clark notation) and payloads."""

    attributes: Mapping[str, str]
    payloads: tuple[etree._Element, ...] = ()

    def get(self, name: str) -> str | None:
        return self.attributes.get(name)

    @property
    def sid(self) -> str | None:
        return self.attributes.get("sid")

    @property
    def terminate(self) -> bool:
        return self.attributes.get("type") == "terminate"

    @property
    def restart(self) -> bool:
        return self.attributes.get(f"{{{XBOSH_NS}}}restart") in ("true", "1")

    def rid(self) -> int:
        """The request id (§14.1); bad-request when missing or not a positive integer below 2^53."""
        return _number(self.attributes.get("rid"), "rid", minimum=1, maximum=MAX_RID, default=None)


def parse_body(data: bytes, limits: Limits) -> Body:
    """Parse one request with the project's parser (restricted XML, its per-element limits); the
    body is one element to it, so its stanzas are allowed one more level of depth. Raises
    BoshError: bad-request for what is not a well-formed `<body/>`, remote-stream-error with
    policy-violation for what is over a limit."""
    if len(data) > limits.max_body:
        too_big = StreamError("policy-violation", f"body larger than {limits.max_body} bytes")
        raise BoshError("remote-stream-error", error=too_big)
    declaration = _XML_DECLARATION.match(data)
    if declaration is not None:
        data = data[declaration.end():]
    parser = XmlStream(
        limits.max_body, max_attributes=limits.max_attributes, max_children=limits.max_children,
        max_depth=limits.max_depth + 1,
    )
    try:
        events = parser.feed(_STREAM_HEADER + data + _STREAM_FOOTER)
    except StreamError as error:
        if error.condition == "policy-violation":
            raise BoshError("remote-stream-error", error=error) from None
        raise BoshError("bad-request", error.text or error.condition, cause=error) from None
    elements = [event for event in events if isinstance(event, etree._Element)]
    if len(elements) != 1 or not isinstance(events[-1], StreamClosed):
        raise BoshError("bad-request", "not one <body/> element")
    body = elements[0]
    if body.tag != BODY_TAG:
        raise BoshError("bad-request", f"expected <body xmlns='{BOSH_NS}'/>")
    # XEP-0124 §6: no character data in the wrapper, only whole elements.
    if (body.text and not body.text.isspace()) or any(child.tail and not child.tail.isspace() for child in body):
        raise BoshError("bad-request", "text in <body/>")
    payloads = tuple(_payload(child) for child in body)
    return Body(dict(body.attrib), payloads)  # type: ignore[arg-type]


def broken_sid(data: bytes) -> str | None:
    """The sid a body that did not parse names, if its start tag can be read at all."""
    try:
        root = etree.fromstring(data, _RECOVER)
    except etree.XMLSyntaxError:
        return None
    if root is None or root.tag != BODY_TAG:
        return None
    return root.get("sid")


def _payload(element: etree._Element) -> etree._Element:
    """A top-level element of a body, detached from it (only the namespace declarations it uses)."""
    if _unqualified(element):
        return _to_client(element)
    detached = copy.deepcopy(element)
    detached.tail = None
    return detached


def _unqualified(element: etree._Element) -> bool:
    """In httpbind's namespace (inherited from the body) or in none (a prefixed body)."""
    tag = element.tag
    return isinstance(tag, str) and (tag.startswith(f"{{{BOSH_NS}}}") or not tag.startswith("{"))


def _to_client(element: etree._Element) -> etree._Element:
    """XEP-0206's wrapper note: what a client leaves in the httpbind namespace is jabber:client. Rebuilt
    rather than renamed, so that it serialises as `<message xmlns="jabber:client">` (a renamed tag
    would keep httpbind as the default namespace and come out as `ns0:message`)."""
    # lxml-stubs type nsmap keys as str, but None (the default namespace) is what lxml wants.
    nsmap: dict[str, str] = {None: CLIENT_NS}  # type: ignore[dict-item]
    parent = element.getparent()
    inherited = parent.nsmap if parent is not None else {}
    # The prefixes the element declares itself (not the body's: they would be copied into every stanza).
    nsmap.update((prefix, uri) for prefix, uri in element.nsmap.items() if prefix and inherited.get(prefix) != uri)
    rebuilt = etree.Element(f"{{{CLIENT_NS}}}{etree.QName(element).localname}", nsmap=nsmap)
    for name, value in element.attrib.items():
        rebuilt.set(name, value)
    rebuilt.text = element.text
    for child in element:
        moved = _to_client(child) if _unqualified(child) else copy.deepcopy(child)
        moved.tail = child.tail
        rebuilt.append(moved)
    return rebuilt


def qualify(data: bytes) -> bytes:
    """An element we send, with xmlns='jabber:client' when it declares no namespace of its own
    (over TCP it inherits the stream's; in a `<body/>` it would be in httpbind's)."""
    # Fast path, for every stanza lxml serialised: its namespace is declared right after the name.
    space = data.find(b" ", 1, 64)
    if space != -1 and data.startswith((b"xmlns='", b'xmlns="'), space + 1):
        return data
    start = _START_TAG.match(data)
    if start is None or b":" in start.group(1) or _DEFAULT_NS_DECLARED.search(start.group(2)):
        return data
    end = start.end(1)
    return data[:end] + b" xmlns='jabber:client'" + data[end:]


def _number(value: str | None, name: str, *, minimum: int, maximum: int, default: int | None) -> int:
    if value is None:
        if default is None:
            raise BoshError("bad-request", f"no '{name}'")
        return default
    if not _DIGITS.fullmatch(value) or not minimum <= int(value) <= maximum:
        raise BoshError("bad-request", f"'{name}' is not a number from {minimum} to {maximum}")
    return int(value)


T = TypeVar("T")


def lookup(sessions: Mapping[str, T], body: Body) -> T | None:
    """The session a request is for; None for a session creation request (no sid, §7.1)."""
    sid = body.sid
    if sid is None:
        return None
    found = sessions.get(sid)
    if found is None:
        raise BoshError("item-not-found", "no such session")
    return found


# -- one session, sans-IO ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Settings:
    """What the server grants a session (XEP-0124 §7.2)."""

    max_wait: int = MAX_WAIT
    max_hold: int = MAX_HOLD
    requests: int = REQUESTS
    inactivity: int = INACTIVITY
    polling: int = POLLING
    max_pending: int = MAX_PENDING


class State(Enum):
    OPEN = auto()
    CLOSING = auto()  # our terminate is ready, waiting for a request to carry it
    CLOSED = auto()


class _Request:
    __slots__ = ("events", "received", "rid")

    def __init__(self, rid: int, events: list[Event], received: float) -> None:
        self.rid = rid
        self.events = events
        self.received = received


class BoshSession:
    """One BOSH session: requests in, stream events out for the driver, answers out by rid.

    Every call that can answer a request leaves the answers for `take_answers()`: the adapter
    hands each to whoever waits for that rid. `deadline()` is when `tick(now)` must run next."""

    def __init__(self, sid: str, body: Body, now: float, settings: Settings = Settings()) -> None:
        rid = body.rid()
        to = body.get("to")
        if not to:
            raise BoshError("improper-addressing", "no 'to' in the session request")
        self.sid = sid
        self.settings = settings
        self.wait = min(_number(body.get("wait"), "wait", minimum=0, maximum=2**15, default=settings.max_wait),
                        settings.max_wait)
        self.hold = min(_number(body.get("hold"), "hold", minimum=0, maximum=255, default=settings.max_hold),
                        settings.max_hold)
        self.requests = settings.requests
        self.polling = settings.polling
        polling_session = self.wait == 0 or self.hold == 0
        self.inactivity = settings.inactivity + (2 * settings.polling if polling_session else 0)
        self.version = _bosh_version(body.get("ver"))
        content = body.get("content")
        self.content_type = content if content and _MEDIA_TYPE.fullmatch(content) else CONTENT_TYPE
        self.to = to
        self.lang = body.get(f"{{{XML_NS}}}lang")
        self.xmpp_version = body.get(f"{{{XBOSH_NS}}}version") or ""
        self.state = State.OPEN
        # We ended the session (terminate, an error): not a lost connection, so not resumable.
        self.ended = False
        # Why we ended it when the client was at fault; for the stream driver, once.
        self.failure: StreamError | None = None
        self._creation_rid = rid
        self._from: str | None = None
        self._next_rid = rid  # the next rid in order
        self._early: dict[int, _Request] = {}
        self._queued: deque[_Request] = deque()
        self._held: deque[_Request] = deque()
        self._kept: dict[int, bytes] = {}  # the last answers, for repeated rids (§14.3)
        self._answers: list[tuple[int, bytes]] = []
        self._out: list[bytes] = []
        self._out_size = 0
        self._out_features = False
        self._closing: tuple[str | None, StreamError | None] | None = None
        self._last_answer = now
        self._gap_timeout = 2 * max(self.wait, self.polling)
        self._accept(rid, [self._opened(body), *body.payloads, *self._closed(body)], now)
        self.flush(now)

    # -- requests in ----------------------------------------------------------------------
    def receive(self, body: Body, now: float) -> int | bytes:
        """A request of this session: its rid, to wait for the answer by (`take_answers`), or
        at once the answer kept for a repeated rid. Raises BoshError when the request ends the
        session (then the other pending requests are answered with other-request)."""
        if self.state is State.CLOSED:
            raise BoshError("item-not-found", "the session is over")
        try:
            rid = body.rid()
        except BoshError as error:
            raise self.fail(error, now) from None
        kept = self._kept.get(rid)
        if kept is not None:
            return kept
        if self._pending(rid):
            return rid  # sent again before it was answered (a broken connection): one answer for both
        if rid < self._next_rid or rid >= self._next_rid + self.requests:
            raise self.fail(BoshError("item-not-found", f"rid {rid} is not expected"), now)
        if self._unanswered() >= self.requests + (1 if body.terminate else 0):
            # §11: no more than `requests` at once, one more to terminate.
            raise self.fail(BoshError("policy-violation", f"more than {self.requests} requests at once"), now)
        try:
            if body.restart and body.payloads:
                raise BoshError("bad-request", "a restart request must be empty (XEP-0206)")
            events: list[Event] = [self._opened(body)] if body.restart else [*body.payloads, *self._closed(body)]
        except BoshError as error:
            raise self.fail(error, now) from None
        self._accept(rid, events, now)
        self.flush(now)
        return rid

    def _accept(self, rid: int, events: list[Event], now: float) -> None:
        request = _Request(rid, events, now)
        if rid != self._next_rid:
            self._early[rid] = request
            return
        self._queued.append(request)
        self._next_rid += 1
        while self._next_rid in self._early:
            self._queued.append(self._early.pop(self._next_rid))
            self._next_rid += 1

    def _opened(self, body: Body) -> StreamOpened:
        """The stream header the session or restart request stands for (XEP-0206: session creation, restart)."""
        attributes = {
            "to": body.get("to") or self.to,
            "version": body.get(f"{{{XBOSH_NS}}}version") or self.xmpp_version,
        }
        lang = body.get(f"{{{XML_NS}}}lang") or self.lang
        if lang:
            attributes[f"{{{XML_NS}}}lang"] = lang
        return StreamOpened(attributes, CLIENT_NS)

    @staticmethod
    def _closed(body: Body) -> list[Event]:
        return [StreamClosed()] if body.terminate else []

    def _pending(self, rid: int) -> bool:
        return rid in self._early or any(r.rid == rid for r in self._queued) or any(r.rid == rid for r in self._held)

    def _unanswered(self) -> int:
        return len(self._early) + len(self._queued) + len(self._held)

    # -- events out, for the stream driver ------------------------------------------------
    def next_events(self, now: float) -> list[Event] | None:
        """The events of the next request in order, or None when there is none (yet, or any more)."""
        if self.state is not State.OPEN or not self._queued:
            return None
        request = self._queued.popleft()
        events, request.events = request.events, []
        self._held.append(request)
        self.flush(now)  # a request read may release the one before it (hold)
        return events

    @property
    def readable(self) -> bool:
        """The driver has something to read: events, or the end of the session."""
        return self.state is not State.OPEN or bool(self._queued)

    # -- output from the driver -------------------------------------------------------------
    def open(self, opening: Opening, features: bytes, now: float) -> None:
        """Our side of a (restarted) stream: its features go in the next answer (XEP-0206)."""
        if opening.from_:
            self._from = opening.from_
        self._out_features = True
        self.queue(b"<stream:features>" + features + b"</stream:features>", now)

    def queue(self, data: bytes, now: float) -> None:
        """One top-level element for the next answer; answered by `flush`."""
        if self.state is not State.OPEN:
            return
        self._out.append(data)
        self._out_size += len(data)
        if self._out_size > self.settings.max_pending:
            # A client that stopped polling: what waits for it is bounded, like a slow reader's
            # write buffer over TCP.
            self._out.clear()
            self._out_size = 0
            self._out_features = False
            self.close(StreamError("policy-violation", "too slow reading"), now)

    def close(self, error: StreamError | None, now: float) -> None:
        """End the session: the next answer (with what is queued, then the error) terminates it."""
        if self.state is not State.OPEN:
            return
        self.state = State.CLOSING
        self.ended = True
        self._closing = (stream_condition(error), error)
        self.flush(now)

    def abort(self, now: float, condition: str | None = "remote-connection-failed") -> None:
        """End the session now; requests waiting get a terminate with `condition`, nothing queued."""
        if self.state is State.CLOSED:
            return
        self._end(terminate(condition), now)

    def fail(self, error: BoshError, now: float) -> BoshError:
        """A request ended the session (its answer is `error`'s); the others get other-request."""
        if self.state is not State.CLOSED:
            self.ended = True
            self.failure = error.stream_error()
            self._end(terminate("other-request"), now)
        return error

    def _end(self, answer: bytes, now: float) -> None:
        for request in self._all_pending():
            self._answer(request.rid, answer, now, keep=False)
        self._early.clear()
        self._queued.clear()
        self._held.clear()
        self._out.clear()
        self._out_size = 0
        self.state = State.CLOSED

    def _all_pending(self) -> list[_Request]:
        return sorted([*self._held, *self._queued, *self._early.values()], key=lambda request: request.rid)

    # -- answers --------------------------------------------------------------------------
    def flush(self, now: float) -> None:
        """Answer what can be answered now, oldest first (XEP-0124 §8, §14.2)."""
        if self.state is State.CLOSING:
            self._flush_terminate(now)
            return
        held = self._held
        while held and self.state is State.OPEN:
            first = held[0]
            if not self._out and len(held) <= self.hold and now < first.received + self.wait:
                break
            held.popleft()
            self._answer(first.rid, self._render_output(first.rid), now)

    def _flush_terminate(self, now: float) -> None:
        pending = self._all_pending()
        if not pending:
            return  # the terminate waits for the client's next request
        assert self._closing is not None
        condition, error = self._closing
        # XEP-0206 "remote-stream-error": the stanzas still queued, then the stream error (only remote-stream-error
        # carries one; the other conditions stand for it).
        payloads = self._out[:]
        answer = terminate(condition, payloads, error=error if condition == "remote-stream-error" else None)
        self._out.clear()
        first = pending[0]
        self._answer(first.rid, answer, now)
        self._early.pop(first.rid, None)
        for place in (self._held, self._queued):
            if first in place:
                place.remove(first)
        self._end(terminate("other-request"), now)

    def _render_output(self, rid: int) -> bytes:
        attributes: list[tuple[str, str]] = []
        creation = rid == self._creation_rid
        if creation:
            attributes += [
                ("sid", self.sid), ("wait", str(self.wait)), ("hold", str(self.hold)),
                ("requests", str(self.requests)), ("inactivity", str(self.inactivity)),
                ("polling", str(self.polling)), ("ver", f"{self.version[0]}.{self.version[1]}"),
            ]
            if self._from:
                attributes.append(("from", self._from))
            attributes += [("xmpp:version", "1.0"), ("xmpp:restartlogic", "true")]
        answer = _render(attributes, self._out, xmpp_ns=creation, stream_ns=self._out_features)
        self._out.clear()
        self._out_size = 0
        self._out_features = False
        return answer

    def _answer(self, rid: int, data: bytes, now: float, *, keep: bool = True) -> None:
        self._answers.append((rid, data))
        self._last_answer = now
        if keep:
            self._kept[rid] = data
            for old in [kept for kept in self._kept if kept <= rid - self.requests]:
                del self._kept[old]

    def take_answers(self) -> list[tuple[int, bytes]]:
        """The answers made since the last call, as (rid, body)."""
        answers, self._answers = self._answers, []
        return answers

    # -- time -----------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When `tick` must run next (None: never again)."""
        if self.state is State.CLOSED:
            return None
        times = []
        if self._held and self.state is State.OPEN:
            times.append(self._held[0].received + self.wait)
        if self._early:
            times.append(min(request.received for request in self._early.values()) + self._gap_timeout)
        if not self._unanswered():
            times.append(self._last_answer + self.inactivity)
        return min(times) if times else None

    def tick(self, now: float) -> None:
        """Answer held requests whose `wait` is over; end a session left with a gap in its rids
        or inactive too long (XEP-0124 §10: as a lost connection, not resumable only if ended)."""
        if self.state is State.CLOSED:
            return
        if self._early and min(request.received for request in self._early.values()) + self._gap_timeout <= now:
            self.fail(BoshError("item-not-found", "a request never arrived"), now)
        elif not self._unanswered() and now >= self._last_answer + self.inactivity:
            self._end(b"", now)  # nothing is waiting: nobody is answered
        else:
            self.flush(now)


def _bosh_version(value: str | None) -> tuple[int, int]:
    match = _VERSION.fullmatch(value or "")
    if match is None:
        return VERSION
    return min(VERSION, (int(match.group(1)), int(match.group(2))))


# -- the asyncio adapter -------------------------------------------------------------------------
def channel(remote: str | None, secure: bool, headers: Mapping[str, str]) -> tuple[bool, str]:
    """Whether a request may carry a stream with `tls_active` (HTTPS, or from this machine, not
    forwarded from plain HTTP), and the client's address (X-Forwarded-For from a loopback peer)."""
    address = remote or ""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        loopback = False
    else:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        loopback = (mapped or ip).is_loopback
    if not loopback:
        return secure, address
    forwarded = headers.get("X-Forwarded-For", "").rsplit(",", 1)[-1].strip()
    if forwarded:
        with contextlib.suppress(ValueError):
            address = str(ipaddress.ip_address(forwarded))
    proto = headers.get("X-Forwarded-Proto", "").strip().lower()
    return secure or proto in ("", "https"), address


class BoshTransport:
    """One BOSH session as the stream driver's `Transport` (stream.py), and the HTTP side of it."""

    def __init__(self, service: BoshService, session: BoshSession, address: str, *, secure: bool) -> None:
        self.service = service
        self.session = session
        self.address = address
        self.secure = secure
        self.ended = False
        self.received_bytes = 0
        self.task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._waiters: dict[int, list[asyncio.Future[bytes]]] = {}
        self._reader: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_scheduled = False

    # -- the HTTP side --------------------------------------------------------------------
    def waiter(self, rid: int) -> asyncio.Future[bytes]:
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._waiters.setdefault(rid, []).append(future)
        return future

    async def request(self, body: Body, size: int) -> bytes:
        """A request of this session; its answer when it is ready."""
        self.received_bytes += size
        try:
            outcome = self.session.receive(body, self._loop.time())
        except BoshError as error:
            log.info("ended the BOSH session of %s: %s", self.address, error)
            self._settle()
            return error.response()
        if isinstance(outcome, bytes):
            return outcome
        future = self.waiter(outcome)
        self._settle()
        return await future

    def fail(self, error: BoshError) -> None:
        """A body for this session that could not be read: the session ends."""
        log.info("ended the BOSH session of %s: %s", self.address, error)
        self.session.fail(error, self._loop.time())
        self._settle()

    def _settle(self) -> None:
        """After the core moved: hand out answers, wake the driver, set the timer."""
        session = self.session
        for rid, data in session.take_answers():
            for future in self._waiters.pop(rid, ()):
                if not future.done():
                    future.set_result(data)
        self.ended = session.ended
        reader = self._reader
        if reader is not None and not reader.done() and (session.readable or session.failure is not None):
            reader.set_result(None)
        deadline = session.deadline()
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = self._loop.call_at(deadline, self._tick) if deadline is not None else None
            self._timer_at = deadline
        if session.state is State.CLOSED:
            self.service.forget(self)

    def _tick(self) -> None:
        # The loop may run a timer a clock tick early: the core must see its deadline reached.
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer = self._timer_at = None
        self.session.tick(now)
        self._settle()

    # -- Transport: input -----------------------------------------------------------------
    async def read(self) -> list[Event] | None:
        session = self.session
        while True:
            events = session.next_events(self._loop.time())
            if events is not None:
                self._settle()
                return events
            if session.failure is not None:
                failure, session.failure = session.failure, None
                raise failure
            if session.state is not State.OPEN:
                return None
            self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None

    def restart(self) -> None:
        """Each body is parsed on its own: nothing carries over to the restarted stream."""

    def rest(self) -> bool:
        """Each body is parsed on its own: no parser outlives a request."""
        return False

    def quiet(self) -> bool:
        return True

    async def start_tls(self, domain: str | None) -> None:
        # Never asked for: BOSH streams run with tls_active (HTTPS or loopback), so no STARTTLS.
        raise StreamError("unsupported-feature", "no STARTTLS over BOSH")

    # -- Transport: output ----------------------------------------------------------------
    def open(self, opening: Opening, features: bytes) -> None:
        self.session.open(opening, features, self._loop.time())
        self._schedule_flush()

    def write(self, data: bytes) -> None:
        session = self.session
        if session.state is not State.OPEN:
            return
        session.queue(qualify(data), self._loop.time())
        if session.state is not State.OPEN:
            log.warning("closing the BOSH session of %s: it does not poll for what it is sent", self.address)
            self._settle()
            return
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        # What is written in one event-loop pass goes in one answer.
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        self.session.flush(self._loop.time())
        self._settle()

    def close(self, error: StreamError | None = None, opening: Opening | None = None) -> None:
        self.session.close(error, self._loop.time())
        self._settle()

    def drop(self) -> None:
        if self.session.state is State.OPEN:
            self.session.abort(self._loop.time(), None)
        self._settle()

    def abort(self) -> None:
        self.session.abort(self._loop.time())
        self._settle()

    def forgotten(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None


class BoshService:
    """The HTTP endpoint: session requests start a stream, the others go to their session."""

    def __init__(self, server: Server, settings: Settings = Settings()) -> None:
        self.server = server
        self.settings = settings
        self.limits = Limits.from_config(server.config.c2s)
        self.transports: dict[str, BoshTransport] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def forget(self, transport: BoshTransport) -> None:
        if self.transports.get(transport.session.sid) is transport:
            del self.transports[transport.session.sid]
        transport.forgotten()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return await cors_preflight(request)
        if request.method != "POST":
            return web.Response(text="XMPP over BOSH (XEP-0206): POST a <body/> here.\n", headers=CORS)
        allowed, address = channel(request.remote, request.secure, request.headers)
        if not allowed:
            # No STARTTLS over BOSH (XEP-0206: encryption belongs to HTTP): HTTPS or this machine only.
            return web.Response(status=403, text="BOSH only over HTTPS\n", headers=CORS)
        data = await self._read(request)
        try:
            body = parse_body(data, self.limits)
        except BoshError as error:
            broken = self.transports.get(broken_sid(data[: self.limits.max_body]) or "")
            if broken is not None and (request.secure or not broken.secure):
                broken.fail(error)
            return self._respond(error.response())
        try:
            transport = lookup(self.transports, body)
        except BoshError as error:
            return self._respond(error.response())
        if transport is None:
            return self._respond(*await self._create(body, len(data), address, secure=request.secure))
        if transport.secure and not request.secure:
            # XEP-0124 §19.1: a secure session never continues in the clear; the session stays.
            return web.Response(status=403, text="this BOSH session runs over HTTPS\n", headers=CORS)
        return self._respond(await transport.request(body, len(data)), transport.session.content_type)

    async def _read(self, request: web.Request) -> bytes:
        """The body, or its first max_body + 1 bytes (parse_body refuses it then)."""
        limit = self.limits.max_body
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = await request.content.read(limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)

    @staticmethod
    def _respond(data: bytes, content_type: str = CONTENT_TYPE) -> web.Response:
        return web.Response(body=data, headers={**CORS, "Content-Type": content_type})

    async def _create(self, body: Body, size: int, address: str, *, secure: bool) -> tuple[bytes, str]:
        """A new session and its stream; the answer to the session request, and its Content-Type."""
        server = self.server
        if server.stopping:
            return terminate("system-shutdown"), CONTENT_TYPE
        loop = asyncio.get_running_loop()
        try:
            session = BoshSession(secrets.token_urlsafe(24), body, loop.time(), self.settings)
        except BoshError as error:
            return error.response(), CONTENT_TYPE
        transport = BoshTransport(self, session, address, secure=secure)
        transport.received_bytes = size
        self.transports[session.sid] = transport
        answer = transport.waiter(body.rid())
        stream = C2SStream(server, transport, tls_active=True)
        refusal = server.admit(address)
        if refusal:
            log.warning("refused %s: %s", address, refusal)
            stream.refuse(refusal)
            transport.drop()
        else:
            log.info("BOSH session from %s", address)
            transport.task = task = loop.create_task(self._run(stream))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        transport._settle()
        return await answer, session.content_type

    async def _run(self, stream: C2SStream) -> None:
        try:
            await stream.run(self.server.stream_started(stream))
        finally:
            self.server.stream_ended(stream)


def serve_bosh(server: Server, path: str) -> None:
    """Serve XEP-0206 on `path` of the HTTP side (named in host-meta, XEP-0156)."""
    http = server.config.http
    limits = Settings(max_wait=http.bosh_max_wait, inactivity=http.bosh_inactivity, max_pending=http.bosh_max_pending)
    service = BoshService(server, limits)
    server.http.add_endpoint(BOSH_REL, path, service.handle, methods=("POST", "OPTIONS", "GET"))
