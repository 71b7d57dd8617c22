"""The table of bound resources: full JID -> session, bare JID -> its resources."""

from __future__ import annotations

import secrets

from xmppd.jid import JID
from xmppd.session import Session


class SessionRegistry:
    def __init__(self) -> None:
        self._by_full: dict[JID, Session] = {}
        self._by_bare: dict[JID, dict[str, Session]] = {}

    def get(self, full: JID) -> Session | None:
        return self._by_full.get(full)

    def resources(self, bare: JID) -> list[Session]:
        return list(self._by_bare.get(bare, {}).values())

    def available(self, bare: JID) -> list[Session]:
        """Resources that sent initial presence (RFC 6121 §1.3 'available resources')."""
        return [s for s in self._by_bare.get(bare, {}).values() if s.presence is not None]

    def top_resources(self, bare: JID) -> list[Session]:
        """Available resources of the highest non-negative priority (RFC 6121 §8.5.2.1.1)."""
        best: list[Session] = []
        top = 0
        for session in self._by_bare.get(bare, {}).values():
            if session.presence is None or session.priority < 0:
                continue
            if not best or session.priority > top:
                best, top = [session], session.priority
            elif session.priority == top:
                best.append(session)
        return best

    def free_resource(self, bare: JID) -> str:
        """A server-generated resource (RFC 6120 §7.6.2.1), unique for this account."""
        taken = self._by_bare.get(bare, {})
        while True:
            resource = "xmppd-" + secrets.token_hex(6)
            if resource not in taken:
                return resource

    def bind(self, session: Session) -> Session | None:
        """Add a session; returns the one it replaces (RFC 6120 §7.7.2.2: the newer one wins)."""
        replaced = self._by_full.get(session.jid)
        self._by_full[session.jid] = session
        resource = session.jid.resource
        assert resource is not None
        self._by_bare.setdefault(session.bare, {})[resource] = session
        return replaced

    def unbind(self, session: Session) -> bool:
        """Remove a session if it is still the one bound to its JID."""
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
