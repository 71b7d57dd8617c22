"""The server's own cost per routed message, measured in one process without sockets or TLS.

`bench/run.sh` measures whole servers over loopback TLS, where the figures of one version move by
10% and more between runs on a shared VM. This measures only what xmppd's code does per message,
in CPU time (`time.process_time`), best of several rounds, so two versions can be compared to a
percent or two:

- `core`: `Router.process` of a chat message from a bound, available session to another (hooks,
  blocking, carbons, offline, delivery into a transport that only counts);
- `wire`: bytes in through the real TCP transport and stream driver (parse, route, deliver,
  coalesced writes into a fake asyncio transport), `--chunk` messages per read.

    python -m bench.datapath [--rounds 7] [--chunk 2]      # pin it: taskset -c 0 python -m ...
    python -m bench.datapath --archive [--address bare]    # the wire path with the archive (mam) on

Uses a throw-away SQLite database; the optional modules are those `bench/run.sh` loads without
the archive. With `--archive` only the wire path is measured, with `mam` loaded: every message is
archived twice (sender's and recipient's copy) and durable before delivery, and the CPU time
includes the SQLite worker thread's.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lxml import etree

import storage as storage_api
from xmppd.config import load_config
from xmppd.jid import parse_jid
from xmppd.module import load_module
from xmppd.net import TcpTransport
from xmppd.server import Server
from xmppd.stream import C2SStream

MODULES = ("ping", "version", "register", "caps", "contact_addresses", "offline", "carbons", "blocking")
HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='localhost' version='1.0'>"
)
PAIRS, PER_SENDER = 50, 400
ARCHIVED_PER_SENDER = 100  # each costs two database rows: fewer, so that a round stays short


class CountingTransport:
    """An asyncio transport that counts what it is given and never blocks."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


async def start_server(tmp: Path, modules: tuple[str, ...]) -> Server:
    config = load_config(None)
    # Throughput, not the per-session rate limits, as in bench/templates/xmppd.toml.
    unlimited = dataclasses.replace(config.c2s, stanza_rate=1e9, stanza_burst=10**9, byte_rate=2**40, byte_burst=2**40)
    config = dataclasses.replace(config, hosts=("localhost",), modules=modules, data_dir=tmp, c2s=unlimited)
    defaults = {
        name: {key: option.default for key, option in getattr(load_module(name), "OPTIONS", {}).items()}
        for name in config.all_modules
    }
    config = dataclasses.replace(config, module_options=defaults)
    storage = await storage_api.open_storage("sqlite", sqlite_path=str(tmp / "bench.sqlite3"))
    await storage.migrate()
    server = Server(config, storage=storage)
    for host in server.hosts.values():
        await server.load_modules(host)
    return server


async def endpoint(server: Server, user: str) -> tuple[C2SStream, TcpTransport, CountingTransport]:
    """A bound, available session on a real TcpTransport whose asyncio side is a counter."""
    assert await server.storage.accounts.create("localhost", user, [])
    transport = TcpTransport(server, direct_tls=True)
    counter = CountingTransport()
    transport._transport = counter  # type: ignore[assignment]  # the asyncio side, faked
    stream = C2SStream(server, transport, tls_active=True)
    stream.session = await server.bind(parse_jid(f"{user}@localhost/r"), transport, "127.0.0.1")
    transport.parser.feed(HEADER)
    await server.router.process(stream.session, etree.fromstring("<presence xmlns='jabber:client'/>"))
    return stream, transport, counter


def flush_all(ends: list[tuple[C2SStream, TcpTransport, CountingTransport]]) -> int:
    """Write what the transports coalesced in the last loop pass now (the loop would, in its next
    pass: part of the measured work), and return the bytes they were given in all."""
    for _stream, transport, _counter in ends:
        transport.flush()
    return sum(counter.written for _s, _t, counter in ends)


def messages(rnd: int, sender: int, count: int = PER_SENDER, address: str = "full") -> list[bytes]:
    body = "a" * 100
    to = f"r{rnd}u{sender ^ 1}@localhost" + ("/r" if address == "full" else "")
    return [f"<message to='{to}' type='chat' id='m{k}'><body>{body}</body></message>".encode() for k in range(count)]


async def core_round(server: Server, rnd: int) -> float:
    ends = [await endpoint(server, f"r{rnd}u{i}") for i in range(2 * PAIRS)]
    namespaced = b"<message xmlns='jabber:client' "
    elements = [
        [etree.fromstring(text.replace(b"<message ", namespaced, 1)) for text in messages(rnd, i)]
        for i in range(2 * PAIRS)
    ]
    process = server.router.process
    started = time.process_time()
    for k in range(PER_SENDER):
        for (stream, _transport, _counter), mine in zip(ends, elements, strict=True):
            assert stream.session is not None
            await process(stream.session, mine[k])
    written = flush_all(ends)
    elapsed = time.process_time() - started
    assert written > 2 * PAIRS * PER_SENDER * 100  # every message reached a transport
    return elapsed


async def wire_round(server: Server, rnd: int, chunk: int, count: int = PER_SENDER, address: str = "full") -> float:
    ends = [await endpoint(server, f"r{rnd}u{i}") for i in range(2 * PAIRS)]

    async def drive(stream: C2SStream, transport: TcpTransport, texts: list[bytes]) -> None:
        routing = asyncio.ensure_future(stream._route([]))
        for start in range(0, len(texts), chunk):
            if start:
                while transport._received:  # noqa: ASYNC110  # a client that sends when the server has read
                    await asyncio.sleep(0)
            transport.data_received(b"".join(texts[start : start + chunk]))
        transport.eof_received()  # read after what was received
        await routing

    started = time.process_time()
    await asyncio.gather(*(drive(s, t, messages(rnd, i, count, address)) for i, (s, t, _c) in enumerate(ends)))
    written = flush_all(ends)
    elapsed = time.process_time() - started
    assert written > 2 * PAIRS * count * 100  # every message reached a transport
    return elapsed


async def main(args: Any) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = await start_server(Path(tmp), (*MODULES, "mam") if args.archive else MODULES)
        gc.collect()
        gc.freeze()  # as `xmppd serve` does
        per_sender = ARCHIVED_PER_SENDER if args.archive else PER_SENDER
        count = 2 * PAIRS * per_sender
        runs: list[tuple[str, Callable[[Server, int], Awaitable[float]]]] = [
            ("core", core_round),
            # With the archive every message waits for a commit: one read of all of a sender's
            # messages, so that no sender spins on the loop while it waits.
            ("wire", lambda server, rnd: wire_round(
                server, rnd + 1000, per_sender if args.archive else args.chunk, per_sender, args.address)),
        ]
        for name, run in runs[1:] if args.archive else runs:
            best = float("inf")
            for rnd in range(args.rounds):
                best = min(best, await run(server, rnd))
                for session in server.sessions.all():
                    await server.session_ended(session, "round over")
            label = f"{name}{' with the archive' if args.archive else ''}, to {args.address} JIDs"
            print(f"{label}: {best / count * 1e6:.2f} us/message (best of {args.rounds} rounds of {count})")
        await server.storage.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--chunk", type=int, default=2, help="messages per read in the wire measurement")
    parser.add_argument("--archive", action="store_true", help="load mam: the wire path with every message archived")
    parser.add_argument("--address", choices=("full", "bare"), default="full", help="send to full or bare JIDs")
    asyncio.run(main(parser.parse_args()))
