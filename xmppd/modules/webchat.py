"""The web chat: Converse.js served by xmppd itself, at `/chat` on the HTTP side (xmppd/http.py).

No XEP of its own: the page is a client (Converse.js) that logs in over XMPP over WebSocket
(RFC 7395, xmppd/websocket.py) like any other, so what it can do (contacts, 1:1 chat, rooms,
typing and read states, receipts, the archive, file upload, OMEMO) is what the server's other
modules offer. Hence `PROTOCOLS = []`.

What is served (GET and HEAD), on every host name the HTTP side answers to:

    <path>                          the page (web/chat.html filled in), revalidated at each load
    <path>/                         a redirect to <path>
    <path>/chat.js                  the script that starts Converse.js (web/chat.js), revalidated
    <path>/assets/<version>/<file>  Converse.js's dist/ directory, cached for a year

Decisions:
- The assets are the `dist/` files of the npm package `converse.js`, pinned by web/package.json
  and web/package-lock.json and installed with `npm ci --prefix web` into web/node_modules (not
  committed). Never a CDN: the page needs no network but this server's. Without them the page is
  a 503 that gives the command (and the server logs it at start). `assets_dir` points elsewhere
  (a packaged copy, a test's stand-in).
- Everything under the dist directory is served, since Converse loads parts of itself when it
  needs them (locales, emoji.json, the OMEMO library and its WebAssembly, fonts, sounds): a
  request's path is resolved (symlinks too) and served only if it is a regular file inside that
  directory and no part of it starts with a dot. Nothing else is reachable.
- The dist file names carry no hash, so the URLs do: `<version>` is a hash of converse.min.js and
  converse.min.css, recomputed when they change on disk (checked at each page load: a reinstall
  needs no restart). An asset URL is then immutable and cached for a year; a URL of another
  version is a 404 (its files are gone). The page and chat.js are revalidated at every load.
- Converse's settings: the server writes what it knows into the page as JSON (the XMPP domain,
  whether registration is open, the room service, the file upload hosts, the endpoint paths);
  chat.js computes the WebSocket URL from `location` (wss:// on HTTPS, ws:// on HTTP, same host
  and port, `[http] websocket_path`; BOSH at `[http] bosh_path` when WebSocket is off), so one
  page works on the plain loopback port, on HTTPS and behind a reverse proxy. No XEP-0156
  discovery (the page knows its endpoint), no auto-login. converse.min.js is loaded by a script
  tag of its own, before chat.js: Converse finds its OMEMO WebAssembly next to that tag.
- The domain is the user host named by the request's Host, else the first of `[server] hosts`,
  and it is locked (`locked_domain`): people type their name only. Registration is offered only
  when the register module is loaded and `[modules.register] allow_registration` is true, read
  from the server's configuration at each page load, so the two cannot disagree.
- Rooms are on the host's room service (`muc_domain`), with the account's name as nickname;
  Converse's room search (XEP-0433) is asked of that service, not of search.jabber.network.
- `allow_non_roster_messaging` is on: someone not yet a contact can start a chat, as in the
  native clients (a user who does not want that blocks them, XEP-0191).
- Nothing from elsewhere: the page's Content-Security-Policy allows scripts from this origin only
  (plus WebAssembly, for OMEMO), connections to this origin, its WebSocket and the file upload
  service (PUT), media from this origin, data:/blob: (avatars, previews) and the upload service,
  and no framing. Converse is told the same: no lists of public providers, no third-party players,
  the system's emoji, media shown inline only from this server (other links stay links). Its
  fullscreen footer, which shows its sponsors' logos from conversejs.org, is replaced by one of
  chat.js's (Converse does not redefine an element the page defined first).
- Routes are server-wide (xmppd/http.py): loaded on several hosts, the module registers once and
  picks the domain per request. When the HTTP side is off (both ports 0) it registers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from xmppd.module import ModuleAPI, Option

PROTOCOLS: list[tuple[str, str]] = []
# The source tree's web/ directory: the page template, chat.js, and the npm install of Converse.js.
WEB_DIR = Path(__file__).resolve().parents[2] / "web"
DEFAULT_ASSETS = WEB_DIR / "node_modules" / "converse.js" / "dist"
INSTALL_COMMAND = f"npm ci --prefix {WEB_DIR}"
ENTRY_POINTS = ("converse.min.js", "converse.min.css")
MUC_COMPONENT = "components.muc"  # as in xmppd/config.py
PATH_SYNTAX = re.compile(r"(/[A-Za-z0-9._~-]+)+")
HOST_SYNTAX = re.compile(r"[A-Za-z0-9.-]+(:[0-9]+)?|\[[0-9A-Fa-f:.]+\](:[0-9]+)?")  # a Host header
IMMUTABLE = "public, max-age=31536000, immutable"
OPTIONS = {
    "path": Option("/chat", "where the page is served on the HTTP side, e.g. '/chat' (its files are under it)"),
    "title": Option("Chat", "the page's title"),
    "assets_dir": Option(
        "", "Converse.js's dist directory; empty: web/node_modules/converse.js/dist of the source tree"
    ),
}


def setup(mod: ModuleAPI) -> None:
    http = mod.config.http
    if not http.port and not http.tls_port:
        mod.log.info("the HTTP side is off ([http] port and tls_port are 0): no web chat")
        return
    path = str(mod.options["path"])
    if not PATH_SYNTAX.fullmatch(path):
        from xmppd.config import ConfigError

        raise ConfigError(mod.config.source, "modules.webchat.path", path, "a URL path such as '/chat'")
    # One for the server: the routes are server-wide, and the first host's registration wins.
    chat = mod.shared("page", lambda: WebChat(mod, path, Assets(Path(mod.options["assets_dir"] or DEFAULT_ASSETS))))
    for method in ("GET", "HEAD"):
        mod.add_http_route(method, path, chat.page)
        mod.add_http_route(method, f"{path}/", chat.to_page)
        mod.add_http_route(method, f"{path}/chat.js", chat.boot_script)
        mod.add_http_route(method, f"{path}/assets/{{version}}/{{name:.+}}", chat.asset)


@dataclass
class Assets:
    """Converse.js's dist directory, and the version of what is in it now."""

    root: Path
    version: str | None = None
    _stamp: tuple[tuple[int, int], ...] | None = field(default=None, repr=False)

    def refresh(self) -> str | None:
        """The version of the installed files (checked against the disk), None when missing.
        Blocking: run it in a thread."""
        try:
            stamp = tuple((s.st_mtime_ns, s.st_size) for s in (self.root.joinpath(n).stat() for n in ENTRY_POINTS))
            if stamp != self._stamp:
                digest = hashlib.sha256()
                for name in ENTRY_POINTS:
                    digest.update(self.root.joinpath(name).read_bytes())
                self.version, self._stamp = digest.hexdigest()[:16], stamp
        except OSError:
            self.version = self._stamp = None
        return self.version

    def find(self, name: str) -> Path | None:
        """The file `name` (a relative path from a URL) if it is a regular file inside the
        directory, else None. Blocking: run it in a thread."""
        if not name or any(part.startswith(".") for part in name.split("/")):
            return None  # '..' and hidden files; an absolute name or a link out fails below
        with contextlib.suppress(OSError, ValueError):  # a NUL byte, a name too long, a loop of links
            root = self.root.resolve()
            found = root.joinpath(name).resolve()
            if found.is_relative_to(root) and found.is_file():
                return found
        return None


