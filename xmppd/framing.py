"""How a stream's events look on a TCP connection (RFC 6120 §4) and on a WebSocket (RFC 7395):
sans-IO, bytes in and out.

Negotiation and the stream driver speak of a stream in events (open our side with features, one
element, close with an error); a transport frames them. Over TCP the stream is one XML document:
a `<stream:stream>` header, the elements, `</stream:stream>`. A WebSocket (RFC 7395) frames the
same events as `<open/>`, one element per message and `<close/>`; each message is an XML document
of its own (§3.3.3), so every element declares its namespaces, and the client's messages are read
one at a time by `WebSocketParser`, which turns them into the events a TCP stream gives.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from lxml import etree

from xmppd.errors import STREAMS_NS, StreamError
from xmppd.xml import STREAM_CLOSE, Event, StreamClosed, StreamOpened, XmlStream, stream_header

CLIENT_NS = "jabber:client"


@dataclass(frozen=True, slots=True)
class Opening:
    """Our side's stream header (RFC 6120 §4.7): the domain we answer for and the stream id."""

    from_: str | None
    stream_id: str
    content_ns: str = CLIENT_NS


def tcp_open(opening: Opening, features: bytes) -> bytes:
    """The header of our side of a stream with its features (RFC 6120 §4.3.2)."""
    header = stream_header(content_ns=opening.content_ns, from_=opening.from_, stream_id=opening.stream_id)
    return header + b"<stream:features>" + features + b"</stream:features>"


def tcp_close(error: StreamError | None, opening: Opening | None = None) -> bytes:
    """The end of our side: the header first if it was never sent (§4.9.1.2), the error if any
    (§4.9.1.1), the closing tag (§4.4)."""
    header = b""
    if opening is not None:
        header = stream_header(content_ns=opening.content_ns, from_=opening.from_, stream_id=opening.stream_id)
    return header + (error.to_xml() if error is not None else b"") + STREAM_CLOSE


# -- XMPP over WebSocket (RFC 7395) -----------------------------------------------------------------

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
WS_CLOSE = f"<close xmlns='{FRAMING_NS}'/>".encode()
_OPEN_TAG = f"{{{FRAMING_NS}}}open"
_CLOSE_TAG = f"{{{FRAMING_NS}}}close"
_FRAMING_NS_BYTES = FRAMING_NS.encode()
# XML's whitespace (XML 1.0 §2.3 [3]); bytes.strip() would also take \v and \f, which XML forbids.
_XML_SPACE = b" \t\r\n"


def ws_open(opening: Opening) -> bytes:
    """Our side's `<open/>` (RFC 7395 §3.4): the attributes of a stream header (RFC 6120 §4.7)."""
    from_ = f" from={_quote(opening.from_)}" if opening.from_ else ""
    return (
        f"<open xmlns='{FRAMING_NS}'{from_} id={_quote(opening.stream_id)} version='1.0' xml:lang='en'/>"
    ).encode()


def ws_features(features: bytes) -> bytes:
    """The stream features as a message of their own, after `<open/>` (RFC 7395 §3.4)."""
    return b"<stream:features xmlns:stream='" + STREAMS_NS.encode() + b"'>" + features + b"</stream:features>"


def ws_close(error: StreamError | None, opening: Opening | None = None) -> list[bytes]:
    """The messages that end our side: `<open/>` if it was never sent (RFC 7395 §3.5: an error
    while opening follows our `<open/>`), the error if any, `<close/>` (§3.6)."""
    messages = [ws_open(opening)] if opening is not None else []
    if error is not None:
        messages.append(error.to_xml())  # `<stream:error xmlns:stream=...>`: a document of its own
    messages.append(WS_CLOSE)
    return messages


def ws_is_close(message: bytes) -> bool:
    """Whether a message is `<close/>`, told without parsing (what a peer sends after our
    `<close/>` is only looked at for that)."""
    return message.lstrip(_XML_SPACE).startswith(b"<close") and _FRAMING_NS_BYTES in message


def ws_frame_header(length: int) -> bytes:
    """The header of a text frame of `length` bytes from a server: FIN, opcode 1, no mask (RFC
    6455 §5.2; a server never masks, §5.1). The payload follows it."""
    if length < 126:
        return bytes((0x81, length))
    if length < 0x10000:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


# The start tag of a top-level element; its attribute names.
_START_TAG = re.compile(rb"""<([^\s/>]+)((?:\s+[^\s=/>]+\s*=\s*(?:'[^']*'|"[^"]*"))*)\s*/?>""")
_ATTRIBUTE_NAME = re.compile(rb"""([^\s=/>]+)\s*=\s*(?:'[^']*'|"[^"]*")""")


