"""The one place that decides where a stanza goes (RFC 6120 §8 and §10, RFC 6121 §8).

`process` takes a stanza from a bound client: it validates it and stamps `from` (the only change
the router makes to a stanza, at ingress). `post` fires `pre-<kind>/<target>` on the sender's
host, where blocking, carbons and the archive look at outgoing stanzas, then `deliver` fires
`<kind>/<target>` on the recipient's host, where each module decides; default delivery sits at
priority -1 in the message, presence and iq modules. Targets:

- `host`: the server itself (`example.org` or `example.org/resource`)
- `self`: an iq with no `to`, or one to the sender's own bare JID (RFC 6120 §10.3.3),
  and presence with no `to` (a broadcast, RFC 6121 §4.2.2)
- `bare`: an account (`user@example.org`)
- `full`: a resource (`user@example.org/phone`)

An iq get/set first fires `iq-<type>/<target>` (for what applies to every payload, such as
blocking), then `iq-<type>/<target>/<payload ns>:<payload name>`, so that a module handling one
namespace never sees the others. An iq get/set that nobody handles is answered
with service-unavailable (RFC 6120 §8.4), never dropped.

Copies. `deliver_copies` sends one stanza that differs only in `to` to many recipients (a
room's groupchat messages and occupant presence, XEP-0045; a user's presence broadcast; PEP
notifications): it is serialised once into a `Template` and each copy is that template with its
own `to` spliced in, so a copy costs a session lookup and a byte join instead of an element copy,
a hook run and a serialisation. On a user host the recipients' hooks see the whole batch once
(`copies`, events.CopiesEvent); a presence for an account's bare JID counts as one for each of its
available resources. What the fast path does not cover (other hosts, other bare JIDs, stanzas
whose delivery does more than write to the resource) goes through `deliver` one by one.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from xml.sax.saxutils import quoteattr

from lxml import etree

from xmppd import events
from xmppd.elements import element as make_element
from xmppd.elements import from_text
from xmppd.errors import StanzaError, StreamError
from xmppd.stanza import CLIENT_NS, IQ_TYPES, STANZA_TAGS, Stanza

if TYPE_CHECKING:
    from xmppd.host import Host
    from xmppd.jid import JID
    from xmppd.server import Server
    from xmppd.session import Session
    from xmppd.sessions import SessionRegistry

log = logging.getLogger("xmppd.router")
IQ_TAG = f"{{{CLIENT_NS}}}iq"

# The stanzas `deliver_copies` writes straight to a bound resource, by (kind, type), and what
# happens to a copy for a full JID no session is bound to: True answers service-unavailable,
# False drops it. For these, default delivery to a full JID only writes to the session, and
# nothing but blocking looks at them (carbons and the archive skip groupchat, headlines and
# errors: a headline the server fans out, a PEP notification (XEP-0163), carries none of the
# receipts, chat states or markers that XEP-0280 §6.1 would copy); the answers are RFC 6121
# §8.5.3.2.1 (groupchat: service-unavailable; headlines, presence, errors and iq results:
# ignored). Everything else (chat messages: carbons and the archive; subscriptions and probes:
# the account's business) takes `deliver`, one recipient at a time.
_FAST_PATH: dict[tuple[str, str | None], bool] = {
    ("message", "groupchat"): True,
    ("message", "headline"): False,
    ("message", "error"): False,
    ("presence", None): False,
    ("presence", "unavailable"): False,
    ("presence", "error"): False,
    ("iq", "result"): False,
    ("iq", "error"): False,
}
# Of those, the kinds that go to every available resource of an account when addressed to its
# bare JID (RFC 6121 §8.5.2.1.1): `deliver_copies` expands such a recipient to those resources, so
# a user's presence broadcast is serialised once for all of its contacts' resources.
_TO_EVERY_RESOURCE = frozenset(key for key in _FAST_PATH if key[0] == "presence")
# What quoteattr would change in an attribute value: most JIDs have none of it (a localpart and
# a domainpart never do, RFC 7622 §3.3.1 and §3.2), and without quoteattr a copy costs a third.
_ESCAPED = re.compile(r'[&<>"\t\n\r]')


@dataclass(frozen=True, slots=True)
class Template:
    """A stanza serialised once without `to`: `head` is `<` and its name, `tail` the rest, so
    that a copy is the two with a `to` attribute between them (attribute order means nothing in
    XML, RFC 6120 §8.1 names no place for `to`)."""

    head: bytes
    tail: bytes

    def copy(self, to: JID) -> bytes:
        """The stanza addressed to `to`."""
        text = str(to)
        if _ESCAPED.search(text) is None:
            return b"".join((self.head, b' to="', text.encode(), b'"', self.tail))
        return b"".join((self.head, b" to=", quoteattr(text).encode(), self.tail))


def template(element: etree._Element) -> Template:
    """Serialise a stanza (without `to`) once for `Template.copy`.

    A stanza in the default namespace (`Stanza.build`, `elements.element`, most of what clients
    send) serialises as `<` and its bare name; one whose name has a prefix (`<c:presence
    xmlns:c='jabber:client'>`, which a client may send: it is the same stanza) is serialised as
    the same stanza in the default namespace."""
    head = b"<" + etree.QName(element).localname.encode()
    data = _serialised(element)
    if not _named(data, head):
        data = _serialised(_in_default_namespace(element))
    return Template(head, data[len(head) :])


def _serialised(element: etree._Element) -> bytes:
    # The tail text (whitespace after a stanza parsed from a stream) is not part of the stanza.
    return etree.tostring(element, with_tail=False)


def _named(data: bytes, head: bytes) -> bool:
    # The byte after the name ends it, so `<message` does not match `<messages` or `<message:x`.
    return data.startswith(head) and data[len(head) : len(head) + 1] in (b" ", b">", b"/")


def _in_default_namespace(element: etree._Element) -> etree._Element:
    """A copy of `element` whose own name has no prefix (its children keep theirs)."""
    unprefixed = make_element(element.tag)
    for name, value in element.items():
        unprefixed.set(name, value)
    unprefixed.text = element.text
    unprefixed.extend(copy.deepcopy(child) for child in element)
    return unprefixed


def delivery_targets(sessions: SessionRegistry, stanza: Stanza) -> list[Session]:
    """RFC 6121 §8.5.2-§8.5.3: the local resources that get a message to a local account (empty:
    nobody, and default delivery decides between an error, offline storage or silence)."""
    to = stanza.to
    assert to is not None
    kind = stanza.type or "normal"
    if to.resource is not None:
        session = sessions.get(to)
        if session is not None:
            return [session]  # §8.5.3.1
        if kind in ("groupchat", "error"):
            return []  # §8.5.3.2.1: not rerouted to the account
    if kind in ("error", "groupchat"):
        return []  # §8.5.2.1.1: ignored, or refused
    bare = to.bare
    if kind == "headline":
        # §8.5.2.1.1: every available resource with non-negative priority, or nobody.
        return [session for session in sessions.available(bare) if session.priority >= 0]
    return sessions.top_resources(bare)


@dataclass(slots=True)
class StanzaEvent:
    """What a stanza hook handler gets.

    `origin` is the local client session the stanza came from, or None for a stanza the server
    made itself (`mod.send` without `as_session`: presence broadcasts, bounces, answers)."""

    stanza: Stanza
    origin: Session | None
    host: Host  # the host whose hook is firing
    router: Router
    _recipients: list[Session] | None = None

    @property
    def recipients(self) -> list[Session]:
        """For a message to a local account: the resources that get it (`delivery_targets`),
        decided once per message and shared by carbons, offline storage and default delivery."""
        if self._recipients is None:
            self._recipients = delivery_targets(self.router.server.sessions, self.stanza)
        return self._recipients

    def respond(self, stanza: Stanza) -> None:
        """Send an answer (iq result, error) back to the stanza's sender."""
        if self.origin is not None and stanza.to == self.origin.jid:
            self.origin.send(stanza.element)
        else:
            self.router.deliver_soon(stanza)

    def respond_with(self, stanza: Stanza, payload: bytes) -> None:
        """`respond` with `stanza` (no children) holding `payload`, an element serialised by the
        caller: what is written as text (a roster of many items) is never built as elements."""
        assert len(stanza.element) == 0, "the payload goes into a stanza without children"
        if self.origin is None or stanza.to != self.origin.jid:
            stanza.element.append(from_text(payload))
            self.router.deliver_soon(stanza)
            return
        # An element without children serialises as `<name .../>`: the payload goes before `/>`.
        empty = etree.tostring(stanza.element)
        self.origin.send_bytes(b"".join((empty[:-2], b">", payload, b"</", stanza.kind.encode(), b">")))

    def error(self, condition: str, text: str | None = None, error_type: str | None = None) -> bool:
        """Answer with a stanza error (of the condition's usual type unless `error_type` is given,
        RFC 6120 §8.3.2); returns True so a handler can `return ev.error(...)`."""
        self.router.bounce(self.stanza, StanzaError(condition, text, error_type), self.origin)
        return True


