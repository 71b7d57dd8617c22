"""Load generator for XMPP servers: raw XMPP over asyncio, no client library.

    python -m bench.loadgen --host 127.0.0.1 --port 15222 --domain bench.local \\
        --server-pid PID --scenario logins,messages --label prosody

Prints one JSON record per scenario on stdout (and appends it to --json-out), then a Markdown table.
Scenarios: prime (fill the client key cache), logins, logins-pep (clients with caps that publish
their OMEMO device list), messages (1:1; --rate for fixed rate), messages-sm (the same with XEP-0198
stream management on every session), messages-ws (the same over XMPP over WebSocket, RFC 7395, on
--ws-port), idle, idle-sm (with stream management), idle-curve (idle under a name of its own: one point
of bench/lib.sh's curve, which runs it once per size and TLS mode), muc, mam, cross-node
(needs --peer-port of a second cluster node; skipped otherwise), flood (a monitor pair's latency
without and with one more session flooding iq pings), logins-roster (logins on the accounts with
--roster-size contacts), offline-login (--backlog messages queued while offline, delivered at login).
See bench/README.md for what each one measures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing as mp
import os
import platform
import resource
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import procstat
from bench.client import Target
from bench.scenarios import SCENARIOS, Context, Options, Outcome, Shard, default_context
from bench.scram import DEFAULT_KEY_CACHE, HASHES, KeyCache
from bench.stats import summarize_us

# Scenarios run under a name of their own, so that their records stay apart from the original's.
ALIASES = {"idle-curve": "idle"}
IDLE_SCENARIOS = ("idle", "idle-sm", "idle-curve")
FD_HEADROOM = 100  # descriptors besides the idle sessions' sockets: listeners, database, logs, the loop

SHARDABLE = {
    "prime", "logins", "logins-pep", "logins-linger", "logins-roster", "messages", "messages-sm", "messages-ws",
    "cross-node",
}
RATE_KEYS = {
    "prime": ("accounts", "accounts/s"),
    "logins": ("logins", "logins/s"),
    "logins-pep": ("logins", "logins/s"),
    "logins-linger": ("logins", "logins/s"),
    "logins-roster": ("logins", "logins/s"),
    "offline-login": ("messages", "msg/s delivered from the offline queue"),
    "messages": ("delivered", "msg/s"),
    "messages-sm": ("delivered", "msg/s"),
    "messages-ws": ("delivered", "msg/s"),
    "cross-node": ("delivered", "msg/s"),
    "muc": ("deliveries", "deliveries/s"),
    "mam": ("queries", "queries/s"),
    "flood": ("pings_sent", "pings/s written by the flooder"),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = p.add_argument
    a("--host", default="127.0.0.1", help="loopback only: 127.0.0.1 or ::1")
    a("--port", type=int, default=5222)
    a("--peer-port", type=int, default=0, help="c2s port of a second cluster node (cross-node)")
    a("--domain", default="bench.local")
    a("--prefix", default="u")
    a("--password", default="bench-pass")
    a("--mechanism", default="SCRAM-SHA-256", choices=[*sorted(HASHES), "none"], help="none: the floor")
    a("--tls", default="starttls", choices=["starttls", "direct", "none"])
    a("--ws-port", type=int, default=0, help="messages-ws: the server's WebSocket port (0: it has none)")
    a("--ws-path", default="/xmpp-websocket", help="messages-ws: the WebSocket endpoint's path")
    a("--ws-scheme", default="wss", choices=["wss", "ws"], help="messages-ws: wss (TLS) or ws (plain)")
    a("--server-pid", default="", help="server pid(s), comma-separated; descendants are included")
    a("--db-pid", default="", help="database pid(s), reported separately")
    a("--scenario", default="logins", help="comma-separated: " + ",".join([*SCENARIOS, *ALIASES]))
    a("--label", default="", help="name of the target in the output")
    a("--concurrency", type=int, default=20)
    a("--count", type=int, default=500, help="logins, idle sessions, or MAM queries")
    a("--accounts", type=int, default=1000, help="account pool for logins")
    a("--first", type=int, default=1, help="first account number")
    a("--roster-pool", type=int, default=2000, help="accounts provisioned with rosters (logins-pep)")
    a("--linger", type=float, default=1.0, help="logins-pep and -linger: seconds a session stays online after login")
    a("--roster-size", type=int, default=20, help="logins-roster: contacts per roster (20: the roster pool)")
    a("--backlog", type=int, default=1000, help="offline-login: messages queued for each account while offline")
    a("--rounds", type=int, default=3, help="offline-login: accounts logging in to their queue, one after another")
    a("--duration", type=float, default=10.0, help="measured seconds (messages, muc, mam)")
    a("--warmup", type=float, default=2.0)
    a("--rate", type=float, default=0.0, help="fixed send rate per second (0: max, closed loop)")
    a("--window", type=int, default=10, help="max mode: messages in flight per sender")
    a("--address", default="full", choices=["full", "bare"], help="1:1 messages to full or bare JIDs")
    a("--pairs", type=int, default=50)
    a("--body-size", type=int, default=100)
    a("--occupants", type=int, default=100)
    a("--senders", type=int, default=5)
    a("--mam-fill", type=int, default=500, help="fill the archive to at least this many messages")
    a("--mam-page", type=int, default=50)
    a("--settle", type=float, default=3.0, help="idle: seconds before reading RSS")
    a("--flood-seconds", type=float, default=30.0, help="flood: longest flood, in s (less if the flooder is closed)")
    a("--monitor-interval", type=float, default=0.02, help="flood: seconds between a monitor session's messages")
    a("--timeout", type=float, default=20.0, help="per-step timeout")
    a("--workers", type=int, default=1, help="load generator processes (prime, logins, messages)")
    a("--source-ips", type=int, default=0, help="spread client sockets over 127.0.0.1..N")
    a("--key-cache", type=Path, default=DEFAULT_KEY_CACHE)
    a("--json-out", type=Path, help="append JSON records to this file")
    a("--param", action="append", default=[], help="KEY=VALUE noted in the record (e.g. archive=on)")
    return p.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    if args.host not in {"127.0.0.1", "::1", "localhost"}:
        raise SystemExit("refusing a non-loopback target: this tool sends load only to 127.0.0.1 / ::1")
    ips = tuple(f"127.0.0.{i}" for i in range(1, args.source_ips + 1)) if args.host == "127.0.0.1" else ()
    target = Target(args.host, args.port, args.domain, args.tls, args.mechanism, args.timeout, ips)
    return Options(
        target=target, prefix=args.prefix, password=args.password, first=args.first,
        accounts=args.accounts, roster_pool=args.roster_pool, linger=args.linger, count=args.count,
        concurrency=args.concurrency,
        duration=args.duration, warmup=args.warmup, rate=args.rate, address=args.address, window=args.window,
        pairs=args.pairs, body_size=args.body_size, occupants=args.occupants, senders=args.senders,
        mam_fill=args.mam_fill, mam_page=args.mam_page, settle=args.settle, peer_port=args.peer_port,
        flood_seconds=args.flood_seconds, monitor_interval=args.monitor_interval,
        ws_port=args.ws_port, ws_path=args.ws_path, ws_scheme=args.ws_scheme,
        roster_size=args.roster_size, backlog=args.backlog, rounds=args.rounds,
    )  # fmt: skip


def pids(spec: str) -> list[int]:
    return [int(x) for x in spec.split(",") if x.strip()]


@dataclass
class Window:
    """CPU samples at the edges of the measured window, for server, database and load generator."""

    server: list[int]
    db: list[int]
    samples: dict[str, list[procstat.Sample]] = field(default_factory=dict)
    walls: list[float] = field(default_factory=list)

    def take(self) -> None:
        self.walls.append(time.monotonic())
        for name, roots in (("server", self.server), ("db", self.db), ("loadgen", [os.getpid()])):
            if roots:
                self.samples.setdefault(name, []).append(procstat.sample(roots))

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if len(self.walls) < 2:
            return out
        # The samples come in begin/end pairs, the last two ending the list; a scenario that measures
        # several windows (offline-login: one per round) gets their sum.
        pairs = [(i, i + 1) for i in range(len(self.walls) % 2, len(self.walls) - 1, 2)]
        wall = sum(self.walls[b] - self.walls[a] for a, b in pairs)
        for name, s in self.samples.items():
            if any(s[b].cpu_s < s[a].cpu_s or not s[b].pids for a, b in pairs):
                out[f"{name}_gone"] = True  # the process exited during the window: no figure
                continue
            cpu_s = sum(s[b].cpu_s - s[a].cpu_s for a, b in pairs)
            out[f"{name}_cpu_pct"] = procstat.cpu_pct(procstat.Sample(0.0, 0, 0), procstat.Sample(cpu_s, 0, 0), wall)
            out[f"{name}_cpu_s"] = round(cpu_s, 3)
        if "server" in self.samples:
            out["server_rss_kb"] = self.samples["server"][-1].rss_kb
        return out


class LocalMeter:
    def __init__(self, window: Window) -> None:
        self.window = window

    async def begin(self) -> None:
        self.window.take()

    async def end(self) -> None:
        self.window.take()

    def server_rss_kb(self) -> int:
        return procstat.sample(self.window.server).rss_kb if self.window.server else 0


class WorkerMeter:
    """In a worker process: the parent samples CPU when every worker has reached the same edge."""

    def __init__(self, barrier: Any, limit_s: float) -> None:
        self.barrier, self.limit_s = barrier, limit_s

    async def begin(self) -> None:
        await asyncio.to_thread(self.barrier.wait, self.limit_s)

    async def end(self) -> None:
        await asyncio.to_thread(self.barrier.wait, self.limit_s)

    def server_rss_kb(self) -> int:
        return 0


def _load_cache(path: Path) -> KeyCache:
    cache = KeyCache()
    cache.load(path)
    return cache


def _save_cache(cache: KeyCache, path: Path) -> None:
    if cache.misses:
        path.parent.mkdir(parents=True, exist_ok=True)
        cache.save(path)


@dataclass(frozen=True)
class WorkerJob:
    name: str
    opt: Options
    key_cache: Path
    shard: Shard
    limit_s: float


def _worker(job: WorkerJob, barrier: Any, q: Any) -> None:
    name, opt, shard = job.name, job.opt, job.shard
    cache = _load_cache(job.key_cache)
    meter = WorkerMeter(barrier, job.limit_s)
    try:
        outcome = asyncio.run(SCENARIOS[ALIASES.get(name, name)](default_context(opt, cache), meter, shard))
    except Exception as exc:  # reported to the parent, which breaks the barrier for the others
        outcome = Outcome()
        outcome.error(exc)
        barrier.abort()
    q.put((outcome, cache.entries if cache.misses else {}))


def merge(outcomes: list[Outcome]) -> Outcome:
    total = Outcome()
    for o in outcomes:
        for k, v in o.counts.items():
            total.counts[k] = total.counts.get(k, 0) + v
        total.latencies_us.extend(o.latencies_us)
        total.add_errors(o)
        total.window_s = max(total.window_s, o.window_s)
        total.info.update(o.info)
    return total


def run_workers(name: str, opt: Options, args: argparse.Namespace, window: Window) -> Outcome:
    ctx = mp.get_context("fork")  # before any event loop exists in this process
    n = args.workers
    barrier = ctx.Barrier(n + 1)
    queue = ctx.Queue()
    limit = opt.warmup + opt.duration + 10 * opt.target.timeout + opt.count / 10
    procs = [
        ctx.Process(target=_worker, args=(WorkerJob(name, opt, args.key_cache, Shard(i, n), limit), barrier, queue))
        for i in range(n)
    ]
    for p in procs:
        p.start()
    loadgen_roots = [p.pid for p in procs if p.pid is not None]
    with contextlib.suppress(threading.BrokenBarrierError):
        for _ in range(2):
            barrier.wait(limit)
            window.walls.append(time.monotonic())
            for key, roots in (("server", window.server), ("db", window.db), ("loadgen", loadgen_roots)):
                if roots:
                    window.samples.setdefault(key, []).append(procstat.sample(roots))
    results = [queue.get(timeout=limit) for _ in procs]
    for p in procs:
        p.join(timeout=10)
    cache = _load_cache(args.key_cache)
    for _, entries in results:
        cache.entries.update(entries)
        cache.misses += len(entries)
    _save_cache(cache, args.key_cache)
    return merge([o for o, _ in results])


def run_local(name: str, opt: Options, args: argparse.Namespace, window: Window) -> Outcome:
    cache = _load_cache(args.key_cache)
    ctx: Context = default_context(opt, cache)
    outcome = asyncio.run(SCENARIOS[ALIASES.get(name, name)](ctx, LocalMeter(window), Shard()))
    _save_cache(cache, args.key_cache)
    return outcome


def affinity(pid: int) -> str:
    try:
        cpus = sorted(os.sched_getaffinity(pid))
    except OSError:
        return "?"
    return ",".join(map(str, cpus))


def record(name: str, args: argparse.Namespace, opt: Options, outcome: Outcome, window: Window) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "target": args.label or f"{args.host}:{args.port}",
        "scenario": name,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "params": _params(name, args),
        "results": dict(outcome.counts),
        "errors": outcome.error_count,
    }
    if outcome.errors:
        rec["first_errors"] = outcome.errors
    key = RATE_KEYS.get(name)
    if key and outcome.window_s > 0 and key[0] in outcome.counts:
        rec["rate"] = round(outcome.counts[key[0]] / outcome.window_s, 1)
        rec["rate_unit"] = key[1]
    if outcome.latencies_us:
        rec["latency"] = summarize_us(outcome.latencies_us)
    rec["window_s"] = round(outcome.window_s, 3)
    rec["cpu"] = window.report()
    rec["pinning"] = {
        "loadgen_cpus": affinity(os.getpid()),
        "server_cpus": affinity(window.server[0]) if window.server else "?",
    }
    rec["info"] = {k: v for k, v in outcome.info.items() if isinstance(v, int | float | str)}
    return rec


def _params(name: str, args: argparse.Namespace) -> dict[str, Any]:
    common = {"tls": args.tls, "mechanism": args.mechanism, "domain": args.domain}
    by_scenario = {
        "prime": ["count", "concurrency"],
        "logins": ["count", "concurrency", "accounts", "workers"],
        "logins-pep": ["count", "concurrency", "accounts", "roster_pool", "linger", "workers"],
        "logins-linger": ["count", "concurrency", "accounts", "roster_pool", "linger", "workers"],
        "logins-roster": ["count", "concurrency", "accounts", "workers"],
        "offline-login": ["backlog", "rounds", "first", "body_size"],
        "messages": ["pairs", "address", "rate", "window", "duration", "body_size", "workers"],
        "messages-sm": ["pairs", "address", "rate", "window", "duration", "body_size", "workers"],
        "messages-ws": ["pairs", "address", "rate", "window", "duration", "body_size", "workers", "ws_port", "ws_path"],
        "cross-node": ["pairs", "address", "rate", "window", "duration", "peer_port"],
        "idle": ["count", "concurrency", "settle"],
        "idle-sm": ["count", "concurrency", "settle"],
        "idle-curve": ["count", "concurrency", "settle"],
        "muc": ["occupants", "senders", "rate", "window", "duration"],
        "mam": ["count", "mam_page", "mam_fill", "duration"],
        "flood": ["duration", "flood_seconds", "monitor_interval"],
    }
    params = {k: getattr(args, k) for k in by_scenario.get(name, [])}
    if name == "logins-roster":
        params["roster"] = args.roster_size
    if args.source_ips:
        params["source_ips"] = args.source_ips
    params.update(common)
    if name == "messages-ws":  # the TLS is the WebSocket's (wss://), not STARTTLS on the c2s port
        params.update(transport="websocket", tls="wss" if args.ws_scheme == "wss" else "none")
    params.update(dict(p.split("=", 1) for p in args.param))
    return params


def skipped(name: str, args: argparse.Namespace, reason: str) -> dict[str, Any]:
    return {
        "target": args.label or f"{args.host}:{args.port}",
        "scenario": name,
        "skipped": reason,
        "params": _params(name, args),
    }


def markdown(records: list[dict[str, Any]]) -> str:
    lines = [
        "| target | scenario | params | rate | p50 ms | p99 ms | KB/session | server CPU % | db CPU % "
        "| loadgen CPU % | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        if "skipped" in r:
            lines.append(f"| {r['target']} | {r['scenario']} | skipped: {r['skipped']} |||||||||")
            continue
        lat, cpu = r.get("latency", {}), r.get("cpu", {})
        params = ", ".join(f"{k}={v}" for k, v in r["params"].items() if k not in {"domain", "mechanism"})
        rate = f"{r['rate']:,.0f} {r['rate_unit']}" if "rate" in r else ""
        kb = r["results"].get("kb_per_session", "")
        cells = [
            r["target"], r["scenario"], params, rate, lat.get("p50_ms", ""), lat.get("p99_ms", ""), kb,
            cpu.get("server_cpu_pct", ""), cpu.get("db_cpu_pct", ""), cpu.get("loadgen_cpu_pct", ""),
            r["errors"],
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    notes = [flood_note(r) for r in records if r["scenario"] == "flood" and "skipped" not in r]
    notes += [sm_note(r) for r in records if "skipped" not in r and "sm_sessions" in r.get("results", {})]
    notes += [ws_note(r) for r in records if "skipped" not in r and "ws_sessions" in r.get("results", {})]
    notes += [offline_note(r) for r in records if r["scenario"] == "offline-login" and "skipped" not in r]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines)


def flood_note(r: dict[str, Any]) -> str:
    """The flood scenario's own figures (its p50/p99 columns above are the monitor's during the flood)."""
    res, info = r.get("results", {}), r.get("info", {})

    def ms(phase: str) -> str:
        if f"{phase}_p99_ms" not in res:
            return "no samples"
        return " / ".join(f"{res[f'{phase}_{k}_ms']:g}" for k in ("p50", "p99", "max")) + " ms"

    if res.get("flooder_closed"):
        closed = f"closed by the server after {res.get('flooder_closed_after_s', 0):g} s ({info.get('flooder_end', '')}"
        closed += f": {info['flooder_stream_error']})" if info.get("flooder_stream_error", "none") != "none" else ")"
    else:
        closed = f"not closed ({info.get('flooder_end', '')})"
    return (
        f"- {r['target']}: flood: monitor p50 / p99 / max {ms('baseline')} without the flood "
        f"({res.get('baseline_s', 0):g} s), {ms('flood')} with it ({res.get('flood_s', 0):g} s); "
        f"monitor messages lost {res.get('monitor_lost', 0):g} of {res.get('monitor_sent', 0):g}; "
        f"flooder: {res.get('pings_sent', 0):,.0f} pings sent, {res.get('pongs', 0):,.0f} pongs received, {closed}"
    )


def sm_note(r: dict[str, Any]) -> str:
    """Stream management's own figures (messages-sm, idle-sm): the acks both ways, and what did not match."""
    res = r.get("results", {})

    def n(key: str) -> str:
        return f"{res.get(key, 0):,.0f}"

    bad = ("sm_server_unanswered", "sm_server_h_errors", "sm_final_h_mismatches", "sm_stream_errors")
    problems = ", ".join(f"{k.removeprefix('sm_')} {n(k)}" for k in bad if res.get(k))
    return (
        f"- {r['target']}: {r['scenario']}: stream management on {n('sm_sessions')} sessions "
        f"({n('sm_resumable')} resumable); server asked {n('sm_server_requests')} acks, clients answered "
        f"{n('sm_client_answers')}; clients asked {n('sm_client_requests')}, server answered "
        f"{n('sm_server_answers')}; stanzas sent {n('sm_stanzas_sent')}, received {n('sm_stanzas_received')}, "
        f"received but not acknowledged at the end {n('sm_unacked_at_end')}; "
        + (f"mismatches: {problems}" if problems else "no mismatch")
    )


