"""What the MUC module tests (test_muc*.py) share: the room service in the in-memory server and
its accounts, the room they meet in, entering and creating it, requests to it, and reading what
it sends. A plain module, imported by name; the `h` fixture comes with `room_service`:

    from .muc_helpers import room_service  # noqa: F401  (the fixture h)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from lxml import etree

from xmppd.stanza import CLIENT_NS

from .harness import Client, Harness, error_condition, iq_reply, presence

SERVICE = "conference.localhost"
ROOM = f"lobby@{SERVICE}"
SERVICE_ADMIN = "root@localhost"
ACCOUNTS = ("alice", "bob", "carol", "dave", "root")

MUC = "http://jabber.org/protocol/muc"
USER = "http://jabber.org/protocol/muc#user"
ADMIN = "http://jabber.org/protocol/muc#admin"
OWNER = "http://jabber.org/protocol/muc#owner"
DATA = "jabber:x:data"
INFO = "http://jabber.org/protocol/disco#info"

# Room configuration fields (§10.2).
ROOMNAME = "muc#roomconfig_roomname"
MEMBERS_ONLY = "muc#roomconfig_membersonly"
MODERATED = "muc#roomconfig_moderatedroom"
PERSISTENT = "muc#roomconfig_persistentroom"
SECRET = "muc#roomconfig_roomsecret"
WHOIS = "muc#roomconfig_whois"


# -- the server -----------------------------------------------------------------------------------


@asynccontextmanager
async def start(tmp_path: Path, *, restart: bool = False, **options: object) -> AsyncIterator[Harness]:
    """The server with the room service at SERVICE, SERVICE_ADMIN its admin and `options` for
    components.muc; the ACCOUNTS are made unless this is a restart on the same data."""
    muc_options = {"admins": [SERVICE_ADMIN], **options}
    async with Harness.start(
        tmp_path, components={SERVICE: ("components.muc",)}, options={"components.muc": muc_options}
    ) as harness:
        for name in () if restart else ACCOUNTS:
            await harness.account(f"{name}@localhost")
        yield harness


@pytest.fixture(name="h")
async def room_service(tmp_path: Path) -> AsyncIterator[Harness]:
    """The fixture `h`: the server of `start`."""
    async with start(tmp_path) as harness:
        yield harness


# -- reading what clients receive -----------------------------------------------------------------


def message(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}message"


def unavailable(stanza: etree._Element) -> bool:
    return presence(stanza) and stanza.get("type") == "unavailable"


def codes(stanza: etree._Element) -> list[str]:
    """The muc#user status codes of a room's presence or message, in order (compare `set(codes(…))`
    where order and repetition do not matter)."""
    return [status.get("code", "") for status in stanza.iter(f"{{{USER}}}status")]


def item_element(stanza: etree._Element) -> etree._Element:
    """The muc#user `<item/>` of a room's presence or notice."""
    found = stanza.find(f"{{{USER}}}x/{{{USER}}}item")
    assert found is not None, etree.tostring(stanza)
    return found


def item(stanza: etree._Element) -> dict[str, str]:
    """The attributes of the muc#user `<item/>` (affiliation, role, jid, nick)."""
    return {str(key): str(value) for key, value in item_element(stanza).attrib.items()}


def form_values(stanza: etree._Element) -> dict[str, list[str]]:
    """The values of each data form field in `stanza`, by var (a list-single's options left out)."""
    return {
        node.get("var", ""): [value.text or "" for value in node.iterchildren(f"{{{DATA}}}value")]
        for node in stanza.iter(f"{{{DATA}}}field")
    }


def rejected(client: Client) -> str | None:
    """The error condition of the presence error the client got for its join."""
    (error,) = client.take(presence)
    assert error.get("type") == "error", etree.tostring(error)
    return error_condition(error)


def entered(client: Client) -> bool:
    """Whether the client's join was accepted (it got its self-presence)."""
    return any("110" in codes(p) and p.get("type") is None for p in client.take(presence))


# -- writing stanzas ------------------------------------------------------------------------------


