"""The output side of xmppd/net.py's TcpTransport against a fake asyncio transport: the writes of
one event-loop pass coalesced into one send, the cut-off of a client that does not read
(MAX_WRITE_BUFFER), closing with and without a closing tag, and nothing written after a close."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Callable

import pytest

from xmppd import net
from xmppd.config import load_config
from xmppd.errors import StreamError
from xmppd.framing import Opening
from xmppd.net import TcpTransport

CLOSE_TAG = b"</stream:stream>"


class FakeTransport:
    """Records what TcpTransport asks of its asyncio transport, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, bytes]] = []
        self.buffer_size = 0  # what get_write_buffer_size() reports (set by a test)
        self.closing = False
        self.aborted = asyncio.Event()

    def write(self, data: bytes) -> None:
        self.calls.append(("write", data))

    def close(self) -> None:
        self.calls.append(("close", b""))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", b""))
        self.closing = True
        self.aborted.set()

    def resume_reading(self) -> None:
        self.calls.append(("resume", b""))

    def pause_reading(self) -> None:
        self.calls.append(("pause", b""))

    def get_write_buffer_size(self) -> int:
        return self.buffer_size

    def is_closing(self) -> bool:
        return self.closing

    @property
    def writes(self) -> list[bytes]:
        return [data for call, data in self.calls if call == "write"]

    @property
    def actions(self) -> list[str]:
        return [call for call, _data in self.calls]


@pytest.fixture
def fake() -> FakeTransport:
    return FakeTransport()


@pytest.fixture
async def transport(fake: FakeTransport) -> TcpTransport:
    # TcpTransport reads only server.config.c2s (the parser's size limit) when it is made.
    server = types.SimpleNamespace(config=load_config(None))
    tcp = TcpTransport(server, direct_tls=False)  # type: ignore[arg-type]
    # The unit under test is the output side. connection_made() would also start the stream
    # task (negotiation, the server's connection limits) on this fake, so the asyncio transport
    # is set directly, as connection_made() sets it.
    tcp._transport = fake  # type: ignore[assignment]
    return tcp


async def next_pass() -> None:
    """Return after one full pass of the event loop: callbacks scheduled with call_soon before
    this (TcpTransport's flush) run first, since the loop runs ready callbacks in FIFO order."""
    loop = asyncio.get_running_loop()
    passed = loop.create_future()
    loop.call_soon(passed.set_result, None)
    await passed


# -- coalescing ------------------------------------------------------------------------------------


