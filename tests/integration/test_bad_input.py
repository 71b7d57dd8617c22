"""Bad input gets the RFC's answer, and the server keeps serving everyone else."""

from __future__ import annotations

import pytest

from tests.integration.conftest import PASSWORD, XmppServer
from tests.integration.rawclient import HEADER, RawClient
from xmppd.sasl import verify_plain

pytestmark = pytest.mark.integration

BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
    "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
)


async def assert_still_serving(xmpp: XmppServer) -> None:
    """Another client can still log in and exchange a stanza."""
    if not await xmpp.server.storage.accounts.exists("localhost", "witness"):
        await xmpp.account("witness@localhost")
    witness = await xmpp.login("witness@localhost", plugins=("xep_0199",))
    await witness.plugin["xep_0199"].ping(jid="localhost", timeout=10)


async def stream_error(client: RawClient) -> bytes:
    data = await client.closed()
    assert b"<stream:error" in data, data
    return data


async def test_malformed_xml_gets_not_well_formed(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.open_stream()
    await client.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><oops></starttls>")
    assert b"not-well-formed" in await stream_error(client)
    await assert_still_serving(xmpp)


async def test_dtd_and_entity_bomb_are_refused(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.send(BILLION_LAUGHS + HEADER.format(domain="localhost"))
    data = await stream_error(client)
    assert b"restricted-xml" in data
    assert b"lol" not in data
    await assert_still_serving(xmpp)


async def test_entity_declared_inside_the_stream_is_refused(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.open_stream()
    await client.send("<!ENTITY x 'y'>")
    assert b"restricted-xml" in await stream_error(client)


async def test_wrong_stream_namespace(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.send("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
                      "to='localhost' version='1.0'>")
    assert b"invalid-namespace" in await stream_error(client)


async def test_unknown_host(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.send(HEADER.format(domain="not-here.example"))
    assert b"host-unknown" in await stream_error(client)


async def test_stanza_before_starttls_is_a_policy_violation(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    features = await client.open_stream()
    assert b"<required/>" in features and b"PLAIN" not in features
    await client.send("<message to='alice@localhost'><body>plaintext</body></message>")
    assert b"policy-violation" in await stream_error(client)


async def test_stanza_before_auth_is_not_authorized(xmpp: XmppServer) -> None:
    client = await RawClient.connect(xmpp.port)
    await client.starttls()
    await client.send("<message to='alice@localhost'><body>who am I</body></message>")
    assert b"not-authorized" in await stream_error(client)
    await assert_still_serving(xmpp)


async def test_stanza_before_bind_is_not_authorized(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.starttls()
    await client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                      "AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=</auth>")
    await client.expect(b"<success")
    await client.open_stream()
    await client.send("<presence/>")
    assert b"not-authorized" in await stream_error(client)


async def test_wrong_password_gets_not_authorized_then_stream_closes(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.starttls()
    for _ in range(3):  # max_failures_per_stream
        client.received = b""
        await client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                          "AGFsaWNlAHdyb25n</auth>")
        await client.expect(b"</failure>")
        assert b"<not-authorized/>" in client.received
    assert b"policy-violation" in await stream_error(client)
    await assert_still_serving(xmpp)


async def test_oversized_stanza_is_a_policy_violation(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.login("alice", PASSWORD)
    body = "x" * 70_000  # the test server's limit is 65536 bytes
    await client.send(f"<message to='alice@localhost'><body>{body}</body></message>")
    assert b"policy-violation" in await stream_error(client)
    await assert_still_serving(xmpp)


async def test_malformed_xml_after_login_ends_only_that_stream(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    await xmpp.account("bob@localhost")
    bob = await xmpp.login("bob@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.login("alice", PASSWORD)
    await client.send("<message to='bob@localhost'><body>fine</body></message><message></mess>")
    assert b"not-well-formed" in await stream_error(client)
    message = await bob.next_message()
    assert message["body"] == "fine"


async def test_spoofed_from_is_invalid_from(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.login("alice", PASSWORD)
    await client.send("<message from='bob@localhost/x' to='alice@localhost'><body>spoof</body></message>")
    assert b"invalid-from" in await stream_error(client)


async def test_bind_conflict_replaces_the_older_session(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    first = await RawClient.connect(xmpp.port)
    await first.login("alice", PASSWORD, resource="phone")
    second = await RawClient.connect(xmpp.port)
    await second.login("alice", PASSWORD, resource="phone")
    assert b"<conflict" in await stream_error(first)
    await second.send("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"type=\"result\"" in await second.expect(b"p1")


async def test_iq_without_id_gets_bad_request(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.login("alice", PASSWORD)
    await client.send("<iq type='get' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert b"bad-request" in await client.expect(b"</iq>")


async def test_malformed_jid_gets_jid_malformed(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.login("alice", PASSWORD)
    await client.send("<message id='m1' to='@@bad@@'><body>x</body></message>")
    assert b"jid-malformed" in await client.expect(b"</message>")


async def test_unauthenticated_stream_times_out(xmpp: XmppServer) -> None:
    # The test server allows 5 s to authenticate; waiting for the close is waiting for a
    # stanza, not sleeping: the server must end the stream by itself.
    client = await RawClient.connect(xmpp.port)
    await client.open_stream()
    assert b"connection-timeout" in await stream_error(client)


async def test_registration_of_a_taken_name_is_a_conflict(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.starttls()
    assert b"http://jabber.org/features/iq-register" in client.received
    await client.send("<iq type='set' id='r1'><query xmlns='jabber:iq:register'>"
                      "<username>alice</username><password>hijack</password></query></iq>")
    assert b"<conflict" in await client.expect(b"</iq>")
    stored = await xmpp.server.storage.accounts.credentials("localhost", "alice", "sha256")
    assert stored is not None and verify_plain(PASSWORD, stored)
