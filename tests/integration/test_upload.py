"""HTTP File Upload (XEP-0363) end to end, on both storage backends: slixmpp's xep_0363 finds the
upload component (components/upload) through disco and asks it for a slot, aiohttp's client PUTs
the file over HTTPS, another user gets the URL in a message and downloads it (whole, by range,
HEAD, conditionally), then every refusal of the HTTP side, path traversal attempts (raw bytes
on the plain HTTP port, so that no client library tidies the path first), expiry through the
server's clock, and a 10 MB upload and download that must stream.

Memory is measured with tracemalloc's peak over exactly the 10 MB transfer. The server runs in
the test's own process, so its Python allocations are all traced; a handler that held the body
(`await request.read()`, a `bytes` of 10 MB) or a response built from the whole file would raise
the peak by 10 MB, whatever happened before. `resource.getrusage`'s max RSS would not be robust
here: it is a high-water mark of the whole pytest process, which earlier tests may have raised
already (hiding growth), and allocator reuse makes RSS move in steps unrelated to one request.
"""

from __future__ import annotations

import asyncio
import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from multidict import CIMultiDict
from slixmpp import JID
from slixmpp.exceptions import IqError

from components.upload.service import UploadService
from storage import Storage
from tests.integration.conftest import Client, Clock, XmppServer, running_server
from tests.integration.tools import insecure

pytestmark = pytest.mark.integration

SERVICE = "upload.localhost"
NS = "urn:xmpp:http:upload:0"
MIB = 1024 * 1024
SLOT_LIFETIME = 300
FILE_LIFETIME = 3600
UPLOAD = f"""
[components."{SERVICE}"]
modules = ["components.upload"]
[modules."components.upload"]
max_file_size = {20 * MIB}
quota = {64 * MIB}
allowed_types = ["image/*", "text/*", "application/octet-stream", "application/pdf"]
slot_lifetime = {SLOT_LIFETIME}
file_lifetime = {FILE_LIFETIME}
"""
ALICE = "alice@localhost"
BOB = "bob@example.test"  # another host of the same server
PLUGINS = ("xep_0363",)


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path, clock: Clock) -> AsyncIterator[XmppServer]:
    async with running_server(storage, tmp_path, UPLOAD, clock=clock) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=insecure())) as session:
        yield session


def service_of(xmpp: XmppServer) -> UploadService:
    service = xmpp.server.shared["components.upload:service"]
    assert isinstance(service, UploadService)
    return service


async def login(xmpp: XmppServer, jid: str) -> Client:
    await xmpp.account(jid)
    return await xmpp.login(jid, plugins=PLUGINS)


async def slot(client: Client, filename: str, size: int, content_type: str | None = None) -> tuple[str, str]:
    """A slot through slixmpp's xep_0363: its PUT and GET URLs."""
    answer = await client.plugin["xep_0363"].request_slot(JID(SERVICE), filename, size, content_type)
    put = answer["http_upload_slot"]["put"]["url"]
    get = answer["http_upload_slot"]["get"]["url"]
    # slixmpp would send a <put/>'s headers along; this service needs none.
    assert not answer["http_upload_slot"]["put"]["headers"]
    return str(put), str(get)


async def put(
    http: aiohttp.ClientSession, url: str, body: Any, content_type: str | None = "image/png", **headers: str
) -> tuple[int, CIMultiDict[str]]:
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with http.put(url, data=body, headers=headers) as response:
        await response.read()
        return response.status, CIMultiDict(response.headers)


