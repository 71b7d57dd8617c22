"""XEP-0363 slots without I/O: a slot request checked, a slot signed and its PUT URL's token
verified, file names and content types made safe, and the Content-Disposition a file is served
with. Time comes in as `now`; nothing here reads a clock, a file or a socket.

A slot is stateless on the HTTP side: everything the PUT handler must know (size, content type,
expiry, account) travels in the PUT URL's `token` query parameter, sealed with an HMAC of the
server's upload key over those fields *and* the slot id and file name of the URL's path. So a
token cannot be moved to another slot or file name, nor its size, type, account or expiry
changed, and slots survive a restart without being stored anywhere (the key is derived from the
server secret in the data directory, `mod.secret_key("upload")`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import quote

from lxml import etree

from xmppd.elements import element
from xmppd.errors import StanzaError

NS = "urn:xmpp:http:upload:0"
# XEP-0363 §6: the type a file is taken to have when the request names none.
DEFAULT_CONTENT_TYPE = "application/octet-stream"
# Most file systems limit a name to 255 bytes; the name is also a URL path segment and a header.
MAX_FILENAME_BYTES = 255
MAX_CONTENT_TYPE = 255
# 24 random bytes (192 bits), base64url: unguessable (XEP-0363 §8 "long randomized parts"), and
# the only shape of slot id the HTTP side accepts, so no path segment ever reaches the disk.
SLOT_ID = re.compile(r"[A-Za-z0-9_-]{32}")
MAX_TOKEN = 2048
_TOKEN_VERSION = "xmppd-upload-1"

# RFC 9110 §5.6.2 token; §8.3.1 media type with parameters (values: token or quoted-string of
# printable ASCII, so nothing a header could be split with).
_TCHAR = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE = re.compile(
    rf"[ \t]*({_TCHAR})/({_TCHAR})((?:[ \t]*;[ \t]*{_TCHAR}=(?:{_TCHAR}|\"[\x20\x21\x23-\x5b\x5d-\x7e]*\"))*)[ \t]*"
)
_PATTERN = re.compile(rf"\*(?:/\*)?|{_TCHAR}/(?:\*|{_TCHAR})")
_SIZE = re.compile(r"[0-9]{1,19}")
# Direction marks and overrides: "photo\u202egnp.exe" shows as "photoexe.png".
_BIDI = dict.fromkeys(map(ord, "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
# RFC 8187 attr-char: what may stand unescaped in filename*=UTF-8''...
_ATTR_CHAR_SAFE = "!#$&+-.^_`|~"
# Shown in the page (Content-Disposition: inline) rather than saved; SVG can carry scripts, so
# it is an attachment whatever its main type.
_INLINE = ("image/", "video/", "audio/")
_NEVER_INLINE = ("image/svg+xml",)


class UploadError(StanzaError):
    """A refused slot request (XEP-0363 §5): a stanza error, with the upload namespace's
    <file-too-large/> (and its <max-file-size/>) or <retry stamp=.../> next to the condition."""

    def __init__(
        self,
        condition: str,
        text: str | None = None,
        error_type: str | None = None,
        *,
        max_file_size: int | None = None,
        retry: float | None = None,
    ) -> None:
        super().__init__(condition, text, error_type)
        self.max_file_size = max_file_size
        self.retry = retry

    def to_element(self, client_ns: str) -> etree._Element:
        error = super().to_element(client_ns)
        # RFC 6120 §8.3.2: the application-specific condition follows the defined one and the text.
        if self.max_file_size is not None:
            too_large = element(f"{{{NS}}}file-too-large", parent=error)
            element(f"{{{NS}}}max-file-size", parent=too_large).text = str(self.max_file_size)
        if self.retry is not None:
            element(f"{{{NS}}}retry", {"stamp": retry_stamp(self.retry)}, parent=error)
        return error


def retry_stamp(when: float) -> str:
    """XEP-0082 DateTime in UTC, rounded up to the second (never earlier than `when`)."""
    seconds = int(when) + (0 if when == int(when) else 1)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the request ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotRequest:
    filename: str
    size: int
    content_type: str


def sanitize_filename(raw: str) -> str:
    """The name a file is kept and served under, or ValueError. Control characters (and line
    separators) are refused: no client has them in a real name, and a name ends up in a URL and
    a header. Path separators become '_' (the name is one path segment; on disk the file has a
    fixed name anyway) and direction overrides are dropped (they disguise the extension); the
    rest, extension included, is kept as XEP-0363 §4 asks, in Unicode NFC."""
    name = unicodedata.normalize("NFC", raw)
    if any(unicodedata.category(c) in ("Cc", "Zl", "Zp") for c in name):
        raise ValueError("the file name has control characters")
    name = name.translate(_BIDI).replace("/", "_").replace("\\", "_").strip()
    if name in ("", ".", ".."):
        raise ValueError("the file name is empty")
    if len(name.encode()) > MAX_FILENAME_BYTES:
        raise ValueError(f"the file name is longer than {MAX_FILENAME_BYTES} bytes")
    return name


def parse_content_type(raw: str) -> str:
    """A media type as a header may carry it, type and subtype in lower case; ValueError for
    anything else (it is sent back as the file's Content-Type, so it must be a clean one)."""
    match = _MEDIA_TYPE.fullmatch(raw)
    if match is None or len(raw) > MAX_CONTENT_TYPE:
        raise ValueError(f"{raw!r} is not a media type such as image/jpeg")
    main, sub, parameters = match.groups()
    return f"{main.lower()}/{sub.lower()}{parameters}"


def essence(content_type: str) -> str:
    """`type/subtype` in lower case, without parameters: what two content types are compared by."""
    return content_type.split(";", 1)[0].strip().lower()


def parse_request(filename: str | None, size: str | None, content_type: str | None) -> SlotRequest:
    """XEP-0363 §4: the attributes of a <request/>; bad-request when one is missing or unusable.
    Without a content type the file is application/octet-stream (§6 MAY)."""
    if filename is None or size is None:
        raise UploadError("bad-request", "a slot request has a filename and a size")
    try:
        name = sanitize_filename(filename)
    except ValueError as exc:
        raise UploadError("bad-request", str(exc)) from None
    if not _SIZE.fullmatch(size):
        raise UploadError("bad-request", f"the size must be a number of bytes, not {size!r}")
    try:
        media_type = parse_content_type(content_type) if content_type else DEFAULT_CONTENT_TYPE
    except ValueError as exc:
        raise UploadError("bad-request", str(exc)) from None
    return SlotRequest(name, int(size), media_type)


def check_patterns(patterns: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`allowed_types` in lower case; ValueError naming a pattern that is not `*`, `*/*`,
    `type/*` or `type/subtype`."""
    checked = []
    for pattern in patterns:
        cleaned = pattern.strip().lower()
        main, _, sub = cleaned.partition("/")
        wildcard_misplaced = cleaned not in ("*", "*/*") and ("*" in main or ("*" in sub and sub != "*"))
        if not _PATTERN.fullmatch(cleaned) or wildcard_misplaced:
            raise ValueError(f"allowed_types: {pattern!r} is not a media type or a pattern like image/*")
        checked.append(cleaned)
    return tuple(checked)


def type_allowed(patterns: tuple[str, ...], content_type: str) -> bool:
    """Whether `content_type` matches one of `patterns` (none: anything goes)."""
    if not patterns:
        return True
    media = essence(content_type)
    main = media.split("/", 1)[0]
    return any(p in ("*", "*/*", media) or p == f"{main}/*" for p in patterns)


def check_request(request: SlotRequest, *, max_file_size: int, allowed_types: tuple[str, ...]) -> None:
    """The service's limits (not the account's quota): §5 file-too-large, and not-acceptable
    for a content type the service does not take."""
    if request.size > max_file_size:
        raise UploadError(
            "not-acceptable", f"File too large. The maximum file size is {max_file_size} bytes",
            "modify", max_file_size=max_file_size,
        )
    if not type_allowed(allowed_types, request.content_type):
        raise UploadError(
            "not-acceptable", f"files of type {essence(request.content_type)} are not accepted here "
            f"(allowed: {', '.join(allowed_types)})", "modify",
        )


# -- slots and their tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    id: str
    filename: str
    size: int
    content_type: str
    expires: int  # seconds since the epoch, by the server's clock
    account: str  # the bare JID that asked for it


class SlotRefused(Exception):
    """A PUT URL that does not hold: `reason` is 'forged' (not made here, or changed) or 'expired'."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def new_slot_id() -> str:
    return secrets.token_urlsafe(24)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, slot: Slot) -> bytes:
    # JSON of a list: unambiguous field boundaries whatever the name or account contain.
    fields = [_TOKEN_VERSION, slot.id, slot.filename, slot.size, slot.content_type, slot.expires, slot.account]
    message = json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).digest()


