"""Every hook event of the server in one place: its name and the payload its handlers get.

Stanza events are named after the stanza's kind and where it is addressed (see router.py):

    pre-<kind>/<target>                     on the sender's host, before routing
    <kind>/<target>                         on the recipient's host
    iq-<type>/<target>                      an iq get/set, whatever its payload (blocking)
    iq-<type>/<target>/<ns>:<name>          an iq get/set by payload (what `mod.on_iq` registers)

with `<kind>` message | presence | iq and `<target>` host | self | bare | full; they carry a
`router.StanzaEvent`. The other events and their payloads are below. Handlers return True when
they handled the event (it stops there); see hooks.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

if TYPE_CHECKING:
    from xmppd.host import Host
    from xmppd.jid import JID
    from xmppd.router import Template
    from xmppd.session import Session
    from xmppd.stanza import Stanza
    from xmppd.stream import StreamHandle

KINDS = ("message", "presence", "iq")
TARGETS = ("host", "self", "bare", "full")

SESSION_BOUND = "session-bound"
SESSION_DETACHED = "session-detached"
SESSION_ENDED = "session-ended"
PRE_AUTH_IQ = "pre-auth-iq"
AVAILABLE_PRESENCE = "available-presence"
# A session's XEP-0115 features became known for its availability (payload: SessionEvent),
# fired on the session's user host by the caps module: on initial presence and when an update
# announces other caps, once a disco#info answer verified them if they were not cached.
CAPS_KNOWN = "caps-known"
OFFLINE_HANDED = "offline-handed"
MESSAGE_OFFLINE = "message/offline"
COPIES = "copies"
# Fired on every host when the server starts to stop, before any stream is closed (payload: the
# Host): a room service tells its occupants they are being removed (XEP-0045 status 332).
SERVER_STOPPING = "server-stopping"
# vcard.py, on the account's host (payload: VCardEvent): an account's vCard is about to be answered
# (a handler may change or replace `vcard`: XEP-0398 puts the PEP avatar in), and an account
# stored a new vCard (XEP-0398 publishes its photo through PEP).
VCARD_READ = "vcard-read"
VCARD_STORED = "vcard-stored"
# pep.py, on the account's host (payload: PepChanged): a node of an account changed and the change
# is stored, whoever made it (a client's request or a module through `Pep`); fired after the
# account's PEP lock is released, so a handler may change the account's nodes in turn (XEP-0411
# keeps `storage:bookmarks` and `urn:xmpp:bookmarks:1` in step this way).
PEP_CHANGED = "pep-changed"
# smacks.py, on the session's host (payload: DetachedStanzaEvent): a stanza was kept for a detached
# (hibernating) stream-managed session, to be sent if it resumes; push (XEP-0357) wakes the device.
# Fired from a task of its own, after the stanza was queued.
DETACHED_STANZA = "detached-stanza"
# ModuleAPI.delete_account (register.py, XEP-0077 §3.2) or, for an account deleted by another
# process, the server (xmppd/deletions.py), on the account's host (payload: AccountEvent): an
# account was deleted from storage, before its sessions are closed; what a module keeps of it in
# memory goes too.
ACCOUNT_DELETED = "account-deleted"


def pre(kind: str, target: str) -> str:
    """The sender-side event of a stanza (`pre-message/bare`)."""
    return f"pre-{kind}/{target}"


def stanza_event(kind: str, target: str) -> str:
    """The recipient-side event of a stanza (`message/bare`)."""
    return f"{kind}/{target}"


def iq_event(type_: str, target: str, ns: str, name: str) -> str:
    """The event of an iq get/set by payload (`iq-get/host/urn:xmpp:ping:ping`)."""
    return f"iq-{type_}/{target}/{ns}:{name}"


def stream_element(ns: str | None, name: str) -> str:
    """The event of a top-level element that is not a stanza (`stream-element/urn:xmpp:sm:3:r`):
    stream management's `<r/>`, `<a/>`, `<enable/>`, `<resume/>`, CSI's `<active/>`. An element
    nobody claims closes the stream with unsupported-stanza-type (RFC 6120 §4.9.3.24)."""
    return f"stream-element/{ns or ''}:{name}"


@dataclass(slots=True)
class SessionEvent:
    """`session-bound`, `session-detached`, `session-ended` and `caps-known`.

    `session-detached` fires when a bound session's transport is gone (the connection dropped or
    was closed without a stream close): a handler that returns True keeps the session bound and
    detached (stream management's hibernation) and must end it later with `mod.end_session`;
    unclaimed, the session ends at once."""

    session: Session
    reason: str = ""


@dataclass(slots=True)
class PreAuthEvent:
    """An iq before authentication (XEP-0077 registration): `reply` answers on that stream."""

    host: Host
    element: etree._Element
    stream: StreamHandle
    address: str

    def reply(self, element: etree._Element) -> None:
        self.stream.send(etree.tostring(element))


@dataclass(slots=True)
class StreamElementEvent:
    """A top-level element that is not a stanza, after authentication (`stream-element/...`).

    `session` is the bound session, or None between authentication and binding (XEP-0198's
    `<resume/>` comes there); `stream` answers on the stream and can adopt a detached session."""

    element: etree._Element
    stream: StreamHandle
    session: Session | None


@dataclass(slots=True)
class AvailableEvent:
    """`available-presence`: `session` broadcast available presence, its first since it was
    unavailable (`initial`) or an update; `session.priority` is the new priority,
    `previous_priority` the one before (0 when initial); `presence` is what it broadcast."""

    session: Session
    initial: bool
    previous_priority: int
    presence: etree._Element


@dataclass(slots=True)
class HandedEvent:
    """`offline-handed`: stored offline messages were written to `session`.

    A handler that returns True takes over their deletion and calls `delete()` when it sees fit
    (stream management: once the client acknowledged them); otherwise they are deleted at once."""

    session: Session
    ids: list[int]
    delete: Callable[[], Awaitable[int]]


@dataclass(slots=True)
class VCardEvent:
    """`vcard-read` and `vcard-stored`: `owner`'s vCard (None: none stored), read by `requester`
    (a bare JID; the owner itself for its own vCard) or just stored by the owner. A `vcard-read`
    handler may change `vcard`, parsed for this answer alone, or replace it; a `vcard-stored`
    one only reads it (it is the payload of the owner's iq)."""

    owner: JID
    requester: JID
    vcard: etree._Element | None


@dataclass(frozen=True, slots=True)
class DetachedStanzaEvent:
    """`detached-stanza`: `session` is detached and kept `data`, one stanza as serialised for it
    (its `to` is the session's full JID); `stanza` is its element when there is one (read it,
    never change it: it may be shared by many copies, without their `to`)."""

    session: Session
    stanza: etree._Element | None
    data: bytes


@dataclass(frozen=True, slots=True)
class AccountEvent:
    """`account-deleted`: the bare JID of the account."""

    account: JID


@dataclass(frozen=True, slots=True)
class PepChanged:
    """`pep-changed`: `account`'s node `node` was changed by `action`: "publish" (`item_id` and its
    `payload`, read-only), "retract" (`item_id`), "purge" or "delete" (the whole node)."""

    account: JID
    node: str
    action: str
    item_id: str | None = None
    payload: etree._Element | None = None


@dataclass(slots=True)
class CopiesEvent:
    """`copies`, on a user host: `stanza` (no `to`; read-only, it is shared by every copy) is
    about to be written to the resources in `recipients`, full JIDs of this host's accounts, as
    `template.copy(jid)` (`Router.deliver_copies`: a room's messages and occupant presence). A
    presence may also name an account by its bare JID: that copy goes to each of its available
    resources.

    It stands for the `<kind>/full` events these copies do not fire. A handler that filters
    (blocking) removes recipients from `recipients` and returns None; one that returns True takes
    the whole delivery. Whatever is left is written to the sessions bound to those JIDs."""

    stanza: Stanza
    template: Template
    recipients: list[JID]
    host: Host
