"""xmppd/websocket.py without a network: who may open a stream (Origin, TLS, the client's address
behind a proxy), and WebSocketTransport against a fake WebSocket and a fake asyncio transport:
the frames of one loop pass written at once, `<open/>` and the features as two messages, closing,
the cut-off of a client that does not read (MAX_WRITE_BUFFER), and on the input side batches,
a binary message after text ones, the pump stopping past READ_SIZE, a close from elsewhere
waking the reader."""

from __future__ import annotations

import asyncio
import struct
import types
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import WSMessage, WSMsgType
from aiohttp.test_utils import make_mocked_request
from lxml import etree

from xmppd import net
from xmppd.config import load_config
from xmppd.errors import StreamError
from xmppd.framing import FRAMING_NS, Opening
from xmppd.websocket import WebSocketTransport, _secure, client_address, origin_allowed
from xmppd.xml import StreamClosed, StreamOpened

OPEN = f"<open xmlns='{FRAMING_NS}' to='localhost' version='1.0'/>".encode()
CLOSE = f"<close xmlns='{FRAMING_NS}'/>".encode()


# -- who may open a stream -------------------------------------------------------------------------


def server(origins: tuple[str, ...] | None = None) -> Any:
    config = load_config(None)  # hosts: localhost
    http: Any = config.http
    if origins is not None:
        http = types.SimpleNamespace(websocket_origins=origins)
    return types.SimpleNamespace(config=types.SimpleNamespace(hosts=("localhost", "example.org"), http=http))


def request(headers: dict[str, str] | None = None, *, host: str = "chat.example.net") -> Any:
    return make_mocked_request("GET", "/xmpp-websocket", headers={"Host": host, **(headers or {})})


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("https://localhost", True),  # an XMPP host of the server
        ("https://EXAMPLE.org:8443", True),
        ("http://chat.example.net", True),  # the host the request was sent to
        ("https://chat.example.net:5281/", True),
        ("https://evil.example", False),
        ("https://localhost.evil.example", False),
        ("null", False),  # a sandboxed page or a file
        ("not a url at all", False),
    ],
)
def test_origins_of_the_server_itself_are_allowed(origin: str | None, allowed: bool) -> None:
    headers = {"Origin": origin} if origin is not None else {}
    assert origin_allowed(server(), request(headers)) is allowed


def test_listed_origins_are_allowed_and_a_star_allows_any() -> None:
    listed = server(("https://webchat.example.com",))
    assert origin_allowed(listed, request({"Origin": "https://webchat.example.com"}))
    assert origin_allowed(listed, request({"Origin": "HTTPS://WEBCHAT.example.com/"}))
    assert not origin_allowed(listed, request({"Origin": "https://webchat.example.com:444"}))
    assert not origin_allowed(listed, request({"Origin": "https://evil.example"}))
    assert origin_allowed(server(("*",)), request({"Origin": "https://evil.example"}))


def test_tls_or_a_loopback_peer_is_required() -> None:
    plain = request()
    assert _secure(plain, "127.0.0.1") and _secure(plain, "::1") and _secure(plain, "::ffff:127.0.0.1")
    assert not _secure(plain, "192.0.2.7")
    assert not _secure(plain, "")
    tls = make_mocked_request("GET", "/", sslcontext=object())  # type: ignore[arg-type]
    assert _secure(tls, "192.0.2.7")


def test_the_client_address_behind_a_reverse_proxy_on_this_machine() -> None:
    forwarded = request({"X-Forwarded-For": "198.51.100.1, 203.0.113.9"})
    assert client_address(forwarded, "127.0.0.1") == "203.0.113.9"  # the one the proxy saw
    assert client_address(forwarded, "192.0.2.7") == "192.0.2.7"  # not a proxy of ours: ignored
    assert client_address(request({"X-Forwarded-For": "garbage"}), "127.0.0.1") == "127.0.0.1"
    assert client_address(request(), "127.0.0.1") == "127.0.0.1"


# -- the transport ---------------------------------------------------------------------------------


