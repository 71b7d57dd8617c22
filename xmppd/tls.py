"""TLS for client streams: per-host certificates chosen by SNI, TLS 1.2+ only, and a
self-signed fallback generated on first start (RFC 7590 recommendations; XEP-0368 ALPN)."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import datetime
import ipaddress
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from xmppd.config import Config

log = logging.getLogger("xmppd.tls")
ALPN_C2S = "xmpp-client"
ALPN_HTTP = "http/1.1"  # aiohttp speaks HTTP/1.1 only
# A TLS record is at most 16 KiB plus overhead (RFC 8446 §5.2): a buffer this size still reads
# a whole record at a time.
TLS_READ_BUFFER = 17 * 1024


def limit_tls_read_buffers() -> None:
    """asyncio gives every TLS connection a 256 KiB receive buffer (`SSLProtocol.max_size`),
    allocated and zeroed up front: with ten thousand idle clients that is 2.5 GB holding nothing.
    asyncio has no public knob for it, so the class attribute is lowered for the whole process,
    here and only here, when the server starts; tests/unit/test_tls_buffers.py checks that this
    Python still has the attribute and that connections get the smaller buffer."""
    if getattr(asyncio.sslproto.SSLProtocol, "max_size", None) is None:
        log.warning("this Python's asyncio has no SSLProtocol.max_size: TLS buffers stay at its default")
        return
    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER


class _SharedReadBuffer:
    """One receive buffer for every TLS connection of the process (`share_tls_read_buffer`)."""

    def __init__(self) -> None:
        self.buffer = bytearray(TLS_READ_BUFFER)
        self.view = memoryview(self.buffer)


_SHARED = _SharedReadBuffer()


def share_tls_read_buffer(transport: asyncio.BaseTransport) -> bool:
    """Give a TLS connection the process's one receive buffer instead of its own (17 KiB each,
    idle or not): asyncio's SSLProtocol only receives into it between `get_buffer` and
    `buffer_updated`, which the event loop calls back to back for one connection at a time,
    and `buffer_updated` copies what came into the connection's own memory BIO at once. So
    one buffer serves all. Like `limit_tls_read_buffers` this reaches into asyncio (the
    protocol's `_ssl_buffer`), checked by tests/unit/test_tls_buffers.py; anything else (a
    plain transport, another asyncio) is left as it is, and False returned."""
    protocol = getattr(transport, "_ssl_protocol", None)
    if protocol is None or not isinstance(getattr(protocol, "_ssl_buffer", None), bytearray):
        return False
    if len(protocol._ssl_buffer) > TLS_READ_BUFFER:  # asyncio's max_size was not lowered
        return False
    protocol._ssl_buffer = _SHARED.buffer
    protocol._ssl_buffer_view = _SHARED.view
    return True


def self_signed(data_dir: Path, hosts: tuple[str, ...]) -> tuple[Path, Path]:
    """The fallback certificate for hosts without one, made once and kept in the data directory."""
    cert_file, key_file = data_dir / "selfsigned.crt", data_dir / "selfsigned.key"
    if cert_file.exists() and key_file.exists() and _covers(cert_file, hosts):
        return cert_file, key_file
    data_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(host) for host in hosts]
    names += [x509.DNSName(f"*.{host}") for host in hosts if "." in host]
    if "localhost" in hosts:
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as file:
        file.write(key_bytes)
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    log.warning(
        "generated a self-signed certificate for %s in %s; clients will warn about it: "
        "configure [tls.certificates] for real use", ", ".join(hosts), cert_file,
    )
    return cert_file, key_file


def _covers(cert_file: Path, hosts: tuple[str, ...]) -> bool:
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return set(hosts) <= set(names.get_values_for_type(x509.DNSName))


def _context(cert: Path, key: Path, min_version: str, alpn: tuple[str, ...]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3 if min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.options |= ssl.OP_NO_COMPRESSION
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


class TLSContexts:
    """One SSLContext per host; the SNI callback switches to the one the client asks for."""

    def __init__(self, config: Config) -> None:
        missing = tuple(h for h in config.hosts if h not in config.tls.certificates)
        fallback = self_signed(config.data_dir, missing or config.hosts) if missing else None
        self._by_host: dict[str, ssl.SSLContext] = {}
        self._direct_by_host: dict[str, ssl.SSLContext] = {}
        self._https_by_host: dict[str, ssl.SSLContext] = {}
        for host in config.hosts:
            entry = config.tls.certificates.get(host)
            files = (entry.cert, entry.key) if entry else fallback
            assert files is not None
            self._by_host[host] = _context(*files, config.tls.min_version, alpn=())
            self._direct_by_host[host] = _context(*files, config.tls.min_version, alpn=(ALPN_C2S,))
            self._https_by_host[host] = _context(*files, config.tls.min_version, alpn=(ALPN_HTTP,))
        self.default_host = config.hosts[0]
        for contexts in (self._by_host, self._direct_by_host, self._https_by_host):
            for context in contexts.values():
                context.sni_callback = self._choose(contexts)

    @staticmethod
    def _choose(
        contexts: dict[str, ssl.SSLContext],
    ) -> Callable[[ssl.SSLObject, str, ssl.SSLContext], None]:
        def callback(sock: ssl.SSLObject, server_name: str | None, _context: ssl.SSLContext) -> None:
            if server_name and server_name.lower() in contexts:
                sock.context = contexts[server_name.lower()]

        return callback

    def starttls(self, host: str | None) -> ssl.SSLContext:
        return self._by_host.get(host or "", self._by_host[self.default_host])

    def direct(self) -> ssl.SSLContext:
        return self._direct_by_host[self.default_host]

    def https(self) -> ssl.SSLContext:
        """For the HTTP side (xmppd/http.py): the same certificates, ALPN http/1.1."""
        return self._https_by_host[self.default_host]
