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
