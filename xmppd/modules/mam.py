"""XEP-0313: Message Archive Management (urn:xmpp:mam:2 and #extended) for users' 1:1 messages,
with XEP-0359 stanza ids, XEP-0059 paging, XEP-0441 preferences and the XEP-0334 storage hints;
and the answers to archive queries for any archive, a user's or a room's.

Theory of operation
-------------------
Archiving. Every eligible message is archived once in each local party's archive, before it is
delivered, so whatever a client has seen is in its archive:

- the sender's copy on `pre-message/bare|full` of the sender's host (outgoing);
- the recipient's copy on `message/bare|full` of the recipient's host (incoming). That copy is
  delivered with `<stanza-id by='recipient bare JID' id='archive id'/>` (XEP-0313 §3.5), after
  any stanza-id the sender put there with the same `by` is removed (XEP-0359 §3.1 rule 3: a
  client must never be able to choose ids in our name). The sender never sees an id of its own
  archive on the message it sent (§3.5: not for those who cannot read that archive).

Both run at priority 50: after blocking (100), so blocked messages are never archived (§5.1);
before carbons (10), so received carbons carry the stanza-id; before offline storage (0) and
default delivery (-1). A message to one's own bare JID is stored once, by the recipient side.

Eligible (`archivable`, no I/O): chat and normal messages with a body or with a payload that is
part of the conversation — end-to-end encrypted content (OMEMO, OpenPGP), receipts and chat
markers (so history shows "delivered" and "read"), reactions, retractions, call signalling, file
links and invitations. Not: groupchat (MUC archives are the room's business), headline, error,
standalone chat states, and anything with the no-store or no-permanent-store hint; the store hint
archives a chat or normal message that would otherwise be skipped (XEP-0334 §4). The rule on
content alone, whatever the type, is `worth_keeping`: a room archives groupchat by it. Then the
user's preferences decide (XEP-0441: never-list, always-list, then default always | roster | never).

Durable yet batched. Records go through the server's archiving service (xmppd/archiving.py), one
`BatchWriter` for every archive of the server, rooms' included (xmppd/batching.py): each
handler waits for its record's commit, but all records that arrive while a batch commits go out
together in the next one (one INSERT of many rows on PostgreSQL), so a busy server pays one
round trip per batch, not per message. When writing fails the message is refused with
internal-server-error rather than delivered unarchived.

Ids. `storage.archive.ArchiveIds` makes time-ordered 63-bit ids with a random sequence start
each millisecond; clients see them as 16 hex digits. An id carries its own timestamp, which is
the `<delay/>` stamp in results, and `start`/`end` are id ranges for the store.

Queries (§4) are answered from one indexed range read: result messages first, written straight
as bytes around the stored stanza (no re-parsing), then the iq result with `<fin/>` and the RSM
`<set/>`. `<count/>` is given only where it costs nothing more (the page is the whole result) or
when the client asks for nothing but the count (`<max>0</max>`). Answering is not tied to users:
`answer_query`, `answer_metadata` and `answer_form` take the archive's owner (a user's bare JID
here; a room's JID for a MUC component), the requester and where its bytes go.

Retention. With `retention_days`, a task deletes what is older, every `cleanup_interval`
seconds; only the oldest messages go, so an archive never gets holes (§3.2). Deleting an
account deletes its archive (storage).
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

from lxml import etree

from storage import ArchiveQuery, ArchiveRecord, ArchiveStore, StorageError
from storage.archive import format_id, parse_id
from storage.shapes import KEY_VALUE
from xmppd.archiving import WRITE_ERRORS, WRITE_OPTIONS, archiving
from xmppd.datetimes import parse_datetime, stamp
from xmppd.elements import attribute, element
from xmppd.errors import StanzaError
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.lru import LRU
from xmppd.module import ModuleAPI, Option, Stanza, StanzaEvent
from xmppd.stanza import CLIENT_NS

if TYPE_CHECKING:
    from xmppd.host import Host

PROTOCOLS = [
    ("XEP-0313", "1.1.3"),
    ("XEP-0359", "0.7.0", "complete", "stanza-id on archived messages, origin-id kept"),
    ("XEP-0059", "1.0", "complete", "paging of archive queries"),
    ("XEP-0441", "0.2.0"),
]
NS = "urn:xmpp:mam:2"
EXTENDED = "urn:xmpp:mam:2#extended"
SID_NS = "urn:xmpp:sid:0"
RSM_NS = "http://jabber.org/protocol/rsm"
DATA_NS = "jabber:x:data"
FORWARD_NS = "urn:xmpp:forward:0"
DELAY_NS = "urn:xmpp:delay"
HINTS_NS = "urn:xmpp:hints"
XDATA_VALIDATE_NS = "http://jabber.org/protocol/xdata-validate"
POLICIES = ("always", "roster", "never")
OPTIONS = {
    "default_policy": Option(
        "always", "what is archived for users who set no preferences (XEP-0441): always, roster or never",
        choices=POLICIES,
    ),
    "retention_days": Option(0, "delete archived messages older than this many days; 0 keeps them forever", minimum=0),
    "cleanup_interval": Option(3600, "seconds between two retention runs", minimum=1),
    "max_page_size": Option(100, "most messages one query returns; also the page size when none is asked", minimum=1),
    # The server-wide writer's (xmppd/archiving.py): configured here, used by every archive.
    **WRITE_OPTIONS,
}
PRIORITY = 50  # after blocking (100), before carbons (10), offline (0) and default delivery (-1)
MAX_IDS = 1000  # ids in one `ids` field
_PREFS_CACHE = 10_000  # users whose preferences are kept in memory, per host
# Sender's copies in flight; one stays longer only when its message went nowhere after a failed
# write (refused before reaching its recipient): the bound is for those.
_SENDER_COPIES = 65_536
_STORE = "mam"  # key-value store: key "prefs"

SID_TAG = f"{{{SID_NS}}}stanza-id"
# lxml-stubs type nsmap keys as str; None (the default namespace) is what lxml wants.
_SID_NSMAP: dict[str, str] = {None: SID_NS}  # type: ignore[dict-item]
_BODY = f"{{{CLIENT_NS}}}body"
_NO_STORE = (f"{{{HINTS_NS}}}no-store", f"{{{HINTS_NS}}}no-permanent-store")
_STORE_HINT = f"{{{HINTS_NS}}}store"
# Payloads that are part of the conversation even without a body.
_ARCHIVABLE = frozenset(
    f"{{{ns}}}{name}"
    for ns, names in (
        ("urn:xmpp:receipts", ("received",)),  # XEP-0184
        ("urn:xmpp:chat-markers:0", ("received", "displayed", "acknowledged")),  # XEP-0333
        ("eu.siacs.conversations.axolotl", ("encrypted",)),  # XEP-0384 OMEMO (0.3)
        ("urn:xmpp:omemo:2", ("encrypted",)),  # XEP-0384 OMEMO 2
        ("urn:xmpp:openpgp:0", ("openpgp",)),  # XEP-0373
        ("jabber:x:encrypted", ("x",)),  # XEP-0027
        ("urn:xmpp:reactions:0", ("reactions",)),  # XEP-0444
        ("urn:xmpp:message-retract:1", ("retract",)),  # XEP-0424
        ("urn:xmpp:jingle-message:0", ("propose", "retract", "accept", "proceed", "reject", "finish")),  # XEP-0353
        ("jabber:x:oob", ("x",)),  # XEP-0066
        ("jabber:x:conference", ("x",)),  # XEP-0249
    )
    for name in names
)

def setup(mod: ModuleAPI) -> None:
    archive = Archive(mod)
    archives(mod)[mod.host.name] = archive
    for feature in (NS, EXTENDED, SID_NS):
        mod.add_account_feature(feature)  # XEP-0313 §7: on the archive's JID, the user's bare JID
    for target in ("bare", "full"):
        mod.on(f"pre-message/{target}", archive.outgoing, PRIORITY)
        mod.on(f"message/{target}", archive.incoming, PRIORITY)
    mod.on_iq("set", NS, "query", archive.query, targets=("self",))
    mod.on_iq("get", NS, "query", answer_form, targets=("self",))
    mod.on_iq("get", NS, "metadata", archive.metadata, targets=("self",))
    mod.on_iq("get", NS, "prefs", archive.get_prefs, targets=("self",))
    mod.on_iq("set", NS, "prefs", archive.set_prefs, targets=("self",))
    # §8.1: another user's archive is not ours to read.
    for type_, name in (("set", "query"), ("get", "query"), ("get", "metadata"), ("get", "prefs"), ("set", "prefs")):
        mod.on_iq(type_, NS, name, forbidden, targets=("bare",))
    if archive.retention_days:
        mod.spawn(archive.expire_periodically(), forever=True)


def archive_for(host: Host) -> Archive:
    """The archive service of a host (tests use it to inject a clock or run retention)."""
    return archives(host.modules["mam"])[host.name]


def archives(mod: ModuleAPI) -> dict[str, Archive]:
    """The archive service of each host, by host name."""
    made: dict[str, Archive] = mod.shared("archives", dict)
    return made


def forbidden(ev: StanzaEvent) -> bool:
    return ev.error("forbidden", "only the owner can use an archive")


# -- what is archived (no I/O) ----------------------------------------------------------------


def archivable(msg: etree._Element) -> bool:
    """Whether a message belongs in a user archive (see the module docstring)."""
    return (msg.get("type") or "normal") in ("chat", "normal") and worth_keeping(msg)


def worth_keeping(msg: etree._Element) -> bool:
    """Whether a message's content belongs in an archive, whatever its type (a room applies it
    to groupchat): a body or a payload that is part of the conversation, or the store hint; and
    never with the no-store or no-permanent-store hint (XEP-0334 §4)."""
    substance = store = False
    for child in msg:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        if tag in _NO_STORE:
            return False
        if tag == _STORE_HINT:
            store = True
        elif tag == _BODY or tag in _ARCHIVABLE:
            substance = True
    return substance or store


@dataclass(frozen=True, slots=True)
class Prefs:
    """XEP-0441 preferences: JIDs as normalised strings, full or bare."""

    default: str
    always: tuple[str, ...] = ()
    never: tuple[str, ...] = ()

    def decide(self, peer: JID) -> str:
        """'always', 'never' or 'roster' (ask the roster) for messages with `peer`.

        XEP-0441 §2.3: an entry with a resource matches that full JID only, a bare entry any
        resource of it. A JID in both lists is not archived: the stricter wish wins.
        """
        full, bare = str(peer), str(peer.bare)
        if full in self.never or bare in self.never:
            return "never"
        if full in self.always or bare in self.always:
            return "always"
        return self.default

    def to_json(self) -> dict[str, object]:
        return {"default": self.default, "always": list(self.always), "never": list(self.never)}


@dataclass(frozen=True, slots=True)
class SenderCopy:
    """The sender's archived copy of a message on its way to a local recipient (`outgoing`)."""

    written: asyncio.Future[None]  # done when committed (or failed)
    text: str  # the message as stored: the recipient's copy is the same unless ids were stripped


