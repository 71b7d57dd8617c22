"""Sans-IO XMPP stream framing for the load generator: bytes in, whole top-level elements out.

lxml's XMLPullParser is fed whatever the socket gave; a depth counter tells when a child of
<stream:stream> is complete, and the root is emptied after each one so a long stream stays small.
After the login the hot paths stop parsing and only scan for body markers (see MarkerScanner),
because the load generator must stay cheaper than the server it measures.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_ROSTER = "jabber:iq:roster"
NS_PING = "urn:xmpp:ping"
NS_MUC = "http://jabber.org/protocol/muc"
NS_MUC_USER = "http://jabber.org/protocol/muc#user"
NS_MUC_OWNER = "http://jabber.org/protocol/muc#owner"
NS_MAM = "urn:xmpp:mam:2"
NS_RSM = "http://jabber.org/protocol/rsm"
NS_DATA = "jabber:x:data"
NS_SM = "urn:xmpp:sm:3"
STREAM_END = b"</stream:stream>"


@dataclass(frozen=True)
class StreamOpened:
    attrs: dict[str, str]


@dataclass(frozen=True)
class StreamClosed:
    pass


Event = StreamOpened | StreamClosed | etree._Element


class StreamError(Exception):
    """The peer sent XML we cannot parse, or a <stream:error/>."""


class Framer:
    """Feed bytes, get StreamOpened, complete top-level elements, then StreamClosed."""

    def __init__(self) -> None:
        self._parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False, no_network=True)
        self._depth = 0
        self._root: etree._Element | None = None

    def feed(self, data: bytes) -> list[Event]:
        try:
            self._parser.feed(data)
            return list(self._events())
        except etree.XMLSyntaxError as exc:
            raise StreamError(str(exc)) from exc

    def _events(self) -> Iterator[Event]:
        for kind, event_elem in self._parser.read_events():
            elem = cast(etree._Element, event_elem)  # with events=("start", "end") always an element
            if kind == "start":
                self._depth += 1
                if self._depth == 1:
                    self._root = elem
                    yield StreamOpened({str(k): str(v) for k, v in elem.attrib.items()})
                continue
            self._depth -= 1
            if self._depth == 0:
                yield StreamClosed()
            elif self._depth == 1:
                if self._root is not None:
                    self._root.remove(elem)  # keep the tree at one stanza: why the depth counter exists
                yield elem


def stream_header(domain: str, from_jid: str = "") -> bytes:
    from_attr = f" from={quoteattr(from_jid)}" if from_jid else ""
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{NS_STREAM}' to={quoteattr(domain)}{from_attr} version='1.0'>"
    ).encode()


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def sasl_auth(mechanism: str, payload_b64: str) -> bytes:
    return f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload_b64}</auth>".encode()


def sasl_response(payload_b64: str) -> bytes:
    return f"<response xmlns='{NS_SASL}'>{payload_b64}</response>".encode()


def iq(iq_type: str, iq_id: str, payload: str, to: str | None = None) -> bytes:
    to_attr = f" to={quoteattr(to)}" if to else ""
    return f"<iq type='{iq_type}' id='{iq_id}'{to_attr}>{payload}</iq>".encode()


def bind(resource: str) -> bytes:
    return iq("set", "bind", f"<bind xmlns='{NS_BIND}'><resource>{escape(resource)}</resource></bind>")


def chat(to: str, body: str, msg_type: str = "chat") -> bytes:
    return f"<message to={quoteattr(to)} type='{msg_type}'><body>{escape(body)}</body></message>".encode()


# Latency stamps travel inside <body> as "bt:<monotonic ns>:". CLOCK_MONOTONIC is system-wide on
# Linux, so sender and receiver may be different processes of the same load generator.
MARKER = b"bt:"


def stamp_body(t_ns: int, padding: str) -> str:
    return f"bt:{t_ns}:{padding}"


class MarkerScanner:
    """Counts body markers in a byte stream without parsing XML; returns their timestamps.

    A marker can be split across reads, so the unscanned tail (at most one marker long) is kept.
    """

    def __init__(self) -> None:
        self._tail = b""
        self.closed = False

    def feed(self, data: bytes) -> list[int]:
        buf = self._tail + data if self._tail else data
        stamps: list[int] = []
        consumed = 0
        pos = buf.find(MARKER)
        while pos >= 0:
            end = buf.find(b":", pos + 3)
            if end < 0:
                break
            stamps.append(int(buf[pos + 3 : end]))
            consumed = end + 1
            pos = buf.find(MARKER, consumed)
        if STREAM_END in buf:
            self.closed = True
        # Keep what a later read may complete: an unfinished marker, or enough bytes for a split
        # "</stream:stream>", but never a marker already counted.
        keep_from = pos if pos >= 0 else max(consumed, len(buf) - len(STREAM_END) + 1)
        self._tail = buf[keep_from:]
        return stamps


def ping(iq_id: str, to: str) -> bytes:
    return iq("get", iq_id, f"<ping xmlns='{NS_PING}'/>", to=to)


_IQ_START = re.compile(rb"<iq[\s/>]")
_ERROR_START = b"<stream:error"
_ERROR_END = b"</stream:error>"
_ERROR_CONDITION = re.compile(rb"<([a-z][a-z-]*)[^>]*\sxmlns=['\"]urn:ietf:params:xml:ns:xmpp-streams['\"]")
_ERROR_TEXT = re.compile(rb"<text[^>]*>([^<]*)</text>")
_MAX_ERROR_BYTES = 4096


class ReplyScanner:
    """For a session that only sends iqs (the flooder): counts the <iq/> replies in a byte stream
    without parsing, and catches a <stream:error/> (condition and text) and the stream's end.

    Whatever the split of the reads: the unscanned tail is kept, and a stream error is collected
    until its closing tag (at most 4 KiB of it).
    """

    def __init__(self) -> None:
        self.replies = 0
        self.error = ""  # the stream error's condition, e.g. "policy-violation"
        self.error_text = ""
        self.closed = False  # </stream:stream> seen
        self._tail = b""
        self._end_tail = b""
        self._error_buf: bytes | None = None

    def feed(self, data: bytes) -> None:
        ends = self._end_tail + data
        if STREAM_END in ends:
            self.closed = True
        self._end_tail = ends[-(len(STREAM_END) - 1) :]
        if self._error_buf is None:
            buf = self._tail + data if self._tail else data
            start = buf.find(_ERROR_START)
            if start < 0:
                last = None
                for last in _IQ_START.finditer(buf):  # noqa: B007
                    self.replies += 1
                # Keep what a later read may complete ("<iq" before its next byte, a split
                # "<stream:error"), never an <iq already counted.
                self._tail = buf[max(len(buf) - len(_ERROR_START) + 1, last.end() if last else 0) :]
                return
            self.replies += len(_IQ_START.findall(buf, 0, start))
            self._tail = b""
            self._error_buf = b""
            data = buf[start:]
        if not self.error:
            assert self._error_buf is not None
            self._error_buf = (self._error_buf + data)[:_MAX_ERROR_BYTES]
            end = self._error_buf.find(_ERROR_END)
            if end >= 0 or len(self._error_buf) >= _MAX_ERROR_BYTES:
                self._parse_error(self._error_buf[: end if end >= 0 else None])

    def _parse_error(self, raw: bytes) -> None:
        conditions = [m.group(1).decode() for m in _ERROR_CONDITION.finditer(raw) if m.group(1) != b"text"]
        self.error = conditions[0] if conditions else "unknown"
        text = _ERROR_TEXT.search(raw)
        self.error_text = text.group(1).decode(errors="replace")[:200] if text else ""


# --- XEP-0198 stream management, counted on bytes ---------------------------------------------------

SM_MODULO = 2**32  # XEP-0198 §4: h wraps to 0 after 2^32 - 1
SM_REQUEST = f"<r xmlns='{NS_SM}'/>".encode()
_SM_NS = NS_SM.encode()
# Start tags the counter acts on; the character after the name tells <r/> from <reason/>, <a/> from <active/>.
_SM_SCAN = re.compile(rb"<(message|presence|iq|r|a|enabled|failed|stream:error)[\s/>]")
_STANZA_NAMES = (b"message", b"presence", b"iq")
_STANZA_OUT = re.compile(rb"<(?:message|presence|iq)[\s/>]")
_ATTR = re.compile(rb"""([\w:-]+)=(?:'([^']*)'|"([^"]*)")""")


