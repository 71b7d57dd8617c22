"""RFC 6121 §3 (managing presence subscriptions), §4 (exchanging presence) and Appendix A
(subscription states), with the pre-approval of §3.4.

Theory of operation
-------------------
A subscription is the relation between a user and one contact, seen from the user's side and
stored in the user's roster item for the contact: `subscription` ("to": the user sees the
contact's presence, "from": the contact sees the user's, "both"), `ask` ("Pending Out": the
user asked and the contact has not answered), `pending_in` ("Pending In": the contact asked and
the user has not answered) and `approved` (a pre-approval, §3.4). Appendix A names the nine
combinations; `state_of` maps an item to its name and `_FLAGS` maps a name back.

Four stanza types change that state: subscribe, subscribed, unsubscribe, unsubscribed. Each is
seen twice: on the way out, by the sender's server, which updates the *sender's* roster (the
OUTBOUND table, Appendix A.2) and routes the stanza if the table says so; and on the way in,
by the recipient's server, which updates the *recipient's* roster (the INBOUND table, A.3) and
delivers it if the table says so. `outbound()` and `inbound()` are pure functions over those
tables (plus the pre-approval and auto-reply rules that the tables' footnotes add); the hook
handlers below them do the I/O: read the item, apply, store and push, route, deliver.

All our domains are served here (there is no s2s yet), so "routing" to a contact means
`mod.send`, which runs the contact's host's `presence/...` hooks, i.e. the inbound half of this
module for the contact. Each handler holds the roster lock of one account only while it reads and
writes that account's item, never while it routes, so an auto-reply that comes straight back to
the sender's account cannot deadlock.

Availability (§4): initial presence is broadcast to the contacts that are subscribed to the user
("from"/"both") and to the user's own available resources, probes go to the contacts the user is
subscribed to ("to"/"both"), the user's other resources' presence and any pending subscription
requests are sent to the new resource. Later updates are broadcast the same way; unavailable
presence (sent, or generated when the session ends) also goes to every entity that got directed
presence (§4.6) and was not already covered by the broadcast.

A broadcast is one stanza for all its recipients (`send_copies`: serialised once, a contact's
bare JID standing for its available resources), and so is each resource's answer to a probe. A
probe of a contact of this server is answered in place, as the contact's inbound half would
answer it (`_answer_probe`), instead of being routed: a login then costs no stanza per contact
but the answers, and blocking, which sees each answer as a copy, judges it between the same two
accounts' lists as it would have judged the probe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from lxml import etree

from storage.model import RosterItem
from xmppd import events
from xmppd.elements import element
from xmppd.events import AvailableEvent
from xmppd.jid import JID, parse_jid
from xmppd.module import ModuleAPI, Stanza, StanzaEvent
from xmppd.modules.roster import (
    addressed,
    get_item,
    remove_item,
    roster_lock,
    send_available_presence,
    update_item,
)
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS

if TYPE_CHECKING:
    from xmppd.events import SessionEvent

PROTOCOLS = [("RFC 6121", "§3 subscriptions, §4 presence, Appendix A, §3.4 pre-approval")]
PRE_APPROVAL_NS = "urn:xmpp:features:pre-approval"
DEFAULT = -1  # default handling, after blocking/archive-like modules have looked

SUBSCRIPTION_TYPES = frozenset(("subscribe", "subscribed", "unsubscribe", "unsubscribed"))
PRESENCE_TYPES = SUBSCRIPTION_TYPES | {"unavailable", "probe", "error"}

# -- Appendix A: the subscription states ---------------------------------------------------------

NONE = "None"
NONE_OUT = "None + Pending Out"
NONE_IN = "None + Pending In"
NONE_OUT_IN = "None + Pending Out/In"
TO = "To"
TO_IN = "To + Pending In"
FROM = "From"
FROM_OUT = "From + Pending Out"
BOTH = "Both"
STATES = (NONE, NONE_OUT, NONE_IN, NONE_OUT_IN, TO, TO_IN, FROM, FROM_OUT, BOTH)

# state -> (subscription attribute, ask / Pending Out, Pending In)
_FLAGS: dict[str, tuple[str, bool, bool]] = {
    NONE: ("none", False, False),
    NONE_OUT: ("none", True, False),
    NONE_IN: ("none", False, True),
    NONE_OUT_IN: ("none", True, True),
    TO: ("to", False, False),
    TO_IN: ("to", False, True),
    FROM: ("from", False, False),
    FROM_OUT: ("from", True, False),
    BOTH: ("both", False, False),
}
_STATE_OF = {flags: state for state, flags in _FLAGS.items()}
SUBSCRIBED_FROM = frozenset((FROM, FROM_OUT, BOTH))  # the contact sees the user's presence
SUBSCRIBED_TO = frozenset((TO, TO_IN, BOTH))  # the user sees the contact's presence

# type -> existing state -> (new state, None for "no state change"; route or deliver?)
Table = dict[str, dict[str, tuple[str | None, bool]]]

# A.2: the user's server, for a stanza the user sends. subscribe/unsubscribe are routed
# "without exception" (so the user can resynchronise); subscribed/unsubscribed only when they
# change the state.
OUTBOUND: Table = {
    "subscribe": {  # A.2.1
        NONE: (NONE_OUT, True),
        NONE_OUT: (None, True),
        NONE_IN: (NONE_OUT_IN, True),
        NONE_OUT_IN: (None, True),
        TO: (None, True),
        TO_IN: (None, True),
        FROM: (FROM_OUT, True),
        FROM_OUT: (None, True),
        BOTH: (None, True),
    },
    "unsubscribe": {  # A.2.2
        NONE: (None, True),
        NONE_OUT: (NONE, True),
        NONE_IN: (None, True),
        NONE_OUT_IN: (NONE_IN, True),
        TO: (NONE, True),
        TO_IN: (NONE_IN, True),
        FROM: (None, True),
        FROM_OUT: (FROM, True),
        BOTH: (FROM, True),
    },
    "subscribed": {  # A.2.3 ([1] None, None + Pending Out, To: a pre-approval, §3.4)
        NONE: (None, False),
        NONE_OUT: (None, False),
        NONE_IN: (FROM, True),
        NONE_OUT_IN: (FROM_OUT, True),
        TO: (None, False),
        TO_IN: (BOTH, True),
        FROM: (None, False),
        FROM_OUT: (None, False),
        BOTH: (None, False),
    },
    "unsubscribed": {  # A.2.4 ([1] None, None + Pending Out, To: cancels a pre-approval)
        NONE: (None, False),
        NONE_OUT: (None, False),
        NONE_IN: (NONE, True),
        NONE_OUT_IN: (NONE_OUT, True),
        TO: (None, False),
        TO_IN: (TO, True),
        FROM: (NONE, True),
        FROM_OUT: (NONE_OUT, True),
        BOTH: (TO, True),
    },
}

# A.3: the contact's server, for a stanza addressed to its user (the "user" of these tables).
INBOUND: Table = {
    "subscribe": {  # A.3.1 (From, From + Pending Out, Both: auto-reply "subscribed")
        NONE: (NONE_IN, True),
        NONE_OUT: (NONE_OUT_IN, True),
        NONE_IN: (None, False),
        NONE_OUT_IN: (None, False),
        TO: (TO_IN, True),
        TO_IN: (None, False),
        FROM: (None, False),
        FROM_OUT: (None, False),
        BOTH: (None, False),
    },
    "unsubscribe": {  # A.3.2 (on a state change: auto-reply "unsubscribed")
        NONE: (None, False),
        NONE_OUT: (None, False),
        NONE_IN: (NONE, True),
        NONE_OUT_IN: (NONE_OUT, True),
        TO: (None, False),
        TO_IN: (TO, True),
        FROM: (NONE, True),
        FROM_OUT: (NONE_OUT, True),
        BOTH: (TO, True),
    },
    "subscribed": {  # A.3.3
        NONE: (None, False),
        NONE_OUT: (TO, True),
        NONE_IN: (None, False),
        NONE_OUT_IN: (TO_IN, True),
        TO: (None, False),
        TO_IN: (None, False),
        FROM: (None, False),
        FROM_OUT: (BOTH, True),
        BOTH: (None, False),
    },
    "unsubscribed": {  # A.3.4
        NONE: (None, False),
        NONE_OUT: (NONE, True),
        NONE_IN: (None, False),
        NONE_OUT_IN: (NONE_IN, True),
        TO: (NONE, True),
        TO_IN: (NONE_IN, True),
        FROM: (None, False),
        FROM_OUT: (FROM, True),
        BOTH: (FROM, True),
    },
}

# §3.4: a pre-approved inbound subscribe is approved at once, from these states to these.
_PRE_APPROVED = {NONE: FROM, NONE_OUT: FROM_OUT, TO: BOTH}


def state_of(item: RosterItem | None) -> str:
    """The Appendix A state of a roster item; no item at all is "None" (A.1 note)."""
    if item is None:
        return NONE
    to = item.subscription in ("to", "both")
    from_ = item.subscription in ("from", "both")
    # "Pending Out" only exists without "to", "Pending In" only without "from".
    subscription = "both" if to and from_ else "to" if to else "from" if from_ else "none"
    return _STATE_OF[(subscription, item.ask and not to, item.pending_in and not from_)]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one subscription stanza does to one roster item."""

    before: str  # the Appendix A state before
    after: str  # ... and after (the same when nothing changed)
    item: RosterItem | None  # the item to store (None: nothing to store, or `delete`)
    delete: bool  # the stored record goes away (an unlisted record back in state None)
    forward: bool  # outbound: route to the contact; inbound: deliver to the user's resources
    reply: str | None = None  # inbound: the type of the auto-reply sent for the user

    @property
    def changed(self) -> bool:
        return self.item is not None or self.delete