def _retrieved(future: asyncio.Future[None]) -> None:
    """Mark a write's outcome as seen where nobody waits for it any more."""
    if not future.cancelled():
        future.exception()


# -- the service ------------------------------------------------------------------------------


class Archive:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.host = mod.host
        self.rosters = mod.rosters
        self.kv = mod.open_store(_STORE, KEY_VALUE)
        # The server's, shared with every host and with room archives: see xmppd/archiving.py.
        self.archiving = archiving(mod)
        self.store = self.archiving.store
        options = mod.options
        self.default_policy: str = options["default_policy"]
        self.retention_days: int = options["retention_days"]
        self.cleanup_interval: int = options["cleanup_interval"]
        self.max_page: int = options["max_page_size"]
        self._prefs: LRU[str, Prefs] = LRU(_PREFS_CACHE)
        # Every host's archive, and the sender's copies waiting for their recipient's (`outgoing`):
        # shared by the hosts, since a message's two ends may be on different ones.
        self.archives = archives(mod)
        self.sender_copies: LRU[Stanza, SenderCopy] = mod.shared("sender-copies", lambda: LRU(_SENDER_COPIES))

    # -- archiving ------------------------------------------------------------------------------

    async def outgoing(self, ev: StanzaEvent) -> bool | None:
        """The sender's copy, on the sender's host."""
        stanza = ev.stanza
        to, from_ = stanza.to, stanza.from_
        if to is None or from_ is None or from_.local is None:
            return None
        if to.bare == from_.bare:
            return None  # a note to self: archived once, as it arrives
        if not self.mod.is_local(to.domain):
            return None  # no server-to-server yet: the router bounces it
        if not archivable(stanza.element):
            return None
        if not await self._wanted(from_.bare, to):
            return None
        text = etree.tostring(stanza.element, encoding="unicode")
        written = self.archiving.submit(self.archiving.record(from_.bare, to, outgoing=True, stanza=text))
        if to.domain not in self.archives:
            return await self._refused(ev, written)
        # The recipient's host archives too: its `incoming` waits for this copy with its own,
        # so that both go out in one batch and the message waits for one commit, not two.
        sent = SenderCopy(written, text)
        self.sender_copies.put(stanza, sent)
        written.add_done_callback(lambda _done: self._sender_copy_written(stanza, sent))
        return None

    def _sender_copy_written(self, stanza: Stanza, sent: SenderCopy) -> None:
        """Forget a sender's copy once written. A failed one is logged here and stays for
        `incoming` to refuse the message (if it never comes, the cache's bound drops it)."""
        error = sent.written.exception()
        if error is not None:
            self.mod.log.error("archiving a message of %s failed: %s", stanza.from_, error)
        elif self.sender_copies.peek(stanza) is sent:
            self.sender_copies.pop(stanza)

    async def incoming(self, ev: StanzaEvent) -> bool | None:
        """The recipient's copy, on the recipient's host; stamps the delivered message."""
        stanza = ev.stanza
        to, from_ = stanza.to, stanza.from_
        if to is None or to.local is None:
            return None
        user = to.bare
        by = str(user)
        claimed = [sid for sid in stanza.element.iterchildren(SID_TAG) if sid.get("by") == by]
        if claimed and ev.origin is None:
            return None  # our own stamp on a message the server hands on again: archived already
        sent = self.sender_copies.pop(stanza)
        archive = (
            from_ is not None
            and archivable(stanza.element)
            and await self.mod.account_exists(user)
            and await self._wanted(user, from_)
        )
        if not archive:
            if sent is not None and await self._refused(ev, sent.written, logged=True):
                return True
            if claimed:
                ev.stanza = _without_ids(stanza, by)  # what later handlers pass on
            return None
        assert from_ is not None
        # A copy only when a forged stanza-id must go: otherwise the message is stamped in place
        # (nothing else holds it now) and stored as its sender's copy was, serialised once.
        delivered = _without_ids(stanza, by) if claimed else stanza
        text = sent.text if sent is not None and not claimed else etree.tostring(delivered.element, encoding="unicode")
        record = self.archiving.record(user, from_, outgoing=False, stanza=text)
        received = self.archiving.submit(record)
        if sent is not None and await self._refused(ev, sent.written, logged=True):
            received.add_done_callback(_retrieved)  # refused all the same: the outcome is moot
            return True
        if await self._refused(ev, received):
            return True
        etree.SubElement(delivered.element, SID_TAG, {"by": by, "id": format_id(record.id)}, nsmap=_SID_NSMAP)
        ev.stanza = delivered  # what later handlers (carbons, offline, delivery) pass on
        return None

    async def _refused(self, ev: StanzaEvent, written: asyncio.Future[None], *, logged: bool = False) -> bool:
        """Wait for a record's commit; if it failed, refuse the message (True: handled)."""
        try:
            await written
        except WRITE_ERRORS as exc:
            if not logged:
                self.mod.log.error("archiving a message to %s failed: %s", ev.stanza.to, exc)
            return ev.error("internal-server-error", "the message could not be archived")
        return False

    async def _wanted(self, user: JID, peer: JID) -> bool:
        prefs = await self.prefs(user)
        decision = prefs.decide(peer)
        if decision != "roster":
            return decision == "always"
        assert user.local is not None
        item = await self.rosters.item(user.domain, user.local, str(peer.bare))
        return item is not None and item.listed

    # -- preferences (XEP-0441) -----------------------------------------------------------------

    async def prefs(self, user: JID) -> Prefs:
        assert user.local is not None
        cached = self._prefs.get(user.local)
        if cached is not None:
            return cached
        stored = await self.kv.get(user.domain, user.local, "prefs")
        prefs = Prefs(self.default_policy)
        if isinstance(stored, dict) and stored.get("default") in POLICIES:
            prefs = Prefs(stored["default"], tuple(stored.get("always", ())), tuple(stored.get("never", ())))
        self._prefs.put(user.local, prefs)
        return prefs

    async def get_prefs(self, ev: StanzaEvent) -> bool:
        user = _owner(ev)
        ev.respond(_prefs_reply(ev.stanza, await self.prefs(user)))
        return True

    async def set_prefs(self, ev: StanzaEvent) -> bool:
        user = _owner(ev)
        assert user.local is not None
        try:
            prefs = parse_prefs(ev.stanza.payload())
        except StanzaError as error:
            return ev.error(error.condition, error.text)
        await self.kv.set(user.domain, user.local, "prefs", prefs.to_json())
        self._prefs.put(user.local, prefs)
        ev.respond(_prefs_reply(ev.stanza, prefs))
        return True

    # -- queries (§4): the user's own archive -------------------------------------------------

    async def query(self, ev: StanzaEvent) -> bool:
        origin = ev.origin
        if origin is None:
            return ev.error("forbidden")
        return await answer_query(
            self.store, ev, owner=origin.bare, requester=origin.jid, send=origin.send_bytes, max_page=self.max_page
        )

    async def metadata(self, ev: StanzaEvent) -> bool:
        return await answer_metadata(self.store, ev, owner=_owner(ev))

    # -- retention ------------------------------------------------------------------------------

    async def expire(self) -> int:
        """Delete this host's messages older than `retention_days` (none when it is 0)."""
        if not self.retention_days:
            return 0
        deleted = await self.store.delete_before(self.host.name, self.mod.now() - timedelta(days=self.retention_days))
        if deleted:
            self.mod.log.info(
                "retention: deleted %d archived messages older than %d days", deleted, self.retention_days
            )
        return deleted

    async def expire_periodically(self) -> None:
        while True:
            try:
                await self.expire()
            except StorageError as exc:
                self.mod.log.warning("retention run failed: %s", exc)
            await asyncio.sleep(self.cleanup_interval)