class Router:
    def __init__(self, server: Server) -> None:
        self.server = server
        # iqs the server sent (`mod.send_iq`) by id: who must answer, to whom, and who waits.
        self._awaiting: dict[str, tuple[JID, JID | None, asyncio.Future[Stanza]]] = {}

    # -- ingress ------------------------------------------------------------------------
    async def process(self, origin: Session, element: etree._Element) -> bool:
        """A top-level element from a bound client stream (RFC 6120 §8.1); False when it is not
        a stanza (the stream driver offers it to the modules), True when it was handled."""
        if element.tag not in STANZA_TAGS:
            return False  # stream management's <r/> and <a/> come every few stanzas: no exception
        try:
            stanza = Stanza.parse(element)
        except StanzaError as error:
            self._answer_malformed(origin, element, error)
            return True
        self._check_from(stanza, origin)
        stanza.set_from(origin.jid)
        if stanza.to is None and stanza.kind == "message":
            # RFC 6120 §10.3.3: a message without 'to' is for the sender's own account.
            stanza.set_to(origin.bare)
        if stanza.kind == "iq" and not self._valid_iq(stanza, origin):
            return True
        await self.post(stanza, origin)
        return True

    @staticmethod
    def _check_from(stanza: Stanza, origin: Session) -> None:
        # RFC 6120 §8.1.2.1: a client may only claim its own full or bare JID.
        if stanza.from_ is not None and stanza.from_ not in (origin.jid, origin.bare):
            raise StreamError("invalid-from", f"{stanza.from_} is not this stream's address")

    def _valid_iq(self, stanza: Stanza, origin: Session) -> bool:
        """RFC 6120 §8.2.3: an id, a known type, exactly one payload for get and set."""
        if stanza.type not in IQ_TYPES or stanza.id is None:
            self.bounce(stanza, StanzaError("bad-request", "an iq needs an id and a known type"), origin)
            return False
        if stanza.type in ("get", "set"):
            payloads = [child for child in stanza.element if isinstance(child.tag, str)]
            if len(payloads) != 1:
                self.bounce(stanza, StanzaError("bad-request", "an iq get/set has exactly one payload"), origin)
                return False
        return True

    def _answer_malformed(self, origin: Session, element: etree._Element, error: StanzaError) -> None:
        # RFC 6120 §8.3.1 / §8.2.3: an error or an iq result is never answered.
        if element.get("type") == "error" or (element.tag == IQ_TAG and element.get("type") == "result"):
            return
        reply = make_element(str(element.tag), {"type": "error"})
        if element.get("id") is not None:
            reply.set("id", element.get("id", ""))
        reply.append(error.to_element(CLIENT_NS))
        origin.send(reply)

    # -- routing ------------------------------------------------------------------------
    async def post(self, stanza: Stanza, origin: Session) -> None:
        """Run the sender's outgoing hooks, then deliver."""
        if await origin.host.hooks.fire(f"pre-{stanza.kind}/{self._target(stanza, origin)}",
                                        StanzaEvent(stanza, origin, origin.host, self)):
            return
        await self.deliver(stanza, origin)

    async def deliver(self, stanza: Stanza, origin: Session | None) -> None:
        """Hand a stanza to the modules of its destination host."""
        to = stanza.to
        domain = to.domain if to is not None else origin.host.name if origin is not None else None
        host = self.server.hosts.get(domain) if domain is not None else None
        if host is None:
            # No server-to-server yet: other domains are unreachable (RFC 6120 §8.3.3.15).
            self.bounce(stanza, StanzaError("remote-server-not-found", f"{domain} is not served here"), origin)
            return
        if stanza.kind == "iq" and stanza.type in ("result", "error") and self._answers(stanza):
            return
        target = self._target(stanza, origin)
        event = StanzaEvent(stanza, origin, host, self)
        hooks = host.hooks
        if stanza.kind == "iq" and stanza.type in ("get", "set"):
            # `iq-<type>/<target>` first, for what concerns every payload (blocking).
            if await hooks.fire(f"iq-{stanza.type}/{target}", event):
                return
            payload = stanza.payload()
            assert payload is not None
            name = f"iq-{stanza.type}/{target}/{payload.tag[1:].replace('}', ':')}"
            if await hooks.fire(name, event):
                return
        if await hooks.fire(f"{stanza.kind}/{target}", event):
            return
        if stanza.kind == "iq" and stanza.type in ("get", "set"):
            self.bounce(stanza, StanzaError("service-unavailable"), origin)

    async def deliver_copies(
        self, stanza: Stanza, recipients: Sequence[JID], serialised: Template | None = None
    ) -> None:
        """Deliver `stanza`, which has a `from` and no `to`, to each of `recipients` with its own
        `to`, serialising it once; the server sends it (origin None), as with `deliver`.

        Recipients are taken domain by domain, in their order within a domain. A domain not served
        here bounces each copy; a component host gets them one by one through `deliver`. On a user
        host, the full JIDs of accounts get the fast path when the stanza's kind and type allow it
        (`_FAST_PATH`): `copies` fires once on the host (blocking filters `ev.recipients`; a
        handler may take the whole delivery), then each copy is written to the session bound to
        its JID. A presence for an account's bare JID stands for its available resources, as
        `presence/bare` would deliver it (`_TO_EVERY_RESOURCE`). Other bare JIDs, domain JIDs,
        and stanzas off the fast path take `deliver`.
        `serialised` is `template(stanza.element)` when the caller kept it from an earlier send.
        """
        assert stanza.from_ is not None and stanza.element.get("to") is None, "copies get their own `to`"
        # Serialised only when some copy can take the fast path (the rest are whole stanzas).
        shared = None
        if (stanza.kind, stanza.type) in _FAST_PATH:
            shared = serialised or template(stanza.element)
        by_domain: dict[str, list[JID]] = {}
        for jid in recipients:
            group = by_domain.get(jid.domain)
            if group is None:
                by_domain[jid.domain] = group = []
            group.append(jid)
        for domain, group in by_domain.items():
            host = self.server.hosts.get(domain)
            if host is None:
                # As `deliver`: no server-to-server yet (RFC 6120 §8.3.3.15).
                unreachable = StanzaError("remote-server-not-found", f"{domain} is not served here")
                for jid in group:
                    self.bounce(_addressed(stanza, jid), unreachable, None)
                continue
            others = group
            if shared is not None and host.kind == "user":
                others = await self._copies(stanza, shared, group, host)
            for jid in others:
                await self.deliver(_addressed(stanza, jid), None)

    async def _copies(self, stanza: Stanza, shared: Template, group: list[JID], host: Host) -> list[JID]:
        """The fast path for a user host's resources (and, for presence, accounts); returns the
        recipients it leaves to `deliver`: another bare JID (RFC 6121 §8.5.2: the account decides
        which resources, if any) or a domain JID (the host)."""
        accounts: list[JID] = []
        others: list[JID] = []
        every_resource = (stanza.kind, stanza.type) in _TO_EVERY_RESOURCE
        sessions = self.server.sessions
        for jid in group:
            if jid.local is None:
                others.append(jid)
            elif jid.resource is not None:
                accounts.append(jid)
            elif every_resource:
                # Nobody available: it goes nowhere (§8.5.2.1.1), and blocking need not look.
                if sessions.available(jid):
                    accounts.append(jid)
            else:
                others.append(jid)
        if not accounts:
            return others
        event = events.CopiesEvent(stanza, shared, accounts, host)
        if await host.hooks.fire(events.COPIES, event):
            return others
        answer = _FAST_PATH[(stanza.kind, stanza.type)]
        element = stanza.element
        for jid in event.recipients:
            if jid.resource is None:
                # Each available resource gets it as addressed, to the bare JID (as `to_bare`).
                data = shared.copy(jid)
                for available in sessions.available(jid):
                    available.output.send(element, data)
                continue
            session = sessions.get(jid)
            if session is not None:
                session.output.send(element, shared.copy(jid))
            elif answer:
                # RFC 6121 §8.5.3.2.1: a groupchat message for a resource that is not there; the
                # error comes from that full JID, so a room knows which occupant is gone.
                self.bounce(_addressed(stanza, jid), StanzaError("service-unavailable"), None)
        return others

    def deliver_soon(self, stanza: Stanza) -> None:
        """Deliver from synchronous code (a hook answering a stanza from no local session)."""
        self.server.background.spawn(self.deliver(stanza, None))

    # -- iqs the server sends ------------------------------------------------------------
    async def request(self, stanza: Stanza, patience: float) -> Stanza:
        """Send an iq get/set and wait for its answer: the result, or StanzaError for an error
        answer (and remote-server-timeout when none comes within `patience` seconds)."""
        assert stanza.kind == "iq" and stanza.id is not None and stanza.to is not None
        future: asyncio.Future[Stanza] = asyncio.get_running_loop().create_future()
        self._awaiting[stanza.id] = (stanza.to, stanza.from_, future)
        try:
            await self.deliver(stanza, None)
            async with asyncio.timeout(patience):
                answer = await future
        except TimeoutError:
            raise StanzaError("remote-server-timeout", f"{stanza.to} did not answer") from None
        finally:
            self._awaiting.pop(stanza.id, None)
        if answer.type == "error":
            raise StanzaError.from_reply(answer.element)
        return answer

    def _answers(self, stanza: Stanza) -> bool:
        """Whether an iq result/error answers one of ours: from whom it was asked of, to whom
        asked (RFC 6120 §8.2.3: an id is matched together with the addresses)."""
        waiting = self._awaiting.get(stanza.id or "")
        if waiting is None:
            return False
        asked, asker, future = waiting
        if stanza.from_ != asked or (asker is not None and stanza.to != asker):
            return False
        if not future.done():
            future.set_result(stanza)
        return True

    @staticmethod
    def _target(stanza: Stanza, origin: Session | None) -> str:
        to = stanza.to
        if to is None:
            return "self"
        if to.local is None:
            return "host"
        if to.resource is not None:
            return "full"
        if stanza.kind == "iq" and origin is not None and to == origin.bare:
            return "self"
        return "bare"

    def bounce(self, stanza: Stanza, error: StanzaError, origin: Session | None) -> None:
        """Answer a stanza with an error, unless it is an error itself (RFC 6120 §8.3.1)."""
        if stanza.type == "error" or stanza.from_ is None:
            return
        if stanza.kind == "iq" and stanza.type == "result":
            return
        reply = stanza.error_reply(error)
        if reply.to is None and origin is not None:
            reply.set_to(origin.jid)
        if origin is not None and reply.to == origin.jid:
            origin.send(reply.element)
        else:
            self.deliver_soon(reply)


def _addressed(stanza: Stanza, to: JID) -> Stanza:
    """One copy as a whole stanza, for the recipients off the fast path."""
    copy = stanza.copy()
    copy.set_to(to)
    return copy
