"""The "how cost grows" curves' pure parts (not timed, no server): the logins-roster account ranges
and their rosters, offline-login's byte scanners and arrival counter, the mam-curve records and
table, idle-curve's file-limit check, the rows bench/report.py makes of them, and the xmppd config
offline-login runs on."""

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from bench import report
from bench.loadgen import (
    ALIASES,
    FD_HEADROOM,
    Window,
    file_limit,
    markdown,
    offline_note,
    options_from,
    parse_args,
    run_one,
    too_many_sessions,
)
from bench.mam_query import CURVE_SHAPES, curve_record, curve_table
from bench.mam_query import parse_sizes as parse_archive_sizes
from bench.procstat import Sample
from bench.provision import BASE_ROSTER, Plan, roster_range
from bench.render import render
from bench.scenarios import Arrivals, iq_answered, refused_messages
from bench.xmppd_provision import ROSTER_ITEM_COLUMNS, curve_plans, parse_sizes, roster_digest, roster_rows
from storage.rows import ROSTER_COLUMNS
from xmppd.config import load_config

# --- logins-roster: the ranges and their rosters ---------------------------------------------------


def test_the_base_size_is_the_existing_pool() -> None:
    assert roster_range(BASE_ROSTER, 1000) == ("u", 1000)
    assert roster_range(20, 250, prefix="v") == ("v", 250)


def test_other_sizes_have_ranges_of_their_own_large_enough() -> None:
    assert roster_range(200, 1000) == ("r200u", 1000)
    assert roster_range(1000, 1000) == ("r1000u", 1001)  # n±1..n±500 must be distinct
    assert roster_range(200, 50) == ("r200u", 201)
    with pytest.raises(ValueError):
        roster_range(201, 1000)
    with pytest.raises(ValueError):
        roster_range(0, 1000)


@pytest.mark.parametrize(("size", "accounts"), [(200, 1000), (200, 50), (1000, 1000), (6, 7)])
def test_range_rosters_are_symmetric_and_full(size: int, accounts: int) -> None:
    (plan,) = curve_plans("bench.local", "u", "pw", [BASE_ROSTER, size], accounts)
    assert (plan.prefix, plan.roster_size, plan.roster_pool) == (f"r{size}u", size, plan.count)
    rosters = {n: list(plan.contacts(n)) for n in range(1, plan.count + 1)}
    assert all(len(c) == len(set(c)) == size and n not in c for n, c in rosters.items())
    pairs = {(n, c) for n, cs in rosters.items() for c in cs}
    assert all((c, n) in pairs for n, c in pairs)


def test_curve_plans_skip_the_pool_and_duplicates() -> None:
    plans = curve_plans("bench.local", "u", "pw", parse_sizes("20 1000, 200 200"), 1000)
    assert [(p.prefix, p.count, p.roster_size) for p in plans] == [("r200u", 1000, 200), ("r1000u", 1001, 1000)]
    assert all(p.domain == "bench.local" and p.mechanism == "SCRAM-SHA-256" for p in plans)
    assert not curve_plans("bench.local", "u", "pw", [], 1000)


def test_range_salts_differ_from_the_pools() -> None:
    (plan,) = curve_plans("bench.local", "u", "pw", [200], 1000)
    assert plan.salt(1) != Plan("bench.local", "u", 1, "pw", "SCRAM-SHA-256", 1).salt(1)


def test_bulk_roster_rows_follow_xmppds_columns_and_order() -> None:
    assert ["host", "username", *ROSTER_COLUMNS, "added_version"] == ROSTER_ITEM_COLUMNS
    rows = roster_rows("bench.local", [("r6u1", ["r6u5@bench.local", "r6u2@bench.local"]), ("r6u2", ["a@b"])], [])
    assert len(rows) == 3 and all(len(r) == len(ROSTER_ITEM_COLUMNS) for r in rows)
    first = dict(zip(ROSTER_ITEM_COLUMNS, rows[0], strict=True))
    assert first["subscription"] == "both" and first["listed"] and not first["ask"] and not first["pending_in"]
    # added_version gives the listing order: the order of the contacts, per user.
    assert [(r[1], r[2], r[-1]) for r in rows] == [
        ("r6u1", "r6u5@bench.local", 1),
        ("r6u1", "r6u2@bench.local", 2),
        ("r6u2", "a@b", 1),
    ]