class WebChat:
    def __init__(self, mod: ModuleAPI, path: str, assets: Assets) -> None:
        self.mod = mod
        self.path = path
        self.assets = assets
        self.title = str(mod.options["title"])
        if not (assets.root / ENTRY_POINTS[0]).is_file():
            mod.log.warning("the web chat's files are not installed in %s: %s", assets.root, INSTALL_COMMAND)

    # -- the page --------------------------------------------------------------------------
    async def page(self, request: web.Request) -> web.StreamResponse:
        template, version = await asyncio.to_thread(self.read)
        http = self.mod.config.http
        if template is None:
            return unavailable(f"The page template ({html.escape(str(WEB_DIR))}/chat.html, chat.js) is missing.")
        if version is None:
            return unavailable(
                "The web chat's files (Converse.js) are not installed: "
                f"<code>{html.escape(str(self.assets.root))}/converse.min.js</code> is missing.",
                f"Install them with <code>{html.escape(INSTALL_COMMAND)}</code> (Node.js and npm are needed once, "
                "to fetch them from the npm registry), or point <code>[modules.webchat] assets_dir</code> at a "
                "Converse.js <code>dist</code> directory. No restart is needed.",
            )
        if not http.websocket_path and not http.bosh_path:
            return unavailable("The web chat needs XMPP over WebSocket or BOSH: [http] websocket_path or bosh_path.")
        domain = self.domain(request)
        assets_path = f"{self.path}/assets/{version}"
        settings = {
            "domain": domain,
            "assets_path": assets_path,
            "websocket_path": http.websocket_path,
            "bosh_path": http.bosh_path,
            "allow_registration": self.registration_open(),
            "muc_domain": self.room_service(domain),
            "media_domains": sorted({urlsplit(url).hostname or "" for url in self.upload_urls()} - {""}),
        }
        body = template.substitute(
            title=html.escape(self.title),
            assets=html.escape(assets_path),
            boot=html.escape(f"{self.path}/chat.js"),
            settings=script_json(settings),
        )
        headers = {
            "Cache-Control": "no-cache",
            "Content-Security-Policy": self.policy(request),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        return web.Response(text=body, content_type="text/html", charset="utf-8", headers=headers)

    def read(self) -> tuple[Template | None, str | None]:
        """The page template (read each time: an upgrade needs no restart), and the version of the
        assets. Blocking: run it in a thread."""
        try:
            template = Template((WEB_DIR / "chat.html").read_text(encoding="utf-8"))
        except OSError:
            template = None
        if not (WEB_DIR / "chat.js").is_file():
            template = None
        return template, self.assets.refresh()

    async def to_page(self, _request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(self.path)

    def domain(self, request: web.Request) -> str:
        """The user host the request names in its Host, else the first one."""
        hosts = self.mod.config.hosts
        name = (request.url.host or "").lower().rstrip(".")
        return name if name in hosts else hosts[0]

    def registration_open(self) -> bool:
        config = self.mod.config
        register = config.options_for("register")
        return "register" in config.user_host_modules and bool(register.get("allow_registration", False))

    def room_service(self, domain: str) -> str | None:
        for component in self.mod.config.components:
            if component.parent == domain and MUC_COMPONENT in component.modules:
                return component.domain
        return None

    def upload_urls(self) -> set[str]:
        """Where the file upload service hands out its URLs (`mod.http_url` of each user host)."""
        return {self.mod.http_url(host) for host in self.mod.config.hosts}

    def policy(self, request: web.Request) -> str:
        uploads = " ".join(sorted(origin(url) for url in self.upload_urls()))
        # 'self' covers ws(s):// to the same host in CSP 3; named as well for older browsers.
        sockets = f"ws://{request.host} wss://{request.host}" if HOST_SYNTAX.fullmatch(request.host) else ""
        directives = {
            "default-src": "'none'",
            "script-src": "'self' 'wasm-unsafe-eval'",
            "style-src": "'self' 'unsafe-inline'",  # Converse sets style attributes
            "img-src": f"'self' data: blob: {uploads}",
            "media-src": f"'self' data: blob: {uploads}",
            "font-src": "'self' data:",
            "connect-src": f"'self' {sockets} {uploads}",
            "worker-src": "'self' blob:",
            "manifest-src": "'self'",
            "form-action": "'self'",
            "base-uri": "'none'",
            "frame-ancestors": "'none'",
        }
        return "; ".join(" ".join(f"{name} {value}".split()) for name, value in directives.items())

    # -- the files -------------------------------------------------------------------------
    async def boot_script(self, _request: web.Request) -> web.StreamResponse:
        return web.FileResponse(WEB_DIR / "chat.js", headers={"Cache-Control": "no-cache"})

    async def asset(self, request: web.Request) -> web.StreamResponse:
        if self.assets.version is None or request.match_info["version"] != self.assets.version:
            raise web.HTTPNotFound()
        found = await asyncio.to_thread(self.assets.find, request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        return web.FileResponse(found, headers={"Cache-Control": IMMUTABLE, "X-Content-Type-Options": "nosniff"})



def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def script_json(value: Any) -> str:
    """JSON that is safe inside <script>: no '</script>', no '<!--', no HTML entities."""
    text = json.dumps(value, ensure_ascii=False)
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def unavailable(*paragraphs: str) -> web.Response:
    """The page when the web chat cannot run here: 503 and what to do about it."""
    body = "".join(f"<p>{text}</p>" for text in paragraphs)
    page = (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Web chat unavailable</title></head>"
        f"<body><h1>The web chat is not available</h1>{body}</body></html>"
    )
    return web.Response(
        status=503, text=page, content_type="text/html", charset="utf-8",
        headers={"Cache-Control": "no-store", "Content-Security-Policy": "default-src 'none'"},
    )
