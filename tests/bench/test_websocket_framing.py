"""messages-ws's pure parts: the load generator's own RFC 6455 client framing (masked with the zero
key; the server's frames read from their 2-, 4- and 10-byte headers whatever the split, fragments,
pings, the close frame), the opening handshake, RFC 7395's messages, the client protocol around
them, and the report rows. Server frames are xmppd's own (xmppd.framing.ws_frame_header); one test
talks to a real aiohttp WebSocket server on loopback."""

import asyncio
import ssl
import struct
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from lxml import etree

from bench import report, wsframe
from bench.client import NotOffered, Session, Target, WebSocketProtocol, close_websockets, connect_websocket
from bench.loadgen import markdown, ws_note
from bench.render import render
from bench.scenarios import Options, Outcome, PairTraffic, Shard, run_messages_ws, ws_summary
from bench.scram import KeyCache
from bench.stream import SM_REQUEST, SmCounter, StreamClosed, StreamError, StreamOpened, sm_answer
from bench.wsframe import (
    FrameDecoder,
    HandshakeRefused,
    MessageFramer,
    WebSocketError,
    accept_key,
    client_frame,
    close_frame,
    parse_handshake_response,
    qualified,
)
from xmppd.config import load_config
from xmppd.framing import ws_frame_header

# --- client frames -----------------------------------------------------------------------------------


def parse_client_frame(data: bytes) -> tuple[int, int, bytes, bytes, int]:
    """An independent reading of one client frame (RFC 6455 §5.2), unmasking with whatever key it
    carries: (FIN and RSV bits + opcode byte, header length, masking key, payload, frame length)."""
    b0, b1 = data[0], data[1]
    assert b1 & 0x80, "client frames must be masked (RFC 6455 §5.3)"
    length, pos = b1 & 0x7F, 2
    if length == 126:
        length, pos = struct.unpack("!H", data[2:4])[0], 4
    elif length == 127:
        length, pos = struct.unpack("!Q", data[2:10])[0], 10
    key = data[pos : pos + 4]
    masked = data[pos + 4 : pos + 4 + length]
    assert len(masked) == length, "frame cut short"
    payload = bytes(c ^ key[i % 4] for i, c in enumerate(masked))
    return b0, pos, key, payload, pos + 4 + length


@pytest.mark.parametrize(
    ("size", "header"), [(0, 2), (5, 2), (125, 2), (126, 4), (1000, 4), (65535, 4), (65536, 10), (70000, 10)]
)
def test_client_frames_are_masked_with_the_zero_key_and_sized_by_their_length(size: int, header: int) -> None:
    payload = bytes(ord("a") + i % 26 for i in range(size))
    frame = client_frame(payload)
    b0, pos, key, unmasked, total = parse_client_frame(frame)
    assert b0 == 0x81  # FIN, text
    assert pos == header  # 7-bit length, 16-bit (126) or 64-bit (127), always the shortest form
    assert key == b"\0\0\0\0"
    assert unmasked == payload
    assert frame.endswith(payload)  # the zero key leaves the payload as it is: no XOR pass
    assert total == len(frame)


def test_control_frames_from_the_client() -> None:
    b0, _, _, payload, _ = parse_client_frame(close_frame(1000))
    assert (b0, payload) == (0x88, b"\x03\xe8")
    b0, _, _, payload, _ = parse_client_frame(wsframe.pong_frame(b"hi"))
    assert (b0, payload) == (0x8A, b"hi")


# --- server frames -----------------------------------------------------------------------------------


def server_frame(payload: bytes) -> bytes:
    return ws_frame_header(len(payload)) + payload  # xmppd's own: FIN, text, unmasked


def server_control(opcode: int, payload: bytes = b"") -> bytes:
    return bytes((0x80 | opcode, len(payload))) + payload


def _message(size: int, tag: int) -> bytes:
    body = b"<m n='%d'>" % tag
    return body + b"x" * max(0, size - len(body) - 4) + b"</m>"


def _feed(decoder: FrameDecoder, data: bytes, size: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += decoder.feed(data[i : i + size])
    return out


SMALL = [_message(n, i) for i, n in enumerate((12, 60, 125, 126, 127, 300))]
BIG = [_message(n, i) for i, n in enumerate((200, 65535, 65536, 70000, 40))]


def test_xmppd_writes_the_three_header_sizes() -> None:
    assert len(ws_frame_header(125)) == 2
    assert len(ws_frame_header(126)) == 4
    assert len(ws_frame_header(65536)) == 10


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 10_000])
def test_small_frames_whatever_the_split(size: int) -> None:
    decoder = FrameDecoder()
    assert _feed(decoder, b"".join(map(server_frame, SMALL)), size) == SMALL
    assert decoder.frames == len(SMALL)
    assert not decoder.closed


