"""ModuleAPI (xmppd/module.py): what a module registers is undone by `unload()`, objects shared
across hosts, stores by shape, which domains are local, sending as the server or as a session,
the injected clock, and background work with and without `forever`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from lxml import etree

import storage as storage_api
from storage.shapes import KEY_VALUE, MAP
from xmppd import events
from xmppd.config import ComponentConfig, load_config
from xmppd.elements import element
from xmppd.host import Host, Identity, Item
from xmppd.jid import parse_jid
from xmppd.module import ModuleAPI
from xmppd.router import StanzaEvent
from xmppd.server import Server
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS, Stanza

from .harness import Harness, error_condition, iq_reply

ALICE = "alice@localhost"
BOB = "bob@example.test"
NS = "urn:example:module-api"
DISCO_INFO = "http://jabber.org/protocol/disco#info"


@pytest.fixture
async def h(tmp_path: Path) -> AsyncIterator[Harness]:
    async with Harness.start(tmp_path, hosts=("localhost", "example.test")) as harness:
        for account in (ALICE, BOB):
            await harness.account(account)
        yield harness


@pytest.fixture
def host(h: Harness) -> Host:
    return h.server.hosts["localhost"]


@pytest.fixture
async def mod(h: Harness, host: Host) -> AsyncIterator[ModuleAPI]:
    api = ModuleAPI("probe", host, h.server, {})
    yield api
    api.unload()  # idempotent: most tests unload it themselves


def disco_features(reply: etree._Element) -> set[str | None]:
    return {feature.get("var") for feature in reply.iter(f"{{{DISCO_INFO}}}feature")}


# -- unload undoes every registration ------------------------------------------------------------


async def test_hooks_are_removed_on_unload(host: Host, mod: ModuleAPI) -> None:
    seen: list[object] = []

    def handler(payload: object) -> bool:
        seen.append(payload)
        return True

    mod.on("probe-event", handler)
    mod.on_stream_element("urn:xmpp:sm:3", "r", handler)
    assert await host.hooks.fire("probe-event", "first")
    assert await host.hooks.fire(events.stream_element("urn:xmpp:sm:3", "r"), "element")
    assert seen == ["first", "element"]
    mod.unload()
    assert not await host.hooks.fire("probe-event", "second")
    assert not await host.hooks.fire(events.stream_element("urn:xmpp:sm:3", "r"), "element")
    assert seen == ["first", "element"]


async def test_unload_leaves_other_modules_handlers(h: Harness, host: Host, mod: ModuleAPI) -> None:
    other = ModuleAPI("other", host, h.server, {})
    calls: list[str] = []
    mod.on("probe-event", lambda _ev: calls.append("probe"))
    other.on("probe-event", lambda _ev: calls.append("other"))
    mod.unload()
    await host.hooks.fire("probe-event", None)
    assert calls == ["other"]
    other.unload()


async def test_on_iq_answers_until_unload(h: Harness, mod: ModuleAPI) -> None:
    def answer(ev: StanzaEvent) -> bool:
        ev.respond(ev.stanza.reply())
        return True

    mod.on_iq("get", NS, "query", answer, targets=("host", "self"))
    alice = await h.connect(f"{ALICE}/phone")
    await alice.send(f"<iq type='get' id='a' to='localhost'><query xmlns='{NS}'/></iq>")
    await alice.send(f"<iq type='get' id='b'><query xmlns='{NS}'/></iq>")
    assert [(r.get("id"), r.get("type")) for r in alice.take(iq_reply)] == [("a", "result"), ("b", "result")]
    mod.unload()
    await alice.send(f"<iq type='get' id='c' to='localhost'><query xmlns='{NS}'/></iq>")
    await alice.send(f"<iq type='get' id='d'><query xmlns='{NS}'/></iq>")
    replies = alice.take(iq_reply)
    assert [(r.get("id"), r.get("type"), error_condition(r)) for r in replies] == [
        ("c", "error", "service-unavailable"),
        ("d", "error", "service-unavailable"),
    ]


async def test_disco_registrations_are_removed_on_unload(h: Harness, host: Host, mod: ModuleAPI) -> None:
    form = element("{jabber:x:data}x", {"type": "result"})

    def feature(_session: Session | None) -> etree._Element:
        return element(f"{{{NS}}}feature")

    def pre_auth_feature(_session: Session | None) -> etree._Element:
        return element(f"{{{NS}}}register")

    before = {
        "features": list(host.features),
        "account_features": list(host.account_features),
        "identities": list(host.identities),
        "account_identities": list(host.account_identities),
        "items": list(host.items),
        "extensions": list(host.extensions),
        "stream_features": list(host.stream_features),
        "pre_auth_features": list(host.pre_auth_features),
    }
    mod.add_feature(NS)
    mod.add_account_feature(f"{NS}#account")
    mod.add_identity("automation", "probe", "Probe")
    mod.add_account_identity("pubsub", "probe")
    mod.add_item("probe.localhost", "Probe", "node")
    mod.add_extension(form)
    mod.add_stream_feature(feature)
    mod.add_stream_feature(pre_auth_feature, before_auth=True)

    assert NS in host.features
    assert f"{NS}#account" in host.account_features
    assert Identity("automation", "probe", "Probe") in host.identities
    assert Identity("pubsub", "probe") in host.account_identities
    assert Item("probe.localhost", "Probe", "node") in host.items
    assert any(extension is form for extension in host.extensions)
    assert feature in host.stream_features and feature not in host.pre_auth_features
    assert pre_auth_feature in host.pre_auth_features and pre_auth_feature not in host.stream_features
    alice = await h.connect(f"{ALICE}/phone")
    await alice.send(f"<iq type='get' id='i' to='localhost'><query xmlns='{DISCO_INFO}'/></iq>")
    (info,) = alice.take(iq_reply)
    assert NS in disco_features(info)

    mod.unload()
    after = {
        "features": host.features,
        "account_features": host.account_features,
        "identities": host.identities,
        "account_identities": host.account_identities,
        "items": host.items,
        "extensions": host.extensions,
        "stream_features": host.stream_features,
        "pre_auth_features": host.pre_auth_features,
    }
    assert after == before
    await alice.send(f"<iq type='get' id='j' to='localhost'><query xmlns='{DISCO_INFO}'/></iq>")
    (info,) = alice.take(iq_reply)
    assert info.get("type") == "result"
    assert NS not in disco_features(info)


async def test_a_feature_another_module_added_stays_after_unload(host: Host, mod: ModuleAPI) -> None:
    # disco#info is the disco module's (a core module): unloading another module leaves it.
    assert DISCO_INFO in host.features
    mod.add_feature(DISCO_INFO)
    mod.unload()
    assert DISCO_INFO in host.features


async def test_a_feature_two_modules_offer_stays_while_one_of_them_is_loaded(
    h: Harness, host: Host, mod: ModuleAPI
) -> None:
    other = ModuleAPI("other", host, h.server, {})
    mod.add_feature(NS)
    other.add_feature(NS)
    mod.unload()
    try:
        assert NS in host.features  # `other` still offers it
    finally:
        other.unload()
    assert NS not in host.features


async def test_call_later_runs_unless_unloaded(h: Harness, host: Host, mod: ModuleAPI) -> None:
    other = ModuleAPI("other", host, h.server, {})
    fired: list[str] = []
    ran = asyncio.Event()
    mod.call_later(0.01, lambda: fired.append("unloaded"))
    other.call_later(0.01, lambda: fired.append("kept"))
    mod.unload()
    # A timer due later than both: when it runs, both were due (timers run in deadline order).
    other.call_later(0.05, ran.set)
    await asyncio.wait_for(ran.wait(), 5)
    assert fired == ["kept"]
    other.unload()


async def test_spawned_task_is_cancelled_on_unload(mod: ModuleAPI) -> None:
    started = asyncio.Event()
    finished: list[str] = []

    async def work() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            finished.append("cleaned up")

    task = mod.spawn(work())
    await asyncio.wait_for(started.wait(), 5)
    mod.unload()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    assert task.cancelled()
    assert finished == ["cleaned up"]


async def test_a_finished_spawned_task_returns_its_result(mod: ModuleAPI) -> None:
    async def work() -> int:
        return 42

    assert await asyncio.wait_for(mod.spawn(work()), 5) == 42
    mod.unload()  # nothing left to cancel


async def test_drain_waits_for_spawned_work_but_not_for_forever_loops(h: Harness, mod: ModuleAPI) -> None:
    gate = asyncio.Event()

    async def once() -> str:
        await gate.wait()
        return "done"

    async def loop_forever() -> None:
        await asyncio.Event().wait()

    forever = mod.spawn(loop_forever(), forever=True)
    assert await h.server.background.drain(patience=5)  # nothing but the loop: quiet at once
    assert not forever.done()

    work = mod.spawn(once())
    assert not await h.server.background.drain(patience=0.05)  # the gate is shut: not quiet
    assert not work.done()
    gate.set()
    assert await h.server.background.drain(patience=5)
    assert work.result() == "done"
    assert not forever.done()
    mod.unload()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(forever, 5)


# -- shared objects ------------------------------------------------------------------------------


async def test_shared_is_one_object_per_server_and_name(h: Harness, tmp_path: Path) -> None:
    made: list[str] = []

    def make() -> dict[str, int]:
        made.append("made")
        return {}

    on_localhost = ModuleAPI("probe", h.server.hosts["localhost"], h.server, {})
    on_example = ModuleAPI("probe", h.server.hosts["example.test"], h.server, {})
    cache = on_localhost.shared("cache", make)
    assert on_example.shared("cache", make) is cache
    assert on_localhost.shared("cache", make) is cache
    assert made == ["made"]
    assert on_localhost.shared("other", make) is not cache
    # Another module's object of the same name is its own.
    assert ModuleAPI("other-module", h.server.hosts["localhost"], h.server, {}).shared("cache", make) is not cache
    assert len(made) == 3

    (tmp_path / "second").mkdir()
    async with Harness.start(tmp_path / "second", hosts=("localhost",)) as second:
        elsewhere = ModuleAPI("probe", second.server.hosts["localhost"], second.server, {})
        assert elsewhere.shared("cache", make) is not cache


# -- stores --------------------------------------------------------------------------------------


async def test_open_store_key_value(h: Harness, mod: ModuleAPI) -> None:
    kv = mod.open_store("probe-kv", KEY_VALUE)
    assert kv.name == "probe-kv"
    assert await kv.get("localhost", "alice", "settings") is None
    await kv.set("localhost", "alice", "settings", {"theme": "dark", "sizes": (1, 2)})
    await kv.set("localhost", "alice", "count", 3)
    assert await kv.get("localhost", "alice", "settings") == {"theme": "dark", "sizes": [1, 2]}
    assert await kv.all("localhost", "alice") == {"count": 3, "settings": {"theme": "dark", "sizes": [1, 2]}}
    # Per account, per name; the same store from another host's module.
    assert await kv.all("example.test", "bob") == {}
    assert await mod.open_store("probe-other", KEY_VALUE).all("localhost", "alice") == {}
    on_example = ModuleAPI("probe", h.server.hosts["example.test"], h.server, {})
    assert await on_example.open_store("probe-kv", KEY_VALUE).get("localhost", "alice", "count") == 3
    await kv.set("localhost", "alice", "count", None)
    assert await kv.all("localhost", "alice") == {"settings": {"theme": "dark", "sizes": [1, 2]}}


async def test_open_store_map(mod: ModuleAPI) -> None:
    rooms = mod.open_store("probe-map", MAP)
    assert rooms.name == "probe-map"
    await rooms.set("localhost", "lobby", {"persistent": True})
    await rooms.set("localhost", "attic", {"persistent": False})
    await rooms.set("example.test", "lobby", {"other": 1})
    assert await rooms.get("localhost", "lobby") == {"persistent": True}
    assert await rooms.keys("localhost") == ["attic", "lobby"]
    assert await rooms.all("example.test") == {"lobby": {"other": 1}}
    assert await mod.open_store("probe-map-2", MAP).keys("localhost") == []
    await rooms.set("localhost", "attic", None)
    assert await rooms.keys("localhost") == ["lobby"]
    assert await rooms.get("localhost", "attic") is None


# -- local domains -------------------------------------------------------------------------------


async def test_is_local_and_is_user_host(tmp_path: Path) -> None:
    # The harness has no component hosts: a server made from a config with one (not started: the
    # hosts are made by the constructor; a ModuleAPI needs the storage to be there).
    config = dataclasses.replace(
        load_config(None),
        hosts=("localhost", "example.test"),
        components=(ComponentConfig("conference.localhost", (), "localhost"),),
        data_dir=tmp_path,
    )
    storage = await storage_api.open_storage("sqlite", sqlite_path=str(tmp_path / "xmppd.sqlite3"))
    try:
        server = Server(config, storage=storage)
        api = ModuleAPI("probe", server.hosts["localhost"], server, {})
        for domain in ("localhost", "example.test", "conference.localhost"):
            assert api.is_local(domain)
        assert api.is_user_host("localhost") and api.is_user_host("example.test")
        assert not api.is_user_host("conference.localhost")
        for domain in ("elsewhere.example", "conference.example.test", ""):
            assert not api.is_local(domain)
            assert not api.is_user_host(domain)
    finally:
        await storage.close()


# -- sending -------------------------------------------------------------------------------------


async def test_send_as_a_session_runs_the_sender_hooks(h: Harness, host: Host, mod: ModuleAPI) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/desk")
    sender_side: list[str | None] = []

    def pre(ev: StanzaEvent) -> None:
        sender_side.append(ev.stanza.element.findtext(f"{{{CLIENT_NS}}}body"))

    host.hooks.on("pre-message/full", pre, 1000)

    def message(text: str) -> Stanza:
        stanza = Stanza.build("message", to=bob.jid, from_=alice.jid, type_="chat")
        element(f"{{{CLIENT_NS}}}body", parent=stanza.element).text = text
        return stanza

    await mod.send(message("as alice"), as_session=alice.session)
    await mod.send(message("as the server"))
    await h.settle()
    assert sender_side == ["as alice"]
    received = bob.take()
    assert [(m.get("from"), m.findtext(f"{{{CLIENT_NS}}}body")) for m in received] == [
        (f"{ALICE}/phone", "as alice"),
        (f"{ALICE}/phone", "as the server"),
    ]


async def test_a_sender_hook_can_stop_what_is_sent_as_a_session(h: Harness, host: Host, mod: ModuleAPI) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/desk")
    host.hooks.on("pre-message/full", lambda _ev: True, 1000)  # say, blocking
    stanza = Stanza.build("message", to=bob.jid, from_=alice.jid, type_="chat")
    await mod.send(stanza, as_session=alice.session)
    await h.settle()
    assert bob.take() == []
    await mod.send(Stanza.build("message", to=bob.jid, from_=parse_jid("localhost"), type_="chat"))
    (received,) = bob.take()
    assert received.get("from") == "localhost"


# -- time ----------------------------------------------------------------------------------------


async def test_time_and_now_follow_the_injected_clock(tmp_path: Path) -> None:
    now = [1_700_000_000.25]
    async with Harness.start(tmp_path, clock=lambda: now[0]) as h:
        api = ModuleAPI("probe", h.server.hosts["localhost"], h.server, {})
        assert api.time() == 1_700_000_000.25
        assert api.now() == datetime(2023, 11, 14, 22, 13, 20, 250000, tzinfo=UTC)
        now[0] += 3600.5
        assert api.time() == 1_700_003_600.75
        assert api.now() == datetime(2023, 11, 14, 23, 13, 20, 750000, tzinfo=UTC)
        assert api.now().tzinfo is UTC


async def test_end_session_ends_a_session_kept_detached(h: Harness, host: Host, mod: ModuleAPI) -> None:
    # A module that kept a session through a lost connection (session-detached) ends it when it
    # gives up on it: the session goes, and its contacts' modules hear session-ended.
    ended: list[str] = []
    host.hooks.on(events.SESSION_ENDED, lambda ev: ended.append(ev.reason))
    phone = await h.connect(f"{ALICE}/phone")
    phone.session.detach()  # as the server does when a module claims session-detached
    await mod.end_session(phone.session, "not resumed in time")
    assert ended == ["not resumed in time"]
    assert h.server.sessions.get(phone.jid) is None and phone.session.closed
    await mod.end_session(phone.session, "again")  # already gone: nothing happens twice
    assert ended == ["not resumed in time"]


async def test_respond_with_a_serialised_payload_to_the_sender_and_elsewhere(h: Harness, host: Host) -> None:
    alice = await h.connect(f"{ALICE}/phone")
    bob = await h.connect(f"{BOB}/pc")
    payload = f"<query xmlns='{NS}'><item n='1'/></query>".encode()
    asked = Stanza.build("iq", to=None, from_=alice.jid, type_="get", id_="q1")
    # To the session the request came from: written as bytes, never built as elements.
    StanzaEvent(asked, alice.session, host, h.server.router).respond_with(asked.reply(), payload)
    (answer,) = alice.take()
    assert (answer.get("type"), answer.get("id"), answer.get("to")) == ("result", "q1", str(alice.jid))
    assert [child.tag for child in answer.iter()] == [f"{{{CLIENT_NS}}}iq", f"{{{NS}}}query", f"{{{NS}}}item"]
    # Anywhere else (no origin session): parsed and routed like any answer.
    from_server = Stanza.build("iq", to=None, from_=bob.jid, type_="get", id_="q2")
    StanzaEvent(from_server, None, host, h.server.router).respond_with(from_server.reply(), payload)
    await h.settle()
    (routed,) = bob.take()
    assert routed.get("id") == "q2" and routed.find(f"{{{NS}}}query/{{{NS}}}item") is not None
