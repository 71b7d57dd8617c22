"""RFC 6121 with real clients: roster, subscription handshake, presence; XEP-0077."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, TIMEOUT, XmppServer
from xmppd.sasl import verify_plain

pytestmark = pytest.mark.integration


async def test_roster_add_is_pushed_to_other_resource(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    phone = await xmpp.login("alice@localhost")
    laptop = await xmpp.login("alice@localhost")
    # Only resources that asked for the roster get pushes (RFC 6121 §2.1.6).
    await laptop.get_roster(timeout=TIMEOUT)
    pushed = laptop.wait_for("roster_update")
    await phone.update_roster("bob@localhost", name="Bob", groups=["Friends"])
    roster = await asyncio.wait_for(pushed, TIMEOUT)
    item = roster["roster"]["items"]["bob@localhost"]
    assert item["name"] == "Bob" and item["groups"] == ["Friends"]
    stored = await xmpp.server.storage.rosters.item("localhost", "alice", "bob@localhost")
    assert stored is not None and stored.name == "Bob"


async def test_subscription_handshake_and_presence_broadcast(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@example.test")
    alice = await xmpp.login("alice@localhost")
    bob = await xmpp.login("bob@example.test")

    # Alice asks; Bob sees the request and approves; Alice is told.
    alice.send_presence(pto="bob@example.test", ptype="subscribe")
    request = await bob.next_presence(lambda p: p["type"] == "subscribe")
    assert request["from"] == "alice@localhost"
    bob.send_presence(pto="alice@localhost", ptype="subscribed")
    await alice.next_presence(lambda p: p["type"] == "subscribed")
    # With 'to' subscription Alice receives Bob's current presence (RFC 6121 §3.1.5).
    available = await alice.next_presence(lambda p: p["from"] == bob.boundjid.full and p["type"] == "available")
    assert available["from"] == bob.boundjid.full

    # Bob asks back; Alice approves: both sides end with subscription 'both'.
    bob.send_presence(pto="alice@localhost", ptype="subscribe")
    await alice.next_presence(lambda p: p["type"] == "subscribe")
    alice.send_presence(pto="bob@example.test", ptype="subscribed")
    await bob.next_presence(lambda p: p["type"] == "subscribed")
    alice_item = await xmpp.server.storage.rosters.item("localhost", "alice", "bob@example.test")
    bob_item = await xmpp.server.storage.rosters.item("example.test", "bob", "alice@localhost")
    assert alice_item is not None and alice_item.subscription == "both"
    assert bob_item is not None and bob_item.subscription == "both"

    # A presence change reaches the subscriber; going offline sends unavailable.
    alice.send_presence(pstatus="in a meeting", pshow="dnd")
    update = await bob.next_presence(lambda p: p["status"] == "in a meeting")
    assert update["show"] == "dnd"
    alice.disconnect()
    gone = await bob.next_presence(lambda p: p["type"] == "unavailable")
    assert gone["from"] == alice.boundjid.full


async def test_in_band_registration_and_password_change(xmpp: XmppServer) -> None:
    newbie = xmpp.client("newbie@localhost", PASSWORD, plugins=("xep_0077",))
    newbie.plugin["xep_0077"].force_registration = True
    registered = asyncio.get_running_loop().create_future()

    async def register(_form: object) -> None:
        iq = newbie.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = "newbie"
        iq["register"]["password"] = PASSWORD
        await iq.send(timeout=TIMEOUT)
        registered.set_result(True)

    newbie.add_event_handler("register", register)
    started = newbie.wait_for("session_start")
    newbie.connect("127.0.0.1", xmpp.port)
    await asyncio.wait_for(registered, TIMEOUT)
    await asyncio.wait_for(started, TIMEOUT)
    assert await xmpp.server.storage.accounts.exists("localhost", "newbie")

    await newbie.plugin["xep_0077"].change_password("a whole new secret", timeout=TIMEOUT)
    stored = await xmpp.server.storage.accounts.credentials("localhost", "newbie", "sha256")
    assert stored is not None
    assert verify_plain("a whole new secret", stored) and not verify_plain(PASSWORD, stored)


async def test_password_change_for_another_name_is_refused(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost", presence=False, plugins=("xep_0077",))
    # Logged in, a registration set for another name is a password change attempt: refused.
    iq = alice.make_iq_set(ito="localhost")
    iq["register"]["username"] = "mallory"
    iq["register"]["password"] = "x"
    with pytest.raises(IqError) as caught:
        await iq.send(timeout=TIMEOUT)
    assert caught.value.iq["error"]["condition"] == "bad-request"