@pytest.mark.parametrize("size", [997, 4096, 16384, 1_000_000])
def test_16_and_64_bit_lengths_across_reads(size: int) -> None:
    decoder = FrameDecoder()
    assert _feed(decoder, b"".join(map(server_frame, BIG)), size) == BIG


@pytest.mark.parametrize("length", [126, 65535, 65536, 70000])
def test_a_header_split_at_every_byte(length: int) -> None:
    message = _message(length, 7)
    frame = server_frame(message) + server_frame(SMALL[0])
    for cut in range(1, 12):
        decoder = FrameDecoder()
        first = decoder.feed(frame[:cut])
        assert first == ([message] if cut >= len(frame) - len(SMALL[0]) - 2 else []), cut
        assert first + decoder.feed(frame[cut:]) == [message, SMALL[0]], cut


@pytest.mark.parametrize("size", [1, 3, 1000])
def test_a_close_frame_ends_the_decoding(size: int) -> None:
    decoder = FrameDecoder()
    data = (
        server_frame(SMALL[0])
        + server_control(wsframe.OP_PING, b"p1")
        + server_frame(SMALL[1])
        + server_control(wsframe.OP_CLOSE, struct.pack("!H", 1001) + b"going away")
        + server_frame(SMALL[2])  # after the close frame: nothing more is a message
    )
    assert _feed(decoder, data, size) == SMALL[:2]
    assert decoder.pings == [b"p1"]
    assert (decoder.closed, decoder.close_code, decoder.close_reason) == (True, 1001, "going away")
    assert decoder.feed(server_frame(SMALL[3])) == []


def test_a_close_frame_without_a_code() -> None:
    decoder = FrameDecoder()
    assert decoder.feed(server_control(wsframe.OP_CLOSE)) == []
    assert (decoder.closed, decoder.close_code) == (True, 1005)


def test_a_fragmented_message_is_joined_around_a_ping() -> None:
    decoder = FrameDecoder()
    data = (
        bytes((0x01, 5)) + b"<m a="  # text, not final
        + server_control(wsframe.OP_PING)
        + bytes((0x00, 4)) + b"'1'>"  # continuation
        + bytes((0x80, 4)) + b"</m>"  # final continuation
        + server_frame(b"<n/>")
    )  # fmt: skip
    assert _feed(decoder, data, 1) == [b"<m a='1'></m>", b"<n/>"]
    assert decoder.pings == [b""]


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (bytes((0x81, 0x85)) + b"\0\0\0\0<a/>x", "masked"),
        (bytes((0x82, 1)) + b"x", "binary"),
        (bytes((0xC1, 1)) + b"<", "reserved"),
        (bytes((0x80, 1)) + b"<", "continuation"),
        (bytes((0x09, 0)), "control"),
        (bytes((0x01, 1)) + b"<" + bytes((0x81, 1)) + b"<", "inside a fragmented"),
    ],
)
def test_what_a_client_fails_the_connection_on(frame: bytes, why: str) -> None:
    with pytest.raises(WebSocketError, match=why):
        FrameDecoder().feed(frame)


# --- the opening handshake ---------------------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3's example
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n"
)


def test_accept_key_of_rfc_6455() -> None:
    assert accept_key(KEY) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_handshake_response_whole_split_and_followed_by_frames() -> None:
    frames = server_frame(b"<open/>")
    assert parse_handshake_response(RESPONSE[:-1], KEY) == (False, b"")
    assert parse_handshake_response(RESPONSE + frames, KEY) == (True, frames)
    request = wsframe.handshake_request("bench.local:35281", "/xmpp-websocket", KEY)
    assert request.startswith(b"GET /xmpp-websocket HTTP/1.1\r\nHost: bench.local:35281\r\n")
    assert b"\r\nSec-WebSocket-Protocol: xmpp\r\n" in request and request.endswith(b"\r\n\r\n")