def _with_state(item: RosterItem | None, contact: str, state: str) -> RosterItem:
    subscription, ask, pending_in = _FLAGS[state]
    base = item if item is not None else RosterItem(jid=contact, listed=False)
    return replace(
        base,
        subscription=subscription,
        ask=ask,
        pending_in=pending_in,
        # A subscription or our own request puts the contact on the roster; a bare inbound
        # request does not (§3.1.3: the server keeps a record but adds no item).
        listed=base.listed or subscription != "none" or ask,
        # A pre-approval is used up once the contact has the subscription it stood for.
        approved=base.approved and subscription in ("none", "to"),
    )


def _outcome(
    before: str,
    item: RosterItem | None,
    contact: str,
    new: str | None,
    *,
    forward: bool,
    reply: str | None = None,
) -> Outcome:
    if new is None:
        return Outcome(before, before, None, False, forward, reply)
    changed = _with_state(item, contact, new)
    if new == NONE and not changed.listed and not changed.approved:
        # An unlisted record only remembers a pending inbound request: with none left, drop it.
        return Outcome(before, new, None, item is not None, forward, reply)
    return Outcome(before, new, changed, False, forward, reply)


def outbound(kind: str, item: RosterItem | None, contact: str) -> Outcome:
    """Appendix A.2: the user sends `kind` to `contact`; `item` is the user's roster item."""
    before = state_of(item)
    new, route = OUTBOUND[kind][before]
    if new is None and kind == "subscribed" and before in _PRE_APPROVED:
        # §3.4.1 / A.2.3 [1]: a "subscribed" with no request to answer is a pre-approval,
        # recorded (and shown to the user) but not routed.
        if item is not None and item.approved:
            return Outcome(before, before, None, False, False)
        base = item if item is not None else RosterItem(jid=contact)
        return Outcome(before, before, replace(base, approved=True, listed=True), False, False)
    if new is None and kind == "unsubscribed" and item is not None and item.approved:
        # A.2.4 [1]: an "unsubscribed" with nothing to cancel withdraws a pre-approval.
        return Outcome(before, before, replace(item, approved=False), False, route)
    return _outcome(before, item, contact, new, forward=route)


