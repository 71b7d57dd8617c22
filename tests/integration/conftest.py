"""A real xmppd on loopback ports, and slixmpp clients that log in to it over TCP with
STARTTLS (or Direct TLS) and SCRAM. Each test gets a fresh server on each storage backend."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from storage import Storage
from xmppd.accounts import create_account
from xmppd.config import load_config
from xmppd.jid import parse_jid
from xmppd.server import Server

PASSWORD = "correct horse battery staple"
TIMEOUT = 10


def _ephemeral_ports() -> range:
    """The kernel's range for the local ports of outgoing connections (Linux; IANA's elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except OSError:
        return range(49152, 65536)


EPHEMERAL_PORTS = _ephemeral_ports()
FIRST_PORT = 10000  # above the well-known services a test machine may run (5432, 6379, 5222)
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free on 127.0.0.1 now, outside the ephemeral range and not handed out before.

    Asking the kernel for port 0 gives an ephemeral port, and between this check and the
    server's bind any outgoing connection of the test run (a client, asyncpg, aiohttp) may take
    it as its local port: the server then fails with "address already in use". Ports below the
    ephemeral range are never taken that way."""
    if EPHEMERAL_PORTS.start <= FIRST_PORT:
        raise RuntimeError(f"the ephemeral port range starts at {EPHEMERAL_PORTS.start}: "
                           f"tests need ports between {FIRST_PORT} and it")
    while True:
        port = random.randrange(FIRST_PORT, EPHEMERAL_PORTS.start)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port


def write_config(
    tmp_path: Path, extra: str = "", server_extra: str = "", c2s_extra: str = "", auth_extra: str = ""
) -> Path:
    path = tmp_path / "xmppd.toml"
    path.write_text(
        f"""
[server]
hosts = ["localhost", "example.test"]
data_dir = "{tmp_path / 'data'}"
{server_extra}
[c2s]
interfaces = ["127.0.0.1"]
port = {free_port()}
direct_tls_port = {free_port()}
max_stanza_size = 65536
auth_timeout = 5
{c2s_extra}
[http]
port = {free_port()}
tls_port = {free_port()}
# Loopback only, as [c2s]: free_port() proves a port free on 127.0.0.1, not on every interface.
tls_interfaces = ["127.0.0.1"]
[auth]
max_failure_delay = 0.0
{auth_extra}
[modules.register]
allow_registration = true
[modules.contact_addresses]
abuse = ["mailto:abuse@localhost"]
{extra}
"""
    )
    return path


class XmppServer:
    """The running server plus helpers to make accounts and log clients in."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.clients: list[slixmpp.ClientXMPP] = []

    @property
    def port(self) -> int:
        return self.server.ports["c2s"]

    @property
    def direct_tls_port(self) -> int:
        return self.server.ports["c2s_direct_tls"]

    async def account(self, jid: str, password: str = PASSWORD) -> str:
        assert await create_account(self.server.storage.accounts, parse_jid(jid), password)
        return jid

    def client(self, jid: str, password: str = PASSWORD, *, direct_tls: bool = False,
               plugins: tuple[str, ...] = ()) -> Client:
        xmpp = Client(jid, password)
        xmpp.ssl_context.check_hostname = False
        xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        xmpp.enable_direct_tls = direct_tls
        xmpp.enable_starttls = not direct_tls
        xmpp.enable_plaintext = False
        for plugin in plugins:
            xmpp.register_plugin(plugin)
        self.clients.append(xmpp)
        return xmpp

    async def login(self, jid: str, password: str = PASSWORD, *, presence: bool = True,
                    direct_tls: bool = False, plugins: tuple[str, ...] = ()) -> Client:
        """Connect, authenticate, bind and (by default) send initial presence."""
        xmpp = self.client(jid, password, direct_tls=direct_tls, plugins=plugins)
        started = xmpp.wait_for("session_start")
        xmpp.connect("127.0.0.1", self.direct_tls_port if direct_tls else self.port)
        await asyncio.wait_for(started, TIMEOUT)
        if presence:
            # Initial presence is echoed back (RFC 6121 §4.2.2): once it is here, the server
            # counts this resource as available.
            xmpp.send_presence()
            own = xmpp.boundjid.full
            await xmpp.next_presence(lambda p: p["from"] == own)
        return xmpp


class Client(slixmpp.ClientXMPP):
    """slixmpp with queues of what arrives, so tests wait for stanzas, never for time."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)

    def wait_for(self, event: str) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def done(data: Any) -> None:
            if not future.done():
                future.set_result(data)

        self.add_event_handler(event, done, disposable=True)
        return future

    async def next_message(self, match: Callable[[Any], bool] = lambda m: True) -> Any:
        """The next message (skipping those `match` rejects, e.g. bare chat states)."""
        while True:
            message = await asyncio.wait_for(self.messages.get(), TIMEOUT)
            if match(message):
                return message

    async def next_presence(self, match: Callable[[Any], bool] = lambda p: True) -> Any:
        while True:
            presence = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if match(presence):
                return presence


class Clock:
    """A server's clock (`running_server(clock=...)`): the real one, moved on by hand (expiry,
    history by age, delay stamps)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.asynccontextmanager
async def running_server(
    storage: Storage,
    tmp_path: Path,
    extra_config: str = "",
    *,
    server_extra: str = "",
    c2s_extra: str = "",
    auth_extra: str = "",
    clock: Callable[[], float] = time.time,
) -> AsyncIterator[XmppServer]:
    """A started server on `storage`; its clients are cut and the server stopped afterwards.
    `extra_config` is appended to the file, the others go into its [server], [c2s] and [auth]
    tables; `clock` is the server's (what modules stamp and expire by)."""
    config = write_config(tmp_path, extra_config, server_extra, c2s_extra, auth_extra)
    server = Server(load_config(config), storage=storage, clock=clock)
    await server.start()
    running = XmppServer(server)
    try:
        yield running
    finally:
        for client in running.clients:
            client.abort()
        await server.stop()


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    """A started server on a migrated database of each backend (see tests/conftest.py)."""
    async with running_server(storage, tmp_path) as running:
        yield running