def field(var: str, value: str) -> str:
    return f"<field var='{var}'><value>{value}</value></field>"


def data_form(fields: str = "", type_: str = "submit") -> str:
    """A jabber:x:data form of `type_` holding `fields` (see `field`)."""
    return f"<x xmlns='{DATA}' type='{type_}'>{fields}</x>"


def affiliate(**accounts: str) -> str:
    """muc#admin items giving each account (a local name) an affiliation: `affiliate(bob="member")`."""
    return "".join(f"<item jid='{name}@localhost' affiliation='{value}'/>" for name, value in accounts.items())


def join_xml(nick: str, extra: str = "", room: str = ROOM) -> str:
    """The presence that enters `room` as `nick`, with `extra` (history, password) in its `<x/>`."""
    return f"<presence to='{room}/{nick}'><x xmlns='{MUC}'>{extra}</x></presence>"


# -- entering the room ----------------------------------------------------------------------------


async def join(h: Harness, name: str, *, resource: str = "desk", nick: str | None = None, extra: str = "") -> Client:
    """`name`@localhost/`resource`, connected and asking to enter the room (as `name` unless `nick`);
    what it got back is left to take."""
    client = await h.connect(f"{name}@localhost/{resource}")
    await client.send(join_xml(nick or name, extra))
    return client


async def create_room(h: Harness, fields: str = "", *, owner: str = "alice") -> Client:
    """`owner` creates the room (its self-presence says so: 110 and 201) and configures it with
    `fields`, none making an instant room (§10.1.2); nothing left to take."""
    client = await join(h, owner)
    (self_presence,) = client.take(presence)
    assert {"110", "201"} <= set(codes(self_presence)), etree.tostring(self_presence)
    await configure(client, fields)
    client.take()
    return client


async def in_room(h: Harness, *names: str, fields: str = "") -> list[Client]:
    """The room created by the first of `names` (configured with `fields`), the others in it;
    nothing left to take."""
    clients = [await create_room(h, fields, owner=names[0])]
    for name in names[1:]:
        clients.append(await join(h, name))
    for client in clients:
        client.take()
    return clients


# -- iq requests ----------------------------------------------------------------------------------


def answer(client: Client) -> etree._Element:
    """The one iq answer the client got, taken out of what it received: the rest stays for `take`."""
    received = [etree.fromstring(data) for data in client.output.writes]
    answers = [index for index, stanza in enumerate(received) if iq_reply(stanza)]
    assert len(answers) == 1, [etree.tostring(stanza) for stanza in received]
    (index,) = answers
    del client.output.writes[index]
    return received[index]


async def iq(client: Client, type_: str, payload: str, to: str = ROOM) -> etree._Element:
    """The answer (see `answer`) to an iq of `type_` with `payload` sent to `to`."""
    await client.send(f"<iq type='{type_}' id='q' to='{to}'>{payload}</iq>")
    reply = answer(client)
    assert reply.get("id") == "q", etree.tostring(reply)
    return reply


async def query(client: Client, ns: str, payload: str = "", type_: str = "set", to: str = ROOM) -> etree._Element:
    """The answer to an iq with `payload` in a `<query/>` of `ns`."""
    return await iq(client, type_, f"<query xmlns='{ns}'>{payload}</query>", to)


async def admin(client: Client, items: str, type_: str = "set") -> etree._Element:
    """The answer to a muc#admin request to the room with `items` (see `affiliate`)."""
    return await query(client, ADMIN, items, type_)


def ok(reply: etree._Element) -> None:
    assert reply.get("type") == "result", etree.tostring(reply)


def refused(reply: etree._Element, condition: str) -> None:
    assert reply.get("type") == "error", etree.tostring(reply)
    assert error_condition(reply) == condition, etree.tostring(reply)


async def configure(client: Client, fields: str = "", to: str = ROOM) -> None:
    """The client (an owner) submits the configuration `fields` of room `to`, which accepts them."""
    ok(await query(client, OWNER, data_form(fields), to=to))