def ws_qualified(element: bytes) -> bytes:
    """One serialised top-level element as a message of its own (RFC 7395 §3.3.3: a document
    complete with its namespace declarations). lxml's serialisation of a stanza declares
    `xmlns="jabber:client"` itself; an element written as text for a TCP stream, where it
    inherits the stream's namespace (negotiation's bind result), gets the declaration here."""
    end = element.find(b">")
    if element.find(b' xmlns="', 0, end) != -1:  # as lxml writes it: the common case, decided at once
        return element
    match = _START_TAG.match(element)
    if match is None:
        return element  # not a start tag we can read: sent as it is
    name = match.group(1)
    if b":" in name or b"xmlns" in _ATTRIBUTE_NAME.findall(match.group(2)):
        return element  # a prefixed name declares its prefix (`<stream:error xmlns:stream=...>`)
    cut = len(name) + 1
    return element[:cut] + b" xmlns='" + CLIENT_NS.encode() + b"'" + element[cut:]


# The last tag of a message that is one element: its end tag or, for an empty element, its start
# tag; nothing after it but whitespace. `<` never occurs inside a tag (XML 1.0 §3.1: not in an
# attribute value either), `>` may, within quotes. `<!` (a CDATA section after the element) is no tag.
_LAST_TAG = re.compile(rb"""<(?!!)[^'"<>]*(?:(?:'[^']*'|"[^"]*")[^'"<>]*)*>[ \t\r\n]*""")
# The client's elements are parsed as children of this root, which is never sent to anybody: so a
# stanza the client sent without `xmlns='jabber:client'` (RFC 7395 §3.3.3 wants it declared) is
# read as what it can only mean, as Prosody and ejabberd do.
_ROOT = (f"<stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAMS_NS}'>").encode()


class WebSocketParser(XmlStream):
    """The client's side of an XMPP stream over WebSocket, one text message at a time (RFC 7395
    §3.3.3): each message is exactly one element, parsed with XmlStream's rules and limits,
    and turned into the events of a TCP stream: `<open/>` into StreamOpened (with the content
    namespace jabber:client, which `<open/>` does not name), `<close/>` into StreamClosed, any
    other element as it is. `reset()` starts a new stream (after SASL, §3.4)."""

    def reset(self) -> None:
        super().reset()
        # The client sent its `<close/>` (the closing handshake then need not wait for it).
        self.peer_closed = False
        self.feed(_ROOT)

    def message(self, data: bytes) -> list[Event]:
        """The event of one text message: a list of one, or empty for whitespace alone.

        A message that is not one XML document is not-well-formed (RFC 6120 §4.9.3.13): §3.3.3
        makes each message a document of its own ("MUST be parsable as standalone XML documents"),
        and XML 1.0 §2.1 gives a document exactly one root element with nothing but whitespace,
        comments and processing instructions around it (the last two are restricted-xml anyway,
        RFC 6120 §11.1). So two elements, text before or after the element, and an element cut
        short are all not-well-formed, whatever parts of them would parse.
        """
        if len(data) > self.max_stanza_size:  # refused before parsing it
            raise StreamError("policy-violation", f"stanza larger than {self.max_stanza_size} bytes")
        if data.startswith(b"<?xml") and data[5:6] in (b" ", b"\t", b"\r", b"\n"):
            # An XML declaration is allowed, if NOT RECOMMENDED (§3.3.3); the parser sees the
            # message in the middle of a document, where a declaration would be an error.
            end = data.find(b"?>")
            data = data[end + 2 :] if end != -1 else b"<?"  # unterminated: not-well-formed below
        if data[:1] != b"<":
            data = data.lstrip(_XML_SPACE)
            if not data:
                return []  # whitespace alone: a keepalive (RFC 6120 §4.6.1), as over TCP
            if data[:1] != b"<":
                raise StreamError("not-well-formed", "text before the element of a WebSocket message")
        events = self.feed(data)
        if len(events) == 1 and self._depth == 1 and _LAST_TAG.fullmatch(data, data.rfind(b"<")) is not None:
            element = events[0]
            if isinstance(element, etree._Element):
                tag = element.tag
                if tag == _OPEN_TAG:
                    return [StreamOpened(dict(element.attrib), CLIENT_NS)]  # type: ignore[arg-type]
                if tag == _CLOSE_TAG:
                    self.peer_closed = True
                    return [StreamClosed()]
                if isinstance(tag, str) and tag.endswith(("}open", "}close")):
                    # RFC 6120 §4.9.3.10: the framing elements have exactly one namespace.
                    raise StreamError("invalid-namespace", f"<open/> and <close/> are in {FRAMING_NS}")
                return events
        raise StreamError("not-well-formed", "a WebSocket message must be exactly one element (RFC 7395 §3.3.3)")

    def binary(self) -> list[Event]:
        """A binary message: always refused. §3.2 makes the messages of the subprotocol text, and
        a binary one is not XML we could read at all: bad-format ("XML that cannot be processed",
        RFC 6120 §4.9.3.1), as none of the more specific XML conditions fits a frame type."""
        raise StreamError("bad-format", "binary WebSocket messages are not XMPP (RFC 7395 §3.2)")


def _quote(value: str) -> str:
    return "'" + value.replace("&", "&amp;").replace("'", "&apos;").replace("<", "&lt;") + "'"
