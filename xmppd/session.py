"""A bound client resource (RFC 6120 §7) as the rest of the server sees it.

Output. `send()` is synchronous: it serialises a stanza once and hands the element and its bytes
to `session.output`, one stanza per call. The innermost output is the session's `Link` to the
transport it is attached to (a TCP stream, a WebSocket, a cluster link to another node); a module
wraps the output to count, hold or replay stanzas (stream management, CSI) with `wrap_output`
(a `Wrapper` around the output it is given; stream management's goes innermost).
Non-stanza elements (stream management's `<a/>`) go to `session.link.transport` directly, uncounted.

Lifecycle. A session is attached to a transport when bound. When the transport goes away, the
server fires `session-detached`: a module that claims it keeps the session bound but detached
(its link drops what is written; the module's wrapper keeps what must survive) until it is
attached to a new transport (`attach`, a resumed stream) or ended. Unclaimed, the session ends.

Routing state (presence, priority, flags such as "carbons on") is changed only through the
session registry (sessions.py), which a cluster keeps in a shared table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from lxml import etree

from xmppd.jid import JID

if TYPE_CHECKING:
    from xmppd.errors import StreamError
    from xmppd.host import Host


class Output(Protocol):
    """Where a session's stanzas go: one call per stanza, its element (None when only the bytes
    exist, e.g. a stored offline message) and its serialisation."""

    def send(self, stanza: etree._Element | None, data: bytes) -> None:
        """Take one stanza. For a copy (`Router.deliver_copies`: one stanza to many resources)
        `stanza` is the element shared by every copy, without the `to` that only `data` carries:
        read it (its kind, type, payload), never change it; what must be kept or replayed is
        `data`."""

    def close(self, error: StreamError | None = None) -> None: ...


class Sink(Protocol):
    """A transport as a session sees it: serialised top-level elements in, a way to close."""

    def write(self, data: bytes) -> None: ...

    def close(self, error: StreamError | None = None) -> None: ...

    def abort(self) -> None:
        """Cut the connection now, without a closing tag: as for a lost connection, the session
        may be kept for a resumption (a peer that stopped answering)."""


class Wrapper:
    """An output around another, `inner` (stream management counts and keeps, CSI holds): by
    default it passes everything on."""

    __slots__ = ("inner",)

    def __init__(self, inner: Output) -> None:
        self.inner = inner

    def send(self, stanza: etree._Element | None, data: bytes) -> None:
        self.inner.send(stanza, data)

    def close(self, error: StreamError | None = None) -> None:
        self.inner.close(error)


W = TypeVar("W", bound=Wrapper)


class Link:
    """The innermost output: whatever transport the session is attached to, or nothing."""

    __slots__ = ("transport",)

    def __init__(self, transport: Sink | None) -> None:
        self.transport = transport

    def send(self, stanza: etree._Element | None, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def close(self, error: StreamError | None = None) -> None:
        if self.transport is not None:
            self.transport.close(error)


class Session:
    __slots__ = (
        "address",
        "bare",
        "closed",
        "directed",
        "flags",
        "host",
        "jid",
        "link",
        "output",
        "presence",
        "priority",
        "received",
    )

    def __init__(self, host: Host, jid: JID, transport: Sink | None, address: str = "") -> None:
        self.host = host
        self.jid = jid
        self.bare = jid.bare
        self.address = address
        self.link = Link(transport)
        self.output: Output = self.link
        # RFC 6121 §4.2: the last available presence broadcast, serialised; None until initial
        # presence. Kept as bytes because an idle session keeps it for its whole life: as an lxml
        # element it costs ~2.3 KB of C heap, as bytes ~0.3 KB; readers parse it back (roster.addressed).
        self.presence: bytes | None = None
        self.priority = 0
        # Routing flags modules set through the registry: "roster" (RFC 6121 §2.1.6: it asked
        # for the roster, so it gets pushes), "carbons" (XEP-0280), "blocklist" (XEP-0191 pushes).
        self.flags: frozenset[str] = frozenset()
        # RFC 6121 §4.6: JIDs this resource sent directed presence to.
        self.directed: set[JID] = set()
        self.closed = False
        # Stanzas the client sent that were handled (routed), counted by the stream driver for
        # stream management's `h` (XEP-0198 §4); it carries over to a resumed stream.
        self.received = 0

    @property
    def available(self) -> bool:
        return self.presence is not None

    @property
    def interested(self) -> bool:
        """RFC 6121 §2.1.6: it asked for the roster, so it gets roster pushes."""
        return "roster" in self.flags

    @property
    def attached(self) -> bool:
        return self.link.transport is not None

    def send(self, stanza: etree._Element) -> None:
        data = etree.tostring(stanza)
        output = self.output
        if output is self.link:
            # Unwrapped (the common case): straight to the transport, one call less per stanza.
            transport = output.transport
            if transport is not None:
                transport.write(data)
        else:
            output.send(stanza, data)

    def send_bytes(self, data: bytes) -> None:
        """A stanza already serialised (a stored offline message)."""
        self.output.send(None, data)

    def close(self, error: StreamError | None = None) -> None:
        """Close the stream the session is attached to (with a stream error)."""
        self.output.close(error)

    def abort(self) -> None:
        """Cut the connection of the stream the session is attached to (Sink.abort)."""
        if self.link.transport is not None:
            self.link.transport.abort()

    def wrap_output(self, wrap: Callable[[Output], W], *, innermost: bool = False) -> W:
        """Put the wrapper `wrap(inner)` around the output, outermost, or `innermost`: right
        around the link, so that it sees exactly what reaches the transport, after whatever the
        other wrappers hold back (stream management counts there, under CSI)."""
        if not innermost or self.output is self.link:
            wrapper = wrap(self.output)
            self.output = wrapper
            return wrapper
        outer = self.output
        while isinstance(outer, Wrapper) and outer.inner is not self.link:
            outer = outer.inner
        assert isinstance(outer, Wrapper), "every output but the link is a Wrapper"
        wrapper = wrap(self.link)
        outer.inner = wrapper
        return wrapper

    def unwrap_output(self, wrapper: Wrapper) -> None:
        """Take a wrapper out of the chain (CSI once the client is active again)."""
        if self.output is wrapper:
            self.output = wrapper.inner
            return
        outer = self.output
        while isinstance(outer, Wrapper):
            if outer.inner is wrapper:
                outer.inner = wrapper.inner
                return
            outer = outer.inner

    def attach(self, transport: Sink) -> None:
        self.link.transport = transport

    def detach(self) -> None:
        self.link.transport = None

    def __repr__(self) -> str:
        return f"<Session {self.jid}>"