# -- answering queries on any archive (§4, §5): a user's here, a room's for a MUC component -----


def answer_form(ev: StanzaEvent) -> bool:
    """§4.1.5: the fields a query may use (the same for every archive)."""
    reply = ev.stanza.reply()
    query = element(f"{{{NS}}}query", parent=reply.element)
    form = element(f"{{{DATA_NS}}}x", {"type": "form"}, parent=query)
    hidden = element(f"{{{DATA_NS}}}field", {"type": "hidden", "var": "FORM_TYPE"}, parent=form)
    element(f"{{{DATA_NS}}}value", parent=hidden).text = NS
    for var, type_ in (
        ("with", "jid-single"),
        ("start", "text-single"),
        ("end", "text-single"),
        ("before-id", "text-single"),
        ("after-id", "text-single"),
    ):
        element(f"{{{DATA_NS}}}field", {"type": type_, "var": var}, parent=form)
    ids = element(f"{{{DATA_NS}}}field", {"type": "list-multi", "var": "ids"}, parent=form)
    validate = element(f"{{{XDATA_VALIDATE_NS}}}validate", {"datatype": "xs:string"}, parent=ids)
    element(f"{{{XDATA_VALIDATE_NS}}}open", parent=validate)
    ev.respond(reply)
    return True


async def answer_metadata(store: ArchiveStore, ev: StanzaEvent, *, owner: JID) -> bool:
    """§5: the first and last message of `owner`'s archive (its bare JID: an account or a room)."""
    assert owner.local is not None
    first = await store.query(owner.domain, owner.local, ArchiveQuery(limit=1))
    last = await store.query(owner.domain, owner.local, ArchiveQuery(limit=1, last=True))
    reply = ev.stanza.reply()
    meta = element(f"{{{NS}}}metadata", parent=reply.element)
    for name, page in (("start", first), ("end", last)):
        if page.records:
            record = page.records[0]
            element(
                f"{{{NS}}}{name}", {"id": format_id(record.id), "timestamp": stamp(record.timestamp_ms)}, parent=meta
            )
    ev.respond(reply)
    return True


