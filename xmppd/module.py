"""The API a feature module gets, and the loader that registers modules on a host.

A module is one file with a docstring naming its RFC/XEP, a `PROTOCOLS` list, optional
`OPTIONS` (validated by the config loader) and `setup(mod: ModuleAPI)`. Everything it
registers through `mod` is recorded, so `unload()` undoes it without the module's help.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import importlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from lxml import etree

from xmppd import events
from xmppd.hooks import Handler, Registration
from xmppd.host import Host, Identity, Item, StreamFeature
from xmppd.router import StanzaEvent, Template
from xmppd.stanza import Stanza

if TYPE_CHECKING:
    from storage import AccountStore
    from xmppd.config import Config
    from xmppd.http import Handler as HttpHandler
    from xmppd.jid import JID
    from xmppd.rostercache import CachedRosters
    from xmppd.server import Server
    from xmppd.session import Session
    from xmppd.sessions import SessionRegistry

T = TypeVar("T")

__all__ = ["ModuleAPI", "Option", "Stanza", "StanzaEvent", "load_module", "module_path"]


@dataclass(frozen=True, slots=True)
class Option:
    """One documented, typed option of a module, read from `[modules.<name>]` in the config."""

    default: Any
    doc: str
    kind: type | tuple[type, ...] | None = None
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None

    @property
    def types(self) -> tuple[type, ...]:
        if self.kind is None:
            return (type(self.default),)
        return self.kind if isinstance(self.kind, tuple) else (self.kind,)


def module_path(name: str) -> str:
    """`roster` is a core module (xmppd.modules.roster); a dotted name is taken as it is."""
    return name if "." in name else f"xmppd.modules.{name}"


def load_module(name: str) -> ModuleType:
    module = importlib.import_module(module_path(name))
    if not callable(getattr(module, "setup", None)):
        raise ImportError(f"{module_path(name)} has no setup(mod) function")
    return module


class ModuleAPI:
    """Everything a module may use of the server, and nothing else: hooks, what the host
    announces, the session registry, stores by shape, sending (as the server or as a session),
    iq requests with their answers, the clock and background work. A module that keeps to this
    can move to a component process or another node; it never sees `Server` itself."""

    def __init__(self, name: str, host: Host, server: Server, options: Mapping[str, Any]) -> None:
        self.name = name
        self.host = host
        self._server = server
        self.options = dict(options)
        self.log = logging.getLogger(f"xmppd.mod.{name}")
        self._hooks: list[Registration] = []
        self._undo: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: set[asyncio.TimerHandle] = set()
        # `open_store(name, shape)`: a store of one shape (storage/shapes.py: KEY_VALUE per
        # account, MAP per host, ARCHIVE, QUEUE) named `name`; a feature adds its storage by
        # opening one, without touching the storage interfaces. (Modules load after the storage
        # is open.)
        self.open_store = server.storage.open_store

    # -- hooks --------------------------------------------------------------------------
    def on(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Handle an event of this host (names and payloads: xmppd/events.py)."""
        self._hooks.append(self.host.hooks.on(event, handler, priority))

    def on_iq(
        self,
        type_: str,
        ns: str,
        name: str,
        handler: Handler,
        *,
        targets: tuple[str, ...] = ("host",),
        priority: int = 0,
    ) -> None:
        """Handle `<iq type=type_><name xmlns=ns/></iq>` sent to one of `targets`:
        'host' (the server), 'self' (the sender's own account), 'bare' (another account), 'full'."""
        for target in targets:
            self.on(events.iq_event(type_, target, ns, name), handler, priority)

    def on_stream_element(self, ns: str, name: str, handler: Handler, priority: int = 0) -> None:
        """Claim a top-level element that is not a stanza (`<r xmlns='urn:xmpp:sm:3'/>`); the
        handler gets an `events.StreamElementEvent` and returns True when it took it."""
        self.on(events.stream_element(ns, name), handler, priority)

    async def fire(self, event: str, payload: object) -> bool:
        """Fire an event of this host (e.g. `available-presence` for the modules that wait on it)."""
        return await self.host.hooks.fire(event, payload)

    # -- what the host announces --------------------------------------------------------
    def add_feature(self, feature: str) -> None:
        self._add(self.host.features, feature)

    def add_account_feature(self, feature: str) -> None:
        """A feature the server offers on behalf of each account (disco#info to a bare JID)."""
        self._add(self.host.account_features, feature)

    def add_identity(self, category: str, type_: str, name: str | None = None) -> None:
        self._add(self.host.identities, Identity(category, type_, name))

    def add_account_identity(self, category: str, type_: str, name: str | None = None) -> None:
        """An identity of each account (disco#info to a bare JID), e.g. pubsub/pep."""
        self._add(self.host.account_identities, Identity(category, type_, name))

    def add_item(self, jid: str, name: str | None = None, node: str | None = None) -> None:
        """An item of the host's disco#items (XEP-0030 §4)."""
        self._add(self.host.items, Item(jid, name, node))

    def add_extension(self, form: etree._Element) -> None:
        self._add(self.host.extensions, form)

    def add_http_route(self, method: str, path: str, handler: HttpHandler) -> None:
        """Serve `method` on `path` of the HTTP side (xmppd/http.py), on every host name: file
        upload, the web chat. The first module to claim a route has it (a module loaded on
        several hosts registers once). Routes are set when the server starts listening: one
        added later is served once the server restarts."""
        http = self._server.http
        if http.add_route(method, path, handler):
            self._undo.append(lambda: http.remove_route(method, path, handler))

    def add_stream_feature(self, provider: StreamFeature, *, before_auth: bool = False) -> None:
        self._add(self.host.pre_auth_features if before_auth else self.host.stream_features, provider)

    def _add(self, registry: list[Any], entry: Any) -> None:
        registry.append(entry)
        self._undo.append(lambda: registry.remove(entry))

    # -- the server's state ---------------------------------------------------------------
    @property
    def sessions(self) -> SessionRegistry:
        """Where bound resources are, and their routing state (set through its methods)."""
        return self._server.sessions

    def is_local(self, domain: str) -> bool:
        """Whether a domain is served here (a user host or a component)."""
        return domain in self._server.hosts

    def is_user_host(self, domain: str) -> bool:
        """Whether a domain is one of this server's user hosts (accounts, rosters, presence)."""
        host = self._server.hosts.get(domain)
        return host is not None and host.kind == "user"

    async def account_exists(self, account: JID) -> bool:
        return await self._server.account_exists(account)

    @property
    def accounts(self) -> AccountStore:
        return self._server.storage.accounts

    async def delete_account(self, account: JID) -> bool:
        """Delete the account and all its data, then fire `account-deleted` on its host (what
        modules keep of it in memory goes); the caller ends its streams. False when there was
        no such account (whatever data it had goes all the same)."""
        assert account.local is not None
        seq = await self.accounts.delete(account.domain, account.local)
        if seq is not None:
            self._server.deletions.made_here(seq)  # handled now, not again from the log
        await self.fire(events.ACCOUNT_DELETED, events.AccountEvent(account))
        return seq is not None

    @property
    def rosters(self) -> CachedRosters:
        """The roster store, with the rosters of online accounts in memory and a lock per account."""
        return self._server.rosters

    @property
    def config(self) -> Config:
        """The server's configuration (read-only); a module's own options are `options`."""
        return self._server.config

    def secret_key(self, purpose: str) -> bytes:
        """A key of this server for `purpose` (signing upload URLs, say), derived from the random
        secret in the data directory: the same across restarts, different for each purpose."""
        return hmac.new(self._server.secret, f"xmppd {purpose}".encode(), hashlib.sha256).digest()

    def http_url(self, host: str) -> str:
        """How clients reach the HTTP side for `host`: `[http] public_url`, else HTTPS on the
        host name and `tls_port` (plain HTTP on loopback when HTTPS is off)."""
        return self._server.http.url_for(host)

    def shared(self, name: str, make: Callable[[], T]) -> T:
        """One object for every host of this server (a cache, a batching writer), made by
        `make` on first use: a sender and a recipient on different hosts see the same one."""
        key = f"{self.name}:{name}"
        if key not in self._server.shared:
            self._server.shared[key] = make()
        return self._server.shared[key]  # type: ignore[no-any-return]

    def common(self, name: str, make: Callable[[], T]) -> T:
        """One object for the whole server under a well-known `name`, whichever module asks
        first making it: a service several features share (the archive writer that users' 1:1
        archives and room archives commit through together)."""
        key = f"common:{name}"
        if key not in self._server.shared:
            self._server.shared[key] = make()
        return self._server.shared[key]  # type: ignore[no-any-return]

    # -- acting -------------------------------------------------------------------------
    async def send(self, stanza: Stanza, as_session: Session | None = None) -> None:
        """Route a stanza. As the server (default), only the recipient's hooks run; as a
        session, the sender-side hooks (`pre-...`: blocking, archive, carbons) run first, as for
        a stanza the client itself sent."""
        if as_session is not None:
            await self._server.router.post(stanza, as_session)
        else:
            await self._server.router.deliver(stanza, None)

    async def send_copies(
        self, stanza: Stanza, recipients: Sequence[JID], serialised: Template | None = None
    ) -> None:
        """Send one stanza to many recipients, as the server: a room's groupchat message or an
        occupant's presence, which differ only in `to`. `stanza` has a `from` and no `to`, and
        must not change afterwards; it is serialised once and each recipient gets it with its own
        `to`. Each copy is delivered as `send` would deliver it, except that the resources of an
        account see one `copies` event for the batch instead of `<kind>/full` per copy
        (events.CopiesEvent); a copy for a resource that is not there is answered as RFC 6121
        §8.5.3.2.1 says (service-unavailable for groupchat: that occupant is gone). A stanza sent
        again and again (an occupant's presence to each newcomer) may come with its `serialised`
        form (`router.template(stanza.element)`), kept from the first time."""
        await self._server.router.deliver_copies(stanza, recipients, serialised)

    async def send_iq(self, stanza: Stanza, patience: float = 30.0) -> Stanza:
        """Send an iq get/set (an id is given if it has none) and return its result; raises
        StanzaError for an error answer, remote-server-timeout when none comes within `patience` s."""
        if stanza.id is None:
            stanza.id = f"{self.name}-{secrets.token_hex(6)}"
            stanza.element.set("id", stanza.id)
        return await self._server.router.request(stanza, patience)

    def end_session(self, session: Session, reason: str) -> Awaitable[None]:
        """End a bound session (a detached one that will not be resumed, say)."""
        return self._server.session_ended(session, reason)

    # -- time and background work -------------------------------------------------------
    def time(self) -> float:
        """Seconds since the epoch, from the server's clock (tests inject their own)."""
        return self._server.clock()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._server.clock(), UTC)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], *, forever: bool = False) -> asyncio.Task[Any]:
        """Run background work owned by this module; it is cancelled on unload. The server waits
        for it before it stops, unless it is a loop meant to run `forever` (a periodic cleanup)."""
        task = self._server.background.spawn(coroutine, daemon=forever)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def call_later(self, delay: float, callback: Callable[[], object]) -> asyncio.TimerHandle:
        """Call `callback` after `delay` seconds, unless the module is unloaded first."""

        def run() -> None:
            self._timers.discard(handle)
            callback()

        handle = asyncio.get_running_loop().call_later(delay, run)
        self._timers.add(handle)
        return handle

    def unload(self) -> None:
        for registration in self._hooks:
            self.host.hooks.off(registration)
        for undo in reversed(self._undo):
            undo()
        for task in self._tasks:
            task.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        self._hooks.clear()
        self._undo.clear()
