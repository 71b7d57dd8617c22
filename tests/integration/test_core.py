"""Core XMPP with real clients: login, roster, subscriptions, presence, routing, errors."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import TIMEOUT, XmppServer
from xmppd.jid import parse_jid

pytestmark = pytest.mark.integration


async def test_login_with_starttls_and_scram(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost", presence=False)
    assert str(alice.boundjid.bare) == "alice@localhost"
    assert alice.boundjid.resource
    session = xmpp.server.sessions.get(parse_jid(alice.boundjid.full))
    assert session is not None and session.jid.resource == alice.boundjid.resource


async def test_login_with_direct_tls(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost", direct_tls=True, presence=False)
    assert str(alice.boundjid.bare) == "alice@localhost"


async def test_wrong_password_is_refused_and_server_keeps_serving(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    intruder = xmpp.client("alice@localhost", "wrong password")
    failed = intruder.wait_for("failed_all_auth")
    intruder.connect("127.0.0.1", xmpp.port)
    await asyncio.wait_for(failed, TIMEOUT)
    alice = await xmpp.login("alice@localhost", presence=False)
    assert alice.boundjid.bare == "alice@localhost"


async def test_chat_between_two_users_and_two_resources(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@localhost")
    alice = await xmpp.login("alice@localhost")
    bob_phone = await xmpp.login("bob@localhost")
    bob_phone_jid = bob_phone.boundjid.full

    alice.send_message(mto=bob_phone_jid, mbody="hello phone", mtype="chat")
    message = await bob_phone.next_message()
    assert message["body"] == "hello phone"
    assert message["from"] == alice.boundjid.full

    bob_laptop = await xmpp.login("bob@localhost")
    bob_laptop.send_message(mto=bob_phone_jid, mbody="from my laptop", mtype="chat")
    message = await bob_phone.next_message()
    assert message["body"] == "from my laptop"
    assert message["from"] == bob_laptop.boundjid.full


async def test_bare_jid_message_goes_to_highest_priority(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@localhost")
    alice = await xmpp.login("alice@localhost")
    low = await xmpp.login("bob@localhost", presence=False, plugins=("xep_0199",))
    high = await xmpp.login("bob@localhost", presence=False)
    low.send_presence(ppriority=1)
    high.send_presence(ppriority=5)
    await high.next_presence(lambda p: p["from"] == low.boundjid.full)
    alice.send_message(mto="bob@localhost", mbody="to the top", mtype="chat")
    message = await high.next_message()
    assert message["body"] == "to the top"
    # The low-priority resource must not get it. Delivery writes to every target in the same
    # pass, so once a later ping answer has reached `low`, so would have the message.
    await low.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
    assert low.messages.empty()


async def test_message_to_unknown_user_returns_service_unavailable(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost")
    alice.send_message(mto="nobody@localhost", mbody="hello?", mtype="chat")
    error = await alice.next_message()
    assert error["type"] == "error"
    assert error["error"]["condition"] == "service-unavailable"
    assert error["from"] == "nobody@localhost"


async def test_message_to_other_domain_is_unroutable(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost")
    alice.send_message(mto="someone@elsewhere.invalid", mbody="hi", mtype="chat")
    error = await alice.next_message()
    assert error["error"]["condition"] == "remote-server-not-found"


async def test_messages_between_virtual_hosts(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("carol@example.test")
    alice = await xmpp.login("alice@localhost")
    carol = await xmpp.login("carol@example.test")
    carol.send_message(mto=alice.boundjid.full, mbody="across hosts", mtype="chat")
    message = await alice.next_message()
    assert message["body"] == "across hosts"
    assert message["from"] == carol.boundjid.full


async def test_unknown_iq_namespace_gets_service_unavailable(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost", presence=False)
    iq = alice.make_iq_get(queryxmlns="urn:example:unknown", ito="localhost")
    with pytest.raises(IqError) as caught:
        await iq.send(timeout=TIMEOUT)
    assert caught.value.iq["error"]["condition"] == "service-unavailable"


async def test_iq_to_offline_resource_gets_service_unavailable(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@localhost")
    alice = await xmpp.login("alice@localhost", presence=False)
    iq = alice.make_iq_get(queryxmlns="jabber:iq:version", ito="bob@localhost/gone")
    with pytest.raises(IqError) as caught:
        await iq.send(timeout=TIMEOUT)
    assert caught.value.iq["error"]["condition"] == "service-unavailable"


async def test_ping_version_and_disco(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login(
        "alice@localhost", presence=False, plugins=("xep_0030", "xep_0092", "xep_0199")
    )
    await alice.plugin["xep_0199"].ping(jid="localhost", timeout=TIMEOUT)
    version = await alice.plugin["xep_0092"].get_version("localhost", timeout=TIMEOUT)
    assert version["software_version"]["name"] == "xmppd"
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)
    features = info["disco_info"]["features"]
    assert {"urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#info"} <= set(features)
    assert ("server", "im", None, "xmppd") in info["disco_info"]["identities"]
    forms = info["disco_info"].xml.findall("{jabber:x:data}x")
    assert any("mailto:abuse@localhost" in "".join(form.itertext()) for form in forms)
