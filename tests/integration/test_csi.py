"""XEP-0352 client state indication with real clients over TLS, on both storage backends: an
inactive client gets its contact's newest presence and chat state only, just before the message
that follows them; once active again, presence reaches it at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from storage import Storage
from storage.model import RosterItem
from tests.integration.conftest import TIMEOUT, Client, XmppServer, running_server
from tests.integration.inbox import Inbox
from xmppd.config import DEFAULT_MODULES

pytestmark = pytest.mark.integration

ALICE = "alice@localhost"
BOB = "bob@example.test"
CHATSTATES = "http://jabber.org/protocol/chatstates"


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    # (Until csi is among the default modules, it is named here.)
    modules = ", ".join(f'"{name}"' for name in dict.fromkeys((*DEFAULT_MODULES, "csi")))
    async with running_server(storage, tmp_path, server_extra=f"modules = [{modules}]") as running:
        yield running


async def settled(client: Client) -> None:
    """Everything `client` sent before was handled: the server reads one stream in order."""
    await client.plugin["xep_0030"].get_info(jid="localhost", timeout=TIMEOUT)


def what(stanza: Any) -> str:
    """A presence's show, a message's body or else its chat state."""
    if stanza.name == "presence":
        return str(stanza["show"] or stanza["type"])
    if stanza["body"]:
        return str(stanza["body"])
    return next((child.tag.removeprefix(f"{{{CHATSTATES}}}") for child in stanza.xml if CHATSTATES in child.tag), "")


async def test_an_inactive_client_gets_the_newest_presence_and_chat_state_before_a_message(xmpp: XmppServer) -> None:
    for user, contact in ((ALICE, BOB), (BOB, ALICE)):
        local, domain = user.split("@")
        await xmpp.account(user)
        await xmpp.server.storage.rosters.put(domain, local, RosterItem(jid=contact, subscription="both"))
    bob = await xmpp.login(BOB)
    alice = await xmpp.login(ALICE, plugins=("xep_0030", "xep_0352"))
    await alice.next_presence(lambda p: p["from"] == bob.boundjid.full)  # his, when she came online
    assert alice.plugin["xep_0352"].enabled  # the server offered <csi/> (§4.1)
    from_bob = Inbox(alice, ("message", "presence"), lambda s: s["from"] == bob.boundjid.full)

    alice.plugin["xep_0352"].send_inactive()
    await settled(alice)
    bob.send_presence(pshow="away")
    bob.send_presence(pshow="xa")
    state = bob.make_message(mto=ALICE, mtype="chat")
    state.xml.append(state.xml.makeelement(f"{{{CHATSTATES}}}composing", {}))
    state.send()
    bob.send_message(mto=ALICE, mbody="wake up", mtype="chat")

    arrived = await from_bob.until(lambda s: s.name == "message" and s["body"] == "wake up", lambda s: True)
    assert [(s.name, what(s)) for s in arrived] == [
        ("presence", "xa"), ("message", "composing"), ("message", "wake up"),
    ]

    alice.plugin["xep_0352"].send_active()
    await settled(alice)
    bob.send_presence(pshow="dnd")
    assert what(await from_bob.take(lambda s: s.name == "presence")) == "dnd"
    assert from_bob.pending(lambda s: True) == []  # "away" never came
