"""XEP-0398 through the in-memory server: an avatar published with XEP-0084 is the vCard's photo and
the hash in presence, and a vCard photo is published to the XEP-0084 nodes."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from lxml import etree

from xmppd.modules.avatar_conversion import DATA, FEATURE, METADATA
from xmppd.modules.disco import INFO_NS
from xmppd.modules.pep import EVENT_NS, NS

from .harness import Client, Harness, error_condition, presence
from .test_pep import (
    ALICE,
    BOB,
    CAROL,
    DAVE,
    befriend,
    configuration,
    headline,
    item_ids,
    online,
    publish_options,
    request,
)
from .test_pep_payloads import publish_item

VCARD_NS = "vcard-temp"
UPDATE = "{vcard-temp:x:update}x"
PHOTO = "{vcard-temp:x:update}photo"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
OTHER_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(255, -1, -1))
MODULES = ("caps", "pep", "vcard", "avatar_conversion")


def sha1(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, modules=MODULES) as harness:
        for account in (ALICE, BOB, CAROL, DAVE):
            await harness.account(account)
        await befriend(harness, ALICE, BOB, "Friends")  # dave is in nobody's roster
        yield harness


# -- clients --------------------------------------------------------------------------------------


def info(image: bytes, **attributes: str) -> str:
    extra = "".join(f" {name}='{value}'" for name, value in attributes.items())
    return f"<info bytes='{len(image)}' id='{sha1(image)}' type='image/png'{extra}/>"


async def publish_avatar(client: Client, image: bytes = PNG, options: str = "") -> None:
    """XEP-0084 §3.1-§3.2: the data, then the metadata."""
    data = f"<data xmlns='{DATA}'>{base64.b64encode(image).decode()}</data>"
    await publish_item(client, DATA, data, sha1(image), options)
    await publish_metadata(client, sha1(image), info(image), options)


async def publish_metadata(client: Client, item_id: str, infos: str, options: str = "") -> None:
    await publish_item(client, METADATA, f"<metadata xmlns='{METADATA}'>{infos}</metadata>", item_id, options)


def vcard(*fields: str) -> str:
    return f"<vCard xmlns='{VCARD_NS}'>{''.join(fields)}</vCard>"


def vcard_photo(image: bytes, content_type: str | None = "image/png") -> str:
    kind = f"<TYPE>{content_type}</TYPE>" if content_type else ""
    return f"<PHOTO>{kind}<BINVAL>{base64.encodebytes(image).decode()}</BINVAL></PHOTO>"


async def set_vcard(client: Client, *fields: str) -> None:
    assert (await request(client, vcard(*fields))).get("type") == "result"


async def read_vcard(client: Client, of: str | None = None) -> etree._Element:
    return await request(client, vcard(), "get", of)


def shown(reply: etree._Element) -> tuple[list[str], tuple[str, bytes] | None]:
    """The fields of a vCard result other than PHOTO, and its photo as (TYPE, image)."""
    assert reply.get("type") == "result", etree.tostring(reply)
    card = reply.find(f"{{{VCARD_NS}}}vCard")
    assert card is not None
    fields = [etree.QName(child).localname for child in card if child.tag != f"{{{VCARD_NS}}}PHOTO"]
    photos = card.findall(f"{{{VCARD_NS}}}PHOTO")
    assert len(photos) <= 1
    if not photos:
        return fields, None
    image = base64.b64decode(photos[0].findtext(f"{{{VCARD_NS}}}BINVAL", ""))
    return fields, (photos[0].findtext(f"{{{VCARD_NS}}}TYPE", ""), image)


async def advertised(sender: Client, contact: Client, xml: str = "<presence/>") -> str | None:
    """The photo hash `contact` sees in the presence `sender` sends: None without <photo/>."""
    contact.take()
    await sender.send(xml)
    (seen,) = [p for p in contact.take(presence) if p.get("from") == str(sender.jid)]
    update = seen.find(UPDATE)
    photo = update.find(PHOTO) if update is not None else None
    return None if photo is None else photo.text or ""


def notified(client: Client, node: str) -> list[etree._Element]:
    """The items of the notifications of `node` received."""
    return [
        item
        for message in client.take(headline)
        for items in message.iter(f"{{{EVENT_NS}}}items")
        if items.get("node") == node
        for item in items.iter(f"{{{EVENT_NS}}}item")
    ]


# -- discovery (§2) ---------------------------------------------------------------------------------


async def test_the_conversion_is_announced_on_the_account(h: Harness) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    reply = await request(alice, f"<query xmlns='{INFO_NS}'/>", "get", ALICE)
    assert FEATURE in {feature.get("var") for feature in reply.iter(f"{{{INFO_NS}}}feature")}


# -- PEP to vCard (§3.1) and presence (§4) ------------------------------------------------------------


async def test_a_pep_avatar_is_the_vcard_photo_and_the_hash_in_presence(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    dave = await online(h, f"{DAVE}/pc")
    await set_vcard(alice, "<FN>Alice</FN>")
    await publish_avatar(alice)  # the default access model: presence

    assert shown(await read_vcard(alice)) == (["FN"], ("image/png", PNG))
    assert shown(await read_vcard(bob, ALICE)) == (["FN"], ("image/png", PNG))
    # §7: a requester with no access to the nodes gets the vCard without the avatar.
    assert shown(await read_vcard(dave, ALICE)) == (["FN"], None)
    assert await advertised(alice, bob) == sha1(PNG)
    # Directed presence too (a room join, §4).
    assert await advertised(alice, dave, f"<presence to='{DAVE}/pc'/>") == sha1(PNG)


async def test_an_open_avatar_is_for_anyone_even_without_a_stored_vcard(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    dave = await online(h, f"{DAVE}/pc")
    assert error_condition(await read_vcard(dave, ALICE)) == "service-unavailable"
    await publish_avatar(alice, options=publish_options(access_model="open"))
    assert shown(await read_vcard(dave, ALICE)) == ([], ("image/png", PNG))


async def test_the_hash_follows_each_publication(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await publish_avatar(alice)
    assert await advertised(alice, bob) == sha1(PNG)
    await publish_avatar(alice, OTHER_PNG)
    assert await advertised(alice, bob, "<presence><x xmlns='vcard-temp:x:update'/></presence>") == sha1(OTHER_PNG)
    assert shown(await read_vcard(bob, ALICE))[1] == ("image/png", OTHER_PNG)
    # A photo the client gives stands (§4), an empty one included.
    assert await advertised(alice, bob, "<presence><x xmlns='vcard-temp:x:update'><photo/></x></presence>") == ""


async def test_a_disabled_avatar_hides_the_stored_photo(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await set_vcard(alice, "<FN>Alice</FN>", vcard_photo(PNG))
    # XEP-0084 §3.5: an empty <metadata/> disables the avatar, whatever the vCard holds.
    await publish_metadata(alice, "none", "")
    assert shown(await read_vcard(alice)) == (["FN"], None)
    assert shown(await read_vcard(bob, ALICE)) == (["FN"], None)
    # Presence says "no image" rather than the hash of the photo the vCard still holds.
    assert await advertised(alice, bob) == ""


async def test_the_avatar_is_the_info_without_a_url_and_a_verified_image(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    await publish_avatar(alice)
    linked = info(OTHER_PNG, url="https://example.org/avatar.png")
    await publish_metadata(alice, sha1(PNG), linked + info(PNG))
    assert shown(await read_vcard(alice))[1] == ("image/png", PNG)
    assert await advertised(alice, bob) == sha1(PNG)

    # An image whose SHA-1 is not its id is no avatar (§3.1: SHOULD verify).
    forged = f"<data xmlns='{DATA}'>{base64.b64encode(OTHER_PNG).decode()}</data>"
    await publish_item(alice, DATA, forged, sha1(PNG))
    assert shown(await read_vcard(alice))[1] is None
    assert await advertised(alice, bob) == ""
    # Only a URL: nothing the server can show.
    await publish_metadata(alice, sha1(OTHER_PNG), linked)
    assert shown(await read_vcard(alice))[1] is None


# -- vCard to PEP (§3.2) ----------------------------------------------------------------------------


async def test_a_vcard_photo_is_published_to_open_avatar_nodes(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk", METADATA)
    dave = await online(h, f"{DAVE}/pc")
    # The image's bytes say PNG: the TYPE is only a hint (XEP-0153 §5).
    await set_vcard(alice, "<FN>Alice</FN>", vcard_photo(PNG, "image/jpeg"))

    (item,) = notified(bob, METADATA)  # §3.2: subscribers of the metadata node are notified
    assert item.get("id") == sha1(PNG)
    (info_element,) = item.iter(f"{{{METADATA}}}info")
    attributes = {str(key): str(value) for key, value in info_element.attrib.items()}
    assert attributes == {"bytes": str(len(PNG)), "id": sha1(PNG), "type": "image/png"}
    for node in (DATA, METADATA):
        assert (await configuration(alice, node))["pubsub#access_model"] == ["open"]
    data = await request(dave, f"<pubsub xmlns='{NS}'><items node='{DATA}'/></pubsub>", "get", ALICE)
    assert item_ids(data) == [sha1(PNG)]
    assert base64.b64decode(data.findtext(f".//{{{DATA}}}data", "")) == PNG
    assert await advertised(alice, bob) == sha1(PNG)

    # The same photo stored back with a new name is the avatar already: not published again.
    await set_vcard(alice, "<FN>Alice L.</FN>", vcard_photo(PNG))
    assert notified(bob, METADATA) == []
    assert shown(await read_vcard(dave, ALICE)) == (["FN"], ("image/png", PNG))


async def test_existing_avatar_nodes_keep_their_access_model(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    dave = await online(h, f"{DAVE}/pc")
    await publish_avatar(alice)  # presence
    await set_vcard(alice, "<FN>Alice</FN>", vcard_photo(OTHER_PNG))
    assert shown(await read_vcard(alice)) == (["FN"], ("image/png", OTHER_PNG))
    assert (await configuration(alice, METADATA))["pubsub#access_model"] == ["presence"]
    assert shown(await read_vcard(dave, ALICE)) == (["FN"], None)


async def test_a_vcard_without_a_valid_photo_leaves_the_avatar_alone(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk", METADATA)
    await publish_avatar(alice)
    bob.take()
    await set_vcard(alice, "<FN>Alice</FN>")
    # Not an image we know, and no TYPE: not a valid photo either.
    await set_vcard(alice, "<FN>Alice</FN>", vcard_photo(b"not an image", None))
    assert notified(bob, METADATA) == []
    assert shown(await read_vcard(bob, ALICE)) == (["FN"], ("image/png", PNG))


async def test_without_avatar_nodes_the_vcard_photo_stands(h: Harness) -> None:
    alice = await online(h, f"{ALICE}/phone")
    bob = await online(h, f"{BOB}/desk")
    unknown = b"no known image signature"
    await set_vcard(alice, "<FN>Alice</FN>", vcard_photo(unknown, None))  # not converted
    assert shown(await read_vcard(bob, ALICE)) == (["FN"], ("", unknown))
    assert await advertised(alice, bob) == sha1(unknown)  # the vcard module's hash
