"""XEP-0352: Client State Indication (urn:xmpp:csi:0).

Theory of operation
-------------------
A client that is not being looked at (a phone with its screen off) sends `<inactive/>`; it sends
`<active/>` when the user is back. Both are top-level elements after binding, with no answer
(§4.2); the feature is offered among the stream features after authentication (§4.1). A stream
begins active (§5), and the state belongs to the stream, not the session: it is not carried over
a stream resumption (XEP-0198), so a session that loses its connection becomes active again.

What the server does with the state is its own choice (§3.2). Here, while a session is inactive,
the stanzas to it that only describe how things are, not what happened, are held back, and the
newest of each replaces the one before, so a client that wakes up gets the current state once
instead of every step on the way:

- presence, available or unavailable, from anyone but the session itself: contacts, the
  account's other resources, room occupants; one held per sender (its full JID);
- standalone chat states (XEP-0085): a message whose only payload is a chat state, no
  `<body/>`; one held per sender, and per conversation for a carbon copy (XEP-0280) of one.

What someone must see now is urgent: it goes out at once, but after everything held (in the order
it was held), so that it never overtakes the presence and chat states it belongs after (a reply
arriving before its sender's "composing" would look odd, and RFC 6120 §10.1 wants the order of one
sender kept where it can be):

- a message with a `<body/>` or an encrypted payload (OMEMO, both namespaces in use), directly
  or inside a carbon copy: that is what the user is waiting for;
- any iq: someone waits for an answer, and the client's own requests (a roster get, XEP-0199's
  ping in XEP-0352 §5.1's example) must find everything held before them delivered;
- presence that asks or answers something: subscription requests and answers and presence
  errors (any type but unavailable), a MUC self-presence (status 110: the room confirms a join
  or tells the user they were kicked) and the echo of the session's own presence (RFC 6121
  §4.2.2: the client waits for it after sending presence);
- a stored offline message, which comes as bytes only (`stanza` is None).

Everything else (receipts, chat markers, PEP notifications, MAM results, errors, messages
without a body) goes out at once without flushing: it is neither worth holding nor worth waking
the held ones for. A newer held stanza takes the place at the end of the queue, not the place of
the one it replaces: what is flushed is then in the order its stanzas were sent (bob's "gone"
after his unavailable presence stays after it). At most `max_held` stanzas wait for one session;
one more flushes everything held first, so a client inactive among thousands of contacts costs a
bounded amount of memory.

Memory and speed. Holding costs only for inactive sessions: `<inactive/>` puts a `Holder` around
the session's output (session.py: outermost, so stream management's counting wrapper, innermost,
sees the held stanzas only when they are really written); `<active/>` flushes it and takes it out.
A held stanza is kept as the bytes it was serialised to for this session (`data`, which carries
its `to`), without its element (which may be shared by every recipient of a copy), and flushed
as such (`stanza` None). `Holder.send` runs for every stanza to an inactive session: it looks at
the stanza's tag, type and direct children, and deeper only into a MUC presence's status codes
and the message a carbon copy carries.

Which session has which holder is one dict for the server (`client_states`), emptied as sessions
go: `<active/>`, `session-detached` (flushed first: a stream-managed session keeps the held
stanzas for the resumed stream, which begins active) and `session-ended` (dropped: nobody is
there to read them).
"""

from __future__ import annotations

from typing import Final

from lxml import etree

from xmppd import events
from xmppd.elements import element
from xmppd.events import SessionEvent, StreamElementEvent
from xmppd.module import ModuleAPI, Option
from xmppd.session import Output, Session, Wrapper
from xmppd.stanza import CLIENT_NS

PROTOCOLS = [
    ("XEP-0352", "1.0.0", "complete", "presence and standalone chat states held while inactive, the newest per sender"),
]
NS = "urn:xmpp:csi:0"
OPTIONS = {
    "max_held": Option(
        256, "stanzas held back for one inactive session; one more sends everything held first", minimum=1
    ),
}
# Above stream management's `session-detached` handler, which claims the event and stops it: the
# held stanzas must be flushed into its queue before it keeps the session.
DETACHED_PRIORITY = 100

PRESENCE: Final = f"{{{CLIENT_NS}}}presence"
MESSAGE: Final = f"{{{CLIENT_NS}}}message"
BODY: Final = f"{{{CLIENT_NS}}}body"
CHATSTATES_PREFIX: Final = "{http://jabber.org/protocol/chatstates}"
ENCRYPTED: Final = frozenset(("{eu.siacs.conversations.axolotl}encrypted", "{urn:xmpp:omemo:2}encrypted"))
CARBONS: Final = frozenset(("{urn:xmpp:carbons:2}received", "{urn:xmpp:carbons:2}sent"))
FORWARDED_MESSAGE: Final = f"{{urn:xmpp:forward:0}}forwarded/{MESSAGE}"
MUC_USER_X: Final = "{http://jabber.org/protocol/muc#user}x"
MUC_STATUS: Final = "{http://jabber.org/protocol/muc#user}status"
# Children that travel with a chat state without making it more than one: a thread (XEP-0201),
# processing hints (XEP-0334), unique ids (XEP-0359), a delay stamp (XEP-0203).
INCIDENTAL: Final = frozenset((
    f"{{{CLIENT_NS}}}thread",
    "{urn:xmpp:hints}no-store", "{urn:xmpp:hints}no-permanent-store", "{urn:xmpp:hints}no-copy",
    "{urn:xmpp:hints}store",
    "{urn:xmpp:sid:0}origin-id", "{urn:xmpp:sid:0}stanza-id",
    "{urn:xmpp:delay}delay",
))

