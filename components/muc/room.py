"""A room as data (XEP-0045): configuration, affiliations, reserved nicks, occupants and their
roles, and the decisions that follow from them. No I/O: the service (service.py) loads and saves
rooms and does the sending.

Occupants. One occupant per nick, and one account (bare JID) behind it, joined from one or more
devices: a second device of the same account joining under the same nick becomes another
session of that occupant (multi-session nick, as Conversations and Gajim do with several
devices), so the room shows one participant, and what is sent to the occupant goes to each of
its sessions. `by_session` finds the occupant of a real full JID.

Recipients. `recipients()` is the list of every session's full JID, kept up to date as sessions
join and leave rather than rebuilt for each message, because each groupchat message is fanned
out to it (see messages.py).

Affiliations are long-lived (persisted), roles last as long as a visit (§5): the role a
participant gets when joining follows from its affiliation and the room's configuration
(`default_role`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass, field

from lxml import etree

from components.muc.config import RoomConfig
from components.muc.history import History
from xmppd.elements import kept
from xmppd.jid import JID, InvalidJID
from xmppd.router import Template
from xmppd.stanza import Stanza

AFFILIATIONS = ("owner", "admin", "member", "none", "outcast")
ROLES = ("moderator", "participant", "visitor", "none")
# §5.2: owners outrank admins outrank members outrank the rest.
AFFILIATION_RANK = {"owner": 4, "admin": 3, "member": 2, "none": 1, "outcast": 0}
ROLE_RANK = {"moderator": 3, "participant": 2, "visitor": 1, "none": 0}


@dataclass(slots=True, eq=False)
class Occupant:
    """A nick in the room: one account, one or more of its sessions."""

    nick: str
    jid: JID  # the real bare JID
    role: str
    id: str  # XEP-0421 occupant id: stable for this account in this room, opaque
    # Real full JID -> the presence it last sent to the room (its show/status/caps are what
    # others see), in joining order.
    sessions: dict[JID, etree._Element] = field(default_factory=dict)
    # The session whose presence others see (the latest to send one).
    latest: JID | None = None
    # Bumped whenever its sessions or their presence change: what `shown` is checked against.
    version: int = 0
    # Its presence as the room last built it, with and without the real JID (presence.py):
    # each newcomer gets it, so it is built and serialised once per change, not once per join.
    shown: dict[bool, tuple[tuple[object, ...], Stanza, Template]] = field(default_factory=dict)

    @property
    def presence(self) -> etree._Element | None:
        return self.sessions.get(self.latest) if self.latest is not None else None


class Room:
    def __init__(
        self, jid: JID, config: RoomConfig, *, salt: str, history_cap: int | None = None,
        admins: frozenset[JID] = frozenset(),
    ) -> None:
        self.jid = jid  # bare room JID
        self.config = config
        # The service's admins: owners of every room (§5.2), whatever the room's own list says.
        self.admins = admins
        self.salt = salt  # the secret occupant ids are derived from (XEP-0421 §4)
        self.affiliations: dict[JID, str] = {}  # bare JID -> owner | admin | member | outcast
        self.nicks: dict[JID, str] = {}  # bare JID -> reserved nick (§7.10)
        self.reasons: dict[JID, str] = {}  # bare JID -> why it was given its affiliation
        self.occupants: dict[str, Occupant] = {}  # nick -> occupant
        self.by_session: dict[JID, Occupant] = {}  # real full JID -> occupant
        self.subject = ""
        self.subject_by: str | None = None  # nick of who set it (None: the room)
        self.locked = False  # §10.1: a new room stays locked until its owner configures it
        # A room brought back from storage has its recent history in its archive, not in memory:
        # the first to enter reads it back (archive.restore_history).
        self.history_in_archive = False
        self.history = History(min(config.history_length, history_cap or config.history_length))
        self._recipients: list[JID] | None = None

    # -- affiliations and roles ---------------------------------------------------------
    def affiliation(self, account: JID) -> str:
        bare = account.bare
        return "owner" if bare in self.admins else self.affiliations.get(bare, "none")

    def set_affiliation(self, account: JID, affiliation: str, reason: str = "") -> None:
        account = account.bare
        if affiliation == "none":
            self.affiliations.pop(account, None)
            self.reasons.pop(account, None)
        else:
            self.affiliations[account] = affiliation
            if reason:
                self.reasons[account] = reason
            else:
                self.reasons.pop(account, None)

    def with_affiliation(self, affiliation: str) -> list[JID]:
        return [jid for jid, value in self.affiliations.items() if value == affiliation]

    def default_role(self, affiliation: str) -> str:
        """§5.1.2: the role an affiliation gives on entering."""
        if affiliation in ("owner", "admin"):
            return "moderator"
        if affiliation == "outcast":
            return "none"
        if self.config.moderated and affiliation != "member":
            return "visitor"
        return "participant"

    def sees_real_jids(self, occupant: Occupant) -> bool:
        """§7.2.3/§7.2.4: in a non-anonymous room everyone sees real JIDs, in a semi-anonymous
        one only moderators."""
        return self.config.whois == "anyone" or occupant.role == "moderator"

    # -- occupants ----------------------------------------------------------------------
    def occupant_jid(self, nick: str) -> JID:
        return self.jid.with_resource(nick)

    def prepared_nick(self, nick: str) -> str | None:
        """A nick as entering prepares it (an RFC 7622 resourcepart), None when it cannot be one."""
        try:
            return self.occupant_jid(nick).resource
        except InvalidJID:
            return None

    def occupant_id(self, account: JID) -> str:
        """XEP-0421 §4: the same for one account in this room across visits, and not revealing
        the account: a keyed hash of the bare JID."""
        digest = hmac.new(self.salt.encode(), str(account.bare).encode(), hashlib.sha256).digest()
        return base64.b64encode(digest[:18]).decode()

    def add_session(self, occupant: Occupant, session: JID, presence: etree._Element) -> None:
        if occupant.nick not in self.occupants:
            self.occupants[occupant.nick] = occupant
        occupant.sessions[session] = kept(presence)
        occupant.latest = session
        occupant.version += 1
        self.by_session[session] = occupant
        self._recipients = None

    def remove_session(self, session: JID) -> Occupant | None:
        """Take one session out; the occupant goes when its last session does."""
        occupant = self.by_session.pop(session, None)
        if occupant is None:
            return None
        occupant.sessions.pop(session, None)
        occupant.version += 1
        if occupant.latest == session:
            occupant.latest = next(reversed(occupant.sessions), None) if occupant.sessions else None
        if not occupant.sessions:
            self.occupants.pop(occupant.nick, None)
        self._recipients = None
        return occupant

    def remove_occupant(self, occupant: Occupant) -> None:
        for session in list(occupant.sessions):
            self.remove_session(session)

    def rename(self, occupant: Occupant, nick: str) -> None:
        del self.occupants[occupant.nick]
        occupant.nick = nick
        self.occupants[nick] = occupant

    def occupants_of(self, account: JID) -> list[Occupant]:
        account = account.bare
        return [occupant for occupant in self.occupants.values() if occupant.jid == account]

    def recipients(self) -> list[JID]:
        """The full JID of every session of every occupant (shared: do not change it)."""
        if self._recipients is None:
            self._recipients = list(self.by_session)
        return self._recipients

    @property
    def empty(self) -> bool:
        return not self.occupants

    def nick_holder(self, nick: str) -> JID | None:
        """Who reserved a nick (§7.10), if anyone."""
        for account, reserved in self.nicks.items():
            if reserved == nick:
                return account
        return None

    # -- subject ------------------------------------------------------------------------
    def may_change_subject(self, occupant: Occupant) -> bool:
        """§8.1: moderators may; participants too when the room allows it; visitors never."""
        if occupant.role == "moderator":
            return True
        return self.config.change_subject and occupant.role == "participant"
