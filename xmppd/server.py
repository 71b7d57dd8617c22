"""The server: owns the config, hosts, sessions, router, storage and listeners."""

from __future__ import annotations

import asyncio
import gc
import inspect
import logging
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree

import storage as storage_api
from xmppd import events
from xmppd.config import Config
from xmppd.deletions import DeletionLog
from xmppd.errors import StreamError
from xmppd.events import AccountEvent, PreAuthEvent, SessionEvent
from xmppd.host import Host, Item
from xmppd.http import HttpService
from xmppd.jid import JID
from xmppd.memory import give_back_free_memory
from xmppd.module import ModuleAPI, load_module
from xmppd.negotiation import Policy
from xmppd.preauth import PreAuthSlots
from xmppd.rostercache import CachedRosters
from xmppd.router import Router
from xmppd.session import Session, Sink
from xmppd.sessions import LocalSessions, SessionRegistry
from xmppd.tasks import Background
from xmppd.throttle import AuthThrottle
from xmppd.tls import TLSContexts, limit_tls_read_buffers

if TYPE_CHECKING:
    from storage import Storage
    from xmppd.stream import C2SStream, StreamHandle

log = logging.getLogger("xmppd")
# How long a stopping server waits for streams to close before it cuts them, and then again for
# the cut ones and for background work.
STOP_GRACE = 1.0
# A stream that received nothing for about this long (seconds) lets go of its parser until its
# next read (Transport.rest; ~11 KB of an idle session, bench/RESULTS.md).
REST_AFTER = 30.0


def make_hosts(config: Config) -> dict[str, Host]:
    """The user hosts with the core and optional modules, then the component hosts with theirs,
    each listed in the disco#items of the user host it belongs to."""
    hosts = {name: Host(name, "user", config.user_host_modules) for name in config.hosts}
    for component in config.components:
        hosts[component.domain] = Host(component.domain, "component", config.component_modules(component))
        hosts[component.parent].items.append(Item(component.domain))
    return hosts


