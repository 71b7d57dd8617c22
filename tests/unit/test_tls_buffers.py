"""The tweaks of asyncio's TLS receive buffers (xmppd/tls.py): one TLS record instead of 256 KiB,
and one buffer shared by every connection instead of one each. asyncio has no public knob for
either, so this checks that the Python in use still has what they set, that they set it, and
that connections sharing the buffer lose nothing."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from pathlib import Path

from xmppd.tls import TLS_READ_BUFFER, limit_tls_read_buffers, self_signed, share_tls_read_buffer


def test_this_python_still_has_the_attribute() -> None:
    # If this fails after a Python upgrade, idle TLS sessions cost 256 KiB more each: find the
    # new way before upgrading.
    assert isinstance(asyncio.sslproto.SSLProtocol.max_size, int)


def test_the_server_start_lowers_it_to_one_tls_record() -> None:
    original = asyncio.sslproto.SSLProtocol.max_size
    try:
        limit_tls_read_buffers()
        assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 17 * 1024
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original


# -- one receive buffer for every connection ---------------------------------------------------------


class Collector(asyncio.Protocol):
    """The server side of a test connection: keeps its transport and what it receives."""

    def __init__(self, connections: list[Collector]) -> None:
        self.received = bytearray()
        self.transport: asyncio.BaseTransport | None = None
        self.shared = False
        connections.append(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.shared = share_tls_read_buffer(transport)

    def data_received(self, data: bytes) -> None:
        self.received += data


async def test_tls_connections_share_one_receive_buffer_and_lose_nothing(tmp_path: Path) -> None:
    original = asyncio.sslproto.SSLProtocol.max_size
    limit_tls_read_buffers()
    try:
        cert, key = self_signed(tmp_path, ("localhost",))
        server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server_context.load_cert_chain(cert, key)
        client_context = ssl.create_default_context(cafile=str(cert))
        loop = asyncio.get_running_loop()
        connections: list[Collector] = []
        server = await loop.create_server(lambda: Collector(connections), "127.0.0.1", 0, ssl=server_context)
        port = server.sockets[0].getsockname()[1]
        payloads = [bytes([65 + n]) * 100_000 for n in range(3)]  # several records each, interleaved
        writers = []
        for _ in payloads:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context,
                                                            server_hostname="localhost")
            writers.append(writer)
        for chunk in range(0, 100_000, 10_000):
            for writer, payload in zip(writers, payloads, strict=True):
                writer.write(payload[chunk : chunk + 10_000])
        for writer in writers:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        server.close()
        await server.wait_closed()
        assert len(connections) == 3 and all(c.shared for c in connections)
        protocols = [getattr(c.transport, "_ssl_protocol", None) for c in connections]
        assert len({id(p._ssl_buffer) for p in protocols if p is not None}) == 1  # one for all
        assert sorted(bytes(c.received) for c in connections) == payloads
    finally:
        asyncio.sslproto.SSLProtocol.max_size = original


def test_a_plain_transport_keeps_what_it_has() -> None:
    assert not share_tls_read_buffer(asyncio.BaseTransport())
