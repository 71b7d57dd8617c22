"""Sans-IO WebSocket (RFC 6455) client framing and XMPP over WebSocket (RFC 7395) messages, for the
load generator's messages-ws scenario: bytes in, messages out; no I/O, no aiohttp.

Kept minimal and cheap, because the load generator must stay cheaper than the server it measures:

- Client frames must be masked (RFC 6455 §5.3), but the masking key may be anything, all zeros
  included: a zero key leaves the payload as it is, so a frame is a header, four zero bytes and the
  payload, with no XOR pass over the bytes.
- Server frames are never masked (§5.1): FrameDecoder reads the 2-, 4- or 10-byte headers (§5.2)
  and slices the payloads out of whatever the socket gave, keeping an unfinished frame for the next
  read. Text messages come back as bytes (XMPP's UTF-8, not decoded); a message fragmented over
  several frames (§5.4) is joined; pings are collected for the caller to answer with pongs; a close
  frame (§5.5.1) ends the decoding.
- RFC 7395: `<open/>` and `<close/>` in the framing namespace; every other message is exactly one
  element, a document of its own, so a stanza sent declares `xmlns='jabber:client'` (§3.3.3).
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from xml.sax.saxutils import quoteattr

from lxml import etree

from bench.stream import NS_CLIENT, Event, StreamClosed, StreamError, StreamOpened

NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"  # RFC 7395 §3.1
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL = 1000
ZERO_MASK = b"\0\0\0\0"
MAX_MESSAGE = 16 * 1024 * 1024  # a message longer than this is refused (the load generator's own bound)


class WebSocketError(StreamError):
    """The server broke RFC 6455 (a masked frame, reserved bits, a bad handshake answer...)."""


# --- client frames -----------------------------------------------------------------------------------


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final frame from a client: masked with the all-zero key (RFC 6455 §5.3 allows any key),
    which leaves the payload unchanged."""
    n = len(payload)
    if n < 126:
        header = bytes((0x80 | opcode, 0x80 | n))
    elif n < 0x10000:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return header + ZERO_MASK + payload


def close_frame(code: int = CLOSE_NORMAL, reason: bytes = b"") -> bytes:
    return client_frame(struct.pack("!H", code) + reason, OP_CLOSE)


def pong_frame(payload: bytes) -> bytes:
    return client_frame(payload, OP_PONG)


# --- server frames ------------------------------------------------------------------------------------


class FrameDecoder:
    """Feed it what the server sent; `feed` returns the complete text messages (payload bytes) in
    order. Pings wait in `pings` for the caller to answer (their payloads, §5.5.2); a close frame
    sets `close_code` / `close_reason` (1005 when it carries no code) and `closed`, after which
    nothing more is decoded. Raises WebSocketError for what a client must fail the connection on
    (§5.1, §5.2): a masked frame, reserved bits set (no extension is negotiated), an unknown opcode,
    a fragmented or oversized control frame, a continuation without a start, a binary message (not
    XMPP, RFC 7395 §3.2)."""

    __slots__ = ("_buf", "_fragments", "close_code", "close_reason", "closed", "frames", "pings")

    def __init__(self) -> None:
        self._buf = b""
        self._fragments: list[bytes] | None = None  # a fragmented text message being joined
        self.pings: list[bytes] = []
        self.closed = False
        self.close_code: int | None = None
        self.close_reason = ""
        self.frames = 0  # frames decoded (all kinds)

    def feed(self, data: bytes) -> list[bytes]:
        if self.closed:
            return []
        buf = self._buf + data if self._buf else data
        n = len(buf)
        pos = 0
        out: list[bytes] = []
        while n - pos >= 2:
            b0 = buf[pos]
            length = buf[pos + 1]
            if length & 0x80:
                raise WebSocketError("masked frame from the server (RFC 6455 §5.1)")
            if length < 126:
                start = pos + 2
            elif length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                start = pos + 4
            else:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
                if length > MAX_MESSAGE:
                    raise WebSocketError(f"frame of {length} bytes")
            end = start + length
            if end > n:
                break
            self.frames += 1
            pos = end
            if b0 == 0x81:  # a whole text message in one frame: the hot path
                if self._fragments is not None:
                    raise WebSocketError("a new message inside a fragmented one (RFC 6455 §5.4)")
                out.append(buf[start:end])
            elif self._other(b0, buf[start:end], out):
                break
        self._buf = b"" if self.closed else buf[pos:]
        return out

    def _other(self, b0: int, payload: bytes, out: list[bytes]) -> bool:
        """Every frame but a final text frame; returns True at a close frame."""
        if b0 & 0x70:
            raise WebSocketError("reserved bits set without an extension (RFC 6455 §5.2)")
        fin, opcode = b0 & 0x80, b0 & 0x0F
        if opcode >= 0x8:  # control frames (§5.5): final, at most 125 bytes, may come between fragments
            if not fin or len(payload) > 125:
                raise WebSocketError("fragmented or oversized control frame (RFC 6455 §5.5)")
            if opcode == OP_PING:
                self.pings.append(payload)
            elif opcode == OP_CLOSE:
                self.closed = True
                self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                self.close_reason = payload[2:].decode(errors="replace")
                return True
            elif opcode != OP_PONG:
                raise WebSocketError(f"unknown control opcode {opcode:#x}")
            return False
        if opcode == OP_TEXT:
            if self._fragments is not None:
                raise WebSocketError("a new message inside a fragmented one (RFC 6455 §5.4)")
            self._fragments = [payload]  # not final (final ones take the hot path)
        elif opcode == OP_CONTINUATION:
            if self._fragments is None:
                raise WebSocketError("continuation frame without a message (RFC 6455 §5.4)")
            self._fragments.append(payload)
            if sum(map(len, self._fragments)) > MAX_MESSAGE:
                raise WebSocketError("message too large")
            if fin:
                out.append(b"".join(self._fragments))
                self._fragments = None
        elif opcode == OP_BINARY:
            raise WebSocketError("binary message: XMPP over WebSocket is text only (RFC 7395 §3.2)")
        else:
            raise WebSocketError(f"unknown opcode {opcode:#x}")
        return False


