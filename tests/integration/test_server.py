"""TLS per host (SNI, ALPN), server features, clean shutdown and schema checks, over real sockets."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from storage import SchemaError, Storage
from tests.conftest import StorageFactory
from tests.integration.conftest import TIMEOUT, XmppServer, write_config
from tests.integration.rawclient import RawClient
from tests.integration.tools import insecure
from xmppd.config import load_config
from xmppd.server import Server
from xmppd.tls import ALPN_C2S, self_signed

pytestmark = pytest.mark.integration


def client_context() -> ssl.SSLContext:
    context = insecure()
    context.set_alpn_protocols([ALPN_C2S])
    return context


async def peer_certificate(port: int, server_hostname: str) -> tuple[str, str | None]:
    """(certificate common name, negotiated ALPN) of a Direct TLS handshake."""
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=client_context(), server_hostname=server_hostname
    )
    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True)
    alpn = ssl_object.selected_alpn_protocol()
    writer.close()
    cert = x509.load_der_x509_certificate(der)
    return cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value, alpn  # type: ignore[return-value]


async def test_direct_tls_picks_the_certificate_by_sni(storage: Storage, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "example-cert", ("example.test",))
    extra = f'[tls.certificates."example.test"]\ncert = "{cert}"\nkey = "{key}"\n'
    server = Server(load_config(write_config(tmp_path, extra)), storage=storage)
    await server.start()
    try:
        port = server.ports["c2s_direct_tls"]
        assert await peer_certificate(port, "example.test") == ("example.test", ALPN_C2S)
        # localhost has no configured certificate: the generated fallback serves it.
        name, _alpn = await peer_certificate(port, "localhost")
        assert name == "localhost"
    finally:
        await server.stop()


async def test_tls_below_1_2_is_refused(xmpp: XmppServer) -> None:
    context = client_context()
    context.minimum_version = ssl.TLSVersion.TLSv1
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await asyncio.open_connection("127.0.0.1", xmpp.direct_tls_port, ssl=context, server_hostname="localhost")


async def test_stream_features_at_each_stage(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    client = await RawClient.connect(xmpp.port)
    await client.starttls()
    assert b"iq-register" in client.received and b"SCRAM-SHA-256" in client.received
    await client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                      "AGFsaWNlAGNvcnJlY3QgaG9yc2UgYmF0dGVyeSBzdGFwbGU=</auth>")
    await client.expect(b"<success")
    features = await client.open_stream()
    # Binding, roster versioning (XEP-0237) and the server's caps (XEP-0115 §6.3).
    assert b"urn:ietf:params:xml:ns:xmpp-bind" in features
    assert b"urn:xmpp:features:rosterver" in features
    assert b'<c xmlns="http://jabber.org/protocol/caps" hash="sha-1"' in features
    client.close()


async def test_clean_stop_sends_system_shutdown(xmpp: XmppServer) -> None:
    await xmpp.account("alice@localhost")
    alice = await xmpp.login("alice@localhost", presence=False)
    error = alice.wait_for("stream_error")
    await xmpp.server.stop()
    received = await asyncio.wait_for(error, TIMEOUT)
    assert received["condition"] == "system-shutdown"
    xmpp.server.listeners.clear()  # the fixture's stop() finds nothing left to close


async def test_server_refuses_a_database_of_another_schema_version(
    storage: Storage, storage_factory: StorageFactory, tmp_path: Path
) -> None:
    newer = storage.latest_schema + 1
    await storage_factory.sql(f"INSERT INTO schema_version (version) VALUES ({newer})")
    server = Server(load_config(write_config(tmp_path)), storage=storage)
    with pytest.raises(SchemaError) as caught:
        await server.start()
    assert "newer" in str(caught.value)
    assert not server.listeners
