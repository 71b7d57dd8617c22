"""The upload service of this server: its limits, the files it keeps, the quota of each account,
slot requests (XEP-0363 §4, §5) and the periodic sweep of expired files.

One `UploadService` serves every component host that loads `components.upload` (it is made
once, through `mod.shared`): the files live in one directory and the HTTP routes are the
server's, so the hosts share the files, the quotas and the limits (a module's options are the
same on every host). Each host has its own disco#info, and its slots' URLs name the HTTP side of
the user host the component belongs to.
"""

from __future__ import annotations

import asyncio
import logging
import math

from components.upload.files import FileStore, StoredFile
from components.upload.quota import Usage
from components.upload.slots import (
    NS,
    Slot,
    UploadError,
    check_patterns,
    check_request,
    new_slot_id,
    parse_request,
    sign,
    slot_path,
)
from xmppd.dataforms import DATA_NS, add_field
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.module import ModuleAPI, StanzaEvent

log = logging.getLogger("xmppd.upload")

# How often expired files are looked for at most (they are refused from the moment they expire;
# the sweep frees the disk).
SWEEP_INTERVAL = 3600.0
MIN_SWEEP_INTERVAL = 1.0


class UploadService:
    def __init__(self, mod: ModuleAPI) -> None:
        options = mod.options
        self.clock = mod.time
        self.key = mod.secret_key("upload")
        self.quota = int(options["quota"])  # 0: none
        configured = int(options["max_file_size"])
        # A file over the quota could never be stored: announce and apply the lower limit.
        self.max_file_size = min(configured, self.quota) if self.quota else configured
        self.allowed_types = check_patterns(options["allowed_types"])
        self.slot_lifetime = float(options["slot_lifetime"])
        self.file_lifetime = float(options["file_lifetime"])  # 0: for ever
        self.store = FileStore(mod.config.data_dir / "upload")
        self.files: dict[str, StoredFile] = {}
        self.usage = Usage()
        # Slots with an upload under way or just completed: a second PUT is refused at once.
        self.busy: set[str] = set()
        self.started = False

    # -- files ------------------------------------------------------------------------------------
    def expires(self, stored: StoredFile) -> float | None:
        return stored.stored + self.file_lifetime if self.file_lifetime else None

    def expired(self, stored: StoredFile, now: float) -> bool:
        until = self.expires(stored)
        return until is not None and until <= now

    def serving(self, slot_id: str, now: float) -> StoredFile | None:
        """The file of a slot while it may be served."""
        stored = self.files.get(slot_id)
        if stored is None or self.expired(stored, now):
            return None
        return stored

    def stored(self, stored: StoredFile) -> None:
        """A complete upload: served from now on, counted for its account until it expires
        (its slot's reservation becomes the file's entry)."""
        self.files[stored.slot_id] = stored
        self.usage.add(stored.account, stored.slot_id, stored.size, self.expires(stored))

    async def start(self, mod: ModuleAPI) -> None:
        """Index what is on disk, deleting what expired while the server was down, then sweep
        every so often (nothing to sweep when files are kept for ever)."""
        self.started = True
        found = await asyncio.to_thread(self.store.scan)
        now = self.clock()
        for stored in found:
            if self.expired(stored, now):
                await self.store.delete(stored.slot_id)
            else:
                self.stored(stored)
        log.info("upload: %d files kept in %s", len(self.files), self.store.root)
        if self.file_lifetime:
            self._schedule(mod)

    def _schedule(self, mod: ModuleAPI) -> None:
        interval = max(MIN_SWEEP_INTERVAL, min(SWEEP_INTERVAL, self.file_lifetime / 10))

        def tick() -> None:
            async def sweep_and_go_on() -> None:
                try:
                    await self.sweep()
                except Exception:
                    log.exception("upload: the sweep of expired files failed; trying again later")
                # Not after a cancellation: the module is being unloaded.
                self._schedule(mod)

            mod.spawn(sweep_and_go_on())

        mod.call_later(interval, tick)

    async def sweep(self) -> int:
        """Delete the files that have expired; how many."""
        now = self.clock()
        expired = [stored for stored in self.files.values() if self.expired(stored, now)]
        for stored in expired:
            # Out of the index first: from here on it is neither served nor counted.
            del self.files[stored.slot_id]
            self.usage.remove(stored.account, stored.slot_id)
            await self.store.delete(stored.slot_id)
        if expired:
            log.info("upload: deleted %d expired files", len(expired))
        return len(expired)

    # -- slot requests ------------------------------------------------------------------------------
    def grant(self, account: str, filename: str | None, size: str | None, content_type: str | None) -> Slot:
        """A slot for `account` (a bare JID of a user host), or UploadError (XEP-0363 §5)."""
        request = parse_request(filename, size, content_type)
        check_request(request, max_file_size=self.max_file_size, allowed_types=self.allowed_types)
        now = self.clock()
        if self.quota:
            used = self.usage.used(account, now)
            if used + request.size > self.quota:
                retry = self.usage.retry_at(account, request.size, self.quota, now)
                raise UploadError(
                    "resource-constraint",
                    f"Quota reached: {used} of {self.quota} bytes are taken by your files",
                    "wait", retry=retry,
                )
        expires = math.ceil(now + self.slot_lifetime)
        slot = Slot(new_slot_id(), request.filename, request.size, request.content_type, expires, account)
        self.usage.add(account, slot.id, slot.size, expires)
        return slot

    def urls(self, base: str, slot: Slot) -> tuple[str, str]:
        """The PUT and GET URLs of a slot."""
        get = base + slot_path(slot)
        return f"{get}?token={sign(slot, self.key)}", get


def parent_host(mod: ModuleAPI) -> str:
    """The user host this component belongs to (whose HTTP side its URLs name)."""
    for component in mod.config.components:
        if component.domain == mod.host.name:
            return component.parent
    return mod.host.name


def install(mod: ModuleAPI, service: UploadService) -> None:
    """Disco (XEP-0363 §3) and slot requests (§4) on this component host."""
    mod.add_identity("store", "file", mod.options["name"])
    mod.add_feature(NS)
    # XEP-0128: the limit, so clients need not ask for a slot to learn it.
    form = element(f"{{{DATA_NS}}}x", {"type": "result"})
    add_field(form, "FORM_TYPE", "hidden", None, [NS])
    add_field(form, "max-file-size", "text-single", None, [str(service.max_file_size)])
    mod.add_extension(form)
    parent = parent_host(mod)

    def request_slot(ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        sender = stanza.from_
        payload = stanza.payload()
        assert payload is not None
        try:
            # Only accounts of this server: the files are its disk and its quota to give.
            if sender is None or sender.local is None or not mod.is_user_host(sender.domain):
                raise UploadError("not-allowed", "only accounts of this server may upload files here", "cancel")
            slot = service.grant(
                str(sender.bare), payload.get("filename"), payload.get("size"), payload.get("content-type")
            )
        except StanzaError as error:
            ev.router.bounce(stanza, error, ev.origin)
            return True
        put, get = service.urls(mod.http_url(parent), slot)
        reply = stanza.reply()
        answer = element(f"{{{NS}}}slot", parent=reply.element)
        element(f"{{{NS}}}put", {"url": put}, parent=answer)
        element(f"{{{NS}}}get", {"url": get}, parent=answer)
        ev.respond(reply)
        return True

    mod.on_iq("get", NS, "request", request_slot)