async def answer_query(
    store: ArchiveStore,
    ev: StanzaEvent,
    *,
    owner: JID,
    requester: JID,
    send: Callable[[bytes], None],
    max_page: int,
) -> bool:
    """Answer the archive query `ev` on `owner`'s archive (its bare JID: an account or a room).

    Whether `requester` may read that archive is the caller's decision, made before. The result
    messages, `from` the archive's JID and `to` the requester (§4.2), are written with `send`;
    then the iq result goes through `ev.respond`, so `send` must be the requester's own session
    output (`ev.origin.send_bytes`), which keeps the results ahead of it. A bad query is answered
    with its error instead. Returns True: the query is handled either way.
    """
    assert owner.local is not None
    host, username = owner.domain, owner.local
    try:
        request = parse_query(ev.stanza.payload(), max_page)
    except StanzaError as error:
        return ev.error(error.condition, error.text)
    # §4.1.3 and §4.3.2: every id named must be in the archive.
    if request.named_ids:
        found = await store.existing(host, username, request.named_ids)
        if len(found) < len(set(request.named_ids)):
            return ev.error("item-not-found", "no such message in the archive")
    query = request.query
    records: list[ArchiveRecord] = []
    complete = True
    count: int | None = None
    if request.count_only:
        count = await store.count(host, username, query)
        complete = count == 0
    else:
        page = await store.query(host, username, query)
        records, complete = page.records, page.complete
    # The page starts the whole result when nothing was skipped before it.
    at_start = (not query.last and request.rsm_after is None) or (query.last and complete)
    whole = at_start and complete and request.rsm_after is None and request.rsm_before is None
    if whole and not request.count_only and query.offset == 0:
        count = len(records)
    sent = reversed(records) if request.flip else records
    to, archive = attribute(str(requester)), attribute(str(owner))
    queryid = f" queryid={attribute(request.queryid)}" if request.queryid is not None else ""
    prefix = secrets.token_hex(4)
    for n, record in enumerate(sent):
        send(
            (
                f'<message xmlns="{CLIENT_NS}" to={to} from={archive} id="{prefix}-{n}">'
                f'<result xmlns="{NS}"{queryid} id="{format_id(record.id)}">'
                f'<forwarded xmlns="{FORWARD_NS}"><delay xmlns="{DELAY_NS}" stamp="{stamp(record.timestamp_ms)}"/>'
                f"{record.stanza}</forwarded></result></message>"
            ).encode()
        )
    reply = ev.stanza.reply()
    fin = element(f"{{{NS}}}fin", {"stable": "true"}, parent=reply.element)
    if complete:
        fin.set("complete", "true")  # §4.3.2: the client need not page further
    rsm = element(f"{{{RSM_NS}}}set", parent=fin)
    if records:
        first = element(f"{{{RSM_NS}}}first", parent=rsm)
        first.text = format_id(records[0].id)
        if at_start:
            first.set("index", str(query.offset if not query.last else 0))
        element(f"{{{RSM_NS}}}last", parent=rsm).text = format_id(records[-1].id)
    if count is not None:
        element(f"{{{RSM_NS}}}count", parent=rsm).text = str(count)
    ev.respond(reply)
    return True