RESUME = " resume='true'"


def sm_enable(resume: bool = True) -> bytes:
    return f"<enable xmlns='{NS_SM}'{RESUME if resume else ''}/>".encode()


def sm_answer(h: int) -> bytes:
    return b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % (h % SM_MODULO)


def count_stanzas(data: bytes) -> int:
    """Stanzas (message, presence, iq start tags) in bytes the client writes."""
    return len(_STANZA_OUT.findall(data))


def _attrs(tag: bytes) -> dict[bytes, bytes]:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _ATTR.finditer(tag)}


class SmCounter:
    """XEP-0198 bookkeeping for one client stream, on bytes, without parsing XML (the hot path of
    messages-sm runs through it). Feed it what the server sent: it counts the stanzas received since
    <enabled/> (h), and returns the <a/> to write for each <r/> the server sent, with the count of the
    stanzas that came before that <r/>; it checks each <a/> of the server against what was sent.
    The client side tells it what it writes (burst, sent_stanzas), which appends a <r/> after every
    `request_every` stanzas.

    Stanzas are start tags named message, presence or iq, which is exact for top-level stanzas as
    long as none nests another (carbons, MAM results and forwarded messages would: the scenarios
    using this turn none of them on). A tag split across reads is kept until its '>' arrives.
    """

    __slots__ = (
        "_error",
        "_tail",
        "answered_h",
        "answers_received",
        "answers_sent",
        "enabled",
        "failed",
        "h_error_detail",
        "h_errors",
        "received",
        "request_every",
        "requests_received",
        "requests_sent",
        "resume",
        "sent",
        "server_h",
        "stream_error",
    )

    def __init__(self, request_every: int = 5) -> None:
        self.request_every = request_every
        self.enabled = False  # <enabled/> seen: counting from there on
        self.failed = False  # <failed/> instead
        self.resume = False  # the server granted resumption (resume='true' in <enabled/>)
        self.received = 0  # stanzas received since <enabled/> (not wrapped: h is this modulo 2^32)
        self.requests_received = 0  # the server's <r/>
        self.answers_sent = 0  # our <a/> answering them
        self.answered_h = 0  # the h of our last answer: what the server may still hold is received - this
        self.sent = 0  # stanzas sent since <enable/> (not wrapped)
        self.requests_sent = 0  # our <r/>
        self.answers_received = 0  # the server's <a/>
        self.server_h = 0  # the last h the server reported (modulo 2^32)
        self.h_errors = 0  # server <a/> whose h is above what was sent, goes back, or is no number
        self.h_error_detail = ""
        self.stream_error = ""  # the condition of a <stream:error/>, once its end is in
        self._tail = b""
        self._error: bytes | None = None

    # -- what the server sent ------------------------------------------------------------------

    def feed(self, data: bytes) -> bytes:
        """Returns what to write back (one <a/> per <r/>, in order)."""
        buf = self._tail + data if self._tail else data
        if self._error is not None:
            self._collect_error(buf)
            self._tail = b""
            return b""
        # Only tags whose '>' has arrived: the last '<' without one waits for the next read.
        cut = buf.rfind(b"<")
        if cut < 0 or buf.find(b">", cut) >= 0:
            cut = len(buf)
        self._tail = buf[cut:]
        answers = b""
        for m in _SM_SCAN.finditer(buf, 0, cut):
            name = m.group(1)
            if name in _STANZA_NAMES:
                if self.enabled:
                    self.received += 1
                continue
            end = buf.find(b">", m.end() - 1) + 1
            tag = buf[m.start() : end]
            if name == b"stream:error":
                self._error = b""
                self._collect_error(buf[m.start() :])
                self._tail = b""
                break
            if _SM_NS not in tag:  # e.g. an XHTML <a/> inside a message
                continue
            if name == b"r":
                if self.enabled:
                    self.requests_received += 1
                    self.answers_sent += 1
                    self.answered_h = self.received
                    answers += sm_answer(self.received)
            elif name == b"a":
                self._acknowledged(tag)
            elif name == b"enabled":
                self.enabled = True
                self.resume = _attrs(tag).get(b"resume") in (b"true", b"1")
            elif name == b"failed" and not self.enabled:
                self.failed = True
        return answers

    def _acknowledged(self, tag: bytes) -> None:
        self.answers_received += 1
        raw = _attrs(tag).get(b"h", b"")
        if not raw.isdigit() or int(raw) >= SM_MODULO:
            self._h_error(f"server <a/> with h={raw.decode(errors='replace')!r}")
            return
        h = int(raw)
        # Counts only go forward, modulo 2^32, and never past what was sent.
        if (h - self.server_h) % SM_MODULO > (self.sent - self.server_h) % SM_MODULO:
            self._h_error(f"server h={h} but {self.sent % SM_MODULO} stanzas sent (previous h={self.server_h})")
            return
        self.server_h = h

    def _h_error(self, detail: str) -> None:
        self.h_errors += 1
        if not self.h_error_detail:
            self.h_error_detail = detail

    def _collect_error(self, data: bytes) -> None:
        assert self._error is not None
        if self.stream_error:
            return
        self._error = (self._error + data)[:_MAX_ERROR_BYTES]
        end = self._error.find(_ERROR_END)
        if end >= 0 or len(self._error) >= _MAX_ERROR_BYTES:
            raw = self._error[: end if end >= 0 else None]
            conditions = [m.group(1).decode() for m in _ERROR_CONDITION.finditer(raw) if m.group(1) != b"text"]
            self.stream_error = conditions[0] if conditions else "unknown"

    # -- what the client sends -----------------------------------------------------------------

    def burst(self, stanza: bytes, n: int) -> bytes:
        """`stanza` (one stanza) n times, with a <r/> after every `request_every`-th stanza sent."""
        every = self.request_every
        first = every - self.sent % every  # stanzas until the next <r/>
        self.sent += n
        if n < first:
            return stanza * n
        whole, rest = divmod(n - first, every)
        self.requests_sent += 1 + whole
        return stanza * first + SM_REQUEST + (stanza * every + SM_REQUEST) * whole + stanza * rest

    def sent_stanzas(self, n: int) -> bytes:
        """n stanzas were written (in one piece): the <r/> due after them."""
        due = (self.sent + n) // self.request_every - self.sent // self.request_every
        self.sent += n
        self.requests_sent += due
        return SM_REQUEST * due

    def request(self) -> bytes:
        """One more <r/> (the final check: the answer must then equal what was sent)."""
        self.requests_sent += 1
        return SM_REQUEST

    def final_answer(self) -> bytes:
        """An unrequested <a/> before closing, so that the server keeps nothing unacknowledged."""
        return sm_answer(self.received)

    @property
    def unacknowledged(self) -> int:
        """Stanzas received since our last <a/>: what the server still keeps for this session."""
        return self.received - self.answered_h

    @property
    def all_handled(self) -> bool:
        """Every request answered, and the last answer counted every stanza sent."""
        return self.answers_received >= self.requests_sent and self.server_h == self.sent % SM_MODULO
