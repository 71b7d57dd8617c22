"""HTTP File Upload (XEP-0363): an upload service on a component domain.

    [components."upload.example.org"]
    modules = ["components.upload"]

A client asks the service for a slot (an iq get with `<request filename= size= content-type=/>`),
gets a PUT URL and a GET URL, uploads the file with HTTP PUT and shares the GET URL. The files are
served by the server's own HTTP side (xmppd/http.py), under the URL of the user host the
component belongs to (`mod.http_url(parent)`: `[http] public_url`, or HTTPS on the host name).
Its parts, one concern per file:

    slots.py    requests checked, file names and content types made safe, slots signed and
                their tokens verified, Content-Disposition (no I/O)
    quota.py    the bytes each account has, and when enough of them expire (no I/O)
    files.py    the files on disk: streamed writes, the rename that completes them, the scan
    service.py  the service: limits, the index of files, slot requests, disco, the sweep
    http.py     PUT, GET/HEAD and OPTIONS on /upload/{slot}/{name}

Decisions (where XEP-0363 leaves the choice to the service, or says nothing):
- Who may upload: accounts of this server's user hosts (any of them, not only the component's
  parent host); anyone else gets not-allowed (cancel), as §5's example for an entity that "is not
  allowed to upload files". The GET URL is for anyone who has it (§2: no access control beyond
  an unguessable URL).
- Slot requests are checked in this order: the requester; filename and size present and usable
  (bad-request: control characters, an empty name, more than 255 bytes, a size that is not a
  plain decimal number, a content type that is not a clean media type); the size against
  `max_file_size` (§5: not-acceptable, modify, with <file-too-large><max-file-size/>); the type
  against `allowed_types` (not-acceptable, modify); the account's quota (resource-constraint,
  wait, with <retry stamp=.../> when enough of its bytes expire at a known time, §5).
- File names keep their extension and all their characters (§4 SHOULD), but '/' and '\\' become
  '_' and direction overrides are dropped (slots.sanitize_filename). The name is only ever in a
  URL (percent-encoded, §4) and in metadata; on disk a file is `<slot id>/data`.
- A request without content-type is application/octet-stream (§6 MAY). The PUT's Content-Type
  must have the slot's media type (§6 SHOULD reject: 415); parameters are not compared, and a PUT
  without Content-Type is accepted. The file is served with the type of the slot request.
- The quota (`quota` bytes per account) counts the account's files until they expire and the
  slots it was given until they are filled or expire, so that many slots asked at once cannot
  overrun it. A file larger than the quota could never fit, so the limit announced in disco and
  applied as file-too-large is the lower of `max_file_size` and `quota`. Slots given out before
  a restart are not counted after it (they are not stored; their URLs stay valid until they
  expire, so the quota can be overrun by at most what was asked for in the last `slot_lifetime`).
- The PUT URL carries a `token` query parameter (not a <header/>: every client passes a URL
  through, not all send §4's headers): an HMAC-SHA256 with `mod.secret_key("upload")` over the
  slot id, file name, size, content type, expiry and account (slots.sign). Nothing is stored for
  a slot until its file arrives. The slot id is 192 random bits; the GET URL is the PUT URL
  without the token.
- One file per slot: a slot with a file, or with an upload under way, answers a PUT with 409. A
  failed upload (wrong size, cut connection) keeps nothing and the slot may be tried again until
  it expires; an upload started before the slot expired is finished even if that takes longer.
- `slot_lifetime` defaults to 300 s (the XEP recommends a short validity; 300 s leaves time to
  start a large upload on a slow phone). Files expire `file_lifetime` seconds after they were
  stored (30 days by default; 0 keeps them for ever, §7 "as long as possible"): from that moment
  they are neither served (404) nor counted, and a sweep deletes them (every tenth of the
  lifetime, at most hourly) and at start for those that expired while the server was down.
- Downloads are inline for images, audio and video (not SVG) and attachments otherwise, with the
  RFC 6266/8187 file name, nosniff and a script-forbidding Content-Security-Policy.
- XEP-0363's purposes (urn:xmpp:http:upload:purpose:0) are not announced, which means the
  default 'message' purpose (§"purpose"): a <purpose/> child of a request is ignored.
- Several component hosts may load this module: they share one service (files, quotas, limits,
  the HTTP routes) and each has its own disco#info. The files are in this server's data
  directory: nodes of a cluster would each keep their own.
"""

from __future__ import annotations

from components.upload import http, service
from components.upload.service import UploadService
from xmppd.module import ModuleAPI, Option

PROTOCOLS = [("XEP-0363", "1.2.0", "complete", "upload component (components.upload); purposes not announced")]
MIB = 1024 * 1024
# Sizes and seconds are (int, float): the config reads those as numbers without the upper bound of
# whole-number options (2^31), so quotas above 2 GiB can be written.
OPTIONS = {
    "name": Option("HTTP File Upload", "the service's name in service discovery"),
    "max_file_size": Option(100 * MIB, "largest file in bytes (announced in disco#info)", kind=(int, float),
                            minimum=1),
    "quota": Option(1024 * MIB, "bytes each account may keep stored (files not yet expired); 0: no quota",
                    kind=(int, float), minimum=0),
    "allowed_types": Option([], 'media types accepted, e.g. ["image/*", "application/pdf"]; empty: any', kind=list),
    "slot_lifetime": Option(300, "seconds a slot's PUT URL stays valid", kind=(int, float), minimum=1),
    "file_lifetime": Option(30 * 24 * 3600, "seconds a file is kept after its upload; 0: for ever",
                            kind=(int, float), minimum=0),
}


async def setup(mod: ModuleAPI) -> None:
    upload = mod.shared("service", lambda: UploadService(mod))
    if not upload.started:
        await upload.start(mod)
    service.install(mod, upload)
    http.install(mod, upload)