# --- the opening handshake (RFC 6455 §4.1) -------------------------------------------------------------


def handshake_request(host: str, path: str, key: str, protocol: str = SUBPROTOCOL) -> bytes:
    """The client's upgrade request; `key` is base64 of 16 random bytes. No Origin: not a browser."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


MAX_RESPONSE_HEAD = 16 * 1024


class HandshakeRefused(WebSocketError):
    """The server answered the upgrade with something else than 101 (e.g. 404: nothing there)."""

    def __init__(self, status: int, status_line: str) -> None:
        super().__init__(status_line)
        self.status = status


def parse_handshake_response(buf: bytes, key: str, protocol: str = SUBPROTOCOL) -> tuple[bool, bytes]:
    """(False, b"") while the response head is incomplete; (True, the bytes after it: frames) once
    it is in and valid. Raises HandshakeRefused for a status other than 101, WebSocketError for a
    101 that is not a WebSocket with the subprotocol (a client must then fail, §4.1)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > MAX_RESPONSE_HEAD:
            raise WebSocketError("no end to the handshake response's head")
        return False, b""
    lines = buf[:end].decode("latin-1").split("\r\n")
    status_line = lines[0]
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise WebSocketError(f"not an HTTP response: {status_line[:80]!r}")
    if parts[1] != "101":
        raise HandshakeRefused(int(parts[1]), status_line[:200])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("upgrade", "").lower() != "websocket" or "upgrade" not in headers.get("connection", "").lower():
        raise WebSocketError("101 without Upgrade: websocket")
    if headers.get("sec-websocket-accept") != accept_key(key):
        raise WebSocketError("wrong Sec-WebSocket-Accept")
    if headers.get("sec-websocket-protocol") != protocol:
        raise WebSocketError(f"subprotocol {headers.get('sec-websocket-protocol')!r}, not {protocol!r}")
    if headers.get("sec-websocket-extensions"):
        raise WebSocketError("an extension the client did not ask for")
    return True, buf[end + 4 :]


# --- RFC 7395 messages -----------------------------------------------------------------------------------


def ws_open(domain: str, from_jid: str = "") -> bytes:
    """The client's `<open/>` (RFC 7395 §3.4), at the start and again after SASL success."""
    from_attr = f" from={quoteattr(from_jid)}" if from_jid else ""
    return f"<open xmlns='{NS_FRAMING}' to={quoteattr(domain)}{from_attr} version='1.0'/>".encode()


WS_CLOSE = f"<close xmlns='{NS_FRAMING}'/>".encode()
CLIENT_XMLNS = f" xmlns='{NS_CLIENT}'".encode()
_NAME_END = re.compile(rb"[\s/>]")


def qualified(element: bytes) -> bytes:
    """One element as a message of its own: a stanza written as for a TCP stream (where it inherits
    jabber:client) gets `xmlns='jabber:client'` (RFC 7395 §3.3.3); one that declares its namespace
    is left as it is."""
    end = element.find(b">")
    if end < 0 or element.find(b"xmlns=", 0, end) >= 0:
        return element
    m = _NAME_END.search(element, 1)
    if m is None or b":" in element[1 : m.start()]:
        return element
    return element[: m.start()] + CLIENT_XMLNS + element[m.start() :]


def is_close(message: bytes) -> bool:
    """Whether a message is the framing `<close/>`, without parsing it."""
    return message.lstrip(b" \t\r\n").startswith(b"<close") and NS_FRAMING.encode() in message


_OPEN_TAG = f"{{{NS_FRAMING}}}open"
_CLOSE_TAG = f"{{{NS_FRAMING}}}close"
# Each message is parsed inside this root, so a stanza from a server that leaves out the
# jabber:client declaration still gets the namespace it can only mean.
_ROOT_START = f"<root xmlns='{NS_CLIENT}'>".encode()
_ROOT_END = b"</root>"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class MessageFramer:
    """What bench.stream.Framer is for a TCP stream, for RFC 7395 messages: feed it the text
    messages of one read, get the same events (StreamOpened for `<open/>`, the elements, StreamClosed
    for `<close/>`). Used during the login only; the hot paths scan bytes."""

    def feed_messages(self, messages: list[bytes]) -> list[Event]:
        events: list[Event] = []
        for message in messages:
            body = message.lstrip(b" \t\r\n")
            if body.startswith(b"<?xml"):  # allowed, if not recommended (§3.3.3)
                body = body[body.find(b"?>") + 2 :].lstrip(b" \t\r\n")
            if not body:
                continue  # whitespace keepalive
            try:
                root = etree.fromstring(_ROOT_START + body + _ROOT_END, _PARSER)
            except etree.XMLSyntaxError as exc:
                raise StreamError(f"WebSocket message not XML: {exc}") from exc
            if len(root) != 1:
                raise StreamError("a WebSocket message must be exactly one element (RFC 7395 §3.3.3)")
            el = root[0]
            root.remove(el)
            if el.tag == _OPEN_TAG:
                events.append(StreamOpened({str(k): str(v) for k, v in el.attrib.items()}))
            elif el.tag == _CLOSE_TAG:
                events.append(StreamClosed())
            else:
                events.append(el)
        return events
