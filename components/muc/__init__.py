"""Multi-User Chat (XEP-0045): a room service on a component domain.

    [components."conference.example.org"]
    modules = ["components.muc"]

The service sees the core only through stanzas and the module API (xmppd/module.py), so it can
later run out of process (XEP-0114) or on another node. Its parts, one concern per file:

    service.py    the rooms of the domain, persistence, who may create rooms, sending
    room.py       a room as data: configuration, affiliations, occupants, roles (no I/O)
    config.py     muc#roomconfig, muc#roominfo and muc#register forms (no I/O)
    history.py    discussion history (no I/O)
    presence.py   entering, presence updates, nick changes, leaving (§7.1-§7.7, §7.14)
    messages.py   groupchat fan-out, private messages, subject (§7.4, §7.5, §8.1)
    archive.py    the room archive: XEP-0313 on the room JID, XEP-0359 stanza ids
    admin.py      moderators and admins: kick, voice, ban, membership, the lists (§8, §9)
    owner.py      owners: creating and configuring rooms, owner/admin lists, destroying (§10)
    invites.py    mediated invitations and declines (§7.8)
    register.py   registering with a room, reserved nicks (§7.10, §7.12)
    disco.py      service discovery of the service and its rooms (§6), XEP-0307, XEP-0410

Each file with handlers has `install(mod, service)`; `setup` installs them in order.
"""

from __future__ import annotations

from components.muc import admin, archive, disco, invites, messages, owner, presence, register
from components.muc.service import MucService
from xmppd.module import ModuleAPI, Option

PROTOCOLS = [
    ("XEP-0045", "1.34.5"),
    ("XEP-0421", "0.2.0", "complete", "occupant ids in room presence and messages"),
    ("XEP-0313", "1.1.3", "complete", "room archives on the room JID"),
    ("XEP-0249", "1.2", "complete", "direct invitations pass between clients; mediated ones carry one too"),
    ("XEP-0307", "0.1", "complete", "unique room names"),
    ("XEP-0410", "1.1.0", "complete", "self-ping answered by the room"),
    ("XEP-0059", "1.0", "complete", "paging of the public room list"),
]
OPTIONS = {
    "name": Option("Chatrooms", "the service's name in service discovery"),
    "create_rooms": Option(
        "local", "who may create rooms: anyone, local (accounts of this server's hosts) or admins",
        choices=("anyone", "local", "admins"),
    ),
    "admins": Option([], "service admins (bare JIDs): they own every room and may always create rooms", kind=list),
    "default_max_users": Option(500, "most occupants of a new room (its owner may change it up to max_users)",
                                minimum=1),
    "max_users": Option(5000, "the highest occupant limit an owner may give a room", minimum=1),
    "max_history": Option(50, "the most messages of discussion history a room may keep", minimum=0),
    "max_archive_page": Option(100, "most messages one query of a room archive returns", minimum=1),
}


async def setup(mod: ModuleAPI) -> None:
    service = MucService(mod)
    await service.load()
    mod.add_identity("conference", "text", mod.options["name"])
    mod.add_feature(presence.MUC_NS)
    for feature in (presence, messages, archive, admin, owner, invites, register, disco):
        feature.install(mod, service)