def test_roster_digest_is_postgresqls_md5_of_the_sorted_jids() -> None:
    # md5(string_agg(jid, ',' ORDER BY jid)) for 'r6u2@bench.local' and 'r6u10@bench.local' ("C" order).
    assert roster_digest(["r6u2@bench.local", "r6u10@bench.local"]) == hashlib.md5(
        b"r6u10@bench.local,r6u2@bench.local"
    ).hexdigest()
    (small,) = curve_plans("bench.local", "u", "pw", [6], 7)
    (grown,) = curve_plans("bench.local", "u", "pw", [6], 9)
    # A range grown (or shrunk) changes the contacts of the accounts near its ends, not their count.
    assert roster_digest(map(str, small.contacts(1))) != roster_digest(map(str, grown.contacts(1)))


# --- offline-login: what the sender and the recipient scan -------------------------------------------

REFUSED_SQ = (
    b"<message type='error' from='u1001@bench.local' to='u1004@bench.local/bench'><body>bt:1:offline</body>"
    b"<error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"
)
REFUSED_DQ = b'<message xmlns="jabber:client" from="u1001@bench.local" type="error" id="x"><error/></message>'
PONG = b"<iq type='result' id='offline2' from='bench.local' to='u1004@bench.local/bench'/>"


def test_refused_messages_are_counted_in_both_quote_styles() -> None:
    assert refused_messages(REFUSED_SQ * 3 + REFUSED_DQ + PONG) == 4
    assert refused_messages(PONG + b"<message type='chat'><body>error</body></message>") == 0
    assert refused_messages(b"<messages type='error'/>") == 0


def test_the_ping_answer_is_found_by_its_id_only() -> None:
    assert iq_answered(REFUSED_SQ + PONG, "offline2")
    assert iq_answered(b'<iq xmlns="jabber:client" id="offline2" type="result"></iq>', "offline2")
    assert not iq_answered(PONG, "offline1")
    assert not iq_answered(PONG, "offline")  # a prefix of the id is not the id
    assert not iq_answered(PONG[:20], "offline2")


async def test_arrivals_note_the_first_and_the_last_of_those_expected() -> None:
    arrivals = Arrivals(3)
    two = b"".join(f"<message><body>bt:{i}:offline xx</body></message>".encode() for i in (1, 2))
    for i in range(0, len(two), 7):  # markers split across reads
        arrivals.feed(two[i : i + 7])
    assert arrivals.count == 2 and not arrivals.done.done()
    arrivals.feed(b"<message><body>bt:3")
    assert not arrivals.done.done()
    arrivals.feed(b":offline</body></message>")
    assert arrivals.count == 3 and arrivals.done.done()
    assert 0 < arrivals.first_ns <= arrivals.last_ns
    arrivals.fed.clear()
    arrivals.feed(b"<presence/>")  # later bytes only say that bytes came
    assert arrivals.count == 3 and arrivals.fed.is_set()
    assert Arrivals(0).done.done()  # nothing expected (all refused): no wait


def test_several_windows_add_up_their_cpu() -> None:
    w = Window([1], [])
    w.walls = [0.0, 0.5, 10.0, 10.5]
    w.samples = {"server": [Sample(1.0, 100, 1), Sample(1.25, 100, 1), Sample(5.0, 100, 1), Sample(5.25, 200, 1)]}
    assert w.report() == {"server_cpu_pct": 50.0, "server_cpu_s": 0.5, "server_rss_kb": 200}
    one = Window([1], [])
    one.walls, one.samples = [0.0, 0.5], {"server": [Sample(1.0, 1, 1), Sample(1.5, 1, 1)]}
    assert one.report()["server_cpu_pct"] == 100.0  # a single window as before


OFFLINE = {
    "target": "xmppd abc (postgresql)",
    "scenario": "offline-login",
    "params": {"backlog": 1000, "rounds": 3, "first": 1001},
    "results": {
        "backlog": 1000, "rounds": 3, "messages": 3000, "refused": 0, "stale_flushed": 0,
        "delivery_p50_ms": 24.6, "delivery_max_ms": 42.6, "first_message_p50_ms": 3.7, "queued_per_s": 640.0,
    },
    "errors": 0,
    "rate": 32924.0,
    "rate_unit": "msg/s delivered from the offline queue",
    "latency": {"p50_ms": 24.6, "p99_ms": 42.6, "max_ms": 42.6},
    "cpu": {},
}


def test_offline_note() -> None:
    note = offline_note(OFFLINE)
    assert "3 accounts logged in to 1,000 queued messages each" in note
    assert "p50 24.6 ms, max 42.6 ms" in note and "3,000 delivered, 0 refused" in note
    assert note in markdown([OFFLINE])


# --- mam-curve ------------------------------------------------------------------------------------------