def ws_note(r: dict[str, Any]) -> str:
    """The WebSocket sessions' own figures (messages-ws): pings, and how the streams ended (RFC 7395 §3.6)."""
    res = r.get("results", {})

    def n(key: str) -> str:
        return f"{res.get(key, 0):,.0f}"

    return (
        f"- {r['target']}: {r['scenario']}: {n('ws_sessions')} WebSocket sessions "
        f"({r['params'].get('tls')}, path {r['params'].get('ws_path')}), {n('ws_frames_received')} frames received, "
        f"{n('ws_server_pings')} server pings answered, {n('ws_closed_early')} closed by the server during the run, "
        f"{n('ws_protocol_errors')} failed on a frame breaking RFC 6455; "
        f"at the end the server answered <close/> on {n('ws_close_answered')}, sent its closing frame on "
        f"{n('ws_close_frames')} and closed the connection on {n('ws_closed_by_server')}"
    )


def offline_note(r: dict[str, Any]) -> str:
    """offline-login's own figures: the rounds' delivery times (presence sent to last message)."""
    res = r.get("results", {})
    return (
        f"- {r['target']}: offline-login: {res.get('rounds', 0):g} accounts logged in to "
        f"{res.get('backlog', 0):,.0f} queued messages each: presence to last message p50 "
        f"{res.get('delivery_p50_ms', '-')} ms, max {res.get('delivery_max_ms', '-')} ms; first message p50 "
        f"{res.get('first_message_p50_ms', '-')} ms; {res.get('messages', 0):,.0f} delivered, "
        f"{res.get('refused', 0):,.0f} refused when queued (queued at {res.get('queued_per_s', 0):,.0f} msg/s), "
        f"{res.get('stale_flushed', 0):,.0f} left from earlier runs taken first"
    )


