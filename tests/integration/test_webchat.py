"""The web chat (xmppd/modules/webchat.py) of a real server: Converse.js in a real headless Chromium.

The browser test: two people log in through Converse's login form at `http://127.0.0.1:<port>/chat`
(each in a browser context of their own), Alice writes to Bob from her contact list, Bob sees it
unread next to her name and reads it, Alice sees the delivery receipt and Bob typing, then Bob's
answer; Alice sends a picture (file upload) and Bob's page shows it; both join a new room and Bob
reads what Alice writes there. The browser is Debian's Chromium (/usr/bin/chromium, or $CHROMIUM)
driven by playwright-core from npm (tests/integration/browser/webchat.mjs, which prints what it saw
as JSON); Converse.js is the npm package pinned in web/package-lock.json. Screenshots are left in
tests/artifacts/ (ignored by git) to be looked at: webchat-alice.png and webchat-bob.png (the
one-to-one chat), webchat-alice-room.png and webchat-bob-room.png. Every request the pages made
went to 127.0.0.1: the page needs no other network.

Without node, npm or Chromium the browser test is skipped, except under CI=true where it fails
(.ci/run installs them). The missing npm packages are installed here (`npm ci`) if npm is there.

The rest needs no browser: the page's settings and headers, what the asset route serves and what it
refuses, the 503 page when Converse.js is not installed, and the module on a server whose HTTP side
is off. These run on a stand-in dist directory of a few files, so they need no npm either.

The web chat does not touch storage, so these tests run on SQLite only.
"""

from __future__ import annotations

import asyncio
import dataclasses
import html
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from storage import Storage
from storage.model import RosterItem
from tests.conftest import missing
from tests.integration.conftest import PASSWORD, XmppServer, running_server, write_config
from tests.integration.tools import node_and_npm, run
from xmppd.config import DEFAULT_MODULES, load_config
from xmppd.modules import webchat
from xmppd.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.parametrize("storage_factory", ["sqlite"], indirect=True)]

ALICE, BOB = "alice@localhost", "bob@localhost"
BROWSER = Path(__file__).parent / "browser"
WEB = webchat.WEB_DIR
ARTIFACTS = Path(__file__).parents[1] / "artifacts"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def modules(*names: str) -> str:
    """`[server] modules` for the server's default modules and `names`."""
    listed = ", ".join(f'"{name}"' for name in dict.fromkeys((*DEFAULT_MODULES, *names)))
    return f"modules = [{listed}]"


def webchat_options(**options: str) -> str:
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())
    return f"[modules.webchat]\n{lines}"


def fake_dist(root: Path) -> Path:
    """A stand-in for Converse.js's dist directory: the two entry points and a lazily loaded part."""
    root.mkdir(parents=True)
    (root / "converse.min.js").write_text("window.converse = {};\n")
    (root / "converse.min.css").write_text("body { margin: 0 }\n")
    (root / "chunkjs" / "locales").mkdir(parents=True)
    (root / "chunkjs" / "locales" / "de-LC_MESSAGES-converse-po.js").write_text("export default {};\n")
    (root / "curve25519_compiled.wasm").write_bytes(b"\0asm\1\0\0\0")
    return root


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    """A server with the web chat on a stand-in dist directory, and a secret file beside it."""
    dist = fake_dist(tmp_path / "dist")
    (tmp_path / "secret.txt").write_text("not for the web")
    (dist / "link-out").symlink_to(tmp_path / "secret.txt")
    async with running_server(
        storage, tmp_path, webchat_options(assets_dir=str(dist), title="Chat <here>"), server_extra=modules("webchat")
    ) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def base(xmpp: XmppServer) -> str:
    return f"http://127.0.0.1:{xmpp.server.ports['http']}"


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, dict[str, str], str]:
    async with http.get(url, headers=headers, allow_redirects=False) as response:
        return response.status, dict(response.headers), await response.text()


