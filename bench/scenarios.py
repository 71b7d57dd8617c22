"""The benchmark scenarios. Each one logs its sessions in first (unmeasured), then measures a bounded
window, and returns an Outcome that loadgen.py turns into one JSON record.

Measured windows are marked with meter.begin()/meter.end(): that is when server, database and load
generator CPU are sampled, so the CPU figures cover exactly the traffic that the rates count.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import gc
import re
import ssl
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from lxml import etree

from bench import pep, wsframe
from bench import stream as xs
from bench.client import (
    PRESENCE,
    Account,
    LoginError,
    NotOffered,
    Session,
    Target,
    WebSocketProtocol,
    authenticate,
    client_ssl_context,
    close_websockets,
    connect,
    login,
    open_stream,
    starttls,
)
from bench.provision import roster_contacts, roster_range
from bench.scram import KeyCache
from bench.stats import summarize_us


@dataclass(frozen=True)
class Options:
    target: Target
    prefix: str = "u"
    password: str = "bench-pass"
    first: int = 1  # first account number used
    accounts: int = 1000  # account pool for logins (those with rosters)
    roster_pool: int = 2000  # accounts provisioned with rosters (whose contacts are in it too)
    linger: float = 1.0  # logins-pep: seconds a session stays online after its login
    count: int = 500
    concurrency: int = 20
    duration: float = 10.0
    warmup: float = 2.0
    rate: float = 0.0  # 0 = as fast as the window allows
    address: str = "full"  # 1:1 messages to the partner's full JID, or "bare" (as clients send them)
    window: int = 10  # messages in flight per sender in max mode
    pairs: int = 50
    body_size: int = 100
    occupants: int = 100
    senders: int = 5
    mam_fill: int = 500
    mam_page: int = 50
    settle: float = 3.0
    peer_port: int = 0
    resource: str = "bench"
    flood_seconds: float = 30.0  # flood: longest flood; it ends earlier when the server closes the flooder
    monitor_interval: float = 0.02  # flood: each monitor session sends one message every this many seconds
    # messages-ws: XMPP over WebSocket (RFC 7395) at {ws_scheme}://{domain}:{ws_port}{ws_path}; 0: none
    ws_port: int = 0
    ws_path: str = "/xmpp-websocket"
    ws_scheme: str = "wss"  # or "ws" (no TLS)
    roster_size: int = 20  # logins-roster: contacts in the roster of each account logging in
    backlog: int = 1000  # offline-login: messages queued for each account while it is offline
    rounds: int = 3  # offline-login: accounts (one after the other) that log in to their queue


def websocket_target(opt: Options) -> Target:
    """The target's WebSocket endpoint: wss:// is TLS from the first byte, as Direct TLS is."""
    return Target(
        **{
            **opt.target.__dict__,
            "port": opt.ws_port,
            "tls": "direct" if opt.ws_scheme == "wss" else "none",
            "transport": "websocket",
            "ws_path": opt.ws_path,
        }
    )


class Meter(Protocol):
    def begin(self) -> Awaitable[None]: ...
    def end(self) -> Awaitable[None]: ...
    def server_rss_kb(self) -> int: ...


@dataclass
class Outcome:
    counts: dict[str, float] = field(default_factory=dict)
    latencies_us: array[int] = field(default_factory=lambda: array("q"))
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    window_s: float = 0.0
    info: dict[str, object] = field(default_factory=dict)

    def error(self, exc: BaseException) -> None:
        self.error_count += 1
        if len(self.errors) < 5:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def add_errors(self, other: Outcome) -> None:
        self.error_count += other.error_count
        self.errors.extend(other.errors[: 5 - len(self.errors)])


@dataclass(frozen=True)
class Shard:
    index: int = 0
    total: int = 1

    def take(self, items: list[int]) -> list[int]:
        return items[self.index :: self.total]


Context = tuple[Options, KeyCache, ssl.SSLContext]


def jid(opt: Options, n: int, domain: str | None = None) -> str:
    return f"{opt.prefix}{n}@{domain or opt.target.domain}"


async def login_many(
    ctx: Context, numbers: list[int], out: Outcome, *, targets: list[Target] | None = None, **kw: Any
) -> dict[int, Session]:
    """Logs accounts in at the configured concurrency; failures are counted, not fatal."""
    opt, cache, ssl_ctx = ctx
    sem = asyncio.Semaphore(opt.concurrency)
    sessions: dict[int, Session] = {}

    async def one(i: int, n: int) -> None:
        target = targets[i % len(targets)] if targets else opt.target
        account = Account(f"{opt.prefix}{n}", opt.password, opt.resource)
        async with sem:
            for attempt in range(2):  # one retry: setup is not what is measured here
                if "not_offered" in out.info:  # a login found a feature missing: the others would too
                    return
                try:
                    sessions[n] = await login(target, account, cache, ssl_ctx, **kw)
                    return
                except NotOffered as exc:  # no retry: the server lacks the feature (noted, not an error)
                    out.info["not_offered"] = str(exc)
                    return
                except (OSError, LoginError, TimeoutError, xs.StreamError) as exc:
                    if attempt:
                        out.error(exc)

    async with asyncio.TaskGroup() as tg:
        for i, n in enumerate(numbers):
            tg.create_task(one(i, n))
    return sessions


async def advertises(session: Session, jid: str, feature: str) -> bool:
    """disco#info on jid (before the session switches to a byte sink): is feature listed?"""
    session.send(xs.iq("get", "disco", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to=jid))
    result = await session.wait_iq("disco")
    return any(f.get("var") == feature for f in result.iter("{http://jabber.org/protocol/disco#info}feature"))


def close_all(sessions: dict[int, Session]) -> None:
    for s in sessions.values():
        s.close()


class collector_paused:
    """Keeps the collector out of a measurement: the load generator's own GC pauses would otherwise
    show up as server latency."""

    def __enter__(self) -> None:
        gc.collect()
        gc.freeze()
        gc.disable()

    def __exit__(self, *exc: object) -> None:
        gc.enable()
        gc.unfreeze()


class measuring:
    """Marks the measured window (and pauses the collector during it)."""

    def __init__(self, meter: Meter, out: Outcome) -> None:
        self.meter, self.out = meter, out
        self.collector = collector_paused()

    async def __aenter__(self) -> None:
        self.collector.__enter__()
        await self.meter.begin()
        self.started = time.monotonic()

    async def __aexit__(self, *exc: object) -> None:
        self.out.window_s = time.monotonic() - self.started
        await self.meter.end()
        self.collector.__exit__()


# --- 1. logins -------------------------------------------------------------------------------------