def raise_fd_limit() -> None:
    # 10,000 idle sessions need 10,000 descriptors here too; the soft limit may be far below the hard.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def file_limit(pid: int | None = None) -> int | None:
    """The soft limit on open files of a process (this one without pid); None: unlimited or unknown."""
    if pid is None:
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else soft
    try:
        lines = Path(f"/proc/{pid}/limits").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("Max open files"):
            soft_text = line.removeprefix("Max open files").split()[0]
            return int(soft_text) if soft_text.isdigit() else None
    return None


def too_many_sessions(count: int, limits: dict[str, int | None]) -> str | None:
    """Why `count` idle sessions cannot be held, if they cannot: each takes a descriptor in the load
    generator and one in the server, plus FD_HEADROOM, and neither can go past its file limit
    (`limits`: whose limit, e.g. "server pid 123", to its soft limit or None for none known)."""
    need = count + FD_HEADROOM
    low = [f"{who} ({limit:,})" for who, limit in limits.items() if limit is not None and need > limit]
    if not low:
        return None
    return (
        f"{count:,} sessions need {need:,} open files ({FD_HEADROOM} of headroom), above the file limit "
        f"(ulimit -n) of the {' and of the '.join(low)}"
    )


def shrink_tls_buffers() -> None:
    # asyncio's SSLProtocol (3.11) preallocates a 256 KiB read buffer per connection: 2.5 GB for
    # 10,000 idle sessions. One TLS record (16 KiB of plaintext) is all a read can return anyway.
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = 16 * 1024


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    raise_fd_limit()
    shrink_tls_buffers()
    opt = options_from(args)
    records = []
    for name in [s.strip() for s in args.scenario.split(",") if s.strip()]:
        if name not in SCENARIOS and name not in ALIASES:
            raise SystemExit(f"unknown scenario {name}")
        rec = run_one(name, args, opt)
        records.append(rec)
        line = json.dumps(rec, sort_keys=False)
        print(line, flush=True)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            with args.json_out.open("a") as f:
                f.write(line + "\n")
    print()
    print(markdown(records))
    print(f"\nloadgen: python {platform.python_version()}, cpus {affinity(os.getpid())}, pid {os.getpid()}")
    return 0