def _owner(ev: StanzaEvent) -> JID:
    # iq to 'self' comes from a local client: its account is the archive.
    assert ev.origin is not None
    return ev.origin.bare


def _without_ids(stanza: Stanza, by: str) -> Stanza:
    """A copy of the message without stanza-ids claiming to be by `by`."""
    copied = stanza.copy()
    for sid in list(copied.element.iterchildren(SID_TAG)):
        if sid.get("by") == by:
            copied.element.remove(sid)
    return copied


# -- parsing requests (no I/O) ----------------------------------------------------------------


@dataclass(slots=True)
class MamRequest:
    query: ArchiveQuery
    queryid: str | None = None
    flip: bool = False
    count_only: bool = False
    rsm_after: int | None = None
    rsm_before: int | None = None
    named_ids: list[int] = field(default_factory=list)  # ids that must exist (§4.1.3)


def _id(text: str) -> int:
    archive_id = parse_id(text.strip())
    if archive_id is None:
        raise StanzaError("item-not-found", f"no message {text!r} in the archive")
    return archive_id


def parse_query(payload: etree._Element | None, max_page: int) -> MamRequest:
    """The `<query/>` of an archive query as an ArchiveQuery; StanzaError for what is wrong."""
    assert payload is not None
    request = MamRequest(
        ArchiveQuery(limit=max_page),
        queryid=payload.get("queryid"),
        flip=payload.find(f"{{{NS}}}flip-page") is not None,
    )
    form = payload.find(f"{{{DATA_NS}}}x")
    if form is not None:
        _parse_form(form, request)
    rsm = payload.find(f"{{{RSM_NS}}}set")
    if rsm is not None:
        _parse_rsm(rsm, request, max_page)
    return request


