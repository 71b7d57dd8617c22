"""XEP-0357 push end to end: a phone enables push with slixmpp over TLS, then an app server (a
component of this server, tests/fixtures/push_app_server.py) is notified when a message waits for
the phone: kept for its stream-managed session after the connection dropped, or stored offline
once it logged out; on both storage backends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from slixmpp.xmlstream import ET

from storage import Storage
from tests.fixtures.push_app_server import AppServer, app_server
from tests.integration.conftest import TIMEOUT, Client, XmppServer, running_server
from xmppd.config import DEFAULT_MODULES
from xmppd.jid import parse_jid

pytestmark = pytest.mark.integration

ALICE = "alice@localhost"
BOB = "bob@localhost"
APP = "push.localhost"
FIXTURE = "tests.fixtures.push_app_server"
COMPONENTS = f"""
[components."{APP}"]
modules = ["{FIXTURE}"]
[modules.push]
min_interval = 0.0
"""


@pytest.fixture
async def xmpp(storage: Storage, tmp_path: Path) -> AsyncIterator[XmppServer]:
    modules = ", ".join(f'"{name}"' for name in DEFAULT_MODULES)
    async with running_server(storage, tmp_path, COMPONENTS, server_extra=f"modules = [{modules}]") as running:
        for jid in (ALICE, BOB):
            await running.account(jid)
        yield running


def app(xmpp: XmppServer) -> AppServer:
    return app_server(xmpp.server.hosts[APP].modules[FIXTURE])


async def phone_with_push(xmpp: XmppServer) -> Client:
    phone = xmpp.client(ALICE, plugins=("xep_0198",))
    enabled = phone.wait_for("sm_enabled")
    phone.connect("127.0.0.1", xmpp.port)
    await asyncio.wait_for(enabled, TIMEOUT)
    iq = phone.make_iq_set()
    iq.append(ET.fromstring(f"<enable xmlns='urn:xmpp:push:0' jid='{APP}' node='phone-token'/>"))
    await iq.send(timeout=TIMEOUT)
    return phone


async def test_a_hibernating_phone_and_an_offline_account_are_woken(xmpp: XmppServer) -> None:
    phone = await phone_with_push(xmpp)
    bob = await xmpp.login(BOB)
    full = phone.boundjid.full
    session = xmpp.server.sessions.get(parse_jid(full))
    assert session is not None
    gone = phone.wait_for("disconnected")
    session.abort()  # the phone's network died: the session hibernates
    await asyncio.wait_for(gone, TIMEOUT)

    bob.send_message(mto=full, mbody="wake up", mtype="chat")
    published = await app(xmpp).next(TIMEOUT)
    assert published.node == "phone-token" and published.sender == ALICE
    assert published.summary is not None
    assert published.summary["FORM_TYPE"] == ["urn:xmpp:push:summary"]
    assert published.summary["message-count"] == ["1"]
    assert "last-message-body" not in published.summary  # no body unless the admin allows it

    await xmpp.server.session_ended(session, "not resumed in time")  # the message goes offline
    phone.abort()
    bob.send_message(mto=ALICE, mbody="still there?", mtype="chat")
    published = await app(xmpp).next(TIMEOUT)
    assert published.node == "phone-token" and published.summary is not None
    assert published.summary["last-message-sender"] == [str(bob.boundjid.full)]