async def run_logins(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    out = Outcome()
    totals = await _measured_logins(ctx, meter, shard, out)
    out.info["roster_items"] = totals["roster_items"] / max(1, len(out.latencies_us))
    return out


async def _measured_logins(
    ctx: Context, meter: Meter, shard: Shard, out: Outcome, linger: float = 0.0, **kw: Any
) -> Counter[str]:
    """`count` logins cycling over the pool at `concurrency`, with `login`'s keywords, each session
    staying `linger` seconds; returns the sum of each figure the sessions noted (session.stats)
    but their login time. The window ends with the last login, before the last sessions leave."""
    opt, cache, _ = ctx
    misses_before = cache.misses
    logins = TimedLogins(ctx, out, linger, kw)
    async with measuring(meter, out):
        await logins.run(_login_numbers(opt, shard))
    await logins.closed()
    out.counts["logins"] = len(out.latencies_us)
    # Should stay 0: provisioning (or `prime`) puts every account's keys in the cache beforehand.
    out.counts["client_pbkdf2"] = cache.misses - misses_before
    return logins.totals


def _login_numbers(opt: Options, shard: Shard) -> list[int]:
    pool = list(range(opt.first, opt.first + opt.accounts))
    return shard.take([pool[i % len(pool)] for i in range(opt.count)])


class TimedLogins:
    """Logins at the configured concurrency, each timed; each session then stays online `linger`
    seconds (handing what it receives to its on_stanza) without holding up the next login."""

    def __init__(self, ctx: Context, out: Outcome, linger: float, login_kw: dict[str, Any]) -> None:
        self.ctx, self.out, self.linger, self.login_kw = ctx, out, linger, login_kw
        self.totals: Counter[str] = Counter()
        self.staying: set[asyncio.Task[None]] = set()

    async def run(self, numbers: list[int]) -> None:
        queue = iter(numbers)
        async with asyncio.TaskGroup() as tg:
            for _ in range(self.ctx[0].concurrency):
                tg.create_task(self._worker(queue))

    async def closed(self) -> None:
        """Waits until every session has left."""
        await asyncio.gather(*self.staying)

    async def _worker(self, queue: Iterator[int]) -> None:
        opt, cache, ssl_ctx = self.ctx
        for n in queue:
            account = Account(f"{opt.prefix}{n}", opt.password, opt.resource)
            try:
                s = await login(opt.target, account, cache, ssl_ctx, **self.login_kw)
            except (OSError, LoginError, TimeoutError, xs.StreamError) as exc:
                self.out.error(exc)
                continue
            self.out.latencies_us.append(int(s.stats.pop("login_s") * 1e6))
            if self.linger > 0:
                task = asyncio.create_task(self._stay(s))
                self.staying.add(task)
                task.add_done_callback(self.staying.discard)
            else:
                self._leave(s)

    async def _stay(self, s: Session) -> None:
        try:
            await s.listen(self.linger)
        except (OSError, LoginError, xs.StreamError) as exc:
            self.out.error(exc)
        self._leave(s)

    def _leave(self, s: Session) -> None:
        s.close()
        self.totals.update(s.stats)


async def run_prime(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """SASL only, once per account: fills the client key cache for servers with random salts."""
    opt, cache, ssl_ctx = ctx
    out = Outcome()
    numbers = shard.take(list(range(opt.first, opt.first + opt.count)))
    sem = asyncio.Semaphore(opt.concurrency)

    async def one(n: int) -> None:
        async with sem:
            session = await connect(opt.target, ssl_ctx)
            try:
                features = await open_stream(session)
                if opt.target.tls == "starttls":
                    features = await starttls(session, features, ssl_ctx)
                await authenticate(session, features, Account(f"{opt.prefix}{n}", opt.password), cache)
            except (OSError, LoginError, TimeoutError, xs.StreamError) as exc:
                out.error(exc)
            finally:
                session.close()

    async with measuring(meter, out), asyncio.TaskGroup() as tg:
        for n in numbers:
            tg.create_task(one(n))
    out.counts["accounts"] = len(numbers)
    out.counts["client_pbkdf2"] = cache.misses
    return out


# --- 1b. logins of PEP clients (issue 9) --------------------------------------------------------------


async def run_logins_pep(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """The logins of a client that publishes at login: its initial presence carries XEP-0115 caps
    asking for device-list, avatar and nickname events, it answers the server's disco#info about
    them, and it publishes its OMEMO device list; the login is done when the publish result comes.
    Each session then stays online `linger` seconds, so that the contacts logged in just before are
    online with +notify when a client publishes. Beforehand (unmeasured), every account these
    logins or their contacts use logs in and publishes its list once, so that each login meets the
    steady state: a device list on every contact."""
    opt = ctx[0]
    out = Outcome()
    offered = await _offers_pep(ctx, out)
    if not offered:
        if offered is False:
            out.info["skipped"] = f"{opt.target.domain} accounts do not advertise {PEP_FEATURE}"
        async with measuring(meter, out):
            pass  # load generator workers meet at the window's edges, also when there is nothing to measure
        return out
    out.counts["seeded_device_lists"] = await _seed(ctx, shard, out, publish_device_list)
    totals = await _measured_logins(
        ctx, meter, shard, out, opt.linger, presence=pep.CLIENT.presence(), ready=publish_device_list
    )
    out.info["roster_items"] = totals["roster_items"] / max(1, len(out.latencies_us))
    # What the sessions received from their login to their leaving.
    out.counts.update({key: totals[key] for key in (*PEP_COUNTS, "caps_queries")})
    return out


async def run_logins_linger(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """logins-pep's control: the same seeding pass (without its publish), then the same plain
    logins as `logins`, each session staying `linger` seconds. Its sessions meet as many contacts
    online as logins-pep's do (presence to and from them at login and logout), so logins-pep
    against this is what PEP itself costs; against `logins`, that plus the presence traffic."""
    out = Outcome()
    await _seed(ctx, shard, out, None)
    totals = await _measured_logins(ctx, meter, shard, out, ctx[0].linger)
    out.info["roster_items"] = totals["roster_items"] / max(1, len(out.latencies_us))
    return out


async def _seed(ctx: Context, shard: Shard, out: Outcome, ready: Callable[[Session], Awaitable[None]] | None) -> int:
    """An unmeasured plain login pass (roster, presence, each session leaving at once, then
    `ready`) over every account the logins or their contacts use, so that the measured pass meets
    the caches (rosters, credentials, nodes) a previous pass leaves behind, whether `logins` ran
    before or not. Its errors count, its times do not; returns the number of logins."""
    seeding = Outcome()
    seeds = shard.take(_with_contacts(_login_numbers(ctx[0], Shard()), ctx[0].roster_pool))
    await TimedLogins(ctx, seeding, 0.0, {"ready": ready} if ready is not None else {}).run(seeds)
    out.add_errors(seeding)
    return len(seeding.latencies_us)


PEP_COUNTS = ("notifications", "last_items", "own_events")
PEP_FEATURE = "http://jabber.org/protocol/pubsub#publish-options"  # XEP-0163 §6 on the account


async def _offers_pep(ctx: Context, out: Outcome) -> bool | None:
    """Whether the first account advertises PEP; None if it could not log in (the error is counted)."""
    opt = ctx[0]
    sessions = await login_many(ctx, [opt.first], out, roster=False, presence=None)
    if not sessions:
        return None
    try:
        session = sessions[opt.first]
        return await advertises(session, session.jid.partition("/")[0], PEP_FEATURE)
    finally:
        close_all(sessions)


def _with_contacts(numbers: list[int], roster_pool: int) -> list[int]:
    return sorted({c for n in numbers for c in (n, *roster_contacts(n, roster_pool))})


async def publish_device_list(session: Session) -> None:
    """The last step of a PEP client's login: publishes its device list and waits for the result."""
    client = PepClient(session)
    session.on_stanza = client.received
    session.send(pep.publish_devices("pub", client.account, time.monotonic_ns()))
    result = await session.wait_iq("pub")
    if result.get("type") != "result":
        condition = ",".join(etree.QName(c).localname for e in result.iter("{*}error") for c in e)
        raise LoginError(f"device list publish refused: {condition or 'no condition'}")


class PepClient:
    """What a PEP client does with what the server sends it: answers its requests (the caps
    query) and counts the device-list events in session.stats (pep.event_kind's names, and
    "caps_queries")."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.account = session.jid.partition("/")[0]
        self.available_ns = time.monotonic_ns()  # the initial presence, if any, was written just before

    def received(self, stanza: etree._Element) -> None:
        stats = self.session.stats
        reply = pep.answer(stanza, pep.CLIENT)
        if reply is not None:
            self.session.send(reply)
            if stanza.find(f"{{{pep.NS_DISCO_INFO}}}query") is not None:
                stats["caps_queries"] = stats.get("caps_queries", 0) + 1
        elif (kind := pep.event_kind(stanza, self.account, self.available_ns)) is not None:
            stats[kind] = stats.get(kind, 0) + 1


# --- 1c. logins against roster size -------------------------------------------------------------------


async def run_logins_roster(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """logins, on the accounts whose rosters have `roster_size` contacts (provision.roster_range:
    the pool for 20, a range of its own for any other size); one point of the roster-size curve.
    First (unmeasured) one account of the range logs in: if it cannot, the range is not there
    (skipped: not provisioned), and its roster must have the size asked for; then an unmeasured
    pass of the same logins, then the measured one."""
    opt = ctx[0]
    out = Outcome()
    prefix, pool = roster_range(opt.roster_size, opt.accounts, opt.prefix)
    ranged = dataclasses.replace(opt, prefix=prefix, accounts=pool, first=1 if prefix != opt.prefix else opt.first)
    ctx = (ranged, ctx[1], ctx[2])
    probe = Outcome()
    sessions = await login_many(ctx, [ranged.first], probe)
    if not sessions:
        out.info["skipped"] = (
            f"{jid(ranged, ranged.first)} cannot log in ({probe.errors[0] if probe.errors else 'no session'}): "
            f"the {opt.roster_size}-contact range is not provisioned on this server "
            "(bench/xmppd_provision.py --roster-sizes)"
        )
        async with measuring(meter, out):
            pass  # load generator workers meet at the window's edges, also when there is nothing to measure
        return out
    close_all(sessions)
    # An unmeasured pass over the same accounts first, so that every point of the curve is a second
    # pass (on xmppd a second pass is ~15% faster than the first after a start: see logins-pep).
    warm = Outcome()
    await TimedLogins(ctx, warm, 0.0, {}).run(_login_numbers(ranged, shard))
    out.add_errors(warm)
    out.counts["warmup_logins"] = len(warm.latencies_us)
    totals = await _measured_logins(ctx, meter, shard, out)
    items = totals["roster_items"] / max(1, len(out.latencies_us))
    out.info["roster_items"] = items
    out.info["accounts"] = f"{jid(ranged, ranged.first)}..{ranged.prefix}{ranged.first + pool - 1}"
    if out.latencies_us and items != opt.roster_size:
        out.error(LoginError(f"rosters had {items:g} items on average, not {opt.roster_size}: re-provision"))
    return out


# --- 2. one-to-one messages (and 6. across nodes) ----------------------------------------------------


def _address(opt: Options, session: Session) -> str:
    """Where 1:1 messages to `session` go: its full JID, or its bare JID (the server picks the
    resource: each account has one session here, so the same one)."""
    return session.jid if opt.address == "full" else session.jid.partition("/")[0]


class PairTraffic:
    """Session k sends to session k^1 (pairs), and the receiver's byte sink drives the sender's window.

    Stamps are CLOCK_MONOTONIC ns: the send time in max mode, the *intended* send time in fixed-rate
    mode so that a load generator falling behind shows up as latency instead of hiding it
    (coordinated omission).
    """

    def __init__(self, opt: Options, sessions: list[Session], out: Outcome, msg_type: str = "chat") -> None:
        self.opt, self.sessions, self.out = opt, sessions, out
        self.outstanding = [0] * len(sessions)
        self.sent = 0
        self.received = 0
        self.window_received = 0
        self.recording = False
        self.refilling = opt.rate <= 0
        # Stream management (messages-sm): each sender's counter adds a <r/> after every 5th stanza.
        self.sm = [s.sm if s.sm is not None and s.sm.enabled else None for s in sessions]
        # XMPP over WebSocket (messages-ws): each message is a frame of its own, and declares its
        # namespace (RFC 7395 §3.3.3).
        self.ws = [isinstance(s.proto, WebSocketProtocol) for s in sessions]
        if any(self.ws[k] and self.sm[k] is not None for k in range(len(sessions))):
            raise ValueError("stream management over WebSocket is not done here: <r/> would need frames of its own")
        pad = ("x" * max(0, opt.body_size - 25)).encode()
        self.heads = [
            f"<message{wsframe.CLIENT_XMLNS.decode() if self.ws[k] else ''} to='{_address(opt, sessions[k ^ 1])}' "
            f"type='{msg_type}'><body>bt:".encode()
            for k in range(len(sessions))
        ]
        self.tail = b":" + pad + b"</body></message>"
        for k, s in enumerate(sessions):
            s.use_sink(self._sink(k))

    def _sink(self, k: int) -> Callable[[bytes], None]:
        scanner = xs.MarkerScanner()
        sender = k ^ 1

        def on_data(data: bytes) -> None:
            stamps = scanner.feed(data)
            if not stamps:
                return
            n = len(stamps)
            self.received += n
            if self.recording:
                now = time.monotonic_ns()
                self.window_received += n
                self.out.latencies_us.extend([(now - t) // 1000 for t in stamps])
            self.outstanding[sender] -= n
            if self.refilling:
                self.refill(sender)

        return on_data

    def refill(self, k: int) -> None:
        room = self.opt.window - self.outstanding[k]
        if room <= 0:
            return
        stamp = str(time.monotonic_ns()).encode()
        msg = self.heads[k] + stamp + self.tail
        sm = self.sm[k]
        # One write per burst, as a pipelining client; over WebSocket one frame per message (masked
        # with the zero key: the payload goes as it is).
        if self.ws[k]:
            self.sessions[k].transport.write(wsframe.client_frame(msg) * room)
        else:
            self.sessions[k].transport.write(msg * room if sm is None else sm.burst(msg, room))
        self.outstanding[k] += room
        self.sent += room

    async def fixed_rate(self, seconds: float) -> None:
        rate, n = self.opt.rate, len(self.sessions)
        start = time.monotonic_ns()
        total = int(rate * seconds)
        k = 0
        while k < total:
            due = min(total, int((time.monotonic_ns() - start) * rate / 1e9) + 1)
            for j in range(k, due):
                s = j % n
                intended = start + int(j * 1e9 / rate)
                msg = self.heads[s] + str(intended).encode() + self.tail
                sm = self.sm[s]
                if self.ws[s]:
                    msg = wsframe.client_frame(msg)
                self.sessions[s].transport.write(msg if sm is None else sm.burst(msg, 1))
                self.outstanding[s] += 1
            self.sent += due - k
            k = due
            await asyncio.sleep(0.0005)

    async def drain(self, limit_s: float = 5.0) -> None:
        self.refilling = False
        deadline = time.monotonic() + limit_s
        # Polling, bounded: the counters move in protocol callbacks, and an Event set per message
        # would cost the hot path more than a 10 ms poll costs here.
        while self.received < self.sent and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def run_messages(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    return await _messages(ctx, meter, shard, Outcome())


async def run_messages_sm(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """messages with XEP-0198 on every session: enabled with resumption right after binding, every
    <r/> of the server answered at once, a <r/> of the client's own after every 5 stanzas it sends;
    after the drain, one more <r/> per session whose answer must count every stanza sent."""
    return await _messages(ctx, meter, shard, Outcome(), stream_management=True)


async def run_messages_ws(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """messages over XMPP over WebSocket (RFC 7395): every session connects to the server's
    WebSocket endpoint (wss:// by default), logs in as over TCP (SCRAM, then a new <open/>), and
    sends one message per frame; at the end each session closes as §3.6 has it."""
    opt = ctx[0]
    out = Outcome()
    if not opt.ws_port:
        out.info["not_offered"] = f"no WebSocket endpoint for {opt.target.domain} (--ws-port)"
        await _not_offered(meter, out, {})
        return out
    return await _messages(ctx, meter, shard, out, target=websocket_target(opt))


async def _messages(
    ctx: Context,
    meter: Meter,
    shard: Shard,
    out: Outcome,
    *,
    stream_management: bool = False,
    target: Target | None = None,
) -> Outcome:
    opt = ctx[0]
    numbers = shard.take(list(range(opt.first, opt.first + 2 * opt.pairs)))
    numbers = numbers[: len(numbers) // 2 * 2]
    targets = [target] if target is not None else None
    if opt.peer_port:
        # Cross-node: even sessions on the target node, odd ones on the peer, so every message crosses.
        targets = [opt.target, Target(**{**opt.target.__dict__, "port": opt.peer_port})]
    sessions = await login_many(ctx, numbers, out, targets=targets, roster=False, stream_management=stream_management)
    if await _not_offered(meter, out, sessions):
        return out
    # Pairs whose two sessions are both up; a failed login costs its pair, not the whole run.
    ordered = [
        sessions[n]
        for a, b in zip(numbers[::2], numbers[1::2], strict=True)
        if a in sessions and b in sessions
        for n in (a, b)
    ]
    out.counts["pairs"] = len(ordered) // 2
    if not ordered:
        close_all(sessions)
        return out
    # Say whether the archive this run may be labelled with is really there (XEP-0313 §7).
    out.info["mam_advertised"] = await advertises(ordered[0], ordered[0].jid.split("/")[0], xs.NS_MAM)
    traffic = PairTraffic(opt, ordered, out)
    if opt.rate > 0:
        await _fixed_rate_window(traffic, meter, out)
    else:
        await _max_window(traffic, meter, out)
    await traffic.drain()
    out.counts.update(sent=traffic.sent, received=traffic.received, delivered=traffic.window_received)
    out.counts["lost"] = traffic.sent - traffic.received
    if stream_management:
        await _final_acks(ordered, opt.target.timeout)
        sm_summary(ordered, out, final=True)
    if target is not None and target.transport == "websocket":
        ws_summary(ordered, out)
        closing = await close_websockets(list(sessions.values()), opt.target.timeout)
        out.counts.update({f"ws_{k}": v for k, v in closing.items()})
    close_all(sessions)
    return out


def ws_summary(sessions: list[Session], out: Outcome) -> None:
    """The WebSocket sessions' counts: sessions, frames received, the server's pings answered."""
    protos = [s.proto for s in sessions if isinstance(s.proto, WebSocketProtocol)]
    out.counts["ws_sessions"] = len(protos)
    out.counts["ws_frames_received"] = sum(p.decoder.frames for p in protos)
    out.counts["ws_server_pings"] = sum(p.pongs for p in protos)
    # A closing frame before ours: the server ended the WebSocket during the run.
    early = [p.decoder for p in protos if p.decoder.closed and not p.closing]
    out.counts["ws_closed_early"] = len(early)
    if early:
        out.error(ConnectionError(f"server closed {len(early)} WebSockets, first with {early[0].close_code}"))
    # Frames a client must fail the connection on (RFC 6455 §5.1-5.5): a masked one, reserved bits...
    failed = [p.error for p in protos if p.error is not None]
    out.counts["ws_protocol_errors"] = len(failed)
    if failed:
        out.error(failed[0])


async def _max_window(traffic: PairTraffic, meter: Meter, out: Outcome) -> None:
    for k in range(len(traffic.sessions)):
        traffic.refill(k)
    await asyncio.sleep(traffic.opt.warmup)
    async with measuring(meter, out):
        traffic.recording = True
        await asyncio.sleep(traffic.opt.duration)
        traffic.recording = False


async def _fixed_rate_window(traffic: PairTraffic, meter: Meter, out: Outcome) -> None:
    opt = traffic.opt
    task = asyncio.create_task(traffic.fixed_rate(opt.warmup + opt.duration))
    await asyncio.sleep(opt.warmup)
    async with measuring(meter, out):
        traffic.recording = True
        await asyncio.sleep(opt.duration)
        traffic.recording = False
    await task


# --- 2b. stream management (XEP-0198) on every session ---------------------------------------------

SM_COUNTS = (
    "sm_sessions",
    "sm_resumable",
    "sm_server_requests",
    "sm_client_answers",
    "sm_client_requests",
    "sm_server_answers",
    "sm_server_unanswered",
    "sm_server_h_errors",
    "sm_final_h_mismatches",
    "sm_stream_errors",
    "sm_stanzas_sent",
    "sm_stanzas_received",
    "sm_unacked_at_end",
)


class SmMismatch(Exception):
    """The server's stream management answers disagree with what the client counted."""


async def _not_offered(meter: Meter, out: Outcome, sessions: dict[int, Session]) -> bool:
    """After login_many: True (and the scenario is skipped, as logins-pep is without PEP) if a login
    found stream management not offered; login_many stops logging in at the first such login. No
    login is made beforehand to ask: on a freshly started server (idle-sm) it would be in the
    memory measured before the sessions."""
    if "not_offered" not in out.info:
        return False
    close_all(sessions)
    out.info["skipped"] = f"not offered: {out.info['not_offered']}"
    async with measuring(meter, out):
        pass  # load generator workers meet at the window's edges, also when there is nothing to measure
    return True


async def _final_acks(sessions: list[Session], limit_s: float) -> None:
    """One more <r/> per session; waits (bounded) for every request to be answered. Each answer is
    then to count every stanza the session sent: nothing is in flight any more."""
    counters = [s.sm for s in sessions if s.sm is not None and not s.proto.lost]
    for s in sessions:
        if s.sm is not None and not s.proto.lost:
            s.transport.write(s.sm.request())
    deadline = time.monotonic() + limit_s
    # Polling, bounded: the answers are counted in protocol callbacks.
    while any(c.answers_received < c.requests_sent for c in counters) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def sm_summary(sessions: list[Session], out: Outcome, *, final: bool) -> None:
    """Adds up the sessions' stream management counts (SM_COUNTS) into out.counts; each mismatch is
    an error: a server h above what was sent (or going back), a request left unanswered, a stream
    error, and with `final` (after _final_acks) a last h that does not count every stanza sent."""
    totals = dict.fromkeys(SM_COUNTS, 0)
    for s in sessions:
        sm = s.sm
        if sm is None or not sm.enabled:
            continue
        unanswered = max(0, sm.requests_sent - sm.answers_received)
        mismatch = final and not unanswered and not sm.all_handled
        totals["sm_sessions"] += 1
        totals["sm_resumable"] += sm.resume
        totals["sm_server_requests"] += sm.requests_received
        totals["sm_client_answers"] += sm.answers_sent
        totals["sm_client_requests"] += sm.requests_sent
        totals["sm_server_answers"] += sm.answers_received
        totals["sm_server_unanswered"] += unanswered
        totals["sm_server_h_errors"] += sm.h_errors
        totals["sm_final_h_mismatches"] += mismatch
        totals["sm_stream_errors"] += bool(sm.stream_error)
        totals["sm_stanzas_sent"] += sm.sent
        totals["sm_stanzas_received"] += sm.received
        totals["sm_unacked_at_end"] += sm.unacknowledged
        if sm.h_errors:
            out.error(SmMismatch(f"{s.jid}: {sm.h_errors} bad server <a/>, first: {sm.h_error_detail}"))
        if sm.stream_error:
            out.error(SmMismatch(f"{s.jid}: stream error {sm.stream_error}"))
        if final and unanswered:
            out.error(SmMismatch(f"{s.jid}: {unanswered} of {sm.requests_sent} <r/> unanswered"))
        if mismatch:
            out.error(SmMismatch(f"{s.jid}: last server h={sm.server_h}, {sm.sent} stanzas sent"))
    out.counts.update(totals)


# --- 3. idle sessions ---------------------------------------------------------------------------------


async def run_idle(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    return await _idle(ctx, meter, shard, Outcome())


async def run_idle_sm(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """idle with XEP-0198 on every session (with resumption), each answering the server's requests."""
    return await _idle(ctx, meter, shard, Outcome(), stream_management=True)


async def _idle(ctx: Context, meter: Meter, shard: Shard, out: Outcome, *, stream_management: bool = False) -> Outcome:
    opt = ctx[0]
    numbers = shard.take(list(range(opt.first, opt.first + opt.count)))
    await asyncio.sleep(0.5)
    rss_before = meter.server_rss_kb()
    started = time.monotonic()
    sessions = await login_many(ctx, numbers, out, stream_management=stream_management)
    ramp_s = time.monotonic() - started
    if await _not_offered(meter, out, sessions):
        return out
    for s in sessions.values():
        # Drop the parser (the load generator holds 10k sessions too); with stream management on,
        # each session's counter still answers the server's <r/> on the bytes.
        s.use_sink(_discard)
    async with measuring(meter, out):
        await asyncio.sleep(opt.settle)
    rss_after = meter.server_rss_kb()
    out.counts.update(sessions=len(sessions), rss_before_kb=rss_before, rss_after_kb=rss_after)
    out.counts["ramp_logins_per_s"] = round(len(sessions) / ramp_s, 1) if ramp_s else 0.0
    if sessions:
        out.counts["kb_per_session"] = round((rss_after - rss_before) / len(sessions), 2)
    if stream_management:
        sm_summary(list(sessions.values()), out, final=False)
    close_all(sessions)
    await asyncio.sleep(0.5)
    return out


def _discard(_data: bytes) -> None:
    return None


# --- 4. MUC fan-out -----------------------------------------------------------------------------------

_SELF_PRESENCE = re.compile(rb"""code=['"]110['"]""")
_CREATED = re.compile(rb"""code=['"]201['"]""")


async def run_muc(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    opt = ctx[0]
    out = Outcome()
    room = f"bench{int(time.time())}@muc.{opt.target.domain}"
    numbers = list(range(opt.first, opt.first + opt.occupants))
    sessions = await login_many(ctx, numbers, out, roster=False)
    ordered = [sessions[n] for n in numbers if n in sessions]
    if ordered and not await advertises(ordered[0], room.split("@")[1], xs.NS_MUC):
        out.info["skipped"] = f"{room.split('@')[1]} does not advertise {xs.NS_MUC}"
        close_all(sessions)
        return out
    try:
        joined = await _join_room(opt, ordered, room, out)
    except (OSError, LoginError, TimeoutError) as exc:
        out.error(exc)
        close_all(sessions)
        return out
    traffic = RoomTraffic(opt, joined, room, out)
    if opt.rate > 0:
        task = asyncio.create_task(traffic.fixed_rate(opt.warmup + opt.duration))
    else:
        traffic.start_max()
    await asyncio.sleep(opt.warmup)
    async with measuring(meter, out):
        traffic.recording = True
        await asyncio.sleep(opt.duration)
        traffic.recording = False
    if opt.rate > 0:
        await task
    await traffic.drain(len(joined))
    out.counts.update(occupants=len(joined), sent=traffic.sent, deliveries=traffic.window_received)
    out.counts["lost"] = traffic.sent * len(joined) - traffic.received
    close_all(sessions)
    return out


async def _join_room(opt: Options, sessions: list[Session], room: str, out: Outcome) -> list[Session]:
    """Joins one by one in small batches; each joiner's bytes are scanned, not parsed, because a room of
    N costs N^2/2 presence stanzas during the joins."""
    join = f"<presence to='{room}/{{nick}}'><x xmlns='{xs.NS_MUC}'><history maxstanzas='0'/></x></presence>"
    if not sessions:
        return []
    first = sessions[0]
    first.send(join.format(nick="n0").encode())
    for _ in range(1000):  # the creator parses: it may have to unlock the room (XEP-0045 §10.1.2)
        el = await first.element()
        if el.tag == "{jabber:client}presence" and el.get("from") == f"{room}/n0":
            if el.get("type") == "error":
                raise LoginError("room join refused")
            raw = etree.tostring(el)
            if _CREATED.search(raw):
                form = f"<query xmlns='{xs.NS_MUC_OWNER}'><x xmlns='{xs.NS_DATA}' type='submit'/></query>"
                first.send(xs.iq("set", "cfg", form, to=room))
                await first.wait_iq("cfg")
            break
    else:
        raise TimeoutError("no self-presence from the room")
    first.use_sink(_discard)
    joined = [first]
    rest = list(enumerate(sessions))[1:]
    step = max(1, opt.concurrency)
    for batch in (rest[i : i + step] for i in range(0, len(rest), step)):
        results = await asyncio.gather(*(_join_one(s, join.format(nick=f"n{i}")) for i, s in batch))
        for (_, s), ok in zip(batch, results, strict=True):
            if ok:
                joined.append(s)
            else:
                out.error(TimeoutError("MUC join timed out"))
    return joined


async def _join_one(session: Session, join: str) -> bool:
    done = asyncio.get_running_loop().create_future()
    tail = b""

    def sink(data: bytes) -> None:
        nonlocal tail
        buf = tail + data
        if _SELF_PRESENCE.search(buf) and not done.done():
            done.set_result(True)
        tail = buf[-16:]

    session.use_sink(sink)
    session.send(join.encode())
    try:
        async with asyncio.timeout(session.target.timeout):
            await done
    except TimeoutError:
        return False
    return True


class RoomTraffic:
    """Senders post groupchat messages; every occupant's sink counts deliveries. In max mode a sender
    refills its window when its own message comes back (the room reflects it to the sender)."""

    def __init__(self, opt: Options, occupants: list[Session], room: str, out: Outcome) -> None:
        self.opt, self.occupants, self.out = opt, occupants, out
        self.senders = occupants[: max(1, min(opt.senders, len(occupants), 100))]
        self.sent = self.received = self.window_received = 0
        self.recording = False
        self.refilling = False
        self.outstanding = [0] * len(self.senders)
        pad = "x" * max(0, opt.body_size - 25)
        self.head = f"<message to='{room}' type='groupchat'><body>bt:".encode()
        self.tail = f":{pad}</body></message>".encode()
        for k, s in enumerate(occupants):
            s.use_sink(self._sink(k))

    def _sink(self, k: int) -> Callable[[bytes], None]:
        scanner = xs.MarkerScanner()
        is_sender = k < len(self.senders)

        def on_data(data: bytes) -> None:
            stamps = scanner.feed(data)
            if not stamps:
                return
            self.received += len(stamps)
            if self.recording:
                now = time.monotonic_ns()
                self.window_received += len(stamps)
                self.out.latencies_us.extend([(now - t) // 1000 for t in stamps])
            if is_sender:
                # Every occupant sees every sender's messages: only our own reflections (the stamp's
                # last two digits carry the sender) free our window, or it would grow unbounded.
                own = sum(1 for t in stamps if t % 100 == k)
                if own:
                    self.outstanding[k] = max(0, self.outstanding[k] - own)
                    if self.refilling:
                        self.refill(k)

        return on_data

    def start_max(self) -> None:
        self.refilling = True
        for k in range(len(self.senders)):
            self.refill(k)

    def refill(self, k: int) -> None:
        room = self.opt.window - self.outstanding[k]
        if room > 0:
            msg = self.head + str(time.monotonic_ns() // 100 * 100 + k).encode() + self.tail
            self.senders[k].transport.write(msg * room)
            self.outstanding[k] += room
            self.sent += room

    async def fixed_rate(self, seconds: float) -> None:
        rate = self.opt.rate
        start = time.monotonic_ns()
        total, k = int(rate * seconds), 0
        while k < total:
            due = min(total, int((time.monotonic_ns() - start) * rate / 1e9) + 1)
            for j in range(k, due):
                intended = start + int(j * 1e9 / rate)
                self.senders[j % len(self.senders)].transport.write(self.head + str(intended).encode() + self.tail)
            self.sent += due - k
            k = due
            await asyncio.sleep(0.0005)

    async def drain(self, occupants: int, limit_s: float = 5.0) -> None:
        self.refilling = False
        deadline = time.monotonic() + limit_s
        while self.received < self.sent * occupants and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)


# --- 5. MAM page query --------------------------------------------------------------------------------

_COUNT = re.compile(rb"<count>(\d+)</count>")


async def run_mam(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    opt = ctx[0]
    out = Outcome()
    sessions = await login_many(ctx, [opt.first, opt.first + 1], out, roster=False)
    if len(sessions) < 2:
        close_all(sessions)
        return out
    owner, partner = sessions[opt.first], sessions[opt.first + 1]
    if not await advertises(owner, owner.jid.split("/")[0], xs.NS_MAM):
        out.info["skipped"] = f"{opt.target.domain} does not advertise {xs.NS_MAM}"
        close_all(sessions)
        return out
    pager = MamPager(owner, opt.mam_page)
    try:
        total = await pager.query()
        if (total if total is not None else pager.last_results) < opt.mam_fill:
            # Without an RSM count only a short first page tells that the archive is small.
            if total is not None or pager.last_results < opt.mam_page:
                await _fill_archive(opt, owner, partner, opt.mam_fill - (total or pager.last_results))
            total = await pager.query()
        if total is not None:
            out.info["archive_count"] = total
        else:
            out.info["archive_note"] = "the server sends no RSM <count>: archive size unknown"
        async with measuring(meter, out):
            deadline = time.monotonic() + opt.duration
            for _ in range(opt.count):
                if time.monotonic() > deadline:
                    break
                t0 = time.perf_counter_ns()
                await pager.query()
                out.latencies_us.append((time.perf_counter_ns() - t0) // 1000)
    except (OSError, TimeoutError, LoginError) as exc:
        out.error(exc)
    out.counts["queries"] = len(out.latencies_us)
    out.counts["results_per_page"] = pager.last_results
    close_all(sessions)
    return out


class MamPager:
    """XEP-0313 query for the last page of `page` messages; waits for the closing iq by scanning bytes
    (the 50 forwarded messages are counted, not parsed, so the client adds little to the latency)."""

    def __init__(self, session: Session, page: int) -> None:
        self.session, self.page = session, page
        self.seq = 0
        self.buf = b""
        self.waiting: asyncio.Future[bytes] | None = None
        self.marker = re.compile(b"^$")
        self.last_results = 0
        session.use_sink(self._sink)

    def _sink(self, data: bytes) -> None:
        self.buf += data
        if self.waiting is None or self.waiting.done():
            self.buf = self.buf[-64:]
            return
        m = self.marker.search(self.buf)
        if m is not None and (self.buf.endswith(b"/>", 0, m.end() + 2) or b"</iq>" in self.buf[m.end() :]):
            self.waiting.set_result(self.buf)
            self.buf = b""

    async def query(self) -> int | None:
        """Returns the archive size the server reports (None if it reports none)."""
        self.seq += 1
        qid = f"mq{self.seq}x"
        self.marker = re.compile(rb"<iq[^>]*\sid=['\"]" + qid.encode() + rb"['\"][^>]*>")
        self.buf = b""
        self.waiting = asyncio.get_running_loop().create_future()
        rsm = f"<set xmlns='{xs.NS_RSM}'><max>{self.page}</max><before/></set>"
        self.session.send(xs.iq("set", qid, f"<query xmlns='{xs.NS_MAM}' queryid='{qid}'>{rsm}</query>"))
        async with asyncio.timeout(self.session.target.timeout):
            raw = await self.waiting
        if b"type='error'" in raw or b'type="error"' in raw:
            raise LoginError("MAM query refused (is the archive enabled on this host?)")
        self.last_results = raw.count(b"<forwarded")
        m = _COUNT.search(raw)
        return int(m.group(1)) if m else None


async def _fill_archive(opt: Options, owner: Session, partner: Session, n: int) -> None:
    """partner sends n chat messages to owner, pipelined; waits (bounded) until owner has them all."""
    got = 0
    scanner = xs.MarkerScanner()
    done = asyncio.get_running_loop().create_future()
    sink = owner.proto.sink

    def count(data: bytes) -> None:
        nonlocal got
        got += len(scanner.feed(data))
        if got >= n and not done.done():
            done.set_result(None)

    owner.use_sink(count)
    head = f"<message to='{owner.jid}' type='chat'><body>bt:".encode()
    for start in range(0, n, 100):
        msg = head + f"{time.monotonic_ns()}:fill</body></message>".encode()
        partner.transport.write(msg * min(100, n - start))
        await asyncio.sleep(0.01)  # let the owner's reads interleave: a paced writer, not a flood
    async with asyncio.timeout(max(10.0, n / 200)):
        await done
    if sink is not None:
        owner.use_sink(sink)


# --- 9. an offline queue delivered at login -----------------------------------------------------------

_MESSAGE_ERROR = re.compile(rb"""<message\b[^>]*\stype=['"]error['"]""")


def refused_messages(data: bytes) -> int:
    """Error messages in what a sender received: each is one of its messages the server did not
    store (XEP-0160 §2: a full queue answers service-unavailable)."""
    return len(_MESSAGE_ERROR.findall(data))


def iq_answered(data: bytes, iq_id: str) -> bool:
    """Whether the iq `iq_id` was answered in `data` (any quote style, any attribute order)."""
    return re.search(rb"<iq\b[^>]*\sid=['\"]" + re.escape(iq_id.encode()) + rb"['\"]", data) is not None


class Arrivals:
    """A byte sink counting body markers, noting when the first and the `expected`th arrived."""

    def __init__(self, expected: int, fed: asyncio.Event | None = None) -> None:
        self.expected = expected
        self.scanner = xs.MarkerScanner()
        self.count = 0
        self.first_ns = 0
        self.last_ns = 0
        self.done = asyncio.get_running_loop().create_future()
        # Set at every read of any bytes (cleared by whoever waits on it; may be shared).
        self.fed = fed if fed is not None else asyncio.Event()
        if expected <= 0:
            self.done.set_result(None)

    def feed(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.fed.set()
        n = len(self.scanner.feed(data))
        if not n:
            return
        if not self.count:
            self.first_ns = now
        self.count += n
        self.last_ns = now
        if self.count >= self.expected and not self.done.done():
            self.done.set_result(None)


class OfflineSender:
    """The session that fills the queues: chat messages to a bare JID, paced in writes of 100, then
    a ping whose answer says the server has handled (stored) them all: it handles one session's
    stanzas in order. Counts the messages the server refused."""

    def __init__(self, opt: Options, session: Session) -> None:
        self.opt, self.session = opt, session
        self.buf = bytearray()
        self.arrived = asyncio.Event()
        self.seq = 0
        self.pad = "x" * max(0, opt.body_size - 30)
        session.use_sink(self._on_data)

    def _on_data(self, data: bytes) -> None:
        self.buf += data
        self.arrived.set()

    async def queue(self, to: str, n: int) -> int:
        """Sends n messages to `to`; returns how many the server refused."""
        self.seq += 1
        self.buf.clear()
        head = f"<message to='{to}' type='chat'><body>bt:".encode()
        for start in range(0, n, 100):
            msg = head + f"{time.monotonic_ns()}:offline {self.pad}</body></message>".encode()
            self.session.transport.write(msg * min(100, n - start))
            # Load shaping, not synchronisation: 10,000 messages/s at most, so that a server whose
            # per-session limits close a flooding client (Prosody's mod_limits) takes the backlog.
            await asyncio.sleep(0.01)
        qid = f"offline{self.seq}"
        self.session.send(xs.ping(qid, self.opt.target.domain))
        async with asyncio.timeout(max(self.opt.target.timeout, n / 50)):
            while not iq_answered(self.buf, qid):
                if self.session.proto.lost:
                    raise ConnectionError("the sender's connection was closed")
                self.arrived.clear()
                await self.arrived.wait()
        return refused_messages(self.buf)

    async def until_offline(self, full_jid: str) -> None:
        """Waits until the server has no session for `full_jid`: an iq to it comes back as an
        error (RFC 6121 §8.5.3.2.3), while a session it still holds would get it and, closed,
        never answer: then ask again."""
        async with asyncio.timeout(self.opt.target.timeout):
            while True:
                self.seq += 1
                qid = f"gone{self.seq}"
                self.buf.clear()
                self.session.send(xs.ping(qid, full_jid))
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.2):
                        while not iq_answered(self.buf, qid):
                            self.arrived.clear()
                            await self.arrived.wait()
                        return


async def _nothing(_session: Session) -> None:
    return None


async def _closed(session: Session, limit_s: float) -> None:
    """Closes the session and waits (bounded) until the server has closed the connection too."""
    session.close()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(limit_s):
            await session.proto.closed()


@dataclass
class OfflineRound:
    """One account's login to its queue: when the first and the last queued message arrived after
    its initial presence was sent (µs), and how many arrived."""

    first_us: int
    last_us: int
    messages: int


async def run_offline_login(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """`rounds` accounts, one after the other: another session queues `backlog` chat messages for
    the account while it is offline, then the account logs in (TLS, SCRAM, bind, roster) and sends
    its initial presence; timed from that presence until the last queued message has arrived.
    Beforehand each account logs in once and takes whatever an earlier run left in its queue."""
    opt = ctx[0]
    out = Outcome()
    recipients = list(range(opt.first, opt.first + opt.rounds))
    sender_n = opt.first + opt.rounds
    out.counts["stale_flushed"] = await _flush_queues(ctx, recipients, out)
    senders = await login_many(ctx, [sender_n], out, roster=False, presence=None)
    if sender_n not in senders:
        out.info["failed"] = "the sender could not log in"
        return out
    sender = OfflineSender(opt, senders[sender_n])
    for n in recipients:  # their sessions of _flush_queues are gone: what comes now is queued
        await sender.until_offline(f"{opt.prefix}{n}@{opt.target.domain}/{opt.resource}")
    rounds: list[OfflineRound] = []
    queued_s = 0.0
    refused = 0
    for n in recipients:
        try:
            t = time.monotonic()
            refused_now = await sender.queue(jid(opt, n), opt.backlog)
            queued_s += time.monotonic() - t
            refused += refused_now
            done = await _offline_round(ctx, meter, n, opt.backlog - refused_now, out)
        except (OSError, LoginError, TimeoutError, xs.StreamError) as exc:
            out.error(exc)
            continue
        if done is not None:
            rounds.append(done)
    senders[sender_n].close()
    out.latencies_us.extend(r.last_us for r in rounds)
    out.window_s = sum(r.last_us for r in rounds) / 1e6
    delivered = sum(r.messages for r in rounds)
    out.counts.update(backlog=opt.backlog, rounds=len(rounds), messages=delivered, refused=refused)
    if refused:
        out.error(LoginError(f"the server refused {refused} of the messages to queue (its offline limit?)"))
    if rounds:
        s = summarize_us(out.latencies_us)
        out.counts.update(delivery_p50_ms=s["p50_ms"], delivery_max_ms=s["max_ms"])
        out.counts["first_message_p50_ms"] = summarize_us([r.first_us for r in rounds])["p50_ms"]
    if queued_s:
        out.counts["queued_per_s"] = round(opt.backlog * opt.rounds / queued_s, 1)
    return out


async def _offline_round(ctx: Context, meter: Meter, n: int, expected: int, out: Outcome) -> OfflineRound | None:
    """Account n logs in without presence, then sends it and takes its queue (`expected`
    messages); the meter's window is the delivery. None (and an error) if some never came."""
    opt, cache, ssl_ctx = ctx
    limit_s = max(opt.target.timeout, opt.backlog / 50)
    account = Account(f"{opt.prefix}{n}", opt.password, opt.resource)
    session = await login(opt.target, account, cache, ssl_ctx, presence=None, ready=_nothing)
    arrivals = Arrivals(expected)
    session.use_sink(arrivals.feed)
    try:
        with collector_paused():
            await meter.begin()  # one window per round: the CPU figures add up every delivery
            sent_ns = time.monotonic_ns()
            session.send(PRESENCE)
            try:
                async with asyncio.timeout(limit_s):
                    await arrivals.done
            except TimeoutError:
                out.error(TimeoutError(f"{arrivals.count} of {expected} offline messages in {limit_s:g} s"))
            await meter.end()
    finally:
        await _closed(session, opt.target.timeout)
    if expected <= 0 or arrivals.count < expected:
        return None
    return OfflineRound((arrivals.first_ns - sent_ns) // 1000, (arrivals.last_ns - sent_ns) // 1000, arrivals.count)


async def _flush_queues(ctx: Context, numbers: list[int], out: Outcome) -> int:
    """Logs the accounts in with presence, takes their queued messages until none has come for half
    a second (at most the timeout), logs them out; returns the messages taken."""
    opt = ctx[0]
    sessions = await login_many(ctx, numbers, out)
    fed = asyncio.Event()
    counters = {n: Arrivals(1 << 62, fed) for n in sessions}
    for n, s in sessions.items():
        s.use_sink(counters[n].feed)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + opt.target.timeout
    while loop.time() < deadline:  # each pass waits for the next bytes to any of them
        fed.clear()
        try:
            async with asyncio.timeout(min(0.5, deadline - loop.time())):
                await fed.wait()
        except TimeoutError:
            break  # half a second without a byte (or the deadline)
    await asyncio.gather(*(_closed(s, opt.target.timeout) for s in sessions.values()))
    return sum(c.count for c in counters.values())


# --- 8. one client floods while a monitor pair chats (issue 10) -----------------------------------------


class Phases:
    """Monitor messages by phase. A message belongs to the phase its stamp (intended send time) falls
    in, whenever it arrives: one sent just before the flood and held up by it counts as before, one
    sent during the flood and delivered after it counts as during."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.starts: list[int] = []  # CLOCK_MONOTONIC ns at which each phase begun so far began
        self.sent = [0] * len(names)
        self.received = [0] * len(names)
        self.latencies_us: list[array[int]] = [array("q") for _ in names]

    def begin(self, t_ns: int) -> str:
        """The next phase starts at t_ns; returns its name."""
        if len(self.starts) == len(self.names):
            raise ValueError("no phase left")
        if self.starts and t_ns < self.starts[-1]:
            raise ValueError("phases must begin in order")
        self.starts.append(t_ns)
        return self.names[len(self.starts) - 1]

    def of(self, stamp_ns: int) -> int:
        return max(0, bisect.bisect_right(self.starts, stamp_ns) - 1)

    def sent_at(self, stamp_ns: int, n: int = 1) -> None:
        self.sent[self.of(stamp_ns)] += n

    def delivered(self, stamp_ns: int, now_ns: int) -> None:
        i = self.of(stamp_ns)
        self.received[i] += 1
        self.latencies_us[i].append((now_ns - stamp_ns) // 1000)

    def index(self, name: str) -> int:
        return self.names.index(name)

    def lost(self, name: str) -> int:
        i = self.index(name)
        return self.sent[i] - self.received[i]

    def outstanding(self) -> int:
        return sum(self.sent) - sum(self.received)

    def summary(self, name: str) -> dict[str, float]:
        """{name}_p50_ms, _p99_ms, _max_ms, _samples (empty without samples)."""
        values = self.latencies_us[self.index(name)]
        if not values:
            return {}
        s = summarize_us(values)
        return {f"{name}_{k}": float(s[k]) for k in ("p50_ms", "p99_ms", "max_ms", "samples")}


class Monitor:
    """Two sessions that each send the other one chat message every `interval` seconds, stamped with
    the intended send time (a late load generator shows up as latency, as in the fixed-rate test)."""

    def __init__(self, opt: Options, pair: tuple[Session, Session], phases: Phases, out: Outcome) -> None:
        self.pair, self.phases, self.out = pair, phases, out
        self.interval_ns = int(opt.monitor_interval * 1e9)
        self.stop_ns = 2**63 - 1
        pad = ("x" * max(0, opt.body_size - 25)).encode()
        self.heads = [f"<message to='{pair[k ^ 1].jid}' type='chat'><body>bt:".encode() for k in (0, 1)]
        self.tail = b":" + pad + b"</body></message>"
        self._all_in = asyncio.Event()  # set while nothing sent is still on its way
        for s in pair:
            s.use_sink(self._sink())

    def _sink(self) -> Callable[[bytes], None]:
        scanner = xs.MarkerScanner()

        def on_data(data: bytes) -> None:
            stamps = scanner.feed(data)
            if stamps:
                now = time.monotonic_ns()
                for t in stamps:
                    self.phases.delivered(t, now)
                if self.phases.outstanding() <= 0:
                    self._all_in.set()

        return on_data

    async def run(self, start_ns: int) -> None:
        """Sends until stop_ns (set from outside; bounded by the caller's timeout)."""
        j = 0
        while True:
            due = start_ns + j * self.interval_ns
            delay = due - time.monotonic_ns()
            if delay > 0:
                await asyncio.sleep(delay / 1e9)
            if due >= self.stop_ns:
                return
            if any(s.proto.lost for s in self.pair):
                self.out.error(ConnectionError("a monitor session was closed by the server"))
                return
            stamp = str(due).encode()
            for k, s in enumerate(self.pair):
                s.transport.write(self.heads[k] + stamp + self.tail)
            self.phases.sent_at(due, len(self.pair))
            j += 1

    async def drain(self, limit_s: float) -> None:
        """Wait until every message sent has arrived, for `limit_s` at most (what is still
        missing then counts as lost)."""
        if self.phases.outstanding() <= 0:
            return
        self._all_in.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                await self._all_in.wait()


class Flooder:
    """One session writing iq pings as fast as its socket takes them, without waiting for answers;
    its reads are only counted and dropped, so its own receive side never holds the server back."""

    BATCH = 50  # pings per write

    def __init__(self, session: Session, to: str) -> None:
        self.session = session
        self.scanner = xs.ReplyScanner()
        self.batch = xs.ping("f", to) * self.BATCH
        self.sent = 0
        self.pauses = 0  # times the transport's buffer filled (the server was not reading)
        self.paused_s = 0.0
        self.ended_ns: int | None = None  # when the server ended the stream (or the connection)
        self.how = ""
        session.use_sink(self._on_data)

    def _on_data(self, data: bytes) -> None:
        self.scanner.feed(data)
        if self.ended_ns is None and (self.scanner.error or self.scanner.closed):
            self.ended_ns = time.monotonic_ns()
            self.how = "stream error" if self.scanner.error else "closing tag without a stream error"
            self.session.proto.wake_writer()

    async def run(self, seconds: float) -> None:
        proto, transport = self.session.proto, self.session.transport
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while self.ended_ns is None and loop.time() < deadline:
            if proto.lost:
                self.ended_ns = time.monotonic_ns()
                self.how = "connection closed without a stream error"
                break
            if proto.write_paused:
                self.pauses += 1
                t = loop.time()
                await proto.writable(deadline)
                self.paused_s += loop.time() - t
                continue
            transport.write(self.batch)
            self.sent += self.BATCH
            await asyncio.sleep(0)  # let the replies (and the monitor) in


async def run_flood(ctx: Context, meter: Meter, shard: Shard) -> Outcome:
    """A monitor pair chats for a warm-up, then a baseline of duration/2 s, then while one more
    session floods iq pings for flood_seconds or until the server closes it. The measured window
    (CPU, pings/s) is the flood; out.latencies_us holds the monitor's latencies during it."""
    opt = ctx[0]
    out = Outcome()
    a, b, f = opt.first, opt.first + 1, opt.first + 2
    monitors = await login_many(ctx, [a, b], out, roster=False)
    flooders = await login_many(ctx, [f], out, roster=False, presence=None)
    if len(monitors) < 2 or not flooders:
        close_all(monitors)
        close_all(flooders)
        out.info["failed"] = "login failed"
        return out
    phases = Phases(["warmup", "baseline", "flood", "after"])
    monitor = Monitor(opt, (monitors[a], monitors[b]), phases, out)
    flooder = Flooder(flooders[f], opt.target.domain)
    baseline_s = max(1.0, opt.duration / 2)
    start = time.monotonic_ns()
    phases.begin(start)
    sender = asyncio.create_task(monitor.run(start))
    with collector_paused():
        await asyncio.sleep(opt.warmup)
        phases.begin(time.monotonic_ns())
        await asyncio.sleep(baseline_s)
        await meter.begin()
        flood_start = time.monotonic_ns()
        phases.begin(flood_start)
        await flooder.run(opt.flood_seconds)
        flood_end = time.monotonic_ns()
        phases.begin(flood_end)
        monitor.stop_ns = flood_end
        out.window_s = (flood_end - flood_start) / 1e9
        await meter.end()
        flooder.session.close()
        try:
            async with asyncio.timeout(opt.monitor_interval + opt.target.timeout):
                await sender
        except TimeoutError as exc:
            out.error(exc)
        await monitor.drain(5.0)
    out.latencies_us = phases.latencies_us[phases.index("flood")]
    for name in ("baseline", "flood"):
        out.counts.update(phases.summary(name))
    out.counts.update(
        baseline_s=round((phases.starts[2] - phases.starts[1]) / 1e9, 3),
        flood_s=round(out.window_s, 3),
        monitor_sent=phases.sent[1] + phases.sent[2],
        monitor_lost=phases.lost("baseline") + phases.lost("flood"),
        baseline_lost=phases.lost("baseline"),
        flood_lost=phases.lost("flood"),
        pings_sent=flooder.sent,
        pongs=flooder.scanner.replies,
        flooder_write_pauses=flooder.pauses,
        flooder_paused_s=round(flooder.paused_s, 3),
        flooder_closed=int(flooder.ended_ns is not None),
    )
    if flooder.ended_ns is not None:
        out.counts["flooder_closed_after_s"] = round((flooder.ended_ns - flood_start) / 1e9, 3)
        out.info["flooder_end"] = flooder.how
    else:
        out.info["flooder_end"] = f"still open after {opt.flood_seconds:g} s"
    out.info["flooder_stream_error"] = flooder.scanner.error or "none"
    if flooder.scanner.error_text:
        out.info["flooder_stream_error_text"] = flooder.scanner.error_text
    close_all(monitors)
    return out


SCENARIOS: dict[str, Callable[[Context, Meter, Shard], Coroutine[Any, Any, Outcome]]] = {
    "prime": run_prime,
    "logins": run_logins,
    "logins-pep": run_logins_pep,
    "logins-linger": run_logins_linger,
    "logins-roster": run_logins_roster,
    "offline-login": run_offline_login,
    "messages": run_messages,
    "messages-sm": run_messages_sm,
    "messages-ws": run_messages_ws,
    "idle": run_idle,
    "idle-sm": run_idle_sm,
    "muc": run_muc,
    "mam": run_mam,
    "cross-node": run_messages,
    "flood": run_flood,
}


def default_context(opt: Options, cache: KeyCache) -> Context:
    return (opt, cache, client_ssl_context())