def _parse_form(form: etree._Element, request: MamRequest) -> None:
    """§4.1: the filters of the data form."""
    fields: dict[str, list[str]] = {}
    for node in form.iterchildren(f"{{{DATA_NS}}}field"):
        values = [(v.text or "").strip() for v in node.iterchildren(f"{{{DATA_NS}}}value")]
        fields[node.get("var", "")] = [v for v in values if v]
    form_type = fields.pop("FORM_TYPE", [NS])
    if form_type and form_type[0] != NS:
        raise StanzaError("bad-request", f"FORM_TYPE must be {NS}")
    unknown = sorted(set(fields) - {"with", "start", "end", "before-id", "after-id", "ids"})
    if unknown:
        # §4.1.5: a field we do not know is feature-not-implemented.
        raise StanzaError("feature-not-implemented", f"unknown query field {unknown[0]!r}")
    single = {name: values[0] for name, values in fields.items() if values and name != "ids"}
    changes: dict[str, object] = {}
    if "with" in single:
        try:
            peer = parse_jid(single["with"])
        except InvalidJID:
            raise StanzaError("jid-malformed", f"'with' is not a JID: {single['with']!r}") from None
        # §4.1.1: a bare JID matches every resource of it, a full JID that resource only.
        changes.update(with_jid=str(peer.bare), with_resource=peer.resource)
    for name in ("start", "end"):
        if name in single:
            try:
                changes[name] = parse_datetime(single[name])
            except ValueError as exc:
                raise StanzaError("bad-request", str(exc)) from None
    for name, key in (("after-id", "after_id"), ("before-id", "before_id")):
        if name in single:
            changes[key] = _id(single[name])
            request.named_ids.append(_id(single[name]))
    if "ids" in fields:
        if len(fields["ids"]) > MAX_IDS:
            raise StanzaError("policy-violation", f"at most {MAX_IDS} ids in one query")
        ids = tuple(dict.fromkeys(_id(text) for text in fields["ids"]))
        changes["ids"] = ids
        request.named_ids.extend(ids)
    request.query = dataclasses.replace(request.query, **changes)  # type: ignore[arg-type]


