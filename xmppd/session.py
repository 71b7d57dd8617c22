"""A bound client resource (RFC 6120 §7) as the rest of the server sees it.

`send()` is synchronous: it serialises once and hands the bytes to the connection's output,
which coalesces writes and protects senders from slow readers. Modules keep their per-session
state in `state`, keyed by module name, so the core needs no field per feature.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from lxml import etree

from xmppd.jid import JID

if TYPE_CHECKING:
    from xmppd.host import Host


class Output(Protocol):
    """Where a session's bytes go: a socket adapter, a test buffer, a cluster link."""

    def write(self, data: bytes) -> None: ...

    def close(self, data: bytes = b"") -> None: ...


class Session:
    __slots__ = (
        "address",
        "bare",
        "closed",
        "directed",
        "host",
        "interested",
        "jid",
        "output",
        "presence",
        "priority",
        "state",
    )

    def __init__(self, host: Host, jid: JID, output: Output, address: str = "") -> None:
        self.host = host
        self.jid = jid
        self.bare = jid.bare
        self.output = output
        self.address = address
        # RFC 6121 §4.2: the last available presence broadcast; None until initial presence.
        self.presence: etree._Element | None = None
        self.priority = 0
        # RFC 6121 §2.1.6: a resource that asked for the roster gets roster pushes.
        self.interested = False
        # RFC 6121 §4.6: JIDs this resource sent directed presence to.
        self.directed: set[JID] = set()
        self.state: dict[str, Any] = {}
        self.closed = False

    @property
    def available(self) -> bool:
        return self.presence is not None

    def send(self, stanza: etree._Element) -> None:
        self.output.write(etree.tostring(stanza))

    def send_bytes(self, data: bytes) -> None:
        self.output.write(data)

    def close(self, data: bytes = b"") -> None:
        self.output.close(data)

    def __repr__(self) -> str:
        return f"<Session {self.jid}>"