def _point(rows: int, latest: float, with_: float) -> dict:
    q = {
        shape: {"n": 200, "p50_ms": ms, "p99_ms": ms * 2, "mean_ms": ms, "max_ms": ms * 3}
        for shape, ms in (("latest", latest), ("with", with_))
    }
    return {"fill": {"rows": rows, "fill_s": 1.5, "rows_per_s": 100000, "table_mb": 7}, "queries": q}


def test_archive_sizes() -> None:
    assert parse_archive_sizes("10000 1000000,10_000_000") == [10_000, 1_000_000, 10_000_000]
    with pytest.raises(ValueError):
        parse_archive_sizes("")
    with pytest.raises(ValueError):
        parse_archive_sizes("0")


def test_curve_records_and_table() -> None:
    points = ((10_000, 0.4), (10**7, 0.8))
    recs = [curve_record("xmppd abc (postgresql)", _point(n, ms, ms / 2), 200, "15") for n, ms in points]
    assert recs[0]["scenario"] == "mam-curve" and recs[0]["params"]["archive_rows"] == 10_000
    assert {f"{s}_p50_ms" for s in CURVE_SHAPES} <= recs[0]["results"].keys()
    assert recs[1]["results"]["with_p99_ms"] == 0.8 and recs[1]["latency"]["p50_ms"] == 0.8
    table = curve_table(recs).splitlines()
    assert table[2] == "| 10,000 | 7 | 1.5 | 0.4 | 0.8 | 0.2 | 0.4 |"
    assert table[3].startswith("| 10,000,000 |")


# --- the rows of the results table -------------------------------------------------------------------------


def _login(size: int, rate: float) -> dict:
    return {
        "target": "xmppd abc (postgresql)",
        "scenario": "logins-roster",
        "params": {"count": 500, "roster": size},
        "results": {"logins": 500},
        "errors": 0,
        "rate": rate,
        "latency": {"p50_ms": 1000 / rate, "p99_ms": 2000 / rate},
    }


def test_report_rows_one_per_point() -> None:
    mam = [curve_record("xmppd abc (postgresql)", _point(n, 0.5, 0.3), 200, "15") for n in (10_000, 1_000_000)]
    records = [_login(1000, 20.0), _login(20, 200.0), _login(200, 100.0), OFFLINE, *mam]
    titles = [m.title for m in report.metrics(records)]
    rows = ["logins/s, 20-contact roster", "logins/s, 200-contact roster", "logins/s, 1,000-contact roster"]
    assert titles[titles.index("login p99 ms") + 1 : titles.index("login p99 ms") + 4] == rows
    assert "login p99 ms, 1,000-contact roster" in titles
    assert "offline queue of 1,000 messages delivered at login: msg/s" in titles
    assert "MAM latest page p99 ms, 1,000,000-message archive (PostgreSQL store, no server)" in titles
    table = report.table(records)
    assert "| logins/s, 1,000-contact roster | 20 |  |" in table
    assert "| login p50 ms, 200-contact roster | 10.0 |  |" in table
    assert "| offline queue of 1,000 messages delivered at login: p50 ms, presence to last message | 24.6 |" in table
    assert "| offline queue of 1,000 messages delivered at login: msg/s | 32,924 |" in table
    assert "| MAM latest page `with` the busiest contact (10%) p50 ms, 10,000-message archive" in table
    assert "skipped" not in table


def _idle(count: int, tls: str, kb: float, target: str = "xmppd abc (sqlite)") -> dict:
    return {
        "target": target,
        "scenario": "idle-curve",
        "params": {"count": count, "concurrency": 50, "settle": 65.0, "source_ips": 4, "tls": tls},
        "results": {"sessions": count, "kb_per_session": kb},
        "errors": 0,
        "cpu": {},
    }


def test_idle_curve_rows_one_per_count_and_mode() -> None:
    idle_tls = {**_idle(10_000, "starttls", 99.0), "scenario": "idle"}  # idle-tls, not a point of the curve
    records = [
        idle_tls,
        _idle(10_000, "starttls", 40.0),
        _idle(10_000, "none", 20.0),
        _idle(1_000, "starttls", 45.5),
        _idle(1_000, "none", 22.4),
        _idle(19_000, "starttls", 39.0),
        _idle(19_000, "none", 19.0),
        _idle(1_000, "starttls", 60.0, "prosody 0.12"),
        {**_idle(50_000, "starttls", 0.0), "skipped": "50,000 sessions need 50,100 open files"},
    ]
    titles = [m.title for m in report.metrics(records)]
    after = titles.index("KB per idle session (plain)")
    assert titles[after + 1 : after + 7] == [
        "KB per idle session (TLS), 1,000 sessions",
        "KB per idle session (TLS), 10,000 sessions",
        "KB per idle session (TLS), 19,000 sessions",
        "KB per idle session (plain), 1,000 sessions",
        "KB per idle session (plain), 10,000 sessions",
        "KB per idle session (plain), 19,000 sessions",
    ]
    assert not any("50,000" in t for t in titles)  # a skipped point has no row
    table = report.table(records)
    assert "| KB per idle session (TLS) | 99.0 |  |  |" in table  # idle-tls keeps its own row
    assert "| KB per idle session (TLS), 1,000 sessions | 45.5 | 60.0 | 1.32x |" in table
    assert "| KB per idle session (plain), 1,000 sessions | 22.4 |  |  |" in table
    assert "| KB per idle session (plain), 19,000 sessions | 19.0 |  |  |" in table
    assert "- xmppd abc (sqlite): idle-curve skipped: 50,000 sessions need 50,100 open files" in table