def test_handshake_refusals() -> None:
    with pytest.raises(HandshakeRefused, match="404") as refused:
        parse_handshake_response(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", KEY)
    assert refused.value.status == 404
    with pytest.raises(WebSocketError, match="Accept"):
        parse_handshake_response(RESPONSE.replace(b"s3pP", b"xxxx"), KEY)
    with pytest.raises(WebSocketError, match="subprotocol"):
        parse_handshake_response(RESPONSE.replace(b"Sec-WebSocket-Protocol: xmpp\r\n", b""), KEY)


# --- RFC 7395 messages -------------------------------------------------------------------------------


def test_stanzas_get_the_client_namespace_once() -> None:
    assert qualified(b"<iq type='get' id='x'/>") == b"<iq xmlns='jabber:client' type='get' id='x'/>"
    assert qualified(b"<presence/>") == b"<presence xmlns='jabber:client'/>"
    assert qualified(b"<message>hi</message>") == b"<message xmlns='jabber:client'>hi</message>"
    for declared in (b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>x</auth>", b"<r xmlns='urn:xmpp:sm:3'/>"):
        assert qualified(declared) == declared
    assert qualified(b"<stream:error xmlns:stream='s'/>") == b"<stream:error xmlns:stream='s'/>"


def test_messages_become_stream_events() -> None:
    events = MessageFramer().feed_messages(
        [
            b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' from='bench.local' id='s1' version='1.0'/>",
            b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'><bind "
            b"xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
            b" ",  # a keepalive
            b"<iq type='result' id='bind'/>",  # no namespace declared: jabber:client all the same
            b"<?xml version='1.0'?><message xmlns='jabber:client'><body>b</body></message>",
            b"<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>",
        ]
    )
    assert isinstance(events[0], StreamOpened) and events[0].attrs["id"] == "s1"
    tags = [getattr(e, "tag", None) for e in events[1:4]]
    assert tags == ["{http://etherx.jabber.org/streams}features", "{jabber:client}iq", "{jabber:client}message"]
    assert isinstance(events[4], StreamClosed)
    with pytest.raises(StreamError, match="exactly one element"):
        MessageFramer().feed_messages([b"<a/><b/>"])


# --- the client protocol ------------------------------------------------------------------------------


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    """Every client frame in data: (opcode byte, payload)."""
    out = []
    while data:
        b0, _, _, payload, total = parse_client_frame(data)
        out.append((b0, payload))
        data = data[total:]
    return out


def _session(jid: str = "u1@bench.local/bench") -> tuple[Session, WebSocketProtocol, FakeTransport]:
    proto = WebSocketProtocol(KEY)
    transport = FakeTransport()
    proto.connection_made(transport)
    proto.data_received(RESPONSE)
    assert proto.handshake.done() and proto.upgraded
    target = Target("127.0.0.1", 1, "bench.local", tls="direct", transport="websocket")
    return Session(target, proto, jid=jid), proto, transport


async def test_each_element_is_a_frame_and_what_comes_is_parsed_or_sunk() -> None:
    session, proto, transport = _session()
    session.send(proto.stream_header("bench.local"))
    session.send(b"<iq type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>")
    assert _frames(b"".join(transport.written)) == [
        (0x81, b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to=\"bench.local\" version='1.0'/>"),
        (0x81, b"<iq xmlns='jabber:client' type='get' id='r'><query xmlns='jabber:iq:roster'/></iq>"),
    ]
    # A server frame split across reads; a ping answered at once with a pong.
    data = server_frame(b"<iq xmlns='jabber:client' type='result' id='r'/>") + server_control(wsframe.OP_PING, b"k")
    proto.data_received(data[:5])
    proto.data_received(data[5:])
    assert (await session.element()).get("id") == "r"
    assert _frames(transport.written[-1]) == [(0x8A, b"k")]
    assert proto.pongs == 1
    # A sink gets the messages' payloads joined, as it would get a TCP stream's bytes.
    seen: list[bytes] = []
    session.use_sink(seen.append)
    proto.data_received(server_frame(b"<message><body>bt:1:</body></message>") + server_frame(b"<presence/>"))
    assert seen == [b"<message><body>bt:1:</body></message><presence/>"]


async def test_stream_management_requests_and_answers_are_frames_of_their_own() -> None:
    session, proto, transport = _session()
    sm = SmCounter()
    proto.sm = sm
    proto.data_received(server_frame(b"<enabled xmlns='urn:xmpp:sm:3' resume='true'/>"))
    for _ in range(5):
        session.send(b"<presence/>")
    assert _frames(transport.written[-1]) == [(0x81, b"<presence xmlns='jabber:client'/>"), (0x81, SM_REQUEST)]
    r = b"<r xmlns='urn:xmpp:sm:3'/>"
    proto.data_received(server_frame(b"<message/>") + server_frame(r) + server_frame(b"<message/>") + server_frame(r))
    assert _frames(transport.written[-1]) == [(0x81, sm_answer(1)), (0x81, sm_answer(2))]


async def test_closing_is_close_then_the_closing_frame() -> None:
    session, _, transport = _session()
    session.close()
    assert _frames(transport.written[-1]) == [(0x81, wsframe.WS_CLOSE), (0x88, b"\x03\xe8")]
    assert transport.closed


async def test_pair_traffic_writes_one_frame_per_message() -> None:
    a, _, ta = _session("u1@bench.local/bench")
    b, _, _ = _session("u2@bench.local/bench")
    opt = Options(target=a.target, window=3, body_size=40)
    traffic = PairTraffic(opt, [a, b], Outcome())
    traffic.refill(0)
    frames = _frames(ta.written[-1])
    assert len(frames) == 3 and traffic.sent == 3
    for b0, payload in frames:
        assert b0 == 0x81
        message = etree.fromstring(payload)
        assert message.tag == "{jabber:client}message" and message.get("to") == "u2@bench.local/bench"
        assert message.findtext("{jabber:client}body", "").startswith("bt:")


async def test_summary_counts_frames_pings_and_early_closes() -> None:
    a, pa, _ = _session()
    b, pb, _ = _session()
    pa.data_received(server_frame(b"<presence/>") + server_control(wsframe.OP_PING))
    pb.data_received(server_control(wsframe.OP_CLOSE, struct.pack("!H", 1011)))
    c, pc, tc = _session()
    pc.data_received(bytes((0x81, 0x81)) + b"\0\0\0\0<")  # a masked frame from a server
    assert tc.closed
    out = Outcome()
    ws_summary([a, b, c], out)
    assert out.counts == {
        "ws_sessions": 3, "ws_frames_received": 3, "ws_server_pings": 1, "ws_closed_early": 1, "ws_protocol_errors": 1,
    }  # fmt: skip
    assert out.error_count == 2 and "1011" in out.errors[0] and "masked" in out.errors[1]


class NoMeter:
    async def begin(self) -> None:
        return None

    async def end(self) -> None:
        return None

    def server_rss_kb(self) -> int:
        return 0


async def test_a_target_without_websocket_endpoint_is_not_offered() -> None:
    opt = Options(target=Target("127.0.0.1", 1, "bench.local"))
    out = await run_messages_ws((opt, KeyCache(), ssl.create_default_context()), NoMeter(), Shard())
    assert out.info["skipped"] == "not offered: no WebSocket endpoint for bench.local (--ws-port)"
    assert out.error_count == 0 and not out.latencies_us


# --- against a real WebSocket server (aiohttp) on loopback ---------------------------------------------


async def _server(handler: Any) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_get("/xmpp-websocket", handler)
    runner = web.AppRunner(app, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, port


async def test_against_aiohttp_echo_ping_big_message_and_closing() -> None:
    seen: list[Any] = []
    big = "<m>" + "y" * 70_000 + "</m>"

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=("xmpp",), autoping=False)
        await ws.prepare(request)
        await ws.ping(b"hb")
        seen.append((await ws.receive()).type)  # our pong
        async for msg in ws:
            seen.append(msg.data)
            if msg.type is aiohttp.WSMsgType.TEXT and "close" in msg.data:
                await ws.send_str(wsframe.WS_CLOSE.decode())
            elif msg.type is aiohttp.WSMsgType.TEXT:
                await ws.send_str(msg.data)
                await ws.send_str(big)
        return ws

    runner, port = await _server(handler)
    target = Target("127.0.0.1", port, "bench.local", tls="none", transport="websocket", timeout=5.0)
    session = await connect_websocket(target, None)
    try:
        session.send(b"<presence/>")
        assert (await session.element()).tag == "{jabber:client}presence"
        # 64-bit length; without a namespace of its own, in the one it can only mean
        assert (await session.element()).tag == "{jabber:client}m"
        closing = await close_websockets([session], 5.0)
        assert closing == {"close_answered": 1, "close_frames": 1, "closed_by_server": 1}
        assert seen[0] is aiohttp.WSMsgType.PONG
        assert seen[1:3] == ["<presence xmlns='jabber:client'/>", wsframe.WS_CLOSE.decode()]
    finally:
        session.close()
        await runner.shutdown()
        await runner.cleanup()


async def test_an_endpoint_that_is_not_there_is_not_offered() -> None:
    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="x")

    runner, port = await _server(plain)
    try:
        target = Target("127.0.0.1", port, "bench.local", tls="none", transport="websocket", ws_path="/nothing")
        with pytest.raises(NotOffered, match="404"):
            await connect_websocket(target, None)
    finally:
        await runner.cleanup()


# --- the report ---------------------------------------------------------------------------------------


def _rec(target: str, scenario: str, **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "target": target,
        "scenario": scenario,
        "params": {"rate": 0.0, "archive": "off", "tls": "starttls"},
        "results": {},
        "errors": 0,
        "cpu": {"server_cpu_pct": 99.0, "loadgen_cpu_pct": 30.0},
        "rate_unit": "msg/s",
    }
    rec.update(kw)
    return rec


def _rows(md: str) -> dict[str, list[str]]:
    lines = [line for line in md.splitlines()[2:] if line.startswith("|")]
    return {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in lines}


def test_report_rows_for_websocket() -> None:
    x, p, e = "xmppd abc (postgresql)", "prosody 0.12", "ejabberd 23.01"
    ws_params = {"rate": 0.0, "archive": "off", "tls": "wss", "transport": "websocket"}
    records = [
        _rec(x, "messages", rate=40000.0),
        _rec(x, "messages-ws", rate=30000.0, params=ws_params),
        _rec(p, "messages", rate=16000.0),
        _rec(p, "messages-ws", rate=12000.0, params=ws_params),
        _rec(e, "messages", rate=12000.0),
        {"target": e, "scenario": "messages-ws", "skipped": "not offered: no XMPP over WebSocket at wss://x: 404"},
    ]
    md = report.table(records)
    rows = _rows(md)
    assert rows["1:1 msg/s over WebSocket (TLS)"] == ["30,000", "12,000", "", "2.50x"]
    assert rows["WebSocket / TCP msg/s (same server)"] == ["0.75", "0.75", "", ""]
    assert rows["load generator CPU % during 1:1 max over WebSocket"] == ["30", "30", "", ""]
    assert rows["1:1 msg/s, archive off"] == ["40,000", "16,000", "12,000", "2.50x"]  # TCP's row unchanged
    assert "- ejabberd 23.01: messages-ws skipped: not offered: no XMPP over WebSocket at wss://x: 404" in md


def test_loadgen_note_for_websocket() -> None:
    res = {
        "ws_sessions": 100, "ws_frames_received": 5000, "ws_server_pings": 0, "ws_closed_early": 0,
        "ws_close_answered": 100, "ws_close_frames": 99, "ws_closed_by_server": 98,
    }  # fmt: skip
    rec = _rec("xmppd", "messages-ws", rate=1.0, results=res, params={"tls": "wss", "ws_path": "/xmpp-websocket"})
    note = ws_note(rec)
    assert "100 WebSocket sessions (wss, path /xmpp-websocket)" in note
    assert note.endswith("answered <close/> on 100, sent its closing frame on 99 and closed the connection on 98")
    assert note in markdown([rec])


# --- xmppd's config: the HTTP side the scenario connects to ------------------------------------------


def test_xmppd_bench_config_serves_websocket_on_loopback(tmp_path: Path) -> None:
    out = tmp_path / "xmppd.toml"
    values = {
        "OUT": str(tmp_path), "DOMAIN": "bench.local", "C2S_PORT": "35222", "C2S_TLS_PORT": "35223",
        "HTTP_PORT": "35280", "HTTP_TLS_PORT": "35281", "PG_PORT": "15432", "STORAGE": "sqlite",
        "MODULES": '"ping"', "C2S_LIMITS": "", "MODULE_OPTIONS": "",
    }  # fmt: skip
    render(Path(__file__).resolve().parents[2] / "bench" / "templates" / "xmppd.toml", out, values)
    http = load_config(out).http
    assert (http.port, http.tls_port, http.websocket_path) == (35280, 35281, "/xmpp-websocket")
    assert http.interfaces == http.tls_interfaces == ("127.0.0.1",)
