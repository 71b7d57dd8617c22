"""The HTTP side of the upload service: PUT fills a slot, GET and HEAD serve the file, OPTIONS
answers a CORS preflight, on `/upload/{slot}/{name}` of the server's HTTP side (xmppd/http.py).

Every answer carries the CORS headers of xmppd/http.py, so a web client on another origin can
upload and download; errors are short text/plain bodies.

PUT (XEP-0363 §6), checked in this order, each before any byte is written:
- the slot id is one the service could have made (404 otherwise: nothing else reaches the disk);
- the `token` query parameter is a valid, unexpired signature of this slot and file name
  (403 otherwise, forged and expired alike);
- the slot has no file yet and no other upload under way (409);
- the Content-Type, when sent, has the slot's media type (415; parameters are not compared, and
  a PUT without a Content-Type is taken for the slot's type);
- a Content-Length, when sent, is the slot's size (413 when larger, 400 when smaller); a chunked
  body is counted as it comes instead.
The body is then read as it arrives (`request.content.readany()`, never the whole of it) and
written to a temporary file in pieces; a body running past the slot's size is cut off with 413,
one ending short gets 400, and in both cases nothing is kept and the slot may be tried again
until it expires. A complete file is made durable, renamed into place and answered with 201.
An error answer to a PUT whose body was not read closes the connection (rather than reading
and discarding up to 100 MiB to keep it alive).

GET/HEAD: 404 for an unknown slot, a name other than the slot's, an upload not finished, an
expired file (even before the sweep deletes it). aiohttp's FileResponse streams the file from
disk (sendfile, or pieces read in a worker thread under TLS) and answers Range (206, 416),
If-None-Match/If-Modified-Since (304) with its ETag and Last-Modified. Added: the slot's
Content-Type, a Content-Disposition (slots.content_disposition), `Cache-Control: max-age` up to
the file's expiry with `immutable` (a file never changes), and `X-Content-Type-Options: nosniff`
with a Content-Security-Policy that forbids scripts, frames and plugins, so that a file served
from the server's own origin can never act as a page of it.
"""

from __future__ import annotations

import asyncio
import errno
import logging

from aiohttp import web

from components.upload.files import StoredFile
from components.upload.service import UploadService
from components.upload.slots import SLOT_ID, Slot, SlotRefused, content_disposition, essence, verify
from xmppd.http import CORS, cors_preflight
from xmppd.module import ModuleAPI

log = logging.getLogger("xmppd.upload")

PATH = "/upload/{slot}/{name}"
# What a script on another origin may read of a download, beyond the CORS-safelisted headers.
EXPOSE = "Content-Disposition, Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified"
SECURITY = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
}
# Cache lifetime of a file kept for ever.
FOREVER = 365 * 24 * 3600


def headers(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**CORS, "Access-Control-Expose-Headers": EXPOSE, **(extra or {})}


def refuse(status: int, text: str, *, close: bool = False) -> web.Response:
    response = web.Response(status=status, text=text + "\n", headers=headers())
    if close:
        response.force_close()
    return response


class UploadHttp:
    def __init__(self, service: UploadService) -> None:
        self.service = service

    async def put(self, request: web.Request) -> web.StreamResponse:
        service = self.service
        slot_id, name = request.match_info["slot"], request.match_info["name"]
        if not SLOT_ID.fullmatch(slot_id):
            return refuse(404, "no such upload slot", close=True)
        token = request.query.get("token")
        if token is None:
            return refuse(403, "this URL does not allow uploads (no token)", close=True)
        try:
            slot = verify(token, slot_id, name, service.key, service.clock())
        except SlotRefused as refused:
            if refused.reason == "expired":
                return refuse(403, "this upload slot has expired: ask for a new one", close=True)
            return refuse(403, "this upload URL is not valid", close=True)
        if slot_id in service.files or slot_id in service.busy:
            return refuse(409, "this slot has been used already", close=True)
        declared = request.headers.get("Content-Type")
        if declared is not None and essence(declared) != essence(slot.content_type):
            return refuse(415, f"this slot is for a file of type {slot.content_type}", close=True)
        length = request.content_length
        if length is not None and length != slot.size:
            status = 413 if length > slot.size else 400
            return refuse(status, f"this slot is for a file of {slot.size} bytes, not {length}", close=True)
        service.busy.add(slot_id)  # no await since the check above: one upload per slot at a time
        try:
            return await self._receive(request, slot)
        finally:
            service.busy.discard(slot_id)

    async def _receive(self, request: web.Request, slot: Slot) -> web.StreamResponse:
        service = self.service
        slot_id, size = slot.id, slot.size
        try:
            upload = await service.store.begin(slot_id)
        except FileExistsError:
            return refuse(409, "another upload of this slot is under way", close=True)
        except OSError as exc:
            return self._disk_error(exc)
        try:
            while True:
                try:
                    chunk = await request.content.readany()
                except Exception as exc:  # the peer went away or sent a broken body
                    upload.abort()
                    log.info("upload %s cut short: %r", slot_id, exc)
                    return refuse(400, "the upload was cut short", close=True)
                if not chunk:
                    break
                if upload.received + len(chunk) > size:
                    upload.abort()
                    return refuse(413, f"this slot is for a file of {size} bytes", close=True)
                await upload.write(chunk)
            if upload.received != size:
                upload.abort()
                return refuse(400, f"this slot is for a file of {size} bytes, {upload.received} came", close=True)
            stored = StoredFile(slot_id, slot.filename, size, slot.content_type, slot.account, service.clock())
            await upload.commit(stored)
        except asyncio.CancelledError:
            upload.abort()
            raise
        except OSError as exc:
            upload.abort()
            return self._disk_error(exc)
        service.stored(stored)
        log.info("upload %s: %d bytes stored for %s", slot_id, size, slot.account)
        return web.Response(status=201, headers=headers())

    @staticmethod
    def _disk_error(exc: OSError) -> web.Response:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            log.error("upload: the disk is full (%s)", exc)
            return refuse(507, "the server has no room for this file now", close=True)
        log.exception("upload: could not write a file", exc_info=exc)
        return refuse(500, "the file could not be stored", close=True)

    async def get(self, request: web.Request) -> web.StreamResponse:
        """GET and HEAD."""
        service = self.service
        slot_id, name = request.match_info["slot"], request.match_info["name"]
        now = service.clock()
        stored = service.serving(slot_id, now) if SLOT_ID.fullmatch(slot_id) else None
        if stored is None or stored.filename != name:
            return refuse(404, "no such file")
        until = service.expires(stored)
        max_age = FOREVER if until is None else max(0, int(until - now))
        extra = {
            "Content-Type": stored.content_type,
            "Content-Disposition": content_disposition(stored.filename, stored.content_type),
            "Cache-Control": f"max-age={max_age}, immutable",
            **SECURITY,
        }
        return web.FileResponse(service.store.data_path(slot_id), headers=headers(extra))


def install(mod: ModuleAPI, service: UploadService) -> None:
    """The routes, once for the server (the first host to load the module has them)."""
    http = UploadHttp(service)
    mod.add_http_route("PUT", PATH, http.put)
    mod.add_http_route("GET", PATH, http.get)
    mod.add_http_route("HEAD", PATH, http.get)
    mod.add_http_route("OPTIONS", PATH, cors_preflight)
