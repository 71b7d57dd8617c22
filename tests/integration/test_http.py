"""The HTTP side (xmppd/http.py) of a real server: plain HTTP on loopback and HTTPS with the c2s
certificate, XEP-0156 host-meta in both formats with CORS headers, and routes that come and go
with the modules that add them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from lxml import etree

from storage import Storage
from tests.integration.conftest import XmppServer, running_server
from tests.integration.tools import insecure
from xmppd.http import BOSH_REL, WEBSOCKET_REL, XRD_NS

pytestmark = pytest.mark.integration


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    async with running_server(storage, tmp_path) as running:
        yield running


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as client, client.get(url, ssl=insecure()) as response:
        return response.status, dict(response.headers), await response.read()


async def test_host_meta_in_both_formats_with_cors_over_http_and_https(xmpp: XmppServer) -> None:
    http = f"http://127.0.0.1:{xmpp.server.ports['http']}"
    https = f"https://localhost:{xmpp.server.ports['https']}"
    xmpp.server.http.endpoints.update({WEBSOCKET_REL: "/ws-test", BOSH_REL: "/bosh-test"})
    for base, ws in ((http, "ws://127.0.0.1"), (https, "wss://localhost")):
        status, headers, body = await get(f"{base}/.well-known/host-meta")
        assert status == 200 and headers["Content-Type"].startswith("application/xrd+xml")
        assert headers["Access-Control-Allow-Origin"] == "*"
        xrd = etree.fromstring(body)
        links = {link.get("rel"): link.get("href") for link in xrd.iterchildren(f"{{{XRD_NS}}}Link")}
        port = base.rsplit(":", 1)[1]
        assert links == {WEBSOCKET_REL: f"{ws}:{port}/ws-test", BOSH_REL: f"{base}/bosh-test"}

        status, headers, body = await get(f"{base}/.well-known/host-meta.json")
        assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
        assert {link["rel"]: link["href"] for link in json.loads(body)["links"]} == links


async def test_a_route_answers_only_while_its_module_is_loaded(xmpp: XmppServer) -> None:
    base = f"http://127.0.0.1:{xmpp.server.ports['http']}"
    assert (await get(f"{base}/no-such-page"))[0] == 404
    routes = xmpp.server.http.routes
    assert ("GET", "/.well-known/host-meta") in routes
    handler = routes.pop(("GET", "/.well-known/host-meta"))  # as a module's unload removes its route
    assert (await get(f"{base}/.well-known/host-meta"))[0] == 404
    routes[("GET", "/.well-known/host-meta")] = handler
    assert (await get(f"{base}/.well-known/host-meta"))[0] == 200
