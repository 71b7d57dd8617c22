"""The HTTP side of the server: one aiohttp application, served on a plain port (loopback by default)
and a TLS port (the c2s certificates, chosen by SNI), in the server's own event loop.

What it serves is registered before it starts: the transports that carry client streams over HTTP
(XMPP over WebSocket, BOSH) and what modules add with `mod.add_http_route` (file upload, the web
chat, later metrics and an admin API). Routes are server-wide, not per host: the same path on every
host name the server answers to; a handler that cares looks at the request's Host. A module loaded
on several hosts registers its route once (the first registration of a method and path wins).

It serves XEP-0156 discovery itself: `/.well-known/host-meta` (XRD) and `/.well-known/host-meta.json`
(JRD) name the WebSocket and BOSH endpoints of the server as clients reach them (`[http]
public_url`, or the scheme and Host of the request), with CORS headers so that a web client on
another origin can read them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from xmppd.server import Server

log = logging.getLogger("xmppd.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
WEBSOCKET_REL = "urn:xmpp:alt-connections:websocket"
BOSH_REL = "urn:xmpp:alt-connections:xbosh"
# The endpoints of the transports (xmppd/websocket.py, xmppd/bosh.py).
WEBSOCKET_PATH = "/xmpp-websocket"
BOSH_PATH = "/http-bind"
# What a browser on any origin may read and send (CORS, for host-meta, BOSH and uploads).
CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, HEAD, POST, PUT, OPTIONS",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Max-Age": "86400",
}


class HttpService:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.routes: dict[tuple[str, str], Handler] = {}
        self.endpoints: dict[str, str] = {}  # host-meta rel -> path, for the transports that are on
        self._runner: web.AppRunner | None = None
        self._listeners: list[asyncio.AbstractServer] = []
        self.add_route("GET", "/.well-known/host-meta", self.host_meta)
        self.add_route("GET", "/.well-known/host-meta.json", self.host_meta_json)

    def add_route(self, method: str, path: str, handler: Handler) -> bool:
        """Serve `method` on `path` with `handler`; False when that route is taken already."""
        key = (method.upper(), path)
        if key in self.routes:
            return False
        self.routes[key] = handler
        return True

    def remove_route(self, method: str, path: str, handler: Handler) -> None:
        key = (method.upper(), path)
        if self.routes.get(key) is handler:
            del self.routes[key]

    def add_endpoint(self, rel: str, path: str, handler: Handler, methods: tuple[str, ...] = ("GET",)) -> None:
        """A transport's endpoint, named in host-meta under `rel`."""
        for method in methods:
            self.add_route(method, path, handler)
        self.endpoints[rel] = path

    # -- lifecycle --------------------------------------------------------------------------
    async def start(self) -> None:
        config = self.server.config.http
        plan = [
            (name, interfaces, port, tls)
            for name, interfaces, port, tls in (
                ("http", config.interfaces, config.port, False),
                ("https", config.tls_interfaces, config.tls_port, True),
            )
            if port
        ]
        if not plan:
            return
        app = web.Application(handler_args={"max_field_size": 16 * 1024})
        # Each route looks itself up per request, so that one a module removes stops answering.
        for method, path in self.routes:
            app.router.add_route(method, path, self._dispatch(method, path))
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        protocol = self._runner.server
        assert protocol is not None  # made by setup()
        loop = asyncio.get_running_loop()
        for name, interfaces, port, tls in plan:
            listener = await loop.create_server(
                protocol, list(interfaces), port, ssl=self.server.tls.https() if tls else None,
                reuse_address=True,
            )
            self._listeners.append(listener)
            self.server.ports[name] = listener.sockets[0].getsockname()[1]

    def stop_accepting(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    async def stop(self) -> None:
        self.stop_accepting()
        if self._runner is not None:
            await self._runner.cleanup()  # closes open connections, WebSockets included
            self._runner = None

    def _dispatch(self, method: str, path: str) -> Handler:
        async def dispatch(request: web.Request) -> web.StreamResponse:
            handler = self.routes.get((method, path))
            if handler is None:
                raise web.HTTPNotFound()
            return await handler(request)

        return dispatch

    def url_for(self, host: str) -> str:
        """The base URL the server hands out for `host` when no request says how it was reached."""
        config = self.server.config.http
        if config.public_url:
            return config.public_url
        if config.tls_port:
            return f"https://{host}:{self.server.ports.get('https', config.tls_port)}"
        return f"http://{config.interfaces[0]}:{self.server.ports.get('http', config.port)}"

    # -- XEP-0156 ---------------------------------------------------------------------------
    def base_url(self, request: web.Request, *, websocket: bool = False) -> str:
        """How the client that sent `request` reaches this server (public_url, or its own view)."""
        base = self.server.config.http.public_url or f"{request.scheme}://{request.host}"
        if websocket:
            return "ws" + base.removeprefix("http")
        return base

    def _links(self, request: web.Request) -> list[tuple[str, str]]:
        return [
            (rel, self.base_url(request, websocket=rel == WEBSOCKET_REL) + path)
            for rel, path in sorted(self.endpoints.items())
        ]

    async def host_meta(self, request: web.Request) -> web.StreamResponse:
        links = "".join(f'<Link rel="{rel}" href="{href}"/>' for rel, href in self._links(request))
        body = f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{XRD_NS}'>{links}</XRD>\n"
        return web.Response(text=body, content_type="application/xrd+xml", headers=CORS)

    async def host_meta_json(self, request: web.Request) -> web.StreamResponse:
        links = [{"rel": rel, "href": href} for rel, href in self._links(request)]
        return web.json_response({"links": links}, headers=CORS)


async def cors_preflight(_request: web.Request) -> web.StreamResponse:
    """The answer to a CORS preflight (OPTIONS) on a route that allows any origin."""
    return web.Response(status=204, headers=CORS)