def test_idle_curve_alone_leaves_the_idle_rows_empty() -> None:
    table = report.table([_idle(1_000, "starttls", 45.5)])
    assert "| KB per idle session (TLS), 1,000 sessions | 45.5 |" in table
    assert "| KB per idle session (TLS) |" not in table and "(plain)" not in table


def test_too_many_sessions_names_the_count_and_the_limits() -> None:
    limits = {"load generator": 20_000, "server pid 7": 20_000}
    assert too_many_sessions(20_000 - FD_HEADROOM, limits) is None
    assert too_many_sessions(50_000, {"load generator": None}) is None  # unlimited or unknown
    reason = too_many_sessions(50_000, {"load generator": 20_000, "server pid 7": 60_000})
    assert reason is not None and "50,000 sessions need 50,100 open files" in reason
    assert "of the load generator (20,000)" in reason and "server pid 7" not in reason
    both = too_many_sessions(19_950, limits)
    assert both is not None and "load generator (20,000) and of the server pid 7 (20,000)" in both


def test_file_limit_reads_a_process_limits() -> None:
    assert file_limit(os.getpid()) == file_limit()
    assert file_limit(2**22 + 1) is None  # no such process


def test_idle_curve_point_beyond_the_file_limit_is_skipped(capsys: pytest.CaptureFixture[str]) -> None:
    if file_limit() is None:
        pytest.skip("no file limit here: the point would run")
    args = parse_args(["--scenario", "idle-curve", "--count", "10000000", "--tls", "none", "--source-ips", "4"])
    rec = run_one("idle-curve", args, options_from(args))
    assert rec["scenario"] == "idle-curve" and "10,000,000 sessions need" in rec["skipped"]
    assert rec["params"]["count"] == 10_000_000 and rec["params"]["tls"] == "none" and rec["params"]["source_ips"] == 4
    assert "idle-curve skipped: 10,000,000 sessions" in capsys.readouterr().err
    assert ALIASES["idle-curve"] == "idle"


def test_no_curve_no_rows() -> None:
    assert [m.title for m in report.metrics([])] == [m.title for m in report.METRICS]


# --- the config offline-login runs on -----------------------------------------------------------------------

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.parametrize("modules", ['"offline"', '"ping"'])
def test_offline_limit_raised_only_with_the_module(tmp_path: Path, modules: str) -> None:
    out = tmp_path / "xmppd.toml"
    options = (BENCH / "templates" / "xmppd-offline.toml").read_text() if "offline" in modules else ""
    values = {
        "OUT": str(tmp_path), "DOMAIN": "bench.local", "C2S_PORT": "35222", "C2S_TLS_PORT": "35223",
        "HTTP_PORT": "35280", "HTTP_TLS_PORT": "35281", "PG_PORT": "15432", "STORAGE": "sqlite",
        "MODULES": modules, "C2S_LIMITS": "", "MODULE_OPTIONS": options,
    }  # fmt: skip
    render(BENCH / "templates" / "xmppd.toml", out, values)
    config = load_config(out)  # xmppd refuses options of a module it does not load
    if "offline" in modules:
        assert config.module_options["offline"]["max_messages"] >= 100_000  # OFFLINE_BACKLOG's default is 1,000
    else:
        assert "offline" not in config.module_options


def test_scenarios_are_wired() -> None:
    lib = (BENCH / "lib.sh").read_text()
    for name in ("logins-roster)", "offline-login)", "mam-curve)", "idle-curve)"):
        assert name in lib
    assert "mam-curve" in (BENCH / "xmppd.sh").read_text()
    assert asyncio.iscoroutinefunction(__import__("bench.scenarios").scenarios.SCENARIOS["offline-login"])