async def raw_status(xmpp: XmppServer, target: str) -> int:
    """GET `target` exactly as written (no client normalising '..' away); the answer's status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", xmpp.server.ports["http"])
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


def settings_of(page: str) -> dict[str, Any]:
    found = re.search(r'<script type="application/json" id="xmppd-webchat-settings">(.*?)</script>', page)
    assert found is not None, page
    settings: dict[str, Any] = json.loads(found.group(1))
    return settings


# -- the page and its files, without a browser ---------------------------------------------------


async def test_the_page_names_the_domain_its_services_and_versioned_assets(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    status, headers, page = await fetch(http, f"{base(xmpp)}/chat")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert headers["Cache-Control"] == "no-cache"
    assert "<title>Chat &lt;here&gt;</title>" in page
    settings = settings_of(page)
    version = settings["assets_path"].removeprefix("/chat/assets/")
    assert re.fullmatch(r"[0-9a-f]{16}", version)
    assert settings == {
        "domain": "localhost",  # 127.0.0.1 is no host of the server: the first one
        "assets_path": f"/chat/assets/{version}",
        "websocket_path": "/xmpp-websocket",
        "bosh_path": "/http-bind",
        "allow_registration": True,  # [modules.register] allow_registration in the test config
        "muc_domain": "conference.localhost",
        "media_domains": ["example.test", "localhost"],  # where upload URLs point (https://<host>:<port>)
    }
    assert f'<script type="module" src="/chat/assets/{version}/converse.min.js"></script>' in page
    assert '<script type="module" src="/chat/chat.js"></script>' in page

    # Scripts from here only; connections to here, its WebSocket and the upload service only.
    policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    https = f"https://localhost:{xmpp.server.ports['https']}"
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert policy["frame-ancestors"] == "'none'"
    port = xmpp.server.ports["http"]
    assert set(policy["connect-src"].split()) == {
        "'self'", f"ws://127.0.0.1:{port}", f"wss://127.0.0.1:{port}", https,
        f"https://example.test:{xmpp.server.ports['https']}",
    }
    assert https in policy["img-src"].split()

    # The host the browser names picks the domain.
    _status, _headers, page = await fetch(http, f"{base(xmpp)}/chat", Host="example.test")
    assert settings_of(page)["domain"] == "example.test"
    assert settings_of(page)["muc_domain"] == "conference.example.test"

    status, headers, _body = await fetch(http, f"{base(xmpp)}/chat/")
    assert status == 308 and headers["Location"] == "/chat"
    status, headers, script = await fetch(http, f"{base(xmpp)}/chat/chat.js")
    assert status == 200 and "javascript" in headers["Content-Type"] and "converse.initialize" in script
    assert headers["Cache-Control"] == "no-cache"
    async with http.head(f"{base(xmpp)}/chat") as response:
        assert response.status == 200


async def test_assets_are_served_from_the_dist_directory_only_and_cached_for_a_year(
    xmpp: XmppServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    _status, _headers, page = await fetch(http, f"{base(xmpp)}/chat")
    assets = settings_of(page)["assets_path"]
    for name, kind in (
        ("converse.min.js", "javascript"),
        ("converse.min.css", "text/css"),
        ("chunkjs/locales/de-LC_MESSAGES-converse-po.js", "javascript"),
        ("curve25519_compiled.wasm", "application/wasm"),  # what WebAssembly.instantiateStreaming needs
    ):
        status, headers, _body = await fetch(http, f"{base(xmpp)}{assets}/{name}")
        assert status == 200 and kind in headers["Content-Type"], name
        assert headers["Cache-Control"] == "public, max-age=31536000, immutable"

    # Another version, names outside the directory, hidden or missing: not found, whatever the spelling.
    assert (await fetch(http, f"{base(xmpp)}/chat/assets/0123456789abcdef/converse.min.js"))[0] == 404
    for target in (
        f"{assets}/../../../secret.txt",
        f"{assets}/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"{assets}/..%2f..%2f..%2fsecret.txt",
        f"{assets}//{tmp_path}/secret.txt",
        f"{assets}/%2F{str(tmp_path).lstrip('/')}/secret.txt",
        f"{assets}/link-out",  # a symlink inside that leads outside
        f"{assets}/chunkjs",  # a directory
        f"{assets}/.hidden",
        f"{assets}/nothing-here.js",
        f"{assets}/converse.min.js%00.css",
    ):
        assert await raw_status(xmpp, target) in (400, 404), target

    # Files that change on disk get a new version at the next page load, without a restart.
    dist = tmp_path / "dist"
    (dist / "converse.min.js").write_text("window.converse = {upgraded: true};\n")
    _status, _headers, page = await fetch(http, f"{base(xmpp)}/chat")
    assert settings_of(page)["assets_path"] != assets
    assert (await fetch(http, f"{base(xmpp)}{assets}/converse.min.js"))[0] == 404


async def test_without_the_assets_the_page_says_how_to_install_them(storage: Storage, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    async with (
        running_server(storage, tmp_path, webchat_options(assets_dir=str(empty)), server_extra=modules("webchat"))
        as xmpp,
        aiohttp.ClientSession() as http,
    ):
        status, headers, page = await fetch(http, f"{base(xmpp)}/chat")
        assert status == 503 and headers["Content-Type"] == "text/html; charset=utf-8"
        assert html.escape(f"npm ci --prefix {WEB}") in page
        assert html.escape(str(empty)) in page
        assert (await fetch(http, f"{base(xmpp)}/chat/assets/0123456789abcdef/converse.min.js"))[0] == 404


async def test_registration_is_offered_only_where_the_register_module_allows_it(
    xmpp: XmppServer, http: aiohttp.ClientSession
) -> None:
    # The page reads the configuration at each load: change it as a restart with another file would.
    configured = xmpp.server.config
    register = {**configured.options_for("register"), "allow_registration": False}
    closed = {**configured.module_options, "register": register}
    for config in (
        dataclasses.replace(configured, module_options=closed),
        dataclasses.replace(configured, modules=tuple(m for m in configured.modules if m != "register")),
    ):
        xmpp.server.config = config
        _status, _headers, page = await fetch(http, f"{base(xmpp)}/chat")
        assert settings_of(page)["allow_registration"] is False
    xmpp.server.config = configured
    _status, _headers, page = await fetch(http, f"{base(xmpp)}/chat")
    assert settings_of(page)["allow_registration"] is True


async def test_with_the_http_side_off_the_module_loads_and_serves_nothing(storage: Storage, tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, server_extra=modules("webchat")))
    config = dataclasses.replace(config, http=dataclasses.replace(config.http, port=0, tls_port=0))
    server = Server(config, storage=storage)
    await server.start()
    try:
        assert all(host.modules.get("webchat") for host in server.hosts.values() if host.kind == "user")
        assert not [path for _method, path in server.http.routes if path.startswith("/chat")]
        assert "http" not in server.ports
    finally:
        await server.stop()


# -- two people in Chromium ---------------------------------------------------------------------


async def npm_ci(npm: str, directory: Path, installed: Path) -> None:
    """`npm ci` in `directory` (from its committed lock file) unless `installed` is there."""
    if await asyncio.to_thread(installed.exists):
        return
    code, out, err = await run(npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", cwd=directory, within=100)
    assert code == 0, f"npm ci in {directory} failed:\n{out}\n{err}"


def failure_report(result: dict[str, Any], stderr: str) -> str:
    """What the browser script saw up to a failure: the error, the steps that passed, then what each
    page logged and its XMPP stream carried last."""
    lines = [str(result["error"]), f"steps passed: {result['steps']}", *result["page_errors"], stderr]
    for who in ("alice", "bob"):
        lines += [f"--- {who}'s page, last console messages and WebSocket frames:", *result[who].get("trail", [])]
    return "\n".join(lines)


async def test_two_people_chat_through_the_web_chat_in_chromium(storage: Storage, tmp_path: Path) -> None:
    node, npm = node_and_npm("the browser test (playwright-core) and the web chat's assets")
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"Chromium is needed for the browser test: {CHROMIUM} (Debian: apt-get install chromium)")
    await npm_ci(npm, WEB, webchat.DEFAULT_ASSETS / "converse.min.js")
    await npm_ci(npm, BROWSER, BROWSER / "node_modules" / "playwright-core" / "package.json")

    async with running_server(storage, tmp_path, server_extra=modules("webchat")) as xmpp:
        for user, contact, name in ((ALICE, BOB, "Bob"), (BOB, ALICE, "Alice")):
            await xmpp.account(user)
            local, domain = user.split("@")
            item = RosterItem(jid=contact, name=name, subscription="both")
            await xmpp.server.storage.rosters.put(domain, local, item)
        # As behind a reverse proxy, the server's public URL is where the page is, so the file upload
        # service hands out URLs on it (the default, https://localhost:<tls_port>, has a certificate
        # that the browser would refuse). The page reads the configuration at each load.
        config = xmpp.server.config
        xmpp.server.config = dataclasses.replace(config, http=dataclasses.replace(config.http, public_url=base(xmpp)))
        url = f"{base(xmpp)}/chat"
        shots = {who: tmp_path / f"webchat-{who}.png" for who in ("alice", "bob")}
        room_shots = [tmp_path / f"webchat-{who}-room.png" for who in ("alice", "bob")]
        code, out, err = await run(
            node, str(BROWSER / "webchat.mjs"), url, ALICE, PASSWORD, BOB, PASSWORD,
            str(shots["alice"]), str(shots["bob"]),
            cwd=BROWSER, within=90,
        )
    ARTIFACTS.mkdir(exist_ok=True)
    for shot in (*shots.values(), *room_shots):
        if shot.is_file():
            shutil.copyfile(shot, ARTIFACTS / shot.name)  # to look at afterwards

    try:
        result = json.loads(out)
    except json.JSONDecodeError:
        pytest.fail(f"the browser script printed no result (exit {code}):\n{out}\n{err}")
    assert code == 0 and result["ok"], failure_report(result, err)
    assert len(result["steps"]) == 7
    assert result["bob"]["received"] == result["sent"]["to_bob"]
    assert result["alice"]["received"] == result["sent"]["to_alice"]
    assert result["alice"]["receipt"] is True  # XEP-0184, from Bob's browser through the server
    assert "typing" in result["alice"]["typing"]  # XEP-0085
    assert result["bob"]["picture"].startswith(f"{base(xmpp)}/upload/")  # XEP-0363
    assert result["room"].endswith("@conference.localhost")  # XEP-0045 on the server's room service
    assert result["bob"]["room_received"] == result["sent"]["to_room"]
    for shot in (*shots.values(), *room_shots):
        assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")

    # Nothing from anywhere but this server: every request and the WebSocket went to 127.0.0.1.
    port = xmpp.server.ports["http"]
    assert result["requests"], "no request recorded"
    elsewhere = [u for u in result["requests"] if urlsplit(u).scheme not in ("data", "blob") and
                 (urlsplit(u).hostname, urlsplit(u).port) != ("127.0.0.1", port)]
    assert not elsewhere
    assert result["websockets"] == [f"ws://127.0.0.1:{port}/xmpp-websocket"]
    assert any("/chat/assets/" in u and u.endswith("/converse.min.js") for u in result["requests"])
    assert result["csp_violations"] == []
    assert result["page_errors"] == []
    assert result["console_errors"] == []