def inbound(kind: str, item: RosterItem | None, contact: str) -> Outcome:
    """Appendix A.3: `contact` sends `kind` to the user; `item` is the user's roster item."""
    before = state_of(item)
    new, deliver = INBOUND[kind][before]
    reply = None
    if kind == "subscribe":
        if before in SUBSCRIBED_FROM:
            # A.3.1 *: already subscribed: say so again, so the contact can resynchronise.
            reply = "subscribed"
        elif item is not None and item.approved and before in _PRE_APPROVED:
            # §3.4: pre-approved: approve on the user's behalf, do not bother the user.
            return _outcome(before, item, contact, _PRE_APPROVED[before], forward=False, reply="subscribed")
    elif kind == "unsubscribe" and new is not None:
        reply = "unsubscribed"  # A.3.2 *
    return _outcome(before, item, contact, new, forward=deliver, reply=reply)


# -- the module ---------------------------------------------------------------------------------


def setup(mod: ModuleAPI) -> None:
    handlers = PresenceHandlers(mod)
    mod.add_stream_feature(pre_approval_feature)
    mod.on("presence/self", handlers.from_self, DEFAULT)
    mod.on("pre-presence/bare", handlers.outgoing, DEFAULT)
    mod.on("pre-presence/full", handlers.outgoing, DEFAULT)
    mod.on("presence/bare", handlers.to_bare, DEFAULT)
    mod.on("presence/full", handlers.to_full, DEFAULT)
    mod.on(events.SESSION_ENDED, handlers.session_ended, DEFAULT)


