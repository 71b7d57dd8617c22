"""XEP-0198: Stream Management, so that a phone on a flaky network loses nothing.

Theory of operation
-------------------
Enabling. After binding, `<enable/>` (§3) wraps the session's output innermost (`Managed`, right
around the link, under CSI's holding: what it counts is what reached the transport). With
`resume='true'` the answer names an id to resume with and the time the session stays resumable:
the client's `max` up to `max_resume_timeout`, else `resume_timeout`.

Acknowledgements (§4). Each stanza written is kept in `Unacked` with its serialisation until the
client's `<a h=.../>` says it was handled; `h` counts modulo 2^32, so acknowledging works across
the wrap. The server asks (`<r/>`) once `request_every` stanzas wait unacknowledged, or
`request_after` seconds after one did; a client that leaves a request unanswered for
`ack_timeout` seconds is taken for gone: its connection is cut, as if it had dropped. What the
client sent is counted by the stream driver (`Session.received`), and `<r/>` from the client is
answered with that count since `<enable/>`. An `h` above what was sent ends the stream with
undefined-condition and `<handled-count-too-high/>` (§5).

Hibernation and resumption (§5). When the connection of a resumable session is lost (not ended
by a closing tag), `session-detached` is claimed: the session stays bound, available to its
contacts, and what is sent to it is kept (each such stanza fires `detached-stanza`, for push).
`<resume previd h/>` on a new, authenticated stream of the same account takes the session over
(`StreamHandle.adopt`, which also closes a stream still holding it), acknowledges up to `h`,
answers `<resumed/>` with the server's count and writes every unacknowledged stanza again, in
order. An unknown or expired id, or another account's, gets `<failed/>` with item-not-found, and
the client binds as usual. Past the resumption time, or past `max_queue` kept stanzas, the
session ends.

Nothing silently lost (§4 "the server SHOULD treat unacknowledged stanzas..."). When a managed
session ends and will not be resumed (time out, a new bind of its full JID, a closing tag with
stanzas unacknowledged, server stop), each unacknowledged stanza is dealt with once:

- a message is delivered again to the account (its bare JID), with a XEP-0203 delay stamp of the
  time it first came, unless another available resource has carbons on (it had a copy already).
  With no resource left it goes to offline storage (or back to the sender as an error, as for any
  message). Its stanza-id stays, so the archive does not keep it twice. Not delivered again, as
  RFC 6121 drops them for an absent resource or another copy exists: errors, groupchat and
  headline messages, carbon copies, archive query results, standalone chat states;
- an offline message handed to the session stays in offline storage: offline.py's
  `offline-handed` is claimed, and the stored copies are deleted only once acknowledged;
- an iq get/set is answered with service-unavailable (RFC 6121 §8.5.3.2.1); presence and other
  answers are dropped (presence is sent again when the client comes back).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

from lxml import etree

from xmppd import events
from xmppd.datetimes import stamp
from xmppd.elements import element, from_text
from xmppd.errors import StanzaError, StreamError
from xmppd.events import DetachedStanzaEvent, HandedEvent, SessionEvent, StreamElementEvent
from xmppd.module import ModuleAPI, Option, Stanza
from xmppd.modules.offline import standalone_chat_state
from xmppd.session import Output, Wrapper

if TYPE_CHECKING:
    import asyncio

    from xmppd.session import Session

PROTOCOLS = [
    ("XEP-0198", "1.6.1", "complete", "acks both ways, resumption on a single node (no location)"),
]
NS = "urn:xmpp:sm:3"
STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
DELAY_NS = "urn:xmpp:delay"
CARBONS_NS = "urn:xmpp:carbons:2"
MAM_NS = "urn:xmpp:mam:2"
MODULO = 2**32  # §4: h wraps to 0 after 2^32 - 1
OPTIONS = {
    "resume_timeout": Option(
        300, "seconds a session whose connection dropped stays resumable when its client asks no other time", minimum=1
    ),
    "max_resume_timeout": Option(3600, "the longest resumption time a client may ask for (its 'max')", minimum=1),
    "max_queue": Option(
        1000,
        "unacknowledged stanzas kept for one session; one more ends the session (its messages are handed on)",
        minimum=1,
    ),
    "request_every": Option(5, "unacknowledged stanzas after which the server asks for an acknowledgement", minimum=1),
    "request_after": Option(
        30.0, "seconds after an unacknowledged stanza the server asks for an acknowledgement anyway",
        kind=float,
        minimum=1,
    ),
    "ack_timeout": Option(
        60.0, "seconds a client has to answer the server's request before its connection is taken for dead",
        kind=float,
        minimum=1,
    ),
}
REQUEST = f"<r xmlns='{NS}'/>".encode()


def setup(mod: ModuleAPI) -> None:
    manager = StreamManagement(mod)
    mod.add_stream_feature(lambda _session: element(f"{{{NS}}}sm"))
    for name, handler in (
        ("enable", manager.enable),
        ("resume", manager.resume),
        ("r", manager.request),
        ("a", manager.acknowledged),
    ):
        mod.on(events.stream_element(NS, name), handler)
    mod.on(events.SESSION_DETACHED, manager.detached)
    mod.on(events.SESSION_ENDED, manager.ended)
    mod.on(events.OFFLINE_HANDED, manager.offline_handed)


# -- the outbound queue (no I/O) ----------------------------------------------------------------


class HandledCountTooHigh(Exception):
    """An acknowledgement of more stanzas than were sent (§5)."""


# A stanza written to the client: its serialisation (with its `to`: all that handing it on needs;
# its element is let go at once, as without stream management) and when it was sent. A tuple:
# one is made for every stanza.
Sent = tuple[bytes, float]


class Unacked:
    """What was sent and not yet acknowledged, and the counts of §4 (modulo 2^32). A list, not a
    deque: it is short between acknowledgements, and an empty list costs a tenth of a deque.

    Entries are numbered from the first ever sent (`first` is the number of `queue[0]`), so that
    the rare ones with something attached, offline messages, are found without a field on every
    entry: `stored` (still in offline storage: nothing to hand on if unacknowledged) and `on_ack`
    (what their acknowledgement does: delete them there)."""

    __slots__ = ("acked", "first", "on_ack", "queue", "sent", "since_request", "stored")

    def __init__(self) -> None:
        self.queue: list[Sent] = []
        self.first = 0
        self.sent = 0  # stanzas sent, modulo 2^32
        self.acked = 0  # the last h the client acknowledged
        self.since_request = 0  # stanzas sent since the last <r/>
        self.stored: set[int] = set()
        self.on_ack: dict[int, Callable[[], object]] = {}

    def add(self, entry: Sent) -> None:
        self.queue.append(entry)
        self.sent = (self.sent + 1) % MODULO
        self.since_request += 1

    def acknowledge(self, h: int) -> list[Callable[[], object]]:
        """Take the stanzas `h` acknowledges out of the queue; what is due on them. Raises
        HandledCountTooHigh when `h` says more than was sent (or is below an earlier h: counts
        never go back)."""
        queue = self.queue
        count = (h - self.acked) % MODULO
        if count > len(queue):
            raise HandledCountTooHigh(f"h={h} but {self.sent} sent")
        self.acked = h % MODULO
        del queue[:count]
        first, self.first = self.first, self.first + count
        if not self.stored and not self.on_ack:
            return []
        done = range(first, first + count)
        self.stored.difference_update(done)
        return [self.on_ack.pop(number) for number in done if number in self.on_ack]

    def mark_stored(self, count: int, on_ack: Callable[[], object]) -> bool:
        """The last `count` entries are offline messages still in storage; `on_ack` runs when the
        last of them is acknowledged. False when none of them is waiting any more."""
        end = self.first + len(self.queue)
        start = max(end - count, self.first)
        if start == end:
            return False
        self.stored.update(range(start, end))
        self.on_ack[end - 1] = on_ack
        return True

    def left(self) -> list[Sent]:
        """What was never acknowledged and is not in offline storage, oldest first."""
        stored = self.stored
        return [entry for number, entry in enumerate(self.queue, self.first) if number not in stored]


# -- one managed session --------------------------------------------------------------------------


class Managed(Wrapper):
    """The output wrapper of a stream-managed session: counts and keeps each stanza, asks for
    acknowledgements, and keeps what comes while the session is detached.

    One timer at most, looked at lazily: acknowledgements come every few stanzas, and cancelling
    and setting a timer for each would cost more than the rest of the bookkeeping. When it fires
    it sees what is due: a request unanswered for `ack_timeout` (the client is taken for gone),
    or stanzas unacknowledged with no request out (it asks)."""

    __slots__ = (
        "asked_at", "base", "id", "manager", "outstanding", "resume_for", "session", "timer", "unacked",
    )

    def __init__(self, inner: Output, manager: StreamManagement, session: Session, resume_for: int) -> None:
        super().__init__(inner)
        self.manager = manager
        self.session = session
        self.unacked = Unacked()
        self.base = session.received  # h counts what the client sent after <enable/>
        self.resume_for = resume_for  # seconds; 0: not resumable
        self.id = secrets.token_urlsafe(18) if resume_for else ""
        self.outstanding = False  # a <r/> is waiting for its <a/>
        self.asked_at = 0.0  # when it went out (time.monotonic)
        self.timer: asyncio.TimerHandle | None = None

    @property
    def handled(self) -> int:
        """The `h` the server reports: stanzas from the client handled since <enable/>."""
        return (self.session.received - self.base) % MODULO

    def send(self, stanza: etree._Element | None, data: bytes) -> None:
        manager = self.manager
        unacked = self.unacked
        unacked.add((data, manager.now))
        self.inner.send(stanza, data)
        if len(unacked.queue) > manager.max_queue:
            manager.overflowing(self)
        elif self.session.link.transport is None:
            manager.kept_while_detached(self.session, stanza, data)
        elif not self.outstanding:
            if unacked.since_request >= manager.request_every:
                self.ask()
            elif self.timer is None:
                self.timer = manager.mod.call_later(manager.request_after, self.due)

    def ask(self) -> None:
        """<r/>; the timer then watches for the answer."""
        transport = self.session.link.transport
        if transport is None:
            return
        transport.write(REQUEST)
        self.unacked.since_request = 0
        self.outstanding = True
        self.asked_at = time.monotonic()
        if self.timer is None:
            self.timer = self.manager.mod.call_later(self.manager.ack_timeout, self.due)

    def due(self) -> None:
        self.timer = None
        if self.session.link.transport is None:
            return  # detached: the resumption timer rules now
        if self.outstanding:
            left = self.asked_at + self.manager.ack_timeout - time.monotonic()
            if left > 0:
                self.timer = self.manager.mod.call_later(left, self.due)
                return
            self.manager.mod.log.info("%s did not acknowledge in time: taken for gone", self.session.jid)
            self.session.abort()  # detached as for a lost connection: it may still resume
        elif self.unacked.queue:
            self.ask()

    def acknowledge(self, h: int) -> list[Callable[[], object]]:
        due = self.unacked.acknowledge(h)
        self.outstanding = False
        return due

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


def _failed(condition: str, h: int | None = None) -> bytes:
    failed = element(f"{{{NS}}}failed", {"h": str(h)} if h is not None else None)
    element(f"{{{STANZAS_NS}}}{condition}", parent=failed)
    return etree.tostring(failed)


def _h(ev: StreamElementEvent) -> int:
    try:
        h = int(ev.element.get("h", ""))
    except ValueError:
        raise StreamError("bad-format", "h must be a number") from None
    if not 0 <= h < MODULO:
        raise StreamError("bad-format", "h must be between 0 and 2^32 - 1")
    return h


# -- the service ----------------------------------------------------------------------------------


class StreamManagement:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        options = mod.options
        self.resume_timeout: int = options["resume_timeout"]
        self.max_resume_timeout: int = options["max_resume_timeout"]
        self.max_queue: int = options["max_queue"]
        self.request_every: int = options["request_every"]
        self.request_after: float = options["request_after"]
        self.ack_timeout: float = options["ack_timeout"]
        # When each stanza was sent (the delay stamp if it is handed on), to the second: read for
        # every stanza, so kept in an attribute a timer refreshes rather than asked of a clock.
        self.now = mod.time()
        self._tick()
        self.managed: dict[Session, Managed] = {}
        self.resumable: dict[str, Managed] = {}  # by resumption id

    def _tick(self) -> None:
        self.now = self.mod.time()
        self.mod.call_later(1.0, self._tick)

    def _later(self, work: Awaitable[object]) -> None:
        """Start `work` from synchronous code (a timer, an output wrapper)."""

        async def run() -> None:
            await work

        self.mod.spawn(run())

    # -- §3 enabling ---------------------------------------------------------------------------

    def enable(self, ev: StreamElementEvent) -> bool:
        session = ev.session
        if session is None or session in self.managed:  # before binding, or twice
            ev.stream.send(_failed("unexpected-request"))
            return True
        resume_for = self._resume_time(ev.element) if ev.element.get("resume") in ("true", "1") else 0
        attributes = {"id": "", "resume": "true", "max": str(resume_for)} if resume_for else {}
        managed = session.wrap_output(lambda inner: Managed(inner, self, session, resume_for), innermost=True)
        if resume_for:
            attributes["id"] = managed.id
            self.resumable[managed.id] = managed
        self.managed[session] = managed
        ev.stream.send(etree.tostring(element(f"{{{NS}}}enabled", attributes)))
        return True

    def _resume_time(self, enable: etree._Element) -> int:
        try:
            asked = int(enable.get("max", ""))
        except ValueError:
            return self.resume_timeout
        return max(1, min(asked, self.max_resume_timeout))

    # -- §4 acknowledgements -------------------------------------------------------------------

    def request(self, ev: StreamElementEvent) -> bool:
        managed = self.managed.get(ev.session) if ev.session is not None else None
        if managed is None:
            ev.stream.send(_failed("unexpected-request"))
        else:
            ev.stream.send(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % managed.handled)
        return True

    def acknowledged(self, ev: StreamElementEvent) -> bool:
        managed = self.managed.get(ev.session) if ev.session is not None else None
        if managed is None:
            ev.stream.send(_failed("unexpected-request"))
            return True
        self._acknowledge(managed, _h(ev))
        return True

    def _acknowledge(self, managed: Managed, h: int) -> None:
        try:
            done = managed.acknowledge(h)
        except HandledCountTooHigh:
            counts = {"h": str(h), "send-count": str(managed.unacked.sent)}
            too_high = element(f"{{{NS}}}handled-count-too-high", counts)
            raise StreamError("undefined-condition", "h is above the number of stanzas sent", too_high) from None
        for on_ack in done:
            on_ack()

    def offline_handed(self, ev: HandedEvent) -> bool:
        """Offline messages written to a managed session are deleted once acknowledged. They are
        the last stanzas written: offline.py fires this right after writing them, before any
        other task could write to the session."""
        managed = self.managed.get(ev.session)
        if managed is None:
            return False
        if not managed.unacked.mark_stored(len(ev.ids), lambda: self._later(ev.delete())):
            self._later(ev.delete())  # acknowledged already
        return True

    # -- §5 hibernation and resumption ---------------------------------------------------------

    def detached(self, ev: SessionEvent) -> bool:
        managed = self.managed.get(ev.session)
        if managed is None or not managed.resume_for:
            return False
        managed.cancel_timer()
        managed.outstanding = False
        managed.timer = self.mod.call_later(managed.resume_for, lambda: self._expire(managed))
        return True

    def _expire(self, managed: Managed) -> None:
        managed.timer = None
        self._later(self.mod.end_session(managed.session, "not resumed in time"))

    def kept_while_detached(self, session: Session, stanza: etree._Element | None, data: bytes) -> None:
        self.mod.spawn(self.mod.fire(events.DETACHED_STANZA, DetachedStanzaEvent(session, stanza, data)))

    def overflowing(self, managed: Managed) -> None:
        self.mod.log.warning("%s has too many unacknowledged stanzas: ending it", managed.session.jid)
        managed.cancel_timer()
        if managed.session.link.transport is not None:
            managed.session.close(StreamError("resource-constraint", "too many unacknowledged stanzas"))
        else:
            self._later(self.mod.end_session(managed.session, "too many stanzas kept"))

    def resume(self, ev: StreamElementEvent) -> bool:
        account = ev.stream.account
        managed = self.resumable.get(ev.element.get("previd", ""))
        if ev.session is not None:  # §5: only instead of binding
            ev.stream.send(_failed("unexpected-request"))
            return True
        if managed is None or account is None or managed.session.bare != account.bare or managed.session.closed:
            ev.stream.send(_failed("item-not-found"))  # another account's id is not told apart
            return True
        self._acknowledge(managed, _h(ev))
        session = managed.session
        managed.cancel_timer()
        ev.stream.adopt(session)
        resumed = element(f"{{{NS}}}resumed", {"previd": managed.id, "h": str(managed.handled)})
        ev.stream.send(etree.tostring(resumed))
        for data, _at in managed.unacked.queue:  # §5: everything unacknowledged, again, in order
            ev.stream.send(data)
        if managed.unacked.queue:
            managed.ask()
        self.mod.log.info("resumed %s from %s", session.jid, ev.stream.address)
        return True

    # -- §4: the session ends ------------------------------------------------------------------

    async def ended(self, ev: SessionEvent) -> None:
        managed = self.managed.pop(ev.session, None)
        if managed is None:
            return
        managed.cancel_timer()
        self.resumable.pop(managed.id, None)
        left = managed.unacked.left()
        managed.unacked.queue.clear()
        await self._hand_on(ev.session, left)

    async def _hand_on(self, session: Session, left: Iterable[Sent]) -> None:
        for data, at in left:
            stanza = Stanza.parse(from_text(data.decode()))
            if stanza.kind == "message":
                await self._deliver_again(session, stanza, at)
            elif stanza.kind == "iq" and stanza.type in ("get", "set"):
                error = StanzaError("service-unavailable", "the recipient went away before answering")
                await self.mod.send(stanza.error_reply(error))

    async def _deliver_again(self, session: Session, message: Stanza, at: float) -> None:
        if not worth_delivering_again(message.element):
            return
        others = [other for other in self.mod.sessions.available(session.bare) if other is not session]
        if any("carbons" in other.flags for other in others):
            return  # XEP-0280: a resource with carbons on had its own copy
        msg = message.element
        host = session.bare.domain
        if not any(delay.get("from") == host for delay in msg.iterchildren(f"{{{DELAY_NS}}}delay")):
            element(f"{{{DELAY_NS}}}delay", {"from": host, "stamp": stamp(round(at * 1000))}, parent=msg)
        message.set_to(session.bare)
        await self.mod.send(message)


def worth_delivering_again(msg: etree._Element) -> bool:
    """Whether an unacknowledged message goes to the account again (see the module docstring)."""
    if msg.get("type") in ("error", "groupchat", "headline"):
        return False
    for child in msg:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag.startswith((f"{{{CARBONS_NS}}}received", f"{{{CARBONS_NS}}}sent", f"{{{MAM_NS}}}result")):
            return False
    return not standalone_chat_state(msg)

