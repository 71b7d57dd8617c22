"""XEP-0054: vcard-temp, with the server's part of XEP-0153: vCard-Based Avatars.

Storage. An account's vCard is one document in the "vcard" key-value store (key "vcard-temp"):
the `<vCard/>` element as XML text, kept as the client sent it. It goes with the account (the kv
table is one of the user tables).

Requests (XEP-0054 §3), answered by the server, never forwarded to a resource (§3.3):

- get to oneself (no 'to', or one's own bare JID): the stored vCard, or an empty `<vCard/>` when
  there is none (§3.1 allows that or item-not-found; clients take the empty one as "no vCard").
- set to oneself: the whole vCard is replaced (§3.2: there are no partial updates); one larger
  than `max_size` bytes serialised is refused with not-acceptable.
- set to another account: forbidden (§3.2).
- get to another account's bare JID: its vCard, since vCards are public (§5). No vCard and no
  such account get the same answer, service-unavailable (§3.3 since 1.3.0, after RFC 6121
  §8.5.1), so that nobody learns which accounts exist.
- any other element of the vcard-temp namespace (`<vcard/>`, the usual misspelling, §8):
  bad-request, rather than the service-unavailable of a namespace we do not know.

Avatars (XEP-0153). The hash of an account's photo (SHA-1 of the BINVAL's bytes, §3.1) is
computed when a vCard is read or stored, and kept in memory for the `cache_size` accounts that
logged in most recently: read once, updated on every set, dropped when the account is deleted
(here or by another process, xmppd/deletions.py), so a login reads no vCard. Only this server
writes vCards (another cluster node would have to signal its writes).

XEP-0153 §4 asks the client, not the server, to put
`<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>` in its presence, and says nothing of the
server. A client that has not downloaded the vCard yet can only send an empty
`<x/>` (§4.1 rule 2), and one that does not implement XEP-0153 sends nothing, so contacts would
not learn of the avatar. The server knows the hash, so it fills it in, by the rules XEP-0398 §4
gives servers, in every available presence a user sends, broadcast or directed (a room join):

- `<x/>` without `<photo/>`: the hash goes in, or an empty `<photo/>` ("no image", §4.1 rule 3)
  when the vCard has no photo: the server knows that as well as the client would.
- no `<x/>`: one is added when there is a photo; when there is none, nothing is added, so the
  presence of users without an avatar costs nothing more.
- a `<photo/>`, empty or not: the client's word stands (XEP-0398 lets a server overwrite a
  different hash, but a conforming client downloaded or uploaded the vCard itself, §4.2 rule 1).

The presence is changed where it is sent (`pre-presence/...`), before the presence module
broadcasts, routes or keeps it (priority -1), so probes and the user's other resources see the
same hash. A new vCard does not resend presence: XEP-0153 §4.1 leaves that to the client.

The rest of XEP-0398 (an avatar published with PEP is the vCard's photo, and the other way round)
is avatar_conversion.py's, through two events: `vcard-read` before a vCard is answered (it puts
the PEP avatar in) and `vcard-stored` after one is stored (it publishes the photo); it also puts
the PEP avatar's hash in presence before this module would.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from lxml import etree

from storage.shapes import KEY_VALUE
from xmppd import events
from xmppd.elements import element, from_text, to_text
from xmppd.events import VCardEvent
from xmppd.jid import JID
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, StanzaEvent

if TYPE_CHECKING:
    from storage.shapes import KeyValue
    from xmppd.events import AccountEvent

PROTOCOLS = [("XEP-0054", "1.3.0"), ("XEP-0153", "1.1.1")]
NS = "vcard-temp"
UPDATE_NS = "vcard-temp:x:update"
KV_STORE = "vcard"
KV_KEY = "vcard-temp"
OPTIONS = {
    "max_size": Option(
        64 * 1024, "largest vCard stored, in bytes of XML (avatars included); larger: not-acceptable", minimum=1
    ),
    "cache_size": Option(
        10000, "accounts whose photo hash is kept in memory (the least recently used are dropped)", minimum=1
    ),
}
PRIORITY = 0  # a feature: after blocking (100), before the presence module's handling (-1)

VCARD = f"{{{NS}}}vCard"
_BINVAL = f"{{{NS}}}PHOTO/{{{NS}}}BINVAL"
_UPDATE = f"{{{UPDATE_NS}}}x"
_PHOTO = f"{{{UPDATE_NS}}}photo"


def photo_data(vcard: etree._Element) -> bytes:
    """The photo's bytes; b"" when there is no photo, or none we can read (an EXTVAL link,
    XEP-0153 §4.5 rule 2, or BINVAL that is not base64)."""
    text = vcard.findtext(_BINVAL)
    if not text:
        return b""
    try:
        # XEP-0153 §4.6 rule 5: whitespace (the line breaks of RFC 2045 base64) is ignored.
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error:
        return b""


def photo_hash(vcard: etree._Element) -> str:
    """XEP-0153 §3.1: the SHA-1 of the photo's bytes in lower-case hex (its §3.1 note); "" when
    there is no photo we can read."""
    data = photo_data(vcard)
    return hashlib.sha1(data, usedforsecurity=False).hexdigest() if data else ""


def advertise(presence: etree._Element, photo: str) -> None:
    """Put an account's photo hash ("" for none) into an available presence it sends, by the
    rules in the module's docstring."""
    update = presence.find(_UPDATE)
    if update is None:
        if photo:
            element(_PHOTO, parent=element(_UPDATE, parent=presence)).text = photo
    elif update.find(_PHOTO) is None:
        element(_PHOTO, parent=update).text = photo or None