def _parse_rsm(rsm: etree._Element, request: MamRequest, max_page: int) -> None:
    """XEP-0059: <max/>, <after/>, <before/> (empty: the last page) and <index/>."""
    query = request.query
    changes: dict[str, object] = {}
    limit_text = rsm.findtext(f"{{{RSM_NS}}}max")
    if limit_text is not None:
        requested = _natural(limit_text, "max")
        request.count_only = requested == 0
        changes["limit"] = min(requested, max_page)
    if (index := rsm.findtext(f"{{{RSM_NS}}}index")) is not None:
        changes["offset"] = _natural(index, "index")
    after = rsm.find(f"{{{RSM_NS}}}after")
    if after is not None:
        # The MAM id of RSM: combined with after-id, the later of the two bounds holds.
        request.rsm_after = _id(after.text or "")
        request.named_ids.append(request.rsm_after)
        changes["after_id"] = max(request.rsm_after, query.after_id or -1)
    before = rsm.find(f"{{{RSM_NS}}}before")
    if before is not None:
        changes["last"] = True  # page backwards, from the end of the range
        if (before.text or "").strip():
            request.rsm_before = _id(before.text or "")
            request.named_ids.append(request.rsm_before)
            bound = request.rsm_before if query.before_id is None else min(query.before_id, request.rsm_before)
            changes["before_id"] = bound
    request.query = dataclasses.replace(query, **changes)  # type: ignore[arg-type]