def quiesce(roots: list[int], limit_s: float = 30.0) -> None:
    """Waits (bounded) until the server is idle, so one scenario's backlog is not the next one's load."""
    if not roots:
        return
    deadline = time.monotonic() + limit_s
    before = procstat.sample(roots)
    while time.monotonic() < deadline:
        time.sleep(0.5)  # the CPU sampling window, not a wait for an event
        after = procstat.sample(roots)
        if procstat.cpu_pct(before, after, 0.5) < 10.0:
            return
        before = after


def run_one(name: str, args: argparse.Namespace, opt: Options) -> dict[str, Any]:
    if name == "cross-node" and not args.peer_port:
        return skipped(name, args, "target has no cluster: pass --peer-port of a second node")
    if name in IDLE_SCENARIOS:
        limits = {"load generator": file_limit(), **{f"server pid {p}": file_limit(p) for p in pids(args.server_pid)}}
        reason = too_many_sessions(opt.count, limits)
        if reason:
            reason += f" (--tls {args.tls})"
            print(f"loadgen: {name} skipped: {reason}", file=sys.stderr, flush=True)
            return skipped(name, args, reason)
    window = Window(pids(args.server_pid), pids(args.db_pid))
    quiesce(window.server + window.db)
    if args.workers > 1 and name in SHARDABLE:
        outcome = run_workers(name, opt, args, window)
    else:
        outcome = run_local(name, opt, args, window)
    if "skipped" in outcome.info:
        return skipped(name, args, str(outcome.info["skipped"]))
    return record(name, args, opt, outcome, window)


if __name__ == "__main__":
    sys.exit(main())