class FakeTransport:
    """The connection under the WebSocket, as far as WebSocketTransport writes to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.buffer_size = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def is_closing(self) -> bool:
        return self.closing

    @property
    def writes(self) -> list[bytes]:
        return [data for call, data in self.calls if call == "write"]


class FakeWebSocket:
    """aiohttp's WebSocketResponse as the pump sees it: messages come from `inbox`."""

    def __init__(self) -> None:
        self.inbox: asyncio.Queue[WSMessage] = asyncio.Queue()
        self.receives = 0
        self.closed = False
        self._changed = asyncio.Event()

    async def receive(self) -> WSMessage:
        self.receives += 1
        self._changed.set()
        message = await self.inbox.get()
        self._changed.set()
        return message

    async def until(self, done: Callable[[], bool]) -> None:
        """Wait until `done()` holds, looking again whenever the pump receives."""
        async with asyncio.timeout(5):
            while not done():
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> bool:
        self.closed = True
        return True

    def text(self, data: bytes) -> None:
        self.inbox.put_nowait(WSMessage(WSMsgType.TEXT, data, None))

    def binary(self, data: bytes) -> None:
        self.inbox.put_nowait(WSMessage(WSMsgType.BINARY, data, None))


def frames(data: bytes) -> list[bytes]:
    """The payloads of the text frames in what was written (RFC 6455 §5.2, unmasked)."""
    payloads = []
    while data:
        assert data[0] == 0x81, data[:2]  # FIN, text
        length, offset = data[1], 2
        if length == 126:
            (length,), offset = struct.unpack("!H", data[2:4]), 4
        elif length == 127:
            (length,), offset = struct.unpack("!Q", data[2:10]), 10
        payloads.append(data[offset : offset + length])
        data = data[offset + length :]
    return payloads


@pytest.fixture
async def parts() -> Any:
    fake, ws = FakeTransport(), FakeWebSocket()
    transport = WebSocketTransport(
        types.SimpleNamespace(config=load_config(None)),  # type: ignore[arg-type]
        ws, types.SimpleNamespace(transport=fake), "192.0.2.7",  # type: ignore[arg-type]
    )
    yield transport, fake, ws
    transport.abort()
    await transport.finish()


async def next_pass() -> None:
    """After one pass of the event loop (the flush scheduled with call_soon runs first)."""
    loop = asyncio.get_running_loop()
    passed = loop.create_future()
    loop.call_soon(passed.set_result, None)
    await passed


async def test_writes_of_one_loop_pass_are_one_write_of_one_frame_each(parts: Any) -> None:
    transport, fake, _ws = parts
    transport.write(b'<message xmlns="jabber:client" id="1"/>')
    transport.write(b"<iq type='result' id='bind'/>")  # written as text for a TCP stream
    transport.write(b"<r xmlns='urn:xmpp:sm:3'/>")
    assert fake.calls == []
    await next_pass()
    (data,) = fake.writes
    assert frames(data) == [
        b'<message xmlns="jabber:client" id="1"/>',
        b"<iq xmlns='jabber:client' type='result' id='bind'/>",  # a document of its own
        b"<r xmlns='urn:xmpp:sm:3'/>",
    ]