async def test_writes_of_one_loop_pass_are_one_send(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.write(b"<message id='1'/>")
    transport.write(b"<message id='2'/>")
    transport.write(b"<message id='3'/>")
    assert fake.calls == []  # nothing is sent before the pass ends
    await next_pass()
    assert fake.calls == [("write", b"<message id='1'/><message id='2'/><message id='3'/>")]


async def test_a_single_write_is_sent_as_it_is(transport: TcpTransport, fake: FakeTransport) -> None:
    data = b"<presence/>"
    transport.write(data)
    await next_pass()
    assert fake.writes == [data]
    assert fake.writes[0] is data  # not copied through a join


async def test_writes_of_later_passes_are_separate_sends(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.write(b"<a/>")
    await next_pass()
    transport.write(b"<b/>")
    transport.write(b"<c/>")
    await next_pass()
    transport.write(b"<d/>")
    await next_pass()
    assert fake.calls == [("write", b"<a/>"), ("write", b"<b/><c/>"), ("write", b"<d/>")]


async def test_open_is_written_like_any_other_write(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.open(Opening("localhost", "s1"), b"<features-here/>")
    transport.write(b"<x/>")
    await next_pass()
    (data,) = fake.writes
    assert data.startswith(b"<?xml") and b"<stream:stream" in data and b"id='s1'" in data.replace(b'"', b"'")
    assert data.endswith(b"<stream:features><features-here/></stream:features><x/>")


async def test_nothing_is_sent_to_a_transport_that_is_closing(transport: TcpTransport, fake: FakeTransport) -> None:
    fake.closing = True
    transport.write(b"<late/>")
    await next_pass()
    assert fake.calls == []


# -- a client that does not read ---------------------------------------------------------------


async def test_a_reader_too_far_behind_is_cut_off(transport: TcpTransport, fake: FakeTransport) -> None:
    fake.buffer_size = net.MAX_WRITE_BUFFER + 1
    transport.write(b"<one/>")
    transport.write(b"<two/>")
    await next_pass()
    assert fake.actions == ["write", "write", "abort"]
    assert fake.writes[0] == b"<one/><two/>"
    farewell = fake.writes[1]
    assert b"<stream:error" in farewell and b"<policy-violation" in farewell
    assert farewell.endswith(CLOSE_TAG)
    assert transport.closed and transport.ended
    # Whatever comes later is dropped, closing included.
    transport.write(b"<three/>")
    await next_pass()
    transport.close(StreamError("system-shutdown"))
    transport.drop()
    assert fake.actions == ["write", "write", "abort"]


async def test_a_reader_at_the_limit_is_not_cut_off(transport: TcpTransport, fake: FakeTransport) -> None:
    fake.buffer_size = net.MAX_WRITE_BUFFER
    transport.write(b"<one/>")
    await next_pass()
    transport.write(b"<two/>")
    await next_pass()
    assert fake.calls == [("write", b"<one/>"), ("write", b"<two/>")]
    assert not transport.closed and not transport.ended


# -- closing -------------------------------------------------------------------------------------


async def test_close_with_an_error_sends_what_was_written_the_error_and_the_closing_tag(
    transport: TcpTransport, fake: FakeTransport
) -> None:
    transport.write(b"<pending/>")
    transport.close(StreamError("conflict", "replaced by a new session"))
    # At once, not at the end of the pass: one write; then it lingers, reading (see below).
    assert fake.actions == ["write", "resume"]
    (data,) = fake.writes
    assert data.startswith(b"<pending/><stream:error")
    assert b"<conflict" in data and b"replaced by a new session" in data
    assert data.endswith(CLOSE_TAG) and data.count(CLOSE_TAG) == 1
    assert transport.closed and transport.ended
    await next_pass()  # the flush scheduled by the write finds nothing more to send
    assert fake.actions == ["write", "resume"]
    transport.eof_received()  # the peer closes its side: so do we
    assert fake.actions == ["write", "resume", "close"]


async def test_a_closed_stream_drops_what_still_arrives_and_cuts_a_peer_that_keeps_sending(
    transport: TcpTransport, fake: FakeTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Closing a socket with unread input sends a reset that can destroy the stream error on its
    # way: the transport reads and drops input for LINGER seconds, then cuts the connection.
    monkeypatch.setattr(net, "LINGER", 0.01)
    transport.close(StreamError("policy-violation"))
    transport.data_received(b"<iq type='get' id='more'/>" * 100)
    assert transport._received == []  # dropped, never parsed or handled
    async with asyncio.timeout(5):
        await fake.aborted.wait()
    assert fake.actions == ["write", "resume", "abort"]


async def test_close_without_an_error_sends_the_closing_tag(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.eof_received()  # the peer closed first: nothing to linger for
    transport.close()
    assert fake.calls == [("write", CLOSE_TAG), ("close", b"")]
    assert transport.ended


async def test_close_before_our_header_sends_the_header_first(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.close(StreamError("host-unknown"), Opening("localhost", "s2"))
    (data,) = fake.writes
    assert data.index(b"<stream:stream") < data.index(b"<host-unknown") < data.index(CLOSE_TAG)
    assert fake.actions == ["write", "resume"]


async def test_drop_closes_without_a_closing_tag(transport: TcpTransport, fake: FakeTransport) -> None:
    transport.drop()
    assert fake.calls == [("close", b"")]
    assert transport.closed and not transport.ended  # not ended by us: a lost connection


async def test_drop_sends_what_was_already_written_but_no_closing_tag(
    transport: TcpTransport, fake: FakeTransport
) -> None:
    transport.write(b"<last/>")
    transport.drop()
    assert fake.calls == [("write", b"<last/>"), ("close", b"")]
    assert not transport.ended


@pytest.mark.parametrize(
    "after",
    [
        lambda t: t.write(b"<ignored/>"),
        lambda t: t.open(Opening("localhost", "s3"), b""),
        lambda t: t.close(StreamError("system-shutdown")),
        lambda t: t.close(),
        lambda t: t.drop(),
    ],
    ids=["write", "open", "close-error", "close", "drop"],
)
@pytest.mark.parametrize("first", ["close", "drop", "connection_lost"])
async def test_nothing_happens_after_the_connection_is_closed(
    transport: TcpTransport, fake: FakeTransport, first: str, after: Callable[[TcpTransport], None]
) -> None:
    if first == "close":
        transport.close()
    elif first == "drop":
        transport.drop()
    else:
        transport.connection_lost(None)
    before = list(fake.calls)
    after(transport)
    await next_pass()
    assert fake.calls == before


async def test_closing_a_stream_to_a_slow_reader_sends_one_closing_tag(
    transport: TcpTransport, fake: FakeTransport
) -> None:
    fake.buffer_size = net.MAX_WRITE_BUFFER + 1
    transport.close(StreamError("system-shutdown"))
    data = b"".join(fake.writes)
    assert data.count(CLOSE_TAG) == 1 and data.endswith(CLOSE_TAG)
    assert data.count(b"<stream:error") == 1
