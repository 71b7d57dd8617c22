"""The API a feature module gets, and the loader that registers modules on a host.

A module is one file with a docstring naming its RFC/XEP, a `PROTOCOLS` list, optional
`OPTIONS` (validated by the config loader) and `setup(mod: ModuleAPI)`. Everything it
registers through `mod` is recorded, so `unload()` undoes it without the module's help.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, TypeVar

from lxml import etree

from xmppd.hooks import Handler, Registration
from xmppd.host import Host, Identity, StreamFeature
from xmppd.router import StanzaEvent
from xmppd.stanza import Stanza

if TYPE_CHECKING:
    from storage import Storage
    from xmppd.server import Server

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
    def __init__(self, name: str, host: Host, server: Server, options: Mapping[str, Any]) -> None:
        self.name = name
        self.host = host
        self.server = server
        self.options = dict(options)
        self.log = logging.getLogger(f"xmppd.mod.{name}")
        self._hooks: list[Registration] = []
        self._undo: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def storage(self) -> Storage:
        return self.server.storage

    # -- hooks --------------------------------------------------------------------------
    def on(self, event: str, handler: Handler, priority: int = 0) -> None:
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
            self.on(f"iq-{type_}/{target}/{ns}:{name}", handler, priority)

    # -- what the host announces --------------------------------------------------------
    def add_feature(self, feature: str) -> None:
        if feature not in self.host.features:
            self.host.add_feature(feature)
            self._undo.append(lambda: self.host.remove_feature(feature))

    def add_account_feature(self, feature: str) -> None:
        """A feature the server offers on behalf of each account (disco#info to a bare JID)."""
        features = self.host.account_features
        if feature not in features:
            features.append(feature)
            self._undo.append(lambda: features.remove(feature))

    def add_identity(self, category: str, type_: str, name: str | None = None) -> None:
        identity = Identity(category, type_, name)
        self.host.identities.append(identity)
        self._undo.append(lambda: self.host.identities.remove(identity))

    def add_extension(self, form: etree._Element) -> None:
        self.host.extensions.append(form)
        self._undo.append(lambda: self.host.extensions.remove(form))

    def add_stream_feature(self, provider: StreamFeature, *, before_auth: bool = False) -> None:
        features = self.host.pre_auth_features if before_auth else self.host.stream_features
        features.append(provider)
        self._undo.append(lambda: features.remove(provider))

    def shared(self, name: str, make: Callable[[], T]) -> T:
        """One object for every host of this server (a cache, a batching writer), made by
        `make` on first use: a sender and a recipient on different hosts see the same one."""
        key = f"{self.name}:{name}"
        if key not in self.server.shared:
            self.server.shared[key] = make()
        return self.server.shared[key]  # type: ignore[no-any-return]

    # -- acting -------------------------------------------------------------------------
    async def send(self, stanza: Stanza) -> None:
        """Route a stanza the server itself originates (no sender-side hooks run)."""
        await self.server.router.deliver(stanza, None)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run background work owned by this module; it is cancelled on unload."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.log.error("background task failed", exc_info=task.exception())

    def unload(self) -> None:
        for registration in self._hooks:
            self.host.hooks.off(registration)
        for undo in reversed(self._undo):
            undo()
        for task in self._tasks:
            task.cancel()
        self._hooks.clear()
        self._undo.clear()
