"""The sans-IO parts of the upload component (components/upload/slots.py, quota.py): slot tokens
signed and verified (forged and expired ones refused), slot requests checked, file names made
safe, content types, Content-Disposition, and the quota's arithmetic."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from urllib.parse import unquote

import pytest
from lxml import etree

from components.upload.quota import Usage
from components.upload.slots import (
    NS,
    Slot,
    SlotRefused,
    UploadError,
    _b64,
    _unb64,
    check_patterns,
    check_request,
    content_disposition,
    new_slot_id,
    parse_content_type,
    parse_request,
    retry_stamp,
    sanitize_filename,
    sign,
    slot_path,
    type_allowed,
    verify,
)
from tests.unit.test_sans_io import FORBIDDEN, ROOT, runtime_imports
from xmppd.stanza import CLIENT_NS

KEY = b"k" * 32
NOW = 1_700_000_000


def a_slot(**changes: object) -> Slot:
    slot = Slot(new_slot_id(), "my juliet.jpg", 23456, "image/jpeg", NOW + 300, "romeo@montague.tld")
    return dataclasses.replace(slot, **changes)  # type: ignore[arg-type]


# -- tokens ------------------------------------------------------------------------------------------


def test_a_signed_slot_verifies_until_it_expires() -> None:
    slot = a_slot()
    token = sign(slot, KEY)
    assert verify(token, slot.id, slot.filename, KEY, NOW) == slot
    assert verify(token, slot.id, slot.filename, KEY, NOW + 299.9) == slot
    for later in (NOW + 300, NOW + 10_000):
        with pytest.raises(SlotRefused) as refused:
            verify(token, slot.id, slot.filename, KEY, later)
        assert refused.value.reason == "expired"


def test_a_token_holds_only_for_its_own_slot_name_and_key() -> None:
    slot = a_slot()
    token = sign(slot, KEY)
    for slot_id, filename, key in (
        (new_slot_id(), slot.filename, KEY),  # another slot
        (slot.id, "other.jpg", KEY),  # another name in the URL
        (slot.id, slot.filename.upper(), KEY),
        (slot.id, slot.filename, b"x" * 32),  # another server
    ):
        with pytest.raises(SlotRefused) as refused:
            verify(token, slot_id, filename, key, NOW)
        assert refused.value.reason == "forged"


@pytest.mark.parametrize(
    "change",
    [
        {"size": 23457},
        {"size": 10**12},
        {"content_type": "text/html"},
        {"expires": NOW + 10**6},
        {"account": "mallory@montague.tld"},
    ],
)
def test_a_token_whose_fields_were_changed_is_forged(change: dict[str, object]) -> None:
    slot = a_slot()
    _payload, mac = sign(slot, KEY).split(".")
    changed = dataclasses.replace(slot, **change)  # type: ignore[arg-type]
    payload = json.dumps([changed.size, changed.content_type, changed.expires, changed.account]).encode()
    with pytest.raises(SlotRefused) as refused:
        verify(f"{_b64(payload)}.{mac}", slot.id, slot.filename, KEY, NOW)
    assert refused.value.reason == "forged"


def test_a_forged_token_is_forged_even_when_it_claims_to_have_expired() -> None:
    slot = a_slot(expires=NOW - 10)
    payload, _mac = sign(slot, KEY).split(".")
    with pytest.raises(SlotRefused) as refused:
        verify(f"{payload}.{_b64(b'0' * 32)}", slot.id, slot.filename, KEY, NOW)
    assert refused.value.reason == "forged"


@pytest.mark.parametrize(
    "token",
    [
        "",
        ".",
        "abc",
        "a.b.c",
        "!!!.???",
        f"{_b64(b'not json')}.{_b64(b'x')}",
        f"{_b64(b'{}')}.{_b64(b'x')}",
        f"{_b64(b'[1, 2, 3]')}.{_b64(b'x')}",
        f"{_b64(json.dumps(['1', 'a/b', 1, 'x']).encode())}.{_b64(b'x')}",  # size as a string
        f"{_b64(json.dumps([1, 'a/b', 1.5, 'x']).encode())}.{_b64(b'x')}",  # expiry not whole
        "A" * 5000,
    ],
)
def test_garbage_tokens_are_forged_never_a_crash(token: str) -> None:
    with pytest.raises(SlotRefused) as refused:
        verify(token, new_slot_id(), "a.jpg", KEY, NOW)
    assert refused.value.reason == "forged"


def test_a_token_for_a_path_that_is_no_slot_id_is_forged() -> None:
    slot = a_slot(id="..%2F..%2Fetc")
    with pytest.raises(SlotRefused):
        verify(sign(slot, KEY), slot.id, slot.filename, KEY, NOW)


def test_slot_ids_are_long_random_and_url_safe() -> None:
    ids = {new_slot_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(len(i) == 32 and all(c.isalnum() or c in "-_" for c in i) for i in ids)
    assert _unb64(_b64(b"\x00\xff")) == b"\x00\xff"


def test_the_path_percent_encodes_the_name_as_one_segment() -> None:
    slot = a_slot(filename="a b?#%/ü.jpg")
    assert slot_path(slot) == f"/upload/{slot.id}/a%20b%3F%23%25%2F%C3%BC.jpg"


# -- requests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        ("my-juliet.jpg", "my-juliet.jpg"),
        (".htaccess", ".htaccess"),  # harmless: on disk every file is `data`
        ("  spaced name.txt  ", "spaced name.txt"),
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("C:\\Users\\x.doc", "C:_Users_x.doc"),
        ("/", "_"),
        ("e\u0301t\u00e9.png", "\u00e9t\u00e9.png"),  # NFC
        ("photo\u202egnp.exe", "photognp.exe"),  # the override that showed "photoexe.png"
        ("\u2066a\u2069.pdf", "a.pdf"),
        ("emoji \U0001f600.gif", "emoji \U0001f600.gif"),
        ("\u00e9" * 127 + "x", "\u00e9" * 127 + "x"),  # 255 bytes
    ],
)
def test_file_names_are_kept_but_made_safe(raw: str, kept: str) -> None:
    assert sanitize_filename(raw) == kept


@pytest.mark.parametrize(
    "raw",
    ["", " ", ".", "..", "\u202e", "a\nb", "a\rb", "a\x00b", "a\tb", "a\x7fb", "a\x85b", "a\u2028b",
     "\u00e9" * 128, "x" * 256],
)
def test_unusable_file_names_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        sanitize_filename(raw)


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ("image/jpeg", "image/jpeg"),
        ("Image/JPEG", "image/jpeg"),
        ("text/plain; charset=utf-8", "text/plain; charset=utf-8"),
        ('text/plain;charset="UTF-8"', 'text/plain;charset="UTF-8"'),
        ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",
         "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    ],
)
def test_content_types(raw: str, parsed: str) -> None:
    assert parse_content_type(raw) == parsed


@pytest.mark.parametrize(
    "raw",
    ["", "image", "image/", "/jpeg", "image/png/x", "image /png", "text/html\r\nSet-Cookie: a=b", "text/html\n",
     'text/plain; charset="a\r\nb"', "text/plain; charset", "t\u00e9xt/plain", "a/" + "b" * 300],
)
def test_unusable_content_types_are_refused(raw: str) -> None:
    with pytest.raises(ValueError):
        parse_content_type(raw)


def test_a_request_is_parsed_with_its_defaults() -> None:
    assert parse_request("a.bin", "0", None).content_type == "application/octet-stream"
    request = parse_request("x/y.PNG", "1024", "IMAGE/PNG")
    assert (request.filename, request.size, request.content_type) == ("x_y.PNG", 1024, "image/png")


@pytest.mark.parametrize(
    ("filename", "size", "content_type"),
    [
        (None, "1", None),
        ("a", None, None),
        ("a", "", None),
        ("a", "-1", None),
        ("a", "0x10", None),
        ("a", "1.0", None),
        ("a", "\u0663", None),
        ("a", "9" * 20, None),
        ("a\x00", "1", None),
        ("a", "1", "nonsense"),
    ],
)
def test_bad_requests_are_bad_request(filename: str | None, size: str | None, content_type: str | None) -> None:
    with pytest.raises(UploadError) as refused:
        parse_request(filename, size, content_type)
    assert refused.value.condition == "bad-request" and refused.value.type == "modify"


def test_too_large_is_not_acceptable_with_the_limit() -> None:
    with pytest.raises(UploadError) as refused:
        check_request(parse_request("a", "101", None), max_file_size=100, allowed_types=())
    error = refused.value.to_element(CLIENT_NS)
    xml = etree.tostring(error, encoding="unicode")
    assert error.get("type") == "modify"
    assert [etree.QName(child).localname for child in error] == ["not-acceptable", "text", "file-too-large"]
    assert error.findtext(f"{{{NS}}}file-too-large/{{{NS}}}max-file-size") == "100", xml
    check_request(parse_request("a", "100", None), max_file_size=100, allowed_types=())


def test_type_patterns() -> None:
    patterns = check_patterns(["image/*", "Application/PDF", " video/mp4 "])
    assert patterns == ("image/*", "application/pdf", "video/mp4")
    assert type_allowed(patterns, "image/svg+xml")
    assert type_allowed(patterns, "application/pdf; x=y")
    assert not type_allowed(patterns, "application/pdfx")
    assert not type_allowed(patterns, "imagex/png")
    assert not type_allowed(patterns, "video/webm")
    assert type_allowed((), "anything/at-all")
    assert type_allowed(("*",), "text/html") and type_allowed(("*/*",), "text/html")
    for bad in ("image", "*/png", "image/*/x", "", "image/png; q=1"):
        with pytest.raises(ValueError):
            check_patterns([bad])
    with pytest.raises(UploadError) as refused:
        check_request(parse_request("a", "1", "text/html"), max_file_size=10, allowed_types=patterns)
    assert refused.value.condition == "not-acceptable"


def test_the_retry_element_carries_a_utc_stamp_never_too_early() -> None:
    assert retry_stamp(NOW) == "2023-11-14T22:13:20Z"
    assert retry_stamp(NOW + 0.2) == "2023-11-14T22:13:21Z"
    error = UploadError("resource-constraint", "quota", "wait", retry=NOW).to_element(CLIENT_NS)
    retry = error.find(f"{{{NS}}}retry")
    assert retry is not None and retry.get("stamp") == "2023-11-14T22:13:20Z"
    assert error.get("type") == "wait"


# -- Content-Disposition -----------------------------------------------------------------------------


# RFC 6266 §4.1 / RFC 8187 §3.2: disposition-type; filename="..."; filename*=UTF-8''<ext-value>
_HEADER = re.compile(
    r"(inline|attachment); filename=\"([ !#-\[\]-~]*)\"; filename\*=UTF-8''((?:[A-Za-z0-9!#$&+.^_`|~-]|%[0-9A-F]{2})*)"
)


def disposition(header: str) -> tuple[str, str]:
    """The disposition type and the exact file name (`filename*`, which RFC 6266 §4.3 has agents
    prefer), read as the grammar says; AssertionError when the header does not follow it."""
    match = _HEADER.fullmatch(header)
    assert match is not None, header
    return match.group(1), unquote(match.group(3), errors="strict")


@pytest.mark.parametrize(
    ("content_type", "kind"),
    [
        ("image/png", "inline"),
        ("video/mp4", "inline"),
        ("audio/ogg; codecs=opus", "inline"),
        ("IMAGE/JPEG", "inline"),
        ("image/svg+xml", "attachment"),
        ("text/html", "attachment"),
        ("application/pdf", "attachment"),
        ("application/octet-stream", "attachment"),
    ],
)
def test_only_media_is_shown_inline(content_type: str, kind: str) -> None:
    assert disposition(content_disposition("a.bin", content_type))[0] == kind


@pytest.mark.parametrize(
    "filename",
    ["plain.jpg", "sp ace.jpg", 'quo"te.txt', "back\\slash.txt", "per%20cent.txt", "semi;colon=1.txt",
     "\u00e9t\u00e9 \U0001f600.png", "\u65e5\u672c\u8a9e.pdf", "a'b.txt", "tab\tand\r\nnewline.txt"],
)
def test_the_file_name_comes_back_exactly_and_cannot_break_out(filename: str) -> None:
    header = content_disposition(filename, "application/pdf")
    # One line of visible ASCII: no header injection, nothing for latin-1 to mangle.
    assert all(" " <= c <= "~" for c in header), header
    kind, name = disposition(header)
    assert (kind, name) == ("attachment", filename)
    fallback = header.split('filename="', 1)[1].split('"', 1)[0]
    assert len(fallback) == len(filename) and all(c not in '"\\%' for c in fallback)


def test_the_ascii_fallback_keeps_what_it_can() -> None:
    assert content_disposition("r\u00e9sum\u00e9.pdf", "application/pdf") == (
        "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
    )


# -- the quota ---------------------------------------------------------------------------------------


def test_usage_counts_entries_until_they_expire() -> None:
    usage = Usage()
    usage.add("a", "f1", 100, NOW + 10)
    usage.add("a", "f2", 50, None)  # for ever
    usage.add("b", "f3", 7, NOW + 5)
    assert usage.used("a", NOW) == 150 and usage.used("b", NOW) == 7
    assert usage.used("a", NOW + 10) == 50
    assert usage.used("b", NOW + 5) == 0 and usage.accounts() == 1
    usage.add("a", "f2", 60, None)  # the same key replaced (a slot becoming its file)
    assert usage.used("a", NOW) == 60
    usage.remove("a", "f2")
    usage.remove("a", "gone")
    assert usage.used("a", NOW) == 0 and usage.accounts() == 0


def test_retry_is_when_enough_has_expired() -> None:
    usage = Usage()
    usage.add("a", "slot", 300, NOW + 300)
    usage.add("a", "old", 500, NOW + 3000)
    usage.add("a", "kept", 100, None)
    assert usage.retry_at("a", 100, 1000, NOW) == NOW  # fits now
    assert usage.retry_at("a", 200, 1000, NOW) == NOW + 300
    assert usage.retry_at("a", 600, 1000, NOW) == NOW + 3000
    assert usage.retry_at("a", 950, 1000, NOW) is None  # the kept 100 never go
    assert usage.retry_at("a", 1001, 1000, NOW) is None
    assert usage.retry_at("nobody", 1000, 1000, NOW) == NOW


# -- no I/O -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["slots", "quota"])
def test_the_sans_io_parts_import_no_io(name: str) -> None:
    path = Path(ROOT, "components", "upload", f"{name}.py")
    imported = runtime_imports(path.read_text(), f"components.upload.{name}", is_package=False, in_functions=True)
    assert not {m for m in imported if m.split(".")[0] in FORBIDDEN}
    ours = {m for m in imported if m.split(".")[0] in ("xmppd", "components")}
    # Only sans-IO modules of the core (xmppd.elements builds XML, xmppd.errors is sans-IO).
    assert ours <= {"xmppd", "xmppd.elements", "xmppd.errors", "components", "components.upload"}
