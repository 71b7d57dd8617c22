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
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lxml import etree

from xmppd.elements import element as make_element
from xmppd.errors import StanzaError, StreamError
from xmppd.stanza import CLIENT_NS, IQ_TYPES, Stanza

if TYPE_CHECKING:
    from xmppd.host import Host
    from xmppd.jid import JID
    from xmppd.server import Server
    from xmppd.session import Session
    from xmppd.sessions import SessionRegistry

log = logging.getLogger("xmppd.router")
IQ_TAG = f"{{{CLIENT_NS}}}iq"


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

    def error(self, condition: str, text: str | None = None) -> bool:
        """Answer with a stanza error; returns True so a handler can `return ev.error(...)`."""
        self.router.bounce(self.stanza, StanzaError(condition, text), self.origin)
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
        try:
            stanza = Stanza.parse(element)
        except ValueError:
            return False
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
