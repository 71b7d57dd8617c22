"""Scenario 7, the floor: a minimal asyncio XMPP router with the same parser and no features.

It accepts a plaintext stream, offers only <bind/>, takes the bare JID from the stream header's
`from` (no authentication), answers every iq with an empty result, ignores presence, and routes
<message/> to the full JID in `to` after parsing it with lxml's XMLPullParser and serializing it
again. The load generator drives it with `--tls none --mechanism none`. Whatever xmppd routes below
this floor is the cost of its features (checks, hooks, storage), not of Python or the parser.

    python -m bench.floor --port 25999 [--max-seconds 3600]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from typing import cast

from lxml import etree

CLIENT = "{jabber:client}"
BIND = "{urn:ietf:params:xml:ns:xmpp-bind}bind"
HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' from='{domain}' id='{sid}' version='1.0'>"
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
)


class Router:
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.sessions: dict[str, FloorConnection] = {}
        self.next_id = 0


class FloorConnection(asyncio.Protocol):
    def __init__(self, router: Router) -> None:
        self.router = router
        self.parser = etree.XMLPullParser(events=("start", "end"), resolve_entities=False)
        self.depth = 0
        self.root: etree._Element | None = None
        self.bare = ""
        self.jid = ""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        if self.router.sessions.get(self.jid) is self:
            del self.router.sessions[self.jid]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed(data)
            for kind, el in self.parser.read_events():
                self.event(kind, cast(etree._Element, el))
        except etree.XMLSyntaxError:
            self.close()

    def event(self, kind: str, el: etree._Element) -> None:
        if kind == "start":
            self.depth += 1
            if self.depth == 1:
                self.opened(el)
            return
        self.depth -= 1
        if self.depth == 0:
            self.close()
        elif self.depth == 1:
            if self.root is not None:
                self.root.remove(el)
            self.stanza(el)

    def opened(self, root: etree._Element) -> None:
        self.root = root
        self.bare = root.get("from", "")
        self.router.next_id += 1
        self.write(HEADER.format(domain=self.router.domain, sid=self.router.next_id).encode())

    def stanza(self, el: etree._Element) -> None:
        tag = el.tag
        if tag == CLIENT + "message":
            target = self.router.sessions.get(el.get("to", ""))
            if target is not None:
                el.set("from", self.jid)
                target.write(etree.tostring(el))
        elif tag == CLIENT + "iq":
            self.iq(el)

    def iq(self, el: etree._Element) -> None:
        iq_id = el.get("id", "")
        bind = el.find(BIND)
        if bind is None:
            self.write(f"<iq type='result' id='{iq_id}'/>".encode())
            return
        resource = bind.findtext("{urn:ietf:params:xml:ns:xmpp-bind}resource") or str(self.router.next_id)
        self.jid = f"{self.bare}/{resource}"  # the simple rule: stream 'from' + requested resource
        self.router.sessions[self.jid] = self
        self.write(
            f"<iq type='result' id='{iq_id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<jid>{self.jid}</jid></bind></iq>".encode()
        )

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()


async def serve(host: str, port: int, domain: str, max_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    router = Router(domain)
    server = await loop.create_server(lambda: FloorConnection(router), host, port, backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    gc.freeze()  # as a tuned server would: start-up objects never need collecting again
    async with server:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), max_seconds)  # bounded, like every loop here


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=25999)
    p.add_argument("--domain", default="bench.local")
    p.add_argument("--max-seconds", type=float, default=3600.0)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    asyncio.run(serve(args.host, args.port, args.domain, args.max_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