def setup(mod: ModuleAPI) -> None:
    vcards = VCards(mod)
    mod.add_feature(NS)  # XEP-0054 §4
    mod.add_account_feature(NS)  # accounts' vCards are answered here too (§3.3)
    mod.on_iq("get", NS, "vCard", vcards.get_own, targets=("self",))
    mod.on_iq("set", NS, "vCard", vcards.set_own, targets=("self",))
    mod.on_iq("get", NS, "vCard", vcards.get_other, targets=("bare",))
    mod.on_iq("set", NS, "vCard", forbidden, targets=("bare",))
    for type_ in ("get", "set"):
        for target in ("self", "bare"):
            mod.on(f"iq-{type_}/{target}", misnamed)
    for target in ("self", "bare", "full"):
        mod.on(events.pre("presence", target), vcards.presence, PRIORITY)
    mod.on(events.ACCOUNT_DELETED, vcards.account_deleted)


def forbidden(ev: StanzaEvent) -> bool:
    return ev.error("forbidden", "a vCard is changed by its own account only")  # XEP-0054 §3.2


def misnamed(ev: StanzaEvent) -> bool:
    """Fired for every iq get/set to an account (oneself included) before its payload's own
    event: an element of the vcard-temp namespace other than `<vCard/>` is a mistake we can name."""
    payload = ev.stanza.payload()
    if payload is None or payload.tag == VCARD or etree.QName(payload).namespace != NS:
        return False
    return ev.error("bad-request", "the element is <vCard xmlns='vcard-temp'/>")


def answer(ev: StanzaEvent, vcard: etree._Element) -> bool:
    reply = ev.stanza.reply()
    reply.element.append(vcard)
    ev.respond(reply)
    return True


class VCards:
    """The vCards of one host's accounts, and the photo hashes of those used recently."""

    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.store: KeyValue = mod.open_store(KV_STORE, KEY_VALUE)
        self.max_size: int = mod.options["max_size"]
        self.photos: LRU[JID, str] = LRU(mod.options["cache_size"])

    async def load(self, account: JID) -> etree._Element | None:
        assert account.local is not None
        text = await self.store.get(account.domain, account.local, KV_KEY)
        return from_text(text) if text is not None else None

    async def read(self, owner: JID, requester: JID) -> etree._Element | None:
        """The vCard `requester` gets: as stored, then as the `vcard-read` handlers make it
        (XEP-0398 answers with the account's PEP avatar)."""
        read = VCardEvent(owner, requester, await self.load(owner))
        await self.mod.fire(events.VCARD_READ, read)
        return read.vcard

    async def get_own(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None  # `self` is the sender's own account
        vcard = await self.read(ev.origin.bare, ev.origin.bare)
        return answer(ev, vcard if vcard is not None else element(VCARD))

    async def get_other(self, ev: StanzaEvent) -> bool:
        assert ev.stanza.to is not None and ev.stanza.from_ is not None
        vcard = await self.read(ev.stanza.to, ev.stanza.from_.bare)
        if vcard is None:
            return ev.error("service-unavailable")  # no vCard, or no such account (§3.3)
        return answer(ev, vcard)

    async def set_own(self, ev: StanzaEvent) -> bool:
        assert ev.origin is not None
        vcard = ev.stanza.payload()
        assert vcard is not None
        text = to_text(vcard)
        if len(text.encode()) > self.max_size:
            return ev.error("not-acceptable", f"a vCard may have at most {self.max_size} bytes")
        account = ev.origin.bare
        assert account.local is not None
        await self.store.set(account.domain, account.local, KV_KEY, text)
        self.photos.put(account, photo_hash(vcard))
        await self.mod.fire(events.VCARD_STORED, VCardEvent(account, account, vcard))
        ev.respond(ev.stanza.reply())
        return True

    async def photo(self, account: JID) -> str:
        """The account's photo hash, read from its vCard when it is not in memory."""
        known = self.photos.get(account)
        if known is not None:
            return known
        vcard = await self.load(account)
        loaded = photo_hash(vcard) if vcard is not None else ""
        # A vCard stored while we read is newer than what we read: keep its hash.
        return self.photos.setdefault(account, loaded)

    async def presence(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        if ev.stanza.type is None and session is not None:
            advertise(ev.stanza.element, await self.photo(session.bare))
        return False  # the presence goes on its way

    def account_deleted(self, ev: AccountEvent) -> None:
        self.photos.pop(ev.account)