class Server:
    def __init__(
        self,
        config: Config,
        storage: Storage | None = None,
        *,
        sessions: SessionRegistry | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._given_storage = storage
        self.hosts = make_hosts(config)
        self.sessions: SessionRegistry = sessions if sessions is not None else LocalSessions()
        # Seconds since the epoch: what modules stamp and expire by (tests pass their own).
        self.clock = clock
        self.background = Background()
        if storage is not None:
            self._use_storage(storage)
        self.router = Router(self)
        # Read from the data directory, or made now and written only once start() has passed the
        # storage checks: the file is evidence that a server really ran here (prepare_schema).
        self.secret = server_secret(config.data_dir)
        auth = config.auth
        self.throttle = AuthThrottle(
            max_delay=auth.max_failure_delay, lockout_after=auth.lockout_after,
            address_lockout_after=auth.address_lockout_after, account_lockout_after=auth.account_lockout_after,
            lockout_seconds=auth.lockout_seconds,
        )
        self.negotiation_policy = Policy(
            served=lambda domain: domain in self.hosts and self.hosts[domain].kind == "user",
            tls_available=True,
            require_encryption=config.c2s.require_encryption,
            mechanisms=config.auth.mechanisms,
            max_auth_failures=config.auth.max_failures_per_stream,
            unknown_user_secret=self.secret,
            features=self._stream_features,
        )
        self.tls: TLSContexts
        self.listeners: list[asyncio.Server] = []
        self.ports: dict[str, int] = {}
        self._connections: dict[str, int] = {}
        self.streams: set[C2SStream] = set()
        self._unauthenticated: PreAuthSlots[C2SStream] = PreAuthSlots(
            config.c2s.max_unauthenticated, config.c2s.max_unauthenticated_per_ip
        )
        # Objects modules share across hosts (caches, writers, locks): see ModuleAPI.shared.
        self.shared: dict[str, Any] = {}
        self._stopping = asyncio.Event()
        self.http = HttpService(self)
        # Set by stop(): from then on sessions end all together (see stop).
        self.stopping = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._given_storage is None:
            self._use_storage(await open_configured_storage(self.config))
        try:
            await prepare_schema(self.storage, self.config.data_dir, check_integrity=True)
        except BaseException:
            if self._given_storage is None:
                await self.storage.close()
            raise
        keep_server_secret(self.config.data_dir, self.secret)
        await self.deletions.start()
        limit_tls_read_buffers()
        self.tls = TLSContexts(self.config)
        for host in self.hosts.values():
            await self.load_modules(host)
        await self._listen()
        self.background.spawn(self._rest_idle_streams(), daemon=True)
        self.background.spawn(self.deletions.follow(), daemon=True)
        self._serve_http_transports()
        await self.http.start()
        log.info("xmppd serving %s on %s", ", ".join(self.hosts), self._describe_ports())

    async def _rest_idle_streams(self) -> None:
        """Every REST_AFTER seconds, a pass over the streams: no timer per stream."""
        seen: dict[C2SStream, int] = {}
        while True:
            await asyncio.sleep(REST_AFTER)
            seen = self.rest_idle_streams(seen)

    def rest_idle_streams(self, seen: dict[C2SStream, int]) -> dict[C2SStream, int]:
        """Rest the streams whose received byte count is still what `seen` has (nothing came
        since the last pass); the counts of this pass, for the next."""
        now = {stream: stream.transport.received_bytes for stream in self.streams}
        rested = 0
        for stream, received in now.items():
            if seen.get(stream) == received and stream.transport.rest():
                rested += 1
        if rested:
            give_back_free_memory()
        return now

    def _serve_http_transports(self) -> None:
        """Client streams over HTTP: the same driver (stream.py) on other framings."""
        config = self.config.http
        if config.websocket_path:
            from xmppd.websocket import serve_websocket

            serve_websocket(self, config.websocket_path)
        if config.bosh_path:
            from xmppd.bosh import serve_bosh

            serve_bosh(self, config.bosh_path)

    def _use_storage(self, storage: Storage) -> None:
        self.storage = storage
        self.deletions = DeletionLog(storage.accounts, self.account_deleted_elsewhere)
        # Rosters of online accounts are served from memory (xmppd/rostercache.py).
        self.rosters = CachedRosters(storage.rosters, self.sessions)
        storage.rosters = self.rosters

    async def load_modules(self, host: Host) -> None:
        for name in host.module_names:
            api = ModuleAPI(name, host, self, self.config.options_for(name))
            result = load_module(name).setup(api)
            if inspect.isawaitable(result):
                await result
            host.modules[name] = api

    async def _listen(self) -> None:
        from xmppd.net import listen

        c2s = self.config.c2s
        plan = [("c2s", c2s.port, False)]
        if c2s.direct_tls_port:
            plan.append(("c2s_direct_tls", c2s.direct_tls_port, True))
        for name, port, direct in plan:
            listener = await listen(self, c2s.interfaces, port, direct_tls=direct)
            self.listeners.append(listener)
            self.ports[name] = listener.sockets[0].getsockname()[1]

    def _describe_ports(self) -> str:
        return ", ".join(f"{name} port {port}" for name, port in self.ports.items())

    async def stop(self) -> None:
        """Close every stream with system-shutdown (RFC 6120 §4.9.3.17), end the sessions, let
        the work in flight finish, unload the modules, then close the storage. A peer that does
        not read its closing is cut off after STOP_GRACE seconds: it never holds the stop up."""
        self.stopping = True
        for listener in self.listeners:
            listener.close()
        self.http.stop_accepting()
        for host in self.hosts.values():
            await host.hooks.fire(events.SERVER_STOPPING, host)
        shutdown = StreamError("system-shutdown", "the server is stopping")
        for stream in list(self.streams):
            stream.shutdown(shutdown)
        tasks = [stream.task for stream in self.streams if stream.task is not None]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=STOP_GRACE)
            if pending:
                for stream in list(self.streams):
                    stream.transport.abort()  # its read loop then ends as for any lost connection
                _done, pending = await asyncio.wait(pending, timeout=STOP_GRACE)
            for task in pending:  # not seen here: aborting ends every read loop
                task.cancel()
        await self.http.stop()  # after the streams it carries (WebSocket) were closed properly
        # Every session leaves the registry before any `session-ended` fires: what a handler hands
        # on for an account (stream management's unacknowledged messages) then goes to offline
        # storage, never to another resource whose stream is already closed.
        ending = self.sessions.all()
        for session in ending:
            self.sessions.unbind(session)
        for session in ending:
            await self._ended(session, "server shutdown")
        if not await self.background.drain(patience=STOP_GRACE):
            log.warning("stopping with %d background tasks unfinished", len(self.background))
        for host in self.hosts.values():
            for module in host.modules.values():
                module.unload()
        await self.background.cancel()
        self.storage.rosters = self.rosters.store
        if self._given_storage is None:
            await self.storage.close()
        log.info("xmppd stopped")

    async def serve_forever(self) -> None:
        await self.start()
        # Everything allocated so far lives as long as the server: keep it out of the
        # collector's generations so that GC pauses stay out of message latency.
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._stopping.set)
        await self._stopping.wait()
        await self.stop()

    # -- connections ------------------------------------------------------------------------
    def admit(self, address: str) -> str | None:
        """Count a new connection; a reason to refuse it when over the limits."""
        limits = self.config.c2s
        if sum(self._connections.values()) >= limits.max_connections:
            return "too many connections"
        if self._connections.get(address, 0) >= limits.max_connections_per_ip:
            return "too many connections from this address"
        self._connections[address] = self._connections.get(address, 0) + 1
        return None

    def stream_started(self, stream: C2SStream) -> float:
        """A new stream takes a pre-auth slot; returns the time it has to authenticate. When the
        slots (in all, or of its address) are full, the oldest unauthenticated stream there is
        closed for it; when more than half are taken, newcomers get the short timeout and the
        waiting ones have it from now on."""
        limits = self.config.c2s
        slots = self._unauthenticated
        self.streams.add(stream)
        was_busy = slots.busy
        evicted = slots.add(stream)
        if evicted is not None:
            log.warning("closing the unauthenticated stream from %s: its pre-auth slot is needed", evicted.address)
            evicted.refuse("too many unauthenticated connections")
        if not slots.busy:
            return limits.auth_timeout
        if not was_busy:  # just crossed the half: those already waiting get the short time too
            for waiting in slots:
                waiting.hurry(limits.busy_auth_timeout)
        return min(limits.auth_timeout, limits.busy_auth_timeout)

    def stream_authenticated(self, stream: C2SStream) -> None:
        self._unauthenticated.remove(stream)

    def stream_ended(self, stream: C2SStream) -> None:
        self.streams.discard(stream)
        self._unauthenticated.remove(stream)
        self.release(stream.address)

    def release(self, address: str) -> None:
        count = self._connections.get(address, 0) - 1
        if count > 0:
            self._connections[address] = count
        else:
            self._connections.pop(address, None)

    def _stream_features(self, stage: str, domain: str) -> list[bytes]:
        host = self.hosts.get(domain)
        if host is None:
            return []
        providers = host.pre_auth_features if stage == "pre-auth" else host.stream_features
        features = (provider(None) for provider in providers)
        return [etree.tostring(feature) for feature in features if feature is not None]

    # -- sessions -----------------------------------------------------------------------------
    async def bind(self, jid: JID, transport: Sink | None, address: str) -> Session:
        """Bind a resource; a session on the same full JID is replaced (RFC 6120 §7.7.2.2)."""
        host = self.hosts[jid.domain]
        if jid.resource is None:
            jid = jid.with_resource(self.sessions.free_resource(jid))
        session = Session(host, jid, transport, address)
        replaced = self.sessions.bind(session)
        if replaced is not None:
            replaced.close(StreamError("conflict", "replaced by a new session"))
            await self._ended(replaced, "replaced by a new session")
        log.info("bound %s from %s", jid, address)
        await host.hooks.fire(events.SESSION_BOUND, SessionEvent(session))
        return session

    async def transport_gone(self, session: Session, reason: str, *, resumable: bool) -> None:
        """The stream of a bound session ended. A lost connection (`resumable`) may be claimed
        by a module through `session-detached` (stream management keeps the session for a
        resumption); otherwise, or unclaimed, the session ends."""
        if self.sessions.get(session.jid) is not session or self.stopping:
            return  # replaced or ended already, or to be ended by stop() with all the others
        if resumable and await session.host.hooks.fire(events.SESSION_DETACHED, SessionEvent(session, reason)):
            session.detach()
            log.info("detached %s: %s", session.jid, reason)
            return
        await self.session_ended(session, reason)

    async def session_ended(self, session: Session, reason: str) -> None:
        if self.sessions.unbind(session):
            await self._ended(session, reason)

    async def _ended(self, session: Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        log.info("disconnected %s: %s", session.jid, reason)
        await session.host.hooks.fire(events.SESSION_ENDED, SessionEvent(session, reason))
        if not self.sessions.resources(session.bare):
            assert session.bare.local is not None
            self.rosters.forget(session.bare.domain, session.bare.local)

    async def account_deleted_elsewhere(self, account: JID) -> None:
        """Another process deleted `account` (xmppd/deletions.py): what the modules keep of it
        goes (`account-deleted`), then its streams end, as for a removal in-band."""
        host = self.hosts.get(account.domain)
        if host is None or host.kind != "user":
            return  # a host no longer served: nothing of it here
        await host.hooks.fire(events.ACCOUNT_DELETED, AccountEvent(account))
        goodbye = StreamError("not-authorized", "account deleted")
        for session in self.sessions.resources(account):
            session.close(goodbye)

    async def account_exists(self, account: JID) -> bool:
        """Whether `account` (a bare JID of a served host) exists: a bound resource proves it
        without asking the database."""
        if self.sessions.resources(account):
            return True
        host = self.hosts.get(account.domain)
        if host is None or host.kind != "user" or account.local is None:
            return False
        return await self.storage.accounts.exists(account.domain, account.local)

    async def pre_auth_stanza(self, domain: str, element: etree._Element, stream: StreamHandle) -> None:
        host = self.hosts[domain]
        event = PreAuthEvent(host, element, stream, stream.address)
        if not await host.hooks.fire(events.PRE_AUTH_IQ, event):
            raise StreamError("not-authorized", "authenticate before sending stanzas")


SECRET_FILE = "server.secret"
# What only an earlier start leaves in the data directory: the secret is written once a start has
# passed the storage checks (prepare_schema), the self-signed certificate after them (Server.start,
# xmppd/tls.py). So none of them exists when prepare_schema looks, unless a server ran here before.
EARLIER_START_FILES = (SECRET_FILE, "selfsigned.crt", "selfsigned.key")


def server_secret(data_dir: Path) -> bytes:
    """The random secret kept in the data directory, or a new one (see keep_server_secret)."""
    path = data_dir / SECRET_FILE
    return path.read_bytes() if path.exists() else secrets.token_bytes(32)


def keep_server_secret(data_dir: Path, secret: bytes) -> None:
    """Write a new secret once a start has passed the storage checks (so that the file proves a
    server ran here, not merely that one was constructed or failed to open its database)."""
    path = data_dir / SECRET_FILE
    if path.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another server on this data directory wrote its own first: that one stays
        return
    with os.fdopen(fd, "wb") as file:
        file.write(secret)
        file.flush()
        os.fsync(file.fileno())


def earlier_start_evidence(data_dir: Path) -> list[Path]:
    """The files in the data directory that an earlier start of a server left there."""
    return [data_dir / name for name in EARLIER_START_FILES if (data_dir / name).exists()]


def emptied_database(storage: Storage, evidence: list[Path]) -> storage_api.SchemaError:
    """The refusal of an empty database where the data directory says a server ran before."""
    names = [str(path) for path in evidence]
    files = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return storage_api.SchemaError(
        f"{files} {'exists' if len(names) == 1 else 'exist'} from an earlier start, but {storage.describe()}"
        " is empty (deleted, emptied or replaced while xmppd was stopped?): xmppd will not silently start"
        " over with no accounts. Restore the database from a backup, or run `xmppd migrate` to create a"
        " fresh, empty schema on purpose",
        current=0,
        expected=storage.latest_schema,
    )


async def open_configured_storage(config: Config) -> Storage:
    settings = config.storage
    return await storage_api.open_storage(
        settings.backend,
        sqlite_path=str(config.sqlite_file),
        postgres_dsn=settings.postgres_dsn,
        postgres_schema=settings.postgres_schema,
        pool_size=settings.pool_size,
    )


async def prepare_schema(storage: Storage, data_dir: Path, *, check_integrity: bool = False) -> None:
    """Make the database ready to serve, or refuse it with a StorageError that says what to do.

    With `check_integrity` (Server.start): first the storage's quick integrity check (SQLite's
    PRAGMA quick_check: storage/sqlite/backend.py), DamagedDatabaseError if it fails.

    An empty database (schema version 0) gets the schema, with one INFO line: the one-command first
    start. Not when the data directory holds files of an earlier start (EARLIER_START_FILES): then
    the database was lost, and starting over with no accounts must be a deliberate `xmppd
    migrate`, so this raises SchemaError. On every backend alike, as the evidence is in the data
    directory, whatever holds the data.

    A database at another version is refused with what to run (storage.check_schema says it)."""
    if check_integrity:
        await storage.check_integrity()
    if await storage.schema_version() == 0:
        evidence = earlier_start_evidence(data_dir)
        if evidence:
            raise emptied_database(storage, evidence)
        applied = await storage.migrate()
        log.info("created the database schema (migrations %s)", ", ".join(map(str, applied)))
    await storage.check_schema()