async def fetch(http: aiohttp.ClientSession, url: str, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
    async with http.get(url, headers=headers) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


async def raw(xmpp: XmppServer, request: bytes) -> int:
    """Send bytes as they are to the plain HTTP port; the status of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", xmpp.server.ports["http"])
    try:
        writer.write(request)
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), 10)
        return int(status_line.split()[1])
    finally:
        writer.close()


def path_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def files_outside_uploads(tmp_path: Path) -> set[Path]:
    uploads = tmp_path / "data" / "upload"
    return {
        path for path in tmp_path.rglob("*")
        if uploads not in path.parents and path != uploads and ".sqlite3" not in path.name
    }


def body_of(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


# -- the way of a file ------------------------------------------------------------------------------


async def test_a_file_goes_up_and_another_user_downloads_it(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    alice = await login(xmpp, ALICE)
    bob = await login(xmpp, BOB)
    # XEP-0363 §3: found through the server's disco#items, with its limit in disco#info.
    info = await alice.plugin["xep_0363"].find_upload_service()
    assert info is not None and info["from"] == SERVICE
    (form,) = [f for f in info["disco_info"].iterables if f["values"].get("FORM_TYPE") == [NS]]
    assert form["values"]["max-file-size"] == str(20 * MIB)

    body = body_of(100_000)
    filename = "Été à la plage #1.png"
    put_url, get_url = await slot(alice, filename, len(body), "image/png")
    base = f"https://localhost:{xmpp.server.ports['https']}"
    assert get_url.startswith(f"{base}/upload/") and get_url.endswith("/" + quote(filename, safe=""))
    status, headers = await put(http, put_url, body)
    assert status == 201  # XEP-0363 §6
    assert headers["Access-Control-Allow-Origin"] == "*"

    alice.send_message(mto=JID(BOB), mbody=get_url, mtype="chat")
    message = await bob.next_message(lambda m: m["body"])
    url = message["body"]
    status, headers, received = await fetch(http, url)
    assert status == 200 and received == body
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Content-Disposition"] == (
        "inline; filename=\"_t_ _ la plage #1.png\"; filename*=UTF-8''%C3%89t%C3%A9%20%C3%A0%20la%20plage%20#1.png"
    )
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Accept-Ranges"] == "bytes" and headers["ETag"] and headers["Last-Modified"]
    max_age = int(headers["Cache-Control"].split("max-age=")[1].split(",")[0])
    assert FILE_LIFETIME - 60 < max_age <= FILE_LIFETIME and "immutable" in headers["Cache-Control"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in headers["Content-Security-Policy"]

    status, headers, part = await fetch(http, url, Range="bytes=1000-1999")
    assert status == 206 and part == body[1000:2000]
    assert headers["Content-Range"] == f"bytes 1000-1999/{len(body)}"
    status, headers, part = await fetch(http, url, Range="bytes=-10")
    assert status == 206 and part == body[-10:]
    status, _headers, _part = await fetch(http, url, Range=f"bytes={len(body)}-")
    assert status == 416
    etag = (await fetch(http, url))[1]["ETag"]
    status, headers, part = await fetch(http, url, **{"If-None-Match": etag})
    assert status == 304 and part == b""

    async with http.head(url) as response:
        assert response.status == 200 and await response.read() == b""
        assert response.headers["Content-Length"] == str(len(body))
        assert response.headers["Content-Type"] == "image/png"
    async with http.options(url, headers={"Origin": "https://web.example", "Access-Control-Request-Method": "PUT"}) \
            as response:
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "PUT" in response.headers["Access-Control-Allow-Methods"]

    # Downloads are also on the plain HTTP side (a reverse proxy's), the same path.
    plain = f"http://127.0.0.1:{xmpp.server.ports['http']}{path_of(url)}"
    assert (await fetch(http, plain))[2] == body


async def test_refused_slot_requests_come_back_as_slixmpp_errors(xmpp: XmppServer) -> None:
    alice = await login(xmpp, ALICE)
    with pytest.raises(IqError) as refused:
        await slot(alice, "big.bin", 20 * MIB + 1, "application/octet-stream")
    assert refused.value.condition == "not-acceptable"
    assert refused.value.iq.xml.find(f".//{{{NS}}}max-file-size").text == str(20 * MIB)
    with pytest.raises(IqError) as refused:
        await slot(alice, "page.html", 10, "application/x-shockwave-flash")
    assert refused.value.condition == "not-acceptable"


# -- what the HTTP side refuses ---------------------------------------------------------------------


async def test_each_wrong_upload_is_refused_and_leaves_nothing(
    xmpp: XmppServer, http: aiohttp.ClientSession, tmp_path: Path, clock: Clock
) -> None:
    alice = await login(xmpp, ALICE)
    root = tmp_path / "data" / "upload"
    body = body_of(1000)
    put_url, get_url = await slot(alice, "photo.png", len(body), "image/png")
    slot_id = get_url.split("/")[-2]

    # Content-Length other than the slot's size (§6 MUST): larger 413, smaller 400.
    assert (await put(http, put_url, body + b"x"))[0] == 413
    assert (await put(http, put_url, body[:-1]))[0] == 400
    # Another content type (§6 SHOULD).
    status, headers = await put(http, put_url, body, "text/html")
    assert status == 415 and headers["Access-Control-Allow-Origin"] == "*"
    # A chunked body (no Content-Length) is counted as it comes: cut off past the size.
    head = (
        f"PUT {path_of(put_url)} HTTP/1.1\r\nHost: localhost\r\nContent-Type: image/png\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()

    def chunk(data: bytes) -> bytes:
        return f"{len(data):x}\r\n".encode() + data + b"\r\n"

    assert await raw(xmpp, head + chunk(body) + chunk(b"more") + b"0\r\n\r\n") == 413
    assert await raw(xmpp, head + chunk(body[:500]) + b"0\r\n\r\n") == 400
    # The token: none, changed, or another slot's.
    plain_url = put_url.split("?")[0]
    assert (await put(http, plain_url, body))[0] == 403
    token = put_url.split("token=")[1]
    changed = token[:-2] + ("AA" if token[-2:] != "AA" else "BB")
    assert (await put(http, f"{plain_url}?token={changed}", body))[0] == 403
    other_put, _other_get = await slot(alice, "other.png", len(body), "image/png")
    assert (await put(http, f"{plain_url}?token={other_put.split('token=')[1]}", body))[0] == 403
    # A name other than the slot's, with the slot's token.
    renamed = put_url.replace("/photo.png?", "/photo.exe?")
    assert (await put(http, renamed, body))[0] == 403
    # Nothing of all that was kept, and nothing can be downloaded.
    assert not (root / slot_id).exists()
    assert (await fetch(http, get_url))[0] == 404

    # The slot still holds: one upload, then 409 for any other.
    assert (await put(http, put_url, body))[0] == 201
    status, headers = await put(http, put_url, body)
    assert status == 409 and headers["Access-Control-Allow-Origin"] == "*"
    assert (await fetch(http, get_url))[2] == body
    assert sorted(p.name for p in (root / slot_id).iterdir()) == ["data", "meta.json"]

    # Unknown files, and a known one under another name.
    status, headers, _ = await fetch(http, get_url.replace(slot_id, "A" * 32))
    assert status == 404 and headers["Access-Control-Allow-Origin"] == "*"
    assert (await fetch(http, get_url.replace("/photo.png", "/photo.jpg")))[0] == 404
    assert (await fetch(http, get_url.rsplit("/", 2)[0] + "/nonsense/x"))[0] == 404

    # An expired slot (§7: the PUT URL is valid for a short time).
    late_put, late_get = await slot(alice, "late.png", len(body), "image/png")
    clock.offset += SLOT_LIFETIME + 1  # expiries are whole seconds, rounded up
    status, headers = await put(http, late_put, body)
    assert status == 403 and headers["Access-Control-Allow-Origin"] == "*"
    assert not (root / late_get.split("/")[-2]).exists()


class Watched(set[str]):
    """The service's set of slots with an upload under way, telling when one starts or ends."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.ended = asyncio.Event()

    def add(self, item: str) -> None:
        super().add(item)
        self.started.set()

    def discard(self, item: str) -> None:
        super().discard(item)
        self.ended.set()


async def test_one_upload_at_a_time_and_a_cut_upload_leaves_nothing(
    xmpp: XmppServer, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    alice = await login(xmpp, ALICE)
    body = body_of(1000)
    put_url, get_url = await slot(alice, "cut.bin", len(body), "application/octet-stream")
    slot_dir = tmp_path / "data" / "upload" / get_url.split("/")[-2]
    busy = Watched()
    service_of(xmpp).busy = busy
    _reader, writer = await asyncio.open_connection("127.0.0.1", xmpp.server.ports["http"])
    writer.write(
        f"PUT {path_of(put_url)} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:400]
    )
    await writer.drain()
    await asyncio.wait_for(busy.started.wait(), 10)
    # While that one is under way, another upload of the slot is refused.
    assert (await put(http, put_url, body, "application/octet-stream"))[0] == 409
    busy.ended.clear()
    writer.transport.abort()  # the connection is cut halfway
    await asyncio.wait_for(busy.ended.wait(), 10)
    assert not slot_dir.exists()
    assert (await fetch(http, get_url))[0] == 404
    # The slot may be tried again; without a Content-Type the slot's type is taken.
    request = f"PUT {path_of(put_url)} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {len(body)}\r\n\r\n"
    assert await raw(xmpp, request.encode() + body) == 201
    status, headers, received = await fetch(http, get_url)
    assert (status, received) == (200, body) and headers["Content-Type"] == "application/octet-stream"
    assert headers["Content-Disposition"].startswith("attachment;")


async def test_path_traversal_gets_nowhere(xmpp: XmppServer, http: aiohttp.ClientSession, tmp_path: Path) -> None:
    alice = await login(xmpp, ALICE)
    put_url, get_url = await slot(alice, "x.txt", 4, "text/plain")
    token = put_url.split("token=")[1]
    slot_id = get_url.split("/")[-2]
    before = files_outside_uploads(tmp_path)
    attempts = [
        f"/upload/..%2F..%2Fevil/x.txt?token={token}",
        f"/upload/%2E%2E/%2E%2E%2Fevil.txt?token={token}",
        f"/upload/{slot_id}/..%2F..%2F..%2Fevil.txt?token={token}",
        f"/upload/{slot_id}/..%2F{slot_id}%2Fx.txt?token={token}",
        f"/upload/{slot_id}/%2E%2E?token={token}",
        f"/upload/{slot_id}/../../evil.txt?token={token}",
        f"/upload/{slot_id}%2F..%2F..%2Fevil/x.txt?token={token}",
        f"/upload/..%5C..%5Cevil/x.txt?token={token}",
        f"/upload/{slot_id}/x.txt%00.png?token={token}",
    ]
    for target in attempts:
        request = (
            f"PUT {target} HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\n"
            "Content-Length: 4\r\nConnection: close\r\n\r\nevil"
        ).encode()
        assert await raw(xmpp, request) in (400, 403, 404), target
    for target in ("/upload/../data/xmppd.sqlite3", "/upload/..%2F..%2Fxmppd.toml/x",
                   f"/upload/{slot_id}/..%2F..%2F..%2Fxmppd.toml", "/upload/%2E%2E/%2E%2E/xmppd.toml"):
        request = f"GET {target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        assert await raw(xmpp, request) in (400, 403, 404), target
    assert files_outside_uploads(tmp_path) == before
    assert not (tmp_path / "data" / "upload" / slot_id).exists()
    # The real slot is untouched by all that.
    assert (await put(http, put_url, b"good", "text/plain"))[0] == 201
    assert (await fetch(http, get_url))[2] == b"good"


# -- expiry --------------------------------------------------------------------------------------------


async def test_files_expire_and_are_swept(
    xmpp: XmppServer, http: aiohttp.ClientSession, tmp_path: Path, clock: Clock
) -> None:
    alice = await login(xmpp, ALICE)
    put_url, get_url = await slot(alice, "old.txt", 3, "text/plain")
    assert (await put(http, put_url, b"old", "text/plain"))[0] == 201
    clock.offset += FILE_LIFETIME - 10
    fresh_put, fresh_get = await slot(alice, "fresh.txt", 5, "text/plain")
    assert (await put(http, fresh_put, b"fresh", "text/plain"))[0] == 201
    assert (await fetch(http, get_url))[0] == 200
    clock.offset += 10
    # From the moment it expires it is not served, before the sweep deletes it.
    assert (await fetch(http, get_url))[0] == 404
    assert (await fetch(http, fresh_get))[0] == 200
    root = tmp_path / "data" / "upload"
    assert (root / get_url.split("/")[-2]).exists()
    assert await service_of(xmpp).sweep() == 1
    assert not (root / get_url.split("/")[-2]).exists()
    assert (root / fresh_get.split("/")[-2] / "data").read_bytes() == b"fresh"


async def test_files_that_expired_while_the_server_was_down_are_deleted_at_start(
    storage: Storage, tmp_path: Path, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    async with running_server(storage, tmp_path, UPLOAD, clock=clock) as xmpp:
        alice = await login(xmpp, ALICE)
        put_url, get_url = await slot(alice, "note.txt", 4, "text/plain")
        assert (await put(http, put_url, b"note", "text/plain"))[0] == 201
    slot_dir = tmp_path / "data" / "upload" / get_url.split("/")[-2]
    assert (slot_dir / "data").exists()
    clock.offset += FILE_LIFETIME
    async with running_server(storage, tmp_path, UPLOAD, clock=clock) as xmpp:
        assert not slot_dir.exists()
        assert service_of(xmpp).files == {}


# -- memory ------------------------------------------------------------------------------------------


async def test_ten_megabytes_stream_up_and_down(xmpp: XmppServer, http: aiohttp.ClientSession) -> None:
    size = 10 * MIB
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    alice = await login(xmpp, ALICE)
    put_url, get_url = await slot(alice, "big.bin", size, "application/octet-stream")

    async def blocks() -> AsyncIterator[bytes]:
        for _ in range(size // len(block)):
            yield block

    expected = hashlib.sha256()
    for _ in range(size // len(block)):
        expected.update(block)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline, _ = tracemalloc.get_traced_memory()
        status, _headers = await put(
            http, put_url, blocks(), "application/octet-stream", **{"Content-Length": str(size)}
        )
        assert status == 201
        received = hashlib.sha256()
        count = 0
        async with http.get(get_url) as response:
            assert response.status == 200 and response.headers["Content-Length"] == str(size)
            async for piece in response.content.iter_chunked(64 * 1024):
                received.update(piece)
                count += len(piece)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == size and received.hexdigest() == expected.hexdigest()
    # Server and client together held at most a few buffers, never the file: well under 10 MB.
    assert peak - baseline < 4 * MIB, f"peak {(peak - baseline) / MIB:.1f} MiB over the baseline"
