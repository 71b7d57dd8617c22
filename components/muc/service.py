"""The room service of one component domain: its rooms, their persistence, who may create one,
and the two ways out (one stanza, or one stanza to many occupants).

Rooms live in memory while the service runs. A persistent room (`muc#roomconfig_persistentroom`)
is also a JSON document in the `muc_rooms` map store (storage/shapes.py MAP), written whenever
its configuration, affiliations, reserved nicks or subject change, and loaded when the service
starts: so it survives a restart, with its owners, members and bans. A temporary room exists
only while someone is in it (§10.1: it is destroyed when the last occupant leaves).
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from lxml import etree

from components.muc.config import ConfigLimits, RoomConfig, from_json, to_json
from components.muc.history import parse_history_request
from components.muc.room import Room
from storage import StorageError
from storage.shapes import MAP
from xmppd.archiving import archiving
from xmppd.elements import element
from xmppd.jid import JID, InvalidJID, parse_jid
from xmppd.module import ModuleAPI, Stanza
from xmppd.router import Template

ROOMS_STORE = "muc_rooms"
SUBJECT = "{jabber:client}subject"
HISTORY = "{http://jabber.org/protocol/muc}history"
# History entries are the room's own serialisations; still, nothing read is ever resolved.
_KEPT = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


class MucService:
    def __init__(self, mod: ModuleAPI) -> None:
        self.mod = mod
        self.domain = mod.host.name
        self.jid = mod.host.jid
        self.store = mod.open_store(ROOMS_STORE, MAP)
        options = mod.options
        self.create_policy: str = options["create_rooms"]
        self.admins = frozenset(_jids(options["admins"]))
        self.limits = ConfigLimits(max_users=options["max_users"], max_history=options["max_history"])
        self.default_config = RoomConfig(
            max_users=min(options["default_max_users"], options["max_users"]),
            history_length=min(RoomConfig().history_length, options["max_history"]),
        )
        self.rooms: dict[str, Room] = {}

    async def load(self) -> None:
        """Bring back the persistent rooms (at start)."""
        for name, document in (await self.store.all(self.domain)).items():
            if isinstance(document, dict):
                self.rooms[name] = self._from_document(name, document)

    # -- rooms --------------------------------------------------------------------------
    def room(self, jid: JID) -> Room | None:
        return self.rooms.get(jid.local or "")

    def visible_room(self, jid: JID, account: JID) -> Room | None:
        """The room as `account` may see it: a locked room exists only for its owners until it
        is configured (§7.2 Locked Room: "before the room officially exists"; §17.2 rule 3)."""
        room = self.room(jid)
        if room is None or (room.locked and self.affiliation(room, account) != "owner"):
            return None
        return room

    def may_create(self, account: JID) -> bool:
        """`create_rooms`: anyone, users of this server's hosts (local), or service admins."""
        if self.is_admin(account) or self.create_policy == "anyone":
            return True
        return self.create_policy == "local" and self.mod.is_user_host(account.domain)

    def affiliation(self, room: Room, account: JID) -> str:
        """The account's affiliation with the room, service admins being owners everywhere."""
        return room.affiliation(account)

    def is_admin(self, account: JID) -> bool:
        """Service admins (`admins`) own every room (§5.2: 'may also be a service admin')."""
        return account.bare in self.admins

    def create(self, jid: JID, owner: JID) -> Room:
        """A new room owned by `owner`, locked until configured (§10.1.1)."""
        room = Room(jid.bare, self.default_config, salt=secrets.token_hex(16), history_cap=self.limits.max_history,
                    admins=self.admins)
        room.set_affiliation(owner, "owner")
        room.locked = True
        self.rooms[jid.local or ""] = room
        return room

    async def save(self, room: Room) -> None:
        """Write a persistent room down (a room that stopped being persistent is deleted)."""
        key = room.jid.local or ""
        if room.config.persistent:
            await self.store.set(self.domain, key, self._document(room))
        else:
            await self.store.set(self.domain, key, None)

    async def forget(self, room: Room) -> None:
        """The room is gone: destroyed, or temporary and empty; and its archive with it."""
        key = room.jid.local or ""
        if self.rooms.get(key) is room:
            del self.rooms[key]
        await self.store.set(self.domain, key, None)
        # The archive is keyed by the room's address alone (xmppd/archiving.py), and the name can
        # be taken again by anyone: a new room under it would otherwise show this one's messages
        # to people who were never in it. Deleted whether or not the room archived: it may have
        # done so before archiving was turned off.
        try:
            await archiving(self.mod).store.delete_archive(self.domain, key)
        except StorageError as exc:
            # The room is gone either way; what is left can only be read through a room of that
            # name, so the operator is told.
            self.mod.log.error("deleting the archive of room %s failed: %s", room.jid, exc)

    async def left(self, room: Room) -> None:
        """Someone left: a temporary room goes with its last occupant (§10.1)."""
        if room.empty and not room.config.persistent:
            await self.forget(room)

    # -- sending ------------------------------------------------------------------------
    async def send(self, stanza: Stanza) -> None:
        await self.mod.send(stanza)

    async def send_copies(
        self, stanza: Stanza, recipients: Sequence[JID], serialised: Template | None = None
    ) -> None:
        """One stanza (with `from`, without `to`) to many: serialised once (router.deliver_copies)."""
        if recipients:
            await self.mod.send_copies(stanza, recipients, serialised)

    async def send_subject(self, room: Room, to: JID) -> None:
        """§7.2.15: the subject, sent last to whoever enters (empty when there is none), from
        the occupant who set it or from the room."""
        from_ = room.occupant_jid(room.subject_by) if room.subject_by else room.jid
        stanza = Stanza.build("message", to=None, from_=from_, type_="groupchat")
        element(SUBJECT, parent=stanza.element).text = room.subject
        await self.send_copies(stanza, [to])

    async def send_history(self, room: Room, to: JID, join: etree._Element | None) -> None:
        """§7.2.14: the discussion history the entering session asked for (`<history/>` of its
        join presence), oldest first, each with its delay stamp."""
        request = parse_history_request(join.find(HISTORY) if join is not None else None)
        # `to`: maxchars counts the complete stanzas as sent, their `to` included (§7.2.15).
        for entry in room.history.select(request, self.mod.time(), to=to):
            # Kept as bytes (memory); a join is rare next to the messages, so it is read back.
            kept = etree.fromstring(entry.template.head + entry.template.tail, _KEPT)
            await self.send_copies(Stanza.parse(kept), [to])

    # -- persistence --------------------------------------------------------------------
    @staticmethod
    def _document(room: Room) -> dict[str, Any]:
        return {
            "config": to_json(room.config),
            "salt": room.salt,
            "affiliations": {str(jid): value for jid, value in room.affiliations.items()},
            "reasons": {str(jid): value for jid, value in room.reasons.items()},
            "nicks": {str(jid): nick for jid, nick in room.nicks.items()},
            "subject": room.subject,
            "subject_by": room.subject_by,
            "locked": room.locked,
        }

    def _from_document(self, name: str, document: dict[str, Any]) -> Room:
        config_data = document.get("config")
        config = from_json(config_data if isinstance(config_data, dict) else {})
        salt = document.get("salt")
        room = Room(
            parse_jid(f"{name}@{self.domain}"),
            config,
            salt=salt if isinstance(salt, str) and salt else secrets.token_hex(16),
            history_cap=self.limits.max_history,
            admins=self.admins,
        )
        for key, attribute in (("affiliations", room.affiliations), ("reasons", room.reasons), ("nicks", room.nicks)):
            entries = document.get(key)
            if isinstance(entries, dict):
                for jid, value in _jid_pairs(entries):
                    attribute[jid] = value
        subject = document.get("subject")
        room.subject = subject if isinstance(subject, str) else ""
        by = document.get("subject_by")
        room.subject_by = by if isinstance(by, str) else None
        room.locked = document.get("locked") is True
        room.history_in_archive = True
        return room


def _jids(values: Sequence[str]) -> list[JID]:
    return [parse_jid(value).bare for value in values]


def _jid_pairs(entries: dict[str, Any]) -> list[tuple[JID, str]]:
    """Stored (JID, text) pairs; entries that no longer parse are skipped, not fatal."""
    pairs = []
    for text, value in entries.items():
        if not isinstance(value, str):
            continue
        try:
            pairs.append((parse_jid(text).bare, value))
        except InvalidJID:
            continue
    return pairs