async def test_open_and_the_features_are_two_messages(parts: Any) -> None:
    transport, fake, _ws = parts
    transport.open(Opening("localhost", "s1"), b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>")
    await next_pass()
    opened, features = (etree.fromstring(m) for m in frames(fake.writes[0]))
    assert opened.tag == f"{{{FRAMING_NS}}}open" and opened.get("id") == "s1"
    assert features.tag == "{http://etherx.jabber.org/streams}features" and len(features) == 1


async def test_close_sends_what_was_written_the_error_and_close_at_once(parts: Any) -> None:
    transport, fake, _ws = parts
    transport.write(b'<message xmlns="jabber:client" id="pending"/>')
    transport.close(StreamError("conflict", "replaced"))
    assert transport.closed and transport.ended
    (data,) = fake.writes  # at once, not at the end of the pass
    pending, error, close = frames(data)
    assert b"pending" in pending and b"<conflict" in error and close == CLOSE
    transport.write(b"<message/>")  # nothing after <close/>
    transport.close()
    await next_pass()
    assert len(fake.writes) == 1


async def test_a_reader_too_far_behind_is_cut_off(parts: Any) -> None:
    transport, fake, _ws = parts
    fake.buffer_size = net.MAX_WRITE_BUFFER + 1
    transport.write(b'<message xmlns="jabber:client"/>')
    await next_pass()
    assert [call for call, _ in fake.calls] == ["write", "write", "write", "abort"]
    error, close = (frames(data)[0] for data in fake.writes[1:])
    assert b"<policy-violation" in error and close == CLOSE
    assert transport.closed and transport.ended  # ended by us: not resumable
    transport.write(b"<message/>")
    await next_pass()
    assert len(fake.writes) == 3


async def test_a_reader_at_the_limit_is_not_cut_off(parts: Any) -> None:
    transport, fake, _ws = parts
    fake.buffer_size = net.MAX_WRITE_BUFFER
    transport.write(b"<a xmlns='x'/>")
    await next_pass()
    assert [call for call, _ in fake.calls] == ["write"] and not transport.closed


async def test_messages_that_arrived_together_are_one_batch(parts: Any) -> None:
    transport, _fake, ws = parts
    ws.text(OPEN)
    ws.text(b"<message xmlns='jabber:client' to='a@localhost'/>")
    ws.text(b" ")  # whitespace alone: nothing
    ws.text(b"<iq type='get' id='1'/>")
    batch = await transport.read()
    assert batch is not None and len(batch) == 3
    assert isinstance(batch[0], StreamOpened)
    assert [etree.QName(e).localname for e in batch[1:]] == ["message", "iq"]
    assert transport.received_bytes == len(OPEN) + 49 + 1 + 23


async def test_a_binary_message_comes_after_the_messages_before_it(parts: Any) -> None:
    transport, _fake, ws = parts
    ws.text(b"<message xmlns='jabber:client'/>")
    ws.binary(b"\x00")
    ws.text(b"<message xmlns='jabber:client'/>")
    batch = await transport.read()
    assert batch is not None and len(batch) == 1  # the first message, handled
    with pytest.raises(StreamError) as info:
        await transport.read()
    assert info.value.condition == "bad-format"


async def test_the_pump_stops_receiving_while_the_driver_has_enough(parts: Any) -> None:
    transport, _fake, ws = parts
    big = b"<message xmlns='jabber:client'><body>" + b"x" * 60_000 + b"</body></message>"
    for _ in range(4):
        ws.text(big)
    await ws.until(lambda: ws.receives == 2)
    for _ in range(5):
        await next_pass()
    # Two messages wait, past READ_SIZE: the pump waits for read() instead of taking more.
    assert ws.receives == 2 and ws.inbox.qsize() == 2
    assert transport._received_size > net.READ_SIZE
    batch = await transport.read()
    assert batch is not None and len(batch) == 2
    await ws.until(lambda: ws.inbox.qsize() == 0)  # and then it takes the rest


async def test_a_close_from_elsewhere_wakes_a_waiting_reader(parts: Any) -> None:
    transport, _fake, ws = parts
    reading = asyncio.ensure_future(transport.read())
    await next_pass()
    assert not reading.done()
    transport.close(StreamError("system-shutdown"))
    assert await asyncio.wait_for(reading, 5) is None
    # What still comes is dropped; the peer's <close/> ends the closing handshake early.
    ws.text(b"<message xmlns='jabber:client'/>")
    ws.text(CLOSE)
    await asyncio.wait_for(transport.finish(), 5)
    assert ws.closed and transport.parser.peer_closed


async def test_the_peers_close_is_the_end_of_the_stream(parts: Any) -> None:
    transport, _fake, ws = parts
    ws.text(CLOSE)
    assert await transport.read() == [StreamClosed()]
    assert transport.parser.peer_closed


async def test_a_websocket_closed_under_the_stream_is_the_end_of_input(parts: Any) -> None:
    transport, _fake, ws = parts
    ws.inbox.put_nowait(WSMessage(WSMsgType.CLOSED, None, None))
    assert await asyncio.wait_for(transport.read(), 5) is None
    assert not transport.ended  # not ended by us: a session may be resumed