def pre_approval_feature(_session: Session | None) -> etree._Element:
    return element(f"{{{PRE_APPROVAL_NS}}}sub")  # §3.4.1


class PresenceHandlers:
    """The hook handlers of one host; they do the I/O around the pure functions above."""

    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.sessions = mod.sessions
        self.rosters = mod.rosters

    async def _store(self, user: JID, before: RosterItem | None, outcome: Outcome) -> None:
        if outcome.delete and before is not None:
            await remove_item(self.mod, user, before.jid, was_listed=before.listed)
        elif outcome.item is not None:
            await update_item(self.mod, user, outcome.item)

    async def _roster(self, user: JID) -> list[RosterItem]:
        assert user.local is not None
        _version, items = await self.rosters.items(user.domain, user.local)
        return items

    # -- subscriptions, outbound (§3.1.2, §3.2.2, §3.3.2, §3.4, A.2) ------------------------

    async def _outbound_subscription(self, ev: StanzaEvent, session: Session) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None and stanza.type is not None
        mod = self.mod
        user = session.bare
        # §3.1.2: a full JID is treated as the contact's bare JID; the stanza is stamped with
        # the user's bare JID, since subscriptions are between accounts.
        contact = stanza.to.bare
        async with roster_lock(self.mod, user):
            item = await get_item(mod, user, contact)
            outcome = outbound(stanza.type, item, str(contact))
            await self._store(user, item, outcome)
        if outcome.forward:
            stamped = stanza.copy()
            stamped.set_from(user)
            stamped.set_to(contact)
            await mod.send(stamped)
        had_from = outcome.before in SUBSCRIBED_FROM
        has_from = outcome.after in SUBSCRIBED_FROM
        if stanza.type == "subscribed" and has_from and not had_from:
            # §3.1.5: the new subscriber gets the current presence of each available resource.
            await send_available_presence(mod, user, contact)
        elif stanza.type == "unsubscribed" and had_from and not has_from:
            # §3.2.2: and a cancelled one sees them go unavailable.
            await send_available_presence(mod, user, contact, unavailable=True)
        return True

    # -- subscriptions, inbound (§3.1.3, §3.1.6, §3.2.3, §3.3.3, §3.4, A.3) -------------------

    async def _inbound_subscription(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None and stanza.type is not None
        if stanza.from_ is None:
            return True
        mod = self.mod
        user = stanza.to.bare
        contact = stanza.from_.bare
        if not await self.mod.account_exists(user):
            if stanza.type == "subscribe":
                # §3.1.3: no such account: the request is refused with "unsubscribed".
                await mod.send(Stanza.build("presence", to=contact, from_=user, type_="unsubscribed"))
            return True  # the other types are silently ignored (§8.5.1)
        async with roster_lock(self.mod, user):
            item = await get_item(mod, user, contact)
            outcome = inbound(stanza.type, item, str(contact))
            await self._store(user, item, outcome)
        if outcome.forward:
            # §3.1.3 and §8.5.2.1.1: to every available resource. With none, a subscribe
            # waits as "Pending In" and is delivered at the next initial presence; the other
            # types have done their work on the roster.
            for session in self.sessions.available(user):
                session.send(stanza.element)
        if outcome.reply is not None:
            await mod.send(Stanza.build("presence", to=contact, from_=user, type_=outcome.reply))
            if outcome.reply == "subscribed":
                # §3.1.5 (pre-approval) / resynchronisation: the subscriber gets our presence.
                await send_available_presence(mod, user, contact)
        if outcome.before in SUBSCRIBED_FROM and outcome.after not in SUBSCRIBED_FROM:
            # §3.3.3: the contact no longer sees the user's resources: they go unavailable.
            await send_available_presence(mod, user, contact, unavailable=True)
        return True

    # -- probes (§4.3.2) -------------------------------------------------------------------

    async def _probe(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        if stanza.from_ is not None:
            await self._answer_probe(stanza.to.bare, stanza.from_)
        return True

    async def _answer_probe(self, user: JID, prober: JID) -> None:
        """§4.3.2: what the server of `user`, a local account, answers a probe from `prober`."""
        mod = self.mod
        assert user.local is not None
        if not self.sessions.available(user):
            # §4.3.2 lets a server stay silent about a contact with no available resource, and
            # we keep no last unavailable presence: a login with many offline contacts then
            # costs no database lookup per contact. (A prober that wrongly believes itself
            # subscribed is put right when the contact is online.)
            return
        if prober.bare != user:  # an account always sees its own presence
            # No account has no roster either: one lookup answers both questions.
            item = await get_item(mod, user, prober.bare)
            if state_of(item) not in SUBSCRIBED_FROM:
                # §4.3.2: no account, or the prober is not subscribed: "unsubscribed", which
                # resynchronises a prober that believes it is subscribed.
                await mod.send(Stanza.build("presence", to=prober.bare, from_=user, type_="unsubscribed"))
                return
        # §4.3.2: the last presence of each available resource.
        await send_available_presence(mod, user, prober)

    # -- availability (§4.2, §4.4, §4.5) ----------------------------------------------------

    async def _broadcast(
        self, session: Session, presence: etree._Element, items: list[RosterItem]
    ) -> set[JID]:
        """§4.2.2 / §4.4.2 / §4.5.2: to every subscribed contact and every available resource
        of the user (the sender included); returns the contacts it went to."""
        user = session.bare
        recipients: list[JID] = []
        for item in items:
            if state_of(item) in SUBSCRIBED_FROM:
                contact = parse_jid(item.jid)
                if contact != user:  # the user's own resources get it below
                    recipients.append(contact)
        reached = set(recipients)
        targets = self.sessions.available(user)
        if session not in targets and not session.closed:
            targets.append(session)  # an unavailable presence still goes back to its sender
        recipients.extend(target.jid for target in targets)
        # One serialisation for all: a local contact's bare JID stands for its available
        # resources (Router.deliver_copies), and blocking sees them all in one `copies` event.
        await self.mod.send_copies(Stanza(presence, "presence", None, session.jid), recipients)
        return reached

    async def _available(self, ev: StanzaEvent, session: Session) -> bool:
        stanza = ev.stanza
        priority = parse_priority(stanza.element)
        if priority is None:
            return ev.error("bad-request", "the priority must be an integer from -128 to 127")
        initial = session.presence is None
        previous_priority = session.priority
        presence = addressed(stanza.element, session.jid, None).element
        self.sessions.set_presence(session, presence, priority)
        user = session.bare
        items = await self._roster(user)
        await self._broadcast(session, presence, items)
        if initial:
            await self._initial(session, items)
        # What waits for a resource to become available (XEP-0160 offline messages) goes now.
        await self.mod.fire(events.AVAILABLE_PRESENCE, AvailableEvent(session, initial, previous_priority, presence))
        return True

    async def _initial(self, session: Session, items: list[RosterItem]) -> None:
        user = session.bare
        # §4.2.2: probe the contacts the user is subscribed to, from the bare JID (§4.3). A
        # contact of this server is answered here and now, as its server would answer the
        # probe, which is therefore not routed: a login costs no stanza per contact but the
        # answers. Blocking judges an answer (a copy) between the same two accounts' lists as
        # it would have judged the probe.
        for item in items:
            if state_of(item) in SUBSCRIBED_TO and item.jid != str(user):
                contact = parse_jid(item.jid)
                if self.mod.is_user_host(contact.domain):
                    await self._answer_probe(contact, user)
                else:
                    await self.mod.send(Stanza.build("presence", to=contact, from_=user, type_="probe"))
        # The new resource learns about the user's other available resources.
        for other in self.sessions.available(user):
            if other is not session and other.presence is not None:
                session.send(addressed(other.presence, other.jid, session.jid).element)
        # §3.1.3: subscription requests that arrived while no resource was available.
        for item in items:
            if item.pending_in and item.subscription in ("none", "to"):
                request = Stanza.build("presence", to=user, from_=parse_jid(item.jid), type_="subscribe")
                session.send(request.element)

    async def _unavailable(self, session: Session, presence: etree._Element) -> None:
        """§4.5.2 and §4.6.3: the resource goes offline for its contacts and for every entity
        it sent directed presence to."""
        was_available = session.presence is not None
        self.sessions.set_presence(session, None)
        reached: set[JID] = set()
        if was_available:
            reached = await self._broadcast(session, presence, await self._roster(session.bare))
        directed, session.directed = session.directed, set()
        for target in directed:
            if target.bare not in reached:
                await self.mod.send(addressed(presence, session.jid, target))

    async def from_self(self, ev: StanzaEvent) -> bool:
        """Presence with no 'to': broadcast presence (§4.2, §4.4, §4.5)."""
        session = ev.origin
        if session is None:
            return True
        kind = ev.stanza.type
        if kind is None:
            return await self._available(ev, session)
        if kind == "unavailable":
            await self._unavailable(session, addressed(ev.stanza.element, session.jid, None).element)
            return True
        if kind == "error":
            return True
        # A subscription stanza or probe needs an addressee; unknown types are invalid.
        if kind in PRESENCE_TYPES:
            return ev.error("bad-request", f"a presence of type {kind!r} needs a 'to'")
        return ev.error("bad-request", f"unknown presence type {kind!r}")

    # -- outbound directed presence and subscriptions (§4.6, §3) --------------------------------

    async def outgoing(self, ev: StanzaEvent) -> bool:
        session = ev.origin
        stanza = ev.stanza
        if session is None or stanza.to is None:
            return False
        kind = stanza.type
        if kind in SUBSCRIPTION_TYPES:
            return await self._outbound_subscription(ev, session)
        if kind is None or kind == "unavailable":
            # §4.6: directed presence. Remember who got available presence (unless the
            # broadcast covers them anyway), so that they hear when the resource goes offline.
            target = stanza.to
            if kind == "unavailable":
                session.directed.discard(target)
            elif (
                # A subscriber hears the broadcast unavailable, but only if this resource has
                # been available; otherwise it is tracked like anyone else.
                target.bare != session.bare
                and target not in session.directed
                and (
                    not session.available
                    or state_of(await get_item(self.mod, session.bare, target.bare)) not in SUBSCRIBED_FROM
                )
            ):
                session.directed.add(target)
            return False  # routed as usual
        if kind in ("probe", "error"):
            return False
        return ev.error("bad-request", f"unknown presence type {kind!r}")

    # -- inbound delivery (§8.5.2, §8.5.3) -------------------------------------------------------

    async def to_bare(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        kind = stanza.type
        if kind in SUBSCRIPTION_TYPES:
            return await self._inbound_subscription(ev)
        if kind == "probe":
            return await self._probe(ev)
        if kind is None or kind in ("unavailable", "error"):
            # §8.5.2.1.1: to every available resource; §8.5.2.2.1 (none, or no such account):
            # silently ignored.
            for session in self.sessions.available(stanza.to):
                session.send(stanza.element)
        return True

    async def to_full(self, ev: StanzaEvent) -> bool:
        stanza = ev.stanza
        assert stanza.to is not None
        kind = stanza.type
        # §8.5.3.1 / §8.5.3.2.1: subscription stanzas and probes are for the account.
        if kind in SUBSCRIPTION_TYPES:
            return await self._inbound_subscription(ev)
        if kind == "probe":
            return await self._probe(ev)
        if kind is None or kind in ("unavailable", "error"):
            session = self.sessions.get(stanza.to)
            if session is not None:
                session.send(stanza.element)
            # §8.5.3.2.1: no such resource: presence is silently ignored.
        return True

    async def session_ended(self, ev: SessionEvent) -> None:
        # §4.5.2 (via RFC 6120 §4.4 stream closing): a resource that vanishes without saying
        # goodbye goes unavailable for everyone who could see it.
        session = ev.session
        if session.presence is None and not session.directed:
            return
        presence = Stanza.build("presence", to=None, from_=session.jid, type_="unavailable").element
        await self._unavailable(session, presence)


_PRIORITY = re.compile(r"[+-]?[0-9]{1,4}")


def parse_priority(presence: etree._Element) -> int | None:
    """§4.7.2.3: at most one <priority/>, an integer from -128 to 127 (0 when absent); None when
    the value is invalid."""
    nodes = presence.findall(f"{{{CLIENT_NS}}}priority")
    if not nodes:
        return 0
    if len(nodes) > 1:
        return None
    text = (nodes[0].text or "").strip()
    if not _PRIORITY.fullmatch(text):
        return None
    value = int(text)
    return value if -128 <= value <= 127 else None
