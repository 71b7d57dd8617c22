"""XEP-0363 HTTP File Upload through the in-memory server: the component's disco#info (and the
user host listing it), slot answers, and each refusal of a slot request (size, type, quota with
and without a retry time, a requester that is not an account of this server, bad requests).
Also what is kept on disk across a restart. The HTTP side is in tests/integration/test_upload.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from lxml import etree

from components.upload import service as service_module
from components.upload.files import StoredFile
from components.upload.service import UploadService
from components.upload.slots import NS, SLOT_ID, verify
from xmppd.datetimes import parse_datetime
from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition

SERVICE = "upload.localhost"
UPLOAD = "components.upload"
INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
DATA = "jabber:x:data"
T0 = 1_700_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def upload_service(
    tmp_path: Path, clock: Clock | None = None, **options: Any
) -> AsyncIterator[Harness]:
    async with Harness.start(
        tmp_path, hosts=("localhost", "example.test"), components={SERVICE: (UPLOAD,)},
        options={UPLOAD: options}, clock=clock or Clock(),
    ) as h:
        yield h


def service_of(h: Harness) -> UploadService:
    service = h.server.shared[f"{UPLOAD}:service"]
    assert isinstance(service, UploadService)
    return service


def request(filename: str = "my-juliet.jpg", size: int | str = 23456, content_type: str | None = "image/jpeg") -> str:
    attributes = {"filename": filename, "size": str(size)}
    if content_type is not None:
        attributes["content-type"] = content_type
    element = etree.Element(f"{{{NS}}}request", attributes, nsmap={None: NS})  # type: ignore[dict-item]
    return etree.tostring(element, encoding="unicode")


async def ask_slot(client: Client, **kwargs: Any) -> etree._Element:
    return await client.ask("get", request(**kwargs), to=SERVICE)


def urls(answer: etree._Element) -> tuple[str, str]:
    assert answer.get("type") == "result", etree.tostring(answer)
    slot = answer.find(f"{{{NS}}}slot")
    assert slot is not None
    put, get = slot.find(f"{{{NS}}}put"), slot.find(f"{{{NS}}}get")
    assert put is not None and get is not None
    return put.get("url", ""), get.get("url", "")


def upload_error(answer: etree._Element) -> etree._Element:
    assert answer.get("type") == "error", etree.tostring(answer)
    error = answer.find(f"{{{CLIENT_NS}}}error")
    assert error is not None
    return error


def form_fields(query: etree._Element) -> dict[str, list[str]]:
    (form,) = query.findall(f"{{{DATA}}}x")
    return {
        field.get("var", ""): [value.text or "" for value in field.findall(f"{{{DATA}}}value")]
        for field in form.findall(f"{{{DATA}}}field")
    }


async def alice(h: Harness) -> Client:
    await h.account("alice@localhost")
    return await h.connect("alice@localhost/phone")


# -- discovery -------------------------------------------------------------------------------------


async def test_the_service_announces_itself_and_its_limit(tmp_path: Path) -> None:
    async with upload_service(tmp_path, max_file_size=5 * 1024 * 1024) as h:
        client = await alice(h)
        info = await client.ask("get", f"<query xmlns='{INFO}'/>", to=SERVICE)
        query = info.find(f"{{{INFO}}}query")
        assert query is not None
        identities = [dict(i.attrib) for i in query.findall(f"{{{INFO}}}identity")]
        assert identities == [{"category": "store", "type": "file", "name": "HTTP File Upload"}]
        features = {f.get("var") for f in query.findall(f"{{{INFO}}}feature")}
        assert NS in features
        # XEP-0363 §3 / XEP-0128: the limit in bytes, under the upload FORM_TYPE.
        assert form_fields(query) == {"FORM_TYPE": [NS], "max-file-size": [str(5 * 1024 * 1024)]}
        # XEP-0363 §3: the user's server lists the service among its items.
        items = await client.ask("get", f"<query xmlns='{ITEMS}'/>", to="localhost")
        assert SERVICE in {item.get("jid") for item in items.iter(f"{{{ITEMS}}}item")}


async def test_a_file_over_the_quota_could_never_fit_so_the_quota_is_the_announced_limit(tmp_path: Path) -> None:
    async with upload_service(tmp_path, max_file_size=1000, quota=600) as h:
        client = await alice(h)
        info = await client.ask("get", f"<query xmlns='{INFO}'/>", to=SERVICE)
        query = info.find(f"{{{INFO}}}query")
        assert query is not None
        assert form_fields(query)["max-file-size"] == ["600"]


# -- slots ---------------------------------------------------------------------------------------------


async def test_a_slot_has_a_signed_put_url_and_a_get_url_on_the_parent_hosts_http_side(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        client = await alice(h)
        put, get = urls(await ask_slot(client))
        assert client.take() == []
        base = h.server.http.url_for("localhost")
        assert get.startswith(f"{base}/upload/") and get.endswith("/my-juliet.jpg")
        slot_id = get.split("/")[-2]
        assert SLOT_ID.fullmatch(slot_id)
        parts = urlsplit(put)
        assert f"{parts.scheme}://{parts.netloc}{parts.path}" == get
        (token,) = parse_qs(parts.query)["token"]
        slot = verify(token, slot_id, "my-juliet.jpg", service_of(h).key, T0)
        assert (slot.size, slot.content_type, slot.account) == (23456, "image/jpeg", "alice@localhost")
        assert slot.expires == T0 + 300
        # Every slot is a new one.
        _put, other = urls(await ask_slot(client))
        assert other != get


async def test_names_keep_their_characters_percent_encoded_and_lose_path_separators(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        client = await alice(h)
        _put, get = urls(await ask_slot(client, filename="Ünïcødé ?#%&.jpg"))
        assert get.endswith("/%C3%9Cn%C3%AFc%C3%B8d%C3%A9%20%3F%23%25%26.jpg")
        _put, get = urls(await ask_slot(client, filename="../../etc/passwd"))
        assert get.endswith("/.._.._etc_passwd")


async def test_without_a_content_type_a_file_is_an_octet_stream(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        client = await alice(h)
        put, get = urls(await ask_slot(client, content_type=None))
        (token,) = parse_qs(urlsplit(put).query)["token"]
        slot = verify(token, get.split("/")[-2], "my-juliet.jpg", service_of(h).key, T0)
        assert slot.content_type == "application/octet-stream"


async def test_accounts_of_every_user_host_may_upload(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        await h.account("carol@example.test")
        carol = await h.connect("carol@example.test/laptop")
        urls(await ask_slot(carol))


# -- refusals --------------------------------------------------------------------------------------------


async def test_a_file_too_large_is_refused_with_the_limit(tmp_path: Path) -> None:
    async with upload_service(tmp_path, max_file_size=20000) as h:
        client = await alice(h)
        error = upload_error(await ask_slot(client, size=20001))
        # XEP-0363 §5: not-acceptable (modify) with <file-too-large><max-file-size/>.
        assert error.get("type") == "modify"
        assert error.find("{urn:ietf:params:xml:ns:xmpp-stanzas}not-acceptable") is not None
        assert error.findtext(f"{{{NS}}}file-too-large/{{{NS}}}max-file-size") == "20000"
        urls(await ask_slot(client, size=20000))


async def test_only_the_allowed_types_are_taken(tmp_path: Path) -> None:
    async with upload_service(tmp_path, allowed_types=("image/*", "application/pdf")) as h:
        client = await alice(h)
        urls(await ask_slot(client, content_type="image/png"))
        urls(await ask_slot(client, content_type="Application/PDF"))
        for refused in ("text/html", "application/pdfx", "imagex/png", None):
            answer = await ask_slot(client, content_type=refused)
            assert error_condition(answer) == "not-acceptable", refused
            assert upload_error(answer).find(f"{{{NS}}}file-too-large") is None


async def test_the_quota_counts_stored_files_and_open_slots_and_says_when_to_retry(tmp_path: Path) -> None:
    clock = Clock()
    async with upload_service(tmp_path, clock, quota=1000, slot_lifetime=300, file_lifetime=3600) as h:
        client = await alice(h)
        service = service_of(h)
        # A stored file of 500 bytes from T0 - 600: it expires at T0 + 3000.
        service.stored(StoredFile("a" * 32, "old.bin", 500, "application/octet-stream", "alice@localhost", T0 - 600))
        urls(await ask_slot(client, size=300))  # a slot of 300 until T0 + 300: 800 taken
        answer = await ask_slot(client, size=300)
        error = upload_error(answer)
        # XEP-0363 §5: a temporary error with the time the request may be made again: when
        # the slot expires, 500 + 300 fit in 1000.
        assert error.get("type") == "wait" and error_condition(answer) == "resource-constraint"
        retry = error.find(f"{{{NS}}}retry")
        assert retry is not None
        assert parse_datetime(retry.get("stamp", "")).timestamp() == T0 + 300
        answer = await ask_slot(client, size=600)  # only once the file is gone as well
        retry = upload_error(answer).find(f"{{{NS}}}retry")
        assert retry is not None and parse_datetime(retry.get("stamp", "")).timestamp() == T0 + 3000
        # Other accounts have their own quota.
        await h.account("bob@localhost")
        bob = await h.connect("bob@localhost/desk")
        urls(await ask_slot(bob, size=1000))
        # The slot expired unused: it no longer counts.
        clock.now = T0 + 300
        urls(await ask_slot(client, size=500))


async def test_with_files_kept_for_ever_a_full_quota_has_no_retry_time(tmp_path: Path) -> None:
    async with upload_service(tmp_path, quota=1000, file_lifetime=0) as h:
        client = await alice(h)
        service_of(h).stored(StoredFile("b" * 32, "x.bin", 900, "application/octet-stream", "alice@localhost", T0))
        error = upload_error(await ask_slot(client, size=200))
        assert error.get("type") == "wait"
        assert error.find(f"{{{NS}}}retry") is None
        urls(await ask_slot(client, size=100))


async def test_no_quota_when_it_is_zero(tmp_path: Path) -> None:
    async with upload_service(tmp_path, quota=0, max_file_size=1000) as h:
        client = await alice(h)
        for _ in range(5):
            urls(await ask_slot(client, size=1000))


async def test_only_accounts_of_this_servers_user_hosts_get_slots(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        # An address of no user host (here a session on the component's own domain, as a
        # remote account would be: there is no server-to-server yet).
        stranger = await h.connect(f"eve@{SERVICE}/x")
        answer = await ask_slot(stranger)
        assert error_condition(answer) == "not-allowed"
        assert upload_error(answer).get("type") == "cancel"


async def test_bad_requests(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        client = await alice(h)
        bad = [
            f"<request xmlns='{NS}' size='10'/>",
            f"<request xmlns='{NS}' filename='a.txt'/>",
            request(size="-1"),
            request(size="1e3"),
            request(size=" 12"),
            request(size="+12"),
            request(size="\u0663"),  # an Arabic-Indic digit: int() would take it
            request(size="1" * 20),
            request(filename=""),
            request(filename=".."),
            request(filename="   "),
            request(filename="a\nb.txt"),
            request(filename="a\u2028b.txt"),
            request(filename="\u00e9" * 128),  # 256 bytes in UTF-8
            request(content_type="text/html\r\nX-Evil: 1"),
            request(content_type="image"),
            request(content_type="image/png/x"),
        ]
        for payload in bad:
            answer = await client.ask("get", payload, to=SERVICE)
            assert error_condition(answer) == "bad-request", payload
        urls(await ask_slot(client, filename="\u00e9" * 127))  # 254 bytes: fine


async def test_a_set_or_another_payload_is_not_a_slot_request(tmp_path: Path) -> None:
    async with upload_service(tmp_path) as h:
        client = await alice(h)
        assert error_condition(await client.ask("set", request(), to=SERVICE)) == "service-unavailable"
        answer = await client.ask("get", "<request xmlns='urn:xmpp:http:upload'/>", to=SERVICE)
        assert error_condition(answer) == "service-unavailable"


# -- the files across a restart ------------------------------------------------------------------------


async def store_file(service: UploadService, slot_id: str, body: bytes, stored: float) -> None:
    upload = await service.store.begin(slot_id)
    await upload.write(body)
    record = StoredFile(slot_id, "note.txt", len(body), "text/plain", "alice@localhost", stored)
    await upload.commit(record)
    service.stored(record)


async def test_files_are_indexed_at_start_and_those_expired_meanwhile_deleted(tmp_path: Path) -> None:
    clock = Clock()
    options: Mapping[str, Any] = {"file_lifetime": 3600}
    keep, old, cut = "k" * 32, "o" * 32, "c" * 32
    async with upload_service(tmp_path, clock, **options) as h:
        service = service_of(h)
        await store_file(service, keep, b"kept", T0)
        await store_file(service, old, b"old", T0 - 3000)
        # An upload cut by a crash: no `data`, only the part.
        await service.store.begin(cut)
    root = tmp_path / "upload"
    assert {p.name for p in root.iterdir()} == {keep, old, cut}
    (root / "stray.txt").write_text("not ours")  # left alone
    clock.now = T0 + 700  # `old` expired while the server was down
    async with upload_service(tmp_path, clock, **options) as h:
        service = service_of(h)
        assert set(service.files) == {keep}
        assert service.files[keep].filename == "note.txt" and service.files[keep].size == 4
        assert service.usage.used("alice@localhost", clock.now) == 4
        assert {p.name for p in root.iterdir()} == {keep, "stray.txt"}
        assert sorted(p.name for p in (root / keep).iterdir()) == ["data", "meta.json"]
        assert (root / keep / "data").read_bytes() == b"kept"
        # The sweep while running.
        clock.now = T0 + 3600
        assert service.serving(keep, clock.now) is None  # refused from the moment it expires
        assert await service.sweep() == 1
        assert service.files == {} and not (root / keep).exists()
        assert service.usage.used("alice@localhost", clock.now) == 0


async def test_the_sweep_runs_again_and_again_on_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service_module, "MIN_SWEEP_INTERVAL", 0.01)  # a tenth of the lifetime, at least this
    clock = Clock()
    async with upload_service(tmp_path, clock, file_lifetime=0.05) as h:
        service = service_of(h)
        swept = asyncio.Event()
        sweep = service.sweep

        async def sweep_and_tell() -> int:
            count = await sweep()
            if count:
                swept.set()
            return count

        monkeypatch.setattr(service, "sweep", sweep_and_tell)
        for round_ in range(2):
            slot_id = str(round_) * 32
            await store_file(service, slot_id, b"x", clock.now)
            clock.now += 1
            # The timer is the event loop's: real time moves it, a few hundredths of a second.
            await asyncio.wait_for(swept.wait(), 5)
            swept.clear()
            assert slot_id not in service.files and not (tmp_path / "upload" / slot_id).exists()


async def test_several_upload_components_share_one_service(tmp_path: Path) -> None:
    async with Harness.start(
        tmp_path, components={SERVICE: (UPLOAD,), "files.localhost": (UPLOAD,)}, options={UPLOAD: {"quota": 1000}},
    ) as h:
        client = await alice(h)
        for domain in (SERVICE, "files.localhost"):
            info = await client.ask("get", f"<query xmlns='{INFO}'/>", to=domain)
            assert NS in {f.get("var") for f in info.iter(f"{{{INFO}}}feature")}
        urls(await client.ask("get", request(size=600), to=SERVICE))
        # One quota for the account, whichever service it asks.
        answer = await client.ask("get", request(size=600), to="files.localhost")
        assert error_condition(answer) == "resource-constraint"
        assert [key for key in h.server.http.routes if key[1].startswith("/upload/")] == [
            ("PUT", "/upload/{slot}/{name}"), ("GET", "/upload/{slot}/{name}"),
            ("HEAD", "/upload/{slot}/{name}"), ("OPTIONS", "/upload/{slot}/{name}"),
        ]
