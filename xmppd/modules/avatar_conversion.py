"""XEP-0398: User Avatar to vCard-Based Avatars Conversion: one avatar for an account, whether its
clients publish it with XEP-0084 (PEP) or XEP-0054/XEP-0153 (vCard), and the hash of that avatar
in its presence for rooms and old clients.

Where the avatar lives. XEP-0398 §5.2 allows copying the image from one store to the other, or
answering vCard requests with the PEP avatar. Here the `urn:xmpp:avatar:metadata` node, once an
account has one, says what its avatar is, and the vCard's own PHOTO no longer counts: nothing
is stored twice, and what a vCard request gets can follow the nodes' access model.

- The avatar (§3.1): the newest metadata item's `<info/>` that has no 'url' (XEP-0398: "MUST pick
  the info element that does not point to an external URL"), whose id names the item of the
  `urn:xmpp:avatar:data` node that holds the image. The image counts only when its SHA-1 is that
  id (§3.1's SHOULD verify); an empty `<metadata/>` (XEP-0084 §3.5) or a missing image: none.
- vCard requests (vcard.py's `vcard-read`): the stored vCard with its PHOTO replaced by the avatar
  (TYPE from the info, BINVAL the image), or removed when there is none. Only a requester who may
  access both nodes gets the avatar (§7: the access model, or a presence subscription to the
  owner); anyone else gets the vCard without a photo. An account with no metadata node gets its
  vCard as stored, photo included.
- A stored vCard with a photo (§3.2, vcard.py's `vcard-stored`): the image is published to the
  data node with its SHA-1 as the id, then the metadata node gets an item with one `<info/>`, and
  both notify as any publication does. Nodes made this way are open: the vCard the photo came
  from is public (XEP-0054 §5) and §7 pairs conversion with the open model; nodes that exist
  keep the access model their owner chose. A photo that already is the avatar (a client that
  read its vCard and stores it back with a new nickname) is not published again. The image's
  type is what its bytes say (PNG, JPEG, GIF), else the PHOTO's TYPE (XEP-0153 §5: TYPE is a
  hint); a photo of neither is not a valid photo and is not converted, nor is a vCard without a
  photo: §3.2 converts a valid photo only, and a client that stores a profile it did not read
  first must not remove the avatar another client published.
- Presence (§4): the avatar's hash goes into each available presence the account sends, before
  the vcard module (which puts in the vCard's hash for accounts with no metadata node). It is
  worked out from the nodes for each presence (they are in PEP's memory), so it follows each
  publication with no event; the SHA-1 checks are remembered. Where the vcard module adds nothing
  for an account without an avatar, this says so with an empty `<photo/>`: otherwise the vcard
  module would put in the hash of the vCard's own, outdated, photo.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from components.pubsub.access import may_access
from components.pubsub.forms import ACCESS_MODEL
from xmppd import events
from xmppd.elements import element, from_text
from xmppd.errors import StanzaError
from xmppd.events import VCardEvent
from xmppd.modules.pep import pep_service
from xmppd.modules.vcard import NS as VCARD_NS
from xmppd.modules.vcard import PRIORITY as VCARD_PRIORITY
from xmppd.modules.vcard import VCARD, photo_data

if TYPE_CHECKING:
    from components.pubsub.node import Item, Node
    from xmppd.jid import JID
    from xmppd.module import ModuleAPI, StanzaEvent

PROTOCOLS = [("XEP-0398", "1.0.0")]
FEATURE = "urn:xmpp:pep-vcard-conversion:0"  # §2, on the account
DATA = "urn:xmpp:avatar:data"
METADATA = "urn:xmpp:avatar:metadata"
PRIORITY = VCARD_PRIORITY + 1  # the PEP avatar's hash goes in before the vCard's would
OPEN: dict[str, object] = {ACCESS_MODEL: "open"}
CHECKED = 4096  # SHA-1 checks of images remembered (the most recent)

_UPDATE = "{vcard-temp:x:update}x"
_PHOTO = "{vcard-temp:x:update}photo"
# XEP-0153 §4.6: the content types of avatars, recognised by their first bytes.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def setup(mod: ModuleAPI) -> None:
    avatars = Avatars(mod)
    mod.add_account_feature(FEATURE)
    mod.on(events.VCARD_READ, avatars.vcard_read)
    mod.on(events.VCARD_STORED, avatars.vcard_stored)
    for target in ("self", "bare", "full"):
        mod.on(events.pre("presence", target), avatars.presence, PRIORITY)


@dataclass(frozen=True, slots=True)
class Avatar:
    """An account's avatar as its metadata node says it."""

    nodes: tuple[Node, ...]  # the metadata node, and the data node if there is one
    image: Item | None  # the data item of a verified image; None: no avatar
    type: str  # the image's content type, from the metadata

    @property
    def hash(self) -> str:
        return self.image.id if self.image is not None else ""


