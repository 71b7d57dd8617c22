"""XEP-0115: Entity Capabilities, both ways.

The server's own are announced in the stream features, so that a client learns what the server
offers without a disco#info round trip (§6.3). The clients' are learned for PEP's notification
filtering (XEP-0163 §4.2): a session gets the events of a node when its features list
`<node>+notify`.

Theory of operation
-------------------
A session's broadcast available presence (`available-presence`: initial or an update) may carry
`<c hash='sha-1' node='…' ver='…'/>`. The 'ver' names a feature set: it is the hash of the
disco#info answer it stands for (§5.1), so one answer, once verified, holds for every session
that announces the same 'ver', whoever sent it. `ClientCaps`, one per server, keeps:

- per session (full JID), the 'ver' it announced and its features (None while they are asked);
- 'ver' -> features, of verified answers only (the `cache_size` most recently used);
- per 'ver' being asked, the sessions waiting for its answer, in the order they announced it.

A 'ver' in the cache makes the features known at once. Otherwise the first session that
announced it is asked disco#info of `node#ver` (§6.2) by the server, and the sessions that
announce it meanwhile wait for that one answer. An answer that is well-formed and hashes to the
'ver' (§5.4) is cached and holds for all of them; any other (ill-formed, hashing to something
else, an error, none in time) leaves the asked session without features and is not cached, and
the next session waiting is asked (§5.4 3.9: "check ... another generating entity who
advertises that value").

A session without `<c/>`, or with caps that cannot be verified, has no features: known, but
empty. Each time a session's features become known for an availability, `CAPS_KNOWN` fires on
its host: after initial presence and after an update that announces other caps, but not after
an update of its status only, so that PEP sends the last items once per availability
(XEP-0163 §4.3.3). A session that ends is forgotten.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from lxml import etree

from xmppd import events
from xmppd.elements import element
from xmppd.errors import StanzaError
from xmppd.events import CAPS_KNOWN, AvailableEvent, SessionEvent  # CAPS_KNOWN: re-exported
from xmppd.jid import JID
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza
from xmppd.modules.disco import (
    CAPS_NODE,
    DATA_NS,
    INFO_NS,
    CapsIdentity,
    caps_hash,
    caps_ver,
    form_type_field,
    verification_input,
)
from xmppd.session import Session

PROTOCOLS = [("XEP-0115", "1.6.0")]
NS = "http://jabber.org/protocol/caps"
OPTIONS = {
    "cache_size": Option(
        10000,
        "verification strings whose features are kept in memory (the least recently used are dropped)",
        minimum=1,
    ),
}
_OPTIONS_OF = "caps"  # the config section of OPTIONS, whichever module makes the ClientCaps
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_NO_FEATURES: frozenset[str] = frozenset()


def setup(mod: ModuleAPI) -> None:
    host = mod.host

    def feature(_session: Session | None) -> etree._Element:
        return element(f"{{{NS}}}c", {"hash": "sha-1", "node": CAPS_NODE, "ver": caps_ver(host)})

    mod.add_stream_feature(feature)
    caps = client_caps(mod)

    async def available(ev: AvailableEvent) -> None:
        await caps.presence(mod, ev)

    def ended(ev: SessionEvent) -> None:
        caps.forget(ev.session)

    mod.on(events.AVAILABLE_PRESENCE, available)
    mod.on(events.SESSION_ENDED, ended)


def client_caps(mod: ModuleAPI) -> ClientCaps:
    """The server's knowledge of its client sessions' capabilities, made by whichever module
    asks first (PEP may ask before this module is set up)."""

    def make() -> ClientCaps:
        configured = mod.config.options_for(_OPTIONS_OF)
        return ClientCaps(configured.get("cache_size", OPTIONS["cache_size"].default))

    return mod.common("client-caps", make)


@dataclass(slots=True, eq=False)
class _Announced:
    """What a session announced in its last broadcast presence."""

    session: Session
    mod: ModuleAPI  # of the session's host: where CAPS_KNOWN fires, who asks
    ver: str | None  # None: nothing we can verify
    node: str = ""
    features: frozenset[str] | None = None  # None while its 'ver' is asked


class ClientCaps:
    """What the client sessions of the server can do (see the module docstring)."""

    def __init__(self, cache_size: int) -> None:
        self._cache: LRU[str, frozenset[str]] = LRU(cache_size)
        self._sessions: dict[JID, _Announced] = {}
        # 'ver' being asked -> the sessions waiting for its answer; the first is asked.
        self._queries: dict[str, list[_Announced]] = {}

    def features(self, session: JID) -> frozenset[str] | None:
        """The features of a session (full JID); None: not (yet) known."""
        announced = self._sessions.get(session)
        return announced.features if announced is not None else None

    def wants(self, session: JID, node: str) -> bool:
        """Whether the session asked for notifications of `node` (XEP-0163 §4.2)."""
        features = self.features(session)
        return features is not None and f"{node}+notify" in features

    # -- what sessions announce ---------------------------------------------------------------
    async def presence(self, mod: ModuleAPI, ev: AvailableEvent) -> None:
        session = ev.session
        ver, node = _announced_caps(ev.presence)
        previous = self._sessions.get(session.jid)
        if previous is None or previous.session is not session or previous.ver != ver:
            self._leave(previous)
            await self._announce(_Announced(session, mod, ver, node))
        elif ev.initial and previous.features is not None:
            # Unavailable, then available again with the same caps: a new availability.
            await self._known(previous)

    def forget(self, session: Session) -> None:
        announced = self._sessions.get(session.jid)
        if announced is not None and announced.session is session:
            self._leave(announced)
            del self._sessions[session.jid]

    async def _announce(self, announced: _Announced) -> None:
        self._sessions[announced.session.jid] = announced
        ver = announced.ver
        if ver is None:
            announced.features = _NO_FEATURES
        elif (cached := self._cache.get(ver)) is not None:
            announced.features = cached
        else:
            self._wait(ver, announced)
            return
        await self._known(announced)

    def _wait(self, ver: str, announced: _Announced) -> None:
        """Wait for the answer about `ver` with the others, or be the first asked."""
        waiting = self._queries.get(ver)
        if waiting is not None:
            waiting.append(announced)
            return
        waiting = self._queries[ver] = [announced]
        # Not waited for by the server's stop (nor by tests, which must answer it first): the
        # answer depends on a client, which may never give it.
        announced.mod.spawn(self._discover(ver, waiting), forever=True)

    def _leave(self, announced: _Announced | None) -> None:
        """A session no longer waits for the answer about the caps it announced before."""
        if announced is None or announced.ver is None:
            return
        waiting = self._queries.get(announced.ver)
        if waiting is not None and announced in waiting:
            waiting.remove(announced)

    async def _known(self, announced: _Announced) -> None:
        if self._sessions.get(announced.session.jid) is announced:
            await announced.mod.fire(CAPS_KNOWN, SessionEvent(announced.session))

    # -- asking -------------------------------------------------------------------------------
    async def _discover(self, ver: str, waiting: list[_Announced]) -> None:
        """Ask the waiting sessions in turn until one answers with what hashes to `ver`."""
        try:
            while waiting:
                asked = waiting[0]
                features = await self._ask(asked, ver)
                if features is not None:
                    self._cache.put(ver, features)
                    del self._queries[ver]  # the cache answers from now on
                    await self._settle(list(waiting), features)
                    return
                if waiting and waiting[0] is asked:  # it still waits: it alone goes without
                    await self._settle([waiting.pop(0)], _NO_FEATURES)
        finally:
            if self._queries.get(ver) is waiting:
                del self._queries[ver]

    async def _settle(self, sessions: list[_Announced], features: frozenset[str]) -> None:
        for announced in sessions:
            announced.features = features
            await self._known(announced)

    async def _ask(self, asked: _Announced, ver: str) -> frozenset[str] | None:
        """§6.2: disco#info of `node#ver` to the session, from the server; the features if the
        answer verifies (§5.4), else None."""
        mod = asked.mod
        to = asked.session.jid
        request = Stanza.build("iq", to=to, from_=mod.host.jid, type_="get")
        element(f"{{{INFO_NS}}}query", {"node": f"{asked.node}#{ver}"}, parent=request.element)
        try:
            answer = await mod.send_iq(request)
        except StanzaError as error:
            mod.log.debug("%s did not tell its caps %s: %s", to, ver, error.condition)
            return None
        query = answer.element.find(f"{{{INFO_NS}}}query")
        features = verified_features(query, ver) if query is not None else None
        if features is None:
            mod.log.debug("%s answered for caps %s with what does not hash to it", to, ver)
        return features


def _announced_caps(presence: etree._Element) -> tuple[str | None, str]:
    """(ver, node) of the presence's `<c/>`; ver None when there is nothing to verify: no
    `<c/>`, or legacy caps without 'hash' (XEP-0115 v1.3, §5.4 step 1: ignored, since a 'ver'
    that is a version number and 'ext' bundles cannot be verified, and trusting them would let a
    client poison what others are taken to want), or a hash other than SHA-1, the one every
    client sends (§5.4 step 2 would ask and keep the answer for that session only: not worth it)."""
    c = presence.find(f"{{{NS}}}c")
    if c is None or c.get("hash") != "sha-1" or not c.get("node") or not c.get("ver"):
        return None, ""
    return c.get("ver"), c.get("node", "")


def verified_features(query: etree._Element, ver: str) -> frozenset[str] | None:
    """§5.4 step 3: the features of a disco#info answer (its `<query/>`) when it is well-formed
    and hashes to `ver`, else None."""
    identities: list[CapsIdentity] = [
        (i.get("category", ""), i.get("type", ""), i.get(_XML_LANG, ""), i.get("name", ""))
        for i in query.iterfind(f"{{{INFO_NS}}}identity")
    ]
    features = [f.get("var", "") for f in query.iterfind(f"{{{INFO_NS}}}feature")]
    forms = _extended_forms(query)
    if forms is None or _repeats(identities) or _repeats(features):
        return None
    if caps_hash(verification_input(identities, features, forms)) != ver:
        return None
    return frozenset(features)


def _extended_forms(query: etree._Element) -> list[etree._Element] | None:
    """The XEP-0128 forms that count (§5.4 3.6: one without a hidden FORM_TYPE, or without a
    value for it, is skipped); None when the answer is ill-formed (§5.4 3.5: two forms of one
    FORM_TYPE, or a FORM_TYPE with different values)."""
    forms: list[etree._Element] = []
    types: list[str] = []
    for form in query.iterfind(f"{{{DATA_NS}}}x"):
        field_ = form_type_field(form)
        if field_ is None or field_.get("type") != "hidden":
            continue
        values = {value.text or "" for value in field_.iterfind(f"{{{DATA_NS}}}value")}
        if len(values) > 1:
            return None
        if not values:
            continue
        forms.append(form)
        types.extend(values)
    return None if _repeats(types) else forms


def _repeats(values: Iterable[object]) -> bool:
    return any(count > 1 for count in Counter(values).values())
