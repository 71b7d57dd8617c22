"""How a stream's events look on a TCP connection (RFC 6120 §4): sans-IO, bytes out.

Negotiation and the stream driver speak of a stream in events (open our side with features, one
element, close with an error); a transport frames them. Over TCP the stream is one XML document:
a `<stream:stream>` header, the elements, `</stream:stream>`. A WebSocket (RFC 7395) frames the
same events as `<open/>`, one element per message and `<close/>`.
"""

from __future__ import annotations

from dataclasses import dataclass

from xmppd.errors import StreamError
from xmppd.xml import STREAM_CLOSE, stream_header

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