# What `classify` says of a stanza: hold it under a key (a tuple), or one of these.
URGENT: Final = "urgent"  # flush what is held, then send it
PASS: Final = "pass"  # send it now, leave what is held
Key = tuple[str, str, str]  # (what, sender, conversation): one held stanza per key
Verdict = Key | str


def classify(stanza: etree._Element, own: str) -> Verdict:
    """What to do with `stanza` for an inactive session whose full JID is `own` (see the module
    docstring). Reads the stanza, never changes it."""
    tag = stanza.tag
    if tag == PRESENCE:
        type_ = stanza.get("type")
        if type_ is not None and type_ != "unavailable":
            return URGENT  # subscription requests and answers, errors (and probes, never expected)
        sender = stanza.get("from", "")
        if sender == own:
            return URGENT  # RFC 6121 §4.2.2: the echo of the client's own presence
        muc = stanza.find(MUC_USER_X)
        if muc is not None and any(status.get("code") == "110" for status in muc.iterfind(MUC_STATUS)):
            return URGENT  # XEP-0045 §7.2.3: this is about the user, not another occupant
        return ("presence", sender, "")
    if tag == MESSAGE:
        return _message(stanza, stanza.get("from", ""), "")
    return URGENT  # an iq


def _message(message: etree._Element, sender: str, conversation: str) -> Verdict:
    state: Key | None = None  # what the message is held as, if it is nothing more
    other = False
    for child in message:
        tag = child.tag
        if tag == BODY or tag in ENCRYPTED:
            return URGENT  # wherever it is among the children
        if not isinstance(tag, str) or tag in INCIDENTAL:
            continue
        if tag.startswith(CHATSTATES_PREFIX):
            state = ("chat-state", sender, conversation)
        elif tag in CARBONS and not conversation:
            # XEP-0280: a carbon copy is judged by the message it carries, held per conversation
            # (its own sender is the account). One level only: a copy is never copied again.
            inner = child.find(FORWARDED_MESSAGE)
            verdict = PASS if inner is None else _message(inner, inner.get("from", ""), f"{tag} {inner.get('to', '')}")
            if verdict == URGENT:
                return URGENT
            if isinstance(verdict, tuple):
                state = verdict
            else:
                other = True
        else:
            other = True
    if state is not None and not other and message.get("type") != "error":
        return state
    return PASS


class Holder(Wrapper):
    """A session's output while the client is inactive: holds presence and chat states (newest
    per key), flushes them before anything urgent. `own` is the session's full JID."""

    __slots__ = ("held", "limit", "own")

    def __init__(self, inner: Output, limit: int, own: str) -> None:
        super().__init__(inner)
        self.limit = limit
        self.own = own
        # Insertion-ordered: the flush order. Only the bytes, which carry this session's `to`.
        self.held: dict[Key, bytes] = {}

    def send(self, stanza: etree._Element | None, data: bytes) -> None:
        verdict = URGENT if stanza is None else classify(stanza, self.own)
        if isinstance(verdict, tuple):
            # A replaced one leaves its place: the newest goes last (module docstring).
            if self.held.pop(verdict, None) is None and len(self.held) >= self.limit:
                self.flush()  # (a new dict: `self.held` is read again below)
            self.held[verdict] = data
            return
        if verdict == URGENT and self.held:
            self.flush()
        self.inner.send(stanza, data)

    def flush(self) -> None:
        """Send everything held, oldest first."""
        held, self.held = self.held, {}
        inner = self.inner
        for data in held.values():
            # Only the bytes were kept; an output takes None as "no element" (session.Output).
            inner.send(None, data)


class ClientStates:
    """The holders of the server's inactive sessions (one dict for every host, as a session's
    events all fire on its own host anyway)."""

    def __init__(self) -> None:
        self.holders: dict[Session, Holder] = {}

    def inactive(self, session: Session, limit: int) -> None:
        if session not in self.holders:  # §4.2 allows it again: nothing changes
            own = str(session.jid)
            self.holders[session] = session.wrap_output(lambda inner: Holder(inner, limit, own))

    def active(self, session: Session) -> None:
        """Flush what is held, then take the holder out: from now on nothing waits."""
        holder = self.holders.pop(session, None)
        if holder is not None:
            holder.flush()
            session.unwrap_output(holder)

    def forget(self, session: Session) -> None:
        """The session is gone: what it held goes with it."""
        self.holders.pop(session, None)


def client_states(mod: ModuleAPI) -> ClientStates:
    return mod.shared("states", ClientStates)


def setup(mod: ModuleAPI) -> None:
    states = client_states(mod)
    limit: int = mod.options["max_held"]

    def inactive(ev: StreamElementEvent) -> bool:
        if ev.session is not None:  # before binding there is nothing to hold: claimed all the same
            states.inactive(ev.session, limit)
        return True

    def active(ev: StreamElementEvent) -> bool:
        if ev.session is not None:
            states.active(ev.session)
        return True

    def detached(ev: SessionEvent) -> None:
        # XEP-0352 §5.2: a resumed stream begins active. The held stanzas go into what stream
        # management keeps (its wrapper is inside this one), to be replayed on resumption; without
        # stream management the session ends and the link drops them. Never claims the event.
        states.active(ev.session)

    def ended(ev: SessionEvent) -> None:
        states.forget(ev.session)

    mod.add_stream_feature(feature)
    mod.on_stream_element(NS, "inactive", inactive)
    mod.on_stream_element(NS, "active", active)
    mod.on(events.SESSION_DETACHED, detached, DETACHED_PRIORITY)
    mod.on(events.SESSION_ENDED, ended)


def feature(_session: Session | None) -> etree._Element:
    return element(f"{{{NS}}}csi")  # §4.1, after authentication
