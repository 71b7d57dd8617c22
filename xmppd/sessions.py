"""Where bound resources live: full JID -> session, bare JID -> its resources.

`SessionRegistry` is the interface the router and the modules ask; `LocalSessions` keeps the
table in this process (one node). A cluster puts a shared table behind the same interface
(ejabberd_sm with its mnesia/sql/redis backends is the model), where a session of another node
is a `Session` whose transport forwards the serialised stanzas to that node. That is why routing
state (presence, priority, flags) changes only through the registry's methods: a shared table
has to publish each change, and a module that wrote `session.presence = ...` would bypass it.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Iterable

from lxml import etree

from xmppd.jid import JID
from xmppd.session import Session


class SessionRegistry(abc.ABC):
    """The bound resources of the server's accounts, and the routing state of each."""

    # -- lookups (on the hot path: cheap, synchronous) ----------------------------------------
    @abc.abstractmethod
    def get(self, full: JID) -> Session | None:
        """The session bound to a full JID."""

    @abc.abstractmethod
    def each_resource(self, bare: JID) -> Iterable[Session]:
        """Every bound resource of an account, available or not, without a copy: for reading
        right away, not across an await."""

    def resources(self, bare: JID) -> list[Session]:
        """Every bound resource of an account, available or not."""
        return list(self.each_resource(bare))

    def available(self, bare: JID) -> list[Session]:
        """Resources that sent initial presence (RFC 6121 §1.3 'available resources')."""
        return [s for s in self.each_resource(bare) if s.presence is not None]

    def top_resources(self, bare: JID) -> list[Session]:
        """Available resources of the highest non-negative priority (RFC 6121 §8.5.2.1.1)."""
        best: list[Session] = []
        top = 0
        for session in self.each_resource(bare):
            if session.presence is None or session.priority < 0:
                continue
            if not best or session.priority > top:
                best, top = [session], session.priority
            elif session.priority == top:
                best.append(session)
        return best

    @abc.abstractmethod
    def all(self) -> list[Session]: ...

    @abc.abstractmethod
    def __len__(self) -> int: ...

    # -- changes --------------------------------------------------------------------------------
    @abc.abstractmethod
    def free_resource(self, bare: JID) -> str:
        """A server-generated resource (RFC 6120 §7.6.2.1), unique for this account."""

    @abc.abstractmethod
    def bind(self, session: Session) -> Session | None:
        """Add a session; returns the one it replaces (RFC 6120 §7.7.2.2: the newer one wins)."""

    @abc.abstractmethod
    def unbind(self, session: Session) -> bool:
        """Remove a session if it is still the one bound to its JID."""

    def set_presence(self, session: Session, presence: etree._Element | None, priority: int = 0) -> None:
        """The resource's last broadcast presence (None: unavailable) and its priority."""
        session.presence = etree.tostring(presence, with_tail=False) if presence is not None else None
        session.priority = priority if presence is not None else 0

    def set_flag(self, session: Session, flag: str, on: bool = True) -> None:
        """Turn a routing flag of the resource on or off ("roster", "carbons", ...)."""
        session.flags = session.flags | {flag} if on else session.flags - {flag}


class LocalSessions(SessionRegistry):
    """The registry of a single node: two dicts."""

    def __init__(self) -> None:
        self._by_full: dict[JID, Session] = {}
        self._by_bare: dict[JID, dict[str, Session]] = {}

    def get(self, full: JID) -> Session | None:
        return self._by_full.get(full)

    def each_resource(self, bare: JID) -> Iterable[Session]:
        resources = self._by_bare.get(bare)
        return resources.values() if resources is not None else ()

    def free_resource(self, bare: JID) -> str:
        taken = self._by_bare.get(bare, {})
        while True:
            resource = "xmppd-" + secrets.token_hex(6)
            if resource not in taken:
                return resource

    def bind(self, session: Session) -> Session | None:
        replaced = self._by_full.get(session.jid)
        self._by_full[session.jid] = session
        resource = session.jid.resource
        assert resource is not None
        self._by_bare.setdefault(session.bare, {})[resource] = session
        return replaced

    def unbind(self, session: Session) -> bool:
        if self._by_full.get(session.jid) is not session:
            return False
        del self._by_full[session.jid]
        resources = self._by_bare[session.bare]
        assert session.jid.resource is not None
        del resources[session.jid.resource]
        if not resources:
            del self._by_bare[session.bare]
        return True

    def __len__(self) -> int:
        return len(self._by_full)

    def all(self) -> list[Session]:
        return list(self._by_full.values())
