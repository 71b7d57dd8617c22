"""An in-memory server for module tests: XML in, XML out, no sockets, no sleeps.

    async with Harness.start(tmp_path, hosts=("localhost", "example.test")) as h:
        await h.account("alice@localhost")
        alice = await h.connect("alice@localhost/phone")
        await alice.send("<presence/>")
        assert alice.take(presence) == [...]

A real `Server` with a real SQLite storage in `tmp_path`: the modules are loaded on every host by
`Server.load_modules`, exactly as `start()` does, but no listener is opened. Clients are
sessions bound with `Server.bind` whose transport records every stanza written to them; `send`
feeds a stanza to `Router.process` as the stream driver would after binding, then waits until
the server's background work (answers sent from synchronous code, module tasks) is done, so a
test that checks that nothing arrived cannot pass only because it looked too early.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from lxml import etree

import storage as storage_api
from storage import Storage
from xmppd.config import ComponentConfig, load_config
from xmppd.errors import StreamError
from xmppd.jid import JID, parse_jid
from xmppd.module import load_module
from xmppd.server import Server
from xmppd.session import Session
from xmppd.stanza import CLIENT_NS

ROSTER_NS = "jabber:iq:roster"


class Recorder:
    """A session's transport (session.Sink) that keeps what is written, one entry per write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.error: StreamError | None = None

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self, error: StreamError | None = None) -> None:
        self.error = error
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def parse(xml: str) -> etree._Element:
    """A stanza in jabber:client, written without the namespace for brevity."""
    wrapper = etree.fromstring(f"<wrapper xmlns='{CLIENT_NS}'>{xml}</wrapper>")
    return wrapper[0]


_asked = itertools.count()  # ids of `Client.ask`


class Client:
    """One bound resource: feed it stanzas, read what the server wrote to it."""

    def __init__(self, harness: Harness, session: Session, output: Recorder) -> None:
        self.harness = harness
        self.session = session
        self.output = output

    @property
    def jid(self) -> JID:
        return self.session.jid

    async def send(self, xml: str) -> None:
        """As the stream driver would: the stanza to the router, counted as handled."""
        if await self.harness.server.router.process(self.session, parse(xml)):
            self.session.received += 1
        await self.harness.settle()

    async def ask(self, type_: str, payload: str, to: str | None = None) -> etree._Element:
        """Send an iq of `type_` with `payload` and return its answer, taken out; whatever else
        arrived stays to be taken."""
        id_ = f"ask{next(_asked)}"
        address = f" to='{to}'" if to else ""
        await self.send(f"<iq type='{type_}' id='{id_}'{address}>{payload}</iq>")
        answers = [data for data in self.output.writes if f'id="{id_}"'.encode() in data]
        assert len(answers) == 1, self.output.writes
        self.output.writes.remove(answers[0])
        return etree.fromstring(answers[0])

    def take(self, match: Callable[[etree._Element], bool] = lambda _e: True) -> list[etree._Element]:
        """The stanzas received since the last take that `match` accepts (all are consumed)."""
        received = [etree.fromstring(data) for data in self.output.writes]
        self.output.writes.clear()
        return [stanza for stanza in received if match(stanza)]

    async def disconnect(self) -> None:
        await self.harness.server.session_ended(self.session, "test disconnect")


class Harness:
    def __init__(self, server: Server, storage: Storage) -> None:
        self.server = server
        self.storage = storage

    @classmethod
    @asynccontextmanager
    async def start(
        cls,
        tmp_path: Path,
        hosts: tuple[str, ...] = ("localhost",),
        modules: tuple[str, ...] = (),
        options: Mapping[str, Mapping[str, Any]] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        components: Mapping[str, tuple[str, ...]] | None = None,
    ) -> AsyncIterator[Harness]:
        """The core modules, plus `modules` with their declared defaults overridden by `options`;
        `components` maps a component domain to its modules (its parent: the first host)."""
        config = dataclasses.replace(
            load_config(None), hosts=hosts, modules=modules, data_dir=tmp_path,
            components=tuple(ComponentConfig(domain, names, hosts[0]) for domain, names in (components or {}).items()),
        )
        module_options = {
            name: {
                **{key: option.default for key, option in getattr(load_module(name), "OPTIONS", {}).items()},
                **(options or {}).get(name, {}),
            }
            for name in config.all_modules
        }
        config = dataclasses.replace(config, module_options=module_options)
        storage = await storage_api.open_storage("sqlite", sqlite_path=str(tmp_path / "xmppd.sqlite3"))
        try:
            await storage.migrate()
            server = Server(config, storage=storage, clock=clock)
            for host in server.hosts.values():
                await server.load_modules(host)
            try:
                yield cls(server, storage)
            finally:
                for host in server.hosts.values():
                    for module in host.modules.values():
                        module.unload()
        finally:
            await storage.close()

    async def settle(self) -> None:
        """Wait until the server's background work is done (it may start more as it goes)."""
        assert await self.server.background.drain(patience=10)

    async def account(self, jid: str) -> JID:
        account = parse_jid(jid)
        assert account.local is not None
        assert await self.storage.accounts.create(account.domain, account.local, [])
        return account

    async def connect(self, jid: str) -> Client:
        output = Recorder()
        session = await self.server.bind(parse_jid(jid), output, "127.0.0.1")
        return Client(self, session, output)


# -- matching what clients receive ----------------------------------------------------------------


def presence(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}presence"


def roster_push(stanza: etree._Element) -> bool:
    return (
        stanza.tag == f"{{{CLIENT_NS}}}iq"
        and stanza.get("type") == "set"
        and stanza.find(f"{{{ROSTER_NS}}}query") is not None
    )


def iq_reply(stanza: etree._Element) -> bool:
    return stanza.tag == f"{{{CLIENT_NS}}}iq" and stanza.get("type") in ("result", "error")


def summary(stanza: etree._Element) -> tuple[str | None, str | None, str | None]:
    """(type, from, to) of a presence, the usual thing to compare."""
    return stanza.get("type"), stanza.get("from"), stanza.get("to")


def pushed_items(stanza: etree._Element) -> list[dict[str, str]]:
    """The items of a roster push or result as attribute dicts (groups under 'groups')."""
    query = stanza.find(f"{{{ROSTER_NS}}}query")
    assert query is not None
    items: list[dict[str, str]] = []
    for item in query.findall(f"{{{ROSTER_NS}}}item"):
        attributes = {str(key): str(value) for key, value in item.attrib.items()}
        groups = [group.text or "" for group in item.findall(f"{{{ROSTER_NS}}}group")]
        if groups:
            attributes["groups"] = ",".join(groups)
        items.append(attributes)
    return items


def error_condition(stanza: etree._Element) -> str | None:
    error = stanza.find(f"{{{CLIENT_NS}}}error")
    if error is None or len(error) == 0:
        return None
    return etree.QName(error[0]).localname


def count_calls(owner: type, name: str, counted: Callable[..., bool], monkeypatch: Any) -> list[tuple[Any, ...]]:
    """Wrap the async method `name` of `owner` (a storage class): the list returned fills with the
    arguments of each call `counted` accepts, to show what reached the database."""
    calls: list[tuple[Any, ...]] = []
    original = getattr(owner, name)

    async def counting(self: Any, *args: Any, **kw: Any) -> Any:
        if counted(*args, **kw):
            calls.append(args)
        return await original(self, *args, **kw)

    monkeypatch.setattr(owner, name, counting)
    return calls