def _natural(text: str, name: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        value = -1
    if value < 0:
        raise StanzaError("bad-request", f"RSM <{name}/> must be a whole number")
    return value


def parse_prefs(payload: etree._Element | None) -> Prefs:
    """A `<prefs/>` set (XEP-0441 §2.1); JIDs are normalised, duplicates dropped."""
    assert payload is not None
    default = payload.get("default")
    if default not in POLICIES:
        raise StanzaError("bad-request", "default must be always, roster or never")
    lists: dict[str, tuple[str, ...]] = {}
    for name in ("always", "never"):
        jids: dict[str, None] = {}
        for container in payload.iterchildren(f"{{{NS}}}{name}"):
            for node in container.iterchildren(f"{{{NS}}}jid"):
                try:
                    jids[str(parse_jid((node.text or "").strip()))] = None
                except InvalidJID:
                    raise StanzaError("jid-malformed", f"not a JID: {node.text!r}") from None
        lists[name] = tuple(jids)
    return Prefs(default, lists["always"], lists["never"])


def _prefs_reply(request: Stanza, prefs: Prefs) -> Stanza:
    reply = request.reply()
    node = element(f"{{{NS}}}prefs", {"default": prefs.default}, parent=reply.element)
    for name, jids in (("always", prefs.always), ("never", prefs.never)):
        container = element(f"{{{NS}}}{name}", parent=node)  # present even when empty (§2.1)
        for jid in jids:
            element(f"{{{NS}}}jid", parent=container).text = jid
    return reply