def sign(slot: Slot, key: bytes) -> str:
    """The token of the PUT URL: the fields the path does not carry, and the MAC over all."""
    payload = json.dumps([slot.size, slot.content_type, slot.expires, slot.account], separators=(",", ":"))
    return f"{_b64(payload.encode())}.{_b64(_mac(key, slot))}"


def verify(token: str, slot_id: str, filename: str, key: bytes, now: float) -> Slot:
    """The slot a PUT to `/upload/<slot_id>/<filename>?token=<token>` may fill; SlotRefused
    'forged' when the token was not made by this server for exactly that slot, 'expired' when it
    was but its time is over (the signature is checked first: a forged token is never 'expired')."""
    if len(token) > MAX_TOKEN or not SLOT_ID.fullmatch(slot_id):
        raise SlotRefused("forged")
    try:
        payload, mac = token.split(".")
        size, content_type, expires, account = json.loads(_unb64(payload))
        claimed = _unb64(mac)
    except (ValueError, TypeError, binascii.Error):  # json's errors are ValueErrors
        raise SlotRefused("forged") from None
    if not (
        isinstance(size, int) and isinstance(expires, int) and isinstance(content_type, str)
        and isinstance(account, str)
    ):
        raise SlotRefused("forged")
    slot = Slot(slot_id, filename, size, content_type, expires, account)
    if not hmac.compare_digest(_mac(key, slot), claimed):
        raise SlotRefused("forged")
    if now >= expires:
        raise SlotRefused("expired")
    return slot


def slot_path(slot: Slot) -> str:
    """`/upload/<slot id>/<file name>`, the name percent-encoded as one path segment (XEP-0363
    §4: non-ASCII characters percent-encoded)."""
    return f"/upload/{slot.id}/{quote(slot.filename, safe='')}"


# -- serving ----------------------------------------------------------------------------------------


def inline(content_type: str) -> bool:
    media = essence(content_type)
    return media.startswith(_INLINE) and media not in _NEVER_INLINE


def content_disposition(filename: str, content_type: str) -> str:
    """RFC 6266: inline for images, video and audio, attachment otherwise, with the name twice:
    `filename*` (RFC 8187, UTF-8, percent-encoded: exact) and a plain ASCII `filename` for old
    agents, with anything outside printable ASCII, quotes, backslashes and '%' (which some
    agents decode) replaced by '_'. Neither can break out of the header."""
    disposition = "inline" if inline(content_type) else "attachment"
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in filename)
    encoded = quote(filename, safe=_ATTR_CHAR_SAFE)
    return f"{disposition}; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"