class Avatars:
    """The avatars of one host's accounts, between their PEP nodes, their vCards and presence."""

    def __init__(self, mod: ModuleAPI) -> None:
        self.pep = pep_service(mod)
        self.log = mod.log
        # (item id, hash of its payload) -> whether the payload's image has that SHA-1: a check
        # depends on nothing else, and a str keeps its hash, so a lookup costs no pass over an
        # image. A dict keeps its order: the check used least recently is the first key.
        self.checked: dict[tuple[str, int], bool] = {}

    async def avatar(self, account: JID) -> Avatar | None:
        """None when the account has no metadata node (its vCard's photo stands)."""
        metadata = await self.pep.node(account, METADATA)
        if metadata is None:
            return None
        data = await self.pep.node(account, DATA)
        nodes = (metadata,) if data is None else (metadata, data)
        info = shown_info(metadata)
        image = data.items.get(info.get("id", "")) if info is not None and data is not None else None
        if info is None or image is None or not self.verified(image):
            return Avatar(nodes, None, "")
        return Avatar(nodes, image, info.get("type", ""))

    def verified(self, item: Item) -> bool:
        key = (item.id, hash(item.payload))
        known = self.checked.pop(key, None)
        if known is None:
            known = image_data(item) is not None
        self.checked[key] = known  # now the most recent
        if len(self.checked) > CHECKED:
            del self.checked[next(iter(self.checked))]
        return known

    # -- PEP to vCard (§3.1) ---------------------------------------------------------------------

    async def vcard_read(self, ev: VCardEvent) -> None:
        avatar = await self.avatar(ev.owner)
        if avatar is None:
            return
        image = avatar.image
        if image is not None and not await self.may_see(ev, avatar):
            image = None
        if ev.vcard is None and image is None:
            return  # nothing stored and nothing to show: still no vCard
        vcard = ev.vcard if ev.vcard is not None else element(VCARD)
        for photo in vcard.findall(f"{{{VCARD_NS}}}PHOTO"):
            vcard.remove(photo)
        if image is not None:
            vcard.append(photo_element(avatar.type, image))
        ev.vcard = vcard

    async def may_see(self, ev: VCardEvent, avatar: Avatar) -> bool:
        """§7: a requester sees the avatar when it may access both nodes."""
        relation = await self.pep.relation(ev.owner, ev.requester)
        return all(may_access(node, str(ev.requester), relation) for node in avatar.nodes)

    async def presence(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        if ev.stanza.type is None and session is not None:
            avatar = await self.avatar(session.bare)
            if avatar is not None:
                advertise(ev.stanza.element, avatar.hash)
        return False  # the presence goes on its way (and the vcard module leaves a photo be)

    # -- vCard to PEP (§3.2) ---------------------------------------------------------------------

    async def vcard_stored(self, ev: VCardEvent) -> None:
        assert ev.vcard is not None
        data = photo_data(ev.vcard)
        content_type = image_type(data) or ev.vcard.findtext(f"{{{VCARD_NS}}}PHOTO/{{{VCARD_NS}}}TYPE", "").strip()
        if not data or not content_type:
            return
        digest = sha1(data)
        avatar = await self.avatar(ev.owner)
        if avatar is not None and avatar.hash == digest:
            return
        try:
            await self.publish(ev.owner, DATA, digest, data_payload(data))
            await self.publish(ev.owner, METADATA, digest, metadata_payload(digest, len(data), content_type))
        except StanzaError as error:
            # The vCard is stored whatever PEP says (the account's nodes are full, say).
            self.log.warning("the vCard photo of %s is not in PEP: %s", ev.owner, error)

    async def publish(self, account: JID, node: str, item_id: str, payload: etree._Element) -> None:
        """As the owner; a node made for it is open, one that exists keeps its configuration."""
        options = OPEN if await self.pep.node(account, node) is None else None
        await self.pep.publish(account, node, item_id, payload, options)


# -- the payloads (no I/O) -----------------------------------------------------------------------


def shown_info(metadata: Node) -> etree._Element | None:
    """The `<info/>` of the newest metadata item that points to no URL (§3.1), if any."""
    newest = metadata.last()
    if newest is None:
        return None
    payload = from_text(newest.payload)
    for info in payload.iterchildren(f"{{{METADATA}}}info"):
        if info.get("url") is None and info.get("id"):
            return info
    return None


def image_data(item: Item) -> bytes | None:
    """The image of a data item (XEP-0084 §4.1: base64), if its SHA-1 is the item's id."""
    payload = from_text(item.payload)
    if payload.tag != f"{{{DATA}}}data" or not payload.text:
        return None
    try:
        data = base64.b64decode("".join(payload.text.split()), validate=True)
    except binascii.Error:
        return None
    return data if data and sha1(data) == item.id.lower() else None


def image_type(data: bytes) -> str | None:
    return next((kind for signature, kind in _SIGNATURES if data.startswith(signature)), None)


def sha1(data: bytes) -> str:
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def photo_element(content_type: str, image: Item) -> etree._Element:
    """The vCard PHOTO of a verified image."""
    data = image_data(image)
    assert data is not None
    photo = element(f"{{{VCARD_NS}}}PHOTO")
    if content_type:
        element(f"{{{VCARD_NS}}}TYPE", parent=photo).text = content_type
    element(f"{{{VCARD_NS}}}BINVAL", parent=photo).text = base64.b64encode(data).decode()
    return photo


def data_payload(data: bytes) -> etree._Element:
    payload = element(f"{{{DATA}}}data")
    payload.text = base64.b64encode(data).decode()
    return payload


def metadata_payload(digest: str, size: int, content_type: str) -> etree._Element:
    """XEP-0084 §4.2.1: bytes, id and type are required; height and width would mean decoding
    the image, and clients do without them."""
    payload = element(f"{{{METADATA}}}metadata")
    element(f"{{{METADATA}}}info", {"bytes": str(size), "id": digest, "type": content_type}, parent=payload)
    return payload


def advertise(presence: etree._Element, photo: str) -> None:
    """Put the PEP avatar's hash ("" for none) into an available presence, unless the client
    gave a `<photo/>` (XEP-0398 §4: a client's empty one stands; a different hash may be left)."""
    update = presence.find(_UPDATE)
    if update is None:
        update = element(_UPDATE, parent=presence)
    if update.find(_PHOTO) is None:
        element(_PHOTO, parent=update).text = photo or None
