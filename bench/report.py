"""Turns the load generator's JSON lines into results.json and a side-by-side Markdown table.

    python -m bench.report bench/out/results.jsonl --json bench/out/results.json --md bench/out/results.md

Columns are the targets in the order they ran; the last column is xmppd's ratio to the better of
Prosody and ejabberd (above 1 is better for xmppd, whichever direction the metric is better in).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Record = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    title: str
    match: Callable[[Record], bool]
    value: Callable[[Record], float | None]
    higher_is_better: bool = True
    digits: int = 0
    compare: bool = True  # False: shown for context, no ratio (e.g. CPU use)
    describe: Callable[[Record], str] | None = None  # the cell's text, when a number is not enough
    # Set for a row that compares two scenarios of the same target: `value` of the record `match`
    # finds, combined by `against` with `value` of the one `baseline` finds (e.g. SM on vs off).
    baseline: Callable[[Record], bool] | None = None
    against: Callable[[float, float], float] | None = None


def _p(r: Record, key: str) -> Any:
    return r.get("params", {}).get(key)


def _lat(key: str) -> Callable[[Record], float | None]:
    return lambda r: r.get("latency", {}).get(key)


def _rate(r: Record) -> float | None:
    return r.get("rate")


def _res(key: str) -> Callable[[Record], float | None]:
    return lambda r: r.get("results", {}).get(key)


def _cpu(key: str) -> Callable[[Record], float | None]:
    return lambda r: r.get("cpu", {}).get(key)


def _msg(archive: str, fixed: bool, address: str = "full", load: str | None = None) -> Callable[[Record], bool]:
    """1:1 messages with the archive on or off, in max or fixed-rate mode, to full or bare JIDs
    (records from before the address was a parameter went to full JIDs); `load`: the fixed rate's
    name (`half`: half the archive-on saturation of the same run)."""
    return lambda r: (
        r["scenario"] == "messages"
        and _p(r, "archive") == archive
        and (float(_p(r, "rate") or 0) > 0) == fixed
        and (_p(r, "address") or "full") == address
        and _p(r, "load") == load
    )


def _muc(fixed: bool) -> Callable[[Record], bool]:
    return lambda r: r["scenario"] == "muc" and (float(_p(r, "rate") or 0) > 0) == fixed


def _is(scenario: str, **params: str) -> Callable[[Record], bool]:
    return lambda r: r["scenario"] == scenario and all(_p(r, k) == v for k, v in params.items())


def _flooder_closed(r: Record) -> str:
    res, info = r.get("results", {}), r.get("info", {})
    if not res.get("flooder_closed"):
        return f"no, {info.get('flooder_end', 'still open')}"
    error = info.get("flooder_stream_error", "none")
    how = error if error != "none" else info.get("flooder_end", "no stream error")
    return f"after {res.get('flooder_closed_after_s', 0):.1f} s, {how}"


_FLOOD = _is("flood")
_PEP = _is("logins-pep")
_IDLE_TLS = _is("idle", tls="starttls")
_IDLE_SM = _is("idle-sm", tls="starttls")


def _sm_msg(r: Record) -> bool:
    return r["scenario"] == "messages-sm" and not float(_p(r, "rate") or 0) > 0


def _ws_msg(r: Record) -> bool:
    return r["scenario"] == "messages-ws" and not float(_p(r, "rate") or 0) > 0


def _sm_acks(r: Record) -> str:
    res = r.get("results", {})

    def n(key: str) -> str:
        return f"{res.get(key, 0):,.0f}"

    bad = sum(
        res.get(k, 0)
        for k in ("sm_server_unanswered", "sm_server_h_errors", "sm_final_h_mismatches", "sm_stream_errors")
    )
    return (
        f"server asked {n('sm_server_requests')}, answered {n('sm_client_answers')}; "
        f"client asked {n('sm_client_requests')}, answered {n('sm_server_answers')}; "
        + ("no mismatch" if not bad else f"{bad:,.0f} mismatches")
    )


def _per_login(*keys: str) -> Callable[[Record], float | None]:
    def value(r: Record) -> float | None:
        res = r.get("results", {})
        return sum(res.get(k, 0) for k in keys) / res["logins"] if res.get("logins") else None

    return value


def _pep_events(r: Record) -> str:
    live, last = _per_login("notifications")(r), _per_login("last_items")(r)
    return f"{live or 0:.1f} notifications + {last or 0:.1f} last items"


METRICS = [
    Metric("logins/s (TLS, SCRAM, bind, 20-contact roster, presence)", _is("logins"), _rate),
    Metric("login p50 ms", _is("logins"), _lat("p50_ms"), False, 1),
    Metric("login p99 ms", _is("logins"), _lat("p99_ms"), False, 1),
    Metric("logins/s with PEP publish + caps (OMEMO device list, 4 +notify)", _PEP, _rate),
    Metric("PEP login p50 ms", _PEP, _lat("p50_ms"), False, 1),
    Metric("PEP login p99 ms", _PEP, _lat("p99_ms"), False, 1),
    Metric(
        "PEP: contacts' device-list events received per login",
        _PEP,
        _per_login("notifications", "last_items"),
        compare=False,
        describe=_pep_events,
    ),
    Metric("1:1 msg/s, archive off", _msg("off", False), _rate),
    Metric("1:1 msg/s, archive off, to bare JIDs", _msg("off", False, "bare"), _rate),
    Metric("1:1 msg/s, archive on", _msg("on", False), _rate),
    Metric("1:1 msg/s, archive on, to bare JIDs", _msg("on", False, "bare"), _rate),
    Metric(
        "1:1 msg/s, archive on / off (same server)",
        _msg("on", False),
        _rate,
        digits=2,
        compare=False,
        baseline=_msg("off", False),
        against=lambda on, off: on / off,
    ),
    Metric("server CPU % during 1:1 max, archive on", _msg("on", False), _cpu("server_cpu_pct"), compare=False),
    Metric("database CPU % during 1:1 max, archive on", _msg("on", False), _cpu("db_cpu_pct"), compare=False),
    Metric(
        "load generator CPU % during 1:1 max, archive on", _msg("on", False), _cpu("loadgen_cpu_pct"), compare=False
    ),
    Metric("server CPU % during 1:1 max (archive off)", _msg("off", False), _cpu("server_cpu_pct"), compare=False),
    Metric("load generator CPU % during 1:1 max", _msg("off", False), _cpu("loadgen_cpu_pct"), compare=False),
    Metric("1:1 msg/s, stream management on (ack every 5)", _sm_msg, _rate),
    Metric(
        "1:1 msg/s with stream management / without (same server)",
        _sm_msg,
        _rate,
        digits=2,
        compare=False,
        baseline=_msg("off", False),
        against=lambda on, off: on / off,
    ),
    Metric("server CPU % during 1:1 max, stream management on", _sm_msg, _cpu("server_cpu_pct"), compare=False),
    Metric(
        "load generator CPU % during 1:1 max, stream management on", _sm_msg, _cpu("loadgen_cpu_pct"), compare=False
    ),
    Metric(
        "stream management acks during 1:1 max (requests, answers)",
        _sm_msg,
        _res("sm_server_requests"),
        compare=False,
        describe=_sm_acks,
    ),
    Metric("1:1 msg/s over WebSocket (TLS)", _ws_msg, _rate),
    Metric(
        "WebSocket / TCP msg/s (same server)",
        _ws_msg,
        _rate,
        digits=2,
        compare=False,
        baseline=_msg("off", False),
        against=lambda ws, tcp: ws / tcp,
    ),
    Metric("server CPU % during 1:1 max over WebSocket", _ws_msg, _cpu("server_cpu_pct"), compare=False),
    Metric("load generator CPU % during 1:1 max over WebSocket", _ws_msg, _cpu("loadgen_cpu_pct"), compare=False),
    Metric("1:1 p50 ms at fixed rate", _msg("off", True), _lat("p50_ms"), False, 2),
    Metric("1:1 p99 ms at fixed rate", _msg("off", True), _lat("p99_ms"), False, 2),
    Metric("1:1 p50 ms at fixed rate, archive on", _msg("on", True), _lat("p50_ms"), False, 2),
    Metric("1:1 p99 ms at fixed rate, archive on", _msg("on", True), _lat("p99_ms"), False, 2),
    Metric("1:1 msg/s sent at half the archive-on saturation", _msg("on", True, load="half"), _rate, compare=False),
    Metric("1:1 p50 ms at half the archive-on saturation", _msg("on", True, load="half"), _lat("p50_ms"), False, 2),
    Metric("1:1 p99 ms at half the archive-on saturation", _msg("on", True, load="half"), _lat("p99_ms"), False, 2),
    Metric("flood: monitor p99 ms, no flood (a pair, 1 msg / 20 ms each)", _FLOOD, _res("baseline_p99_ms"), False, 2),
    Metric("flood: monitor p99 ms while one client floods iq pings", _FLOOD, _res("flood_p99_ms"), False, 2),
    Metric("flood: monitor messages lost", _FLOOD, _res("monitor_lost"), compare=False),
    Metric("flood: pings/s written by the flooder", _FLOOD, _rate, compare=False),
    Metric("flood: flooder closed by server", _FLOOD, _res("flooder_closed"), compare=False, describe=_flooder_closed),
    Metric("KB per idle session (TLS)", _IDLE_TLS, _res("kb_per_session"), False, 1),
    Metric("idle KB/session, TLS + stream management", _IDLE_SM, _res("kb_per_session"), False, 1),
    Metric(
        "idle KB/session: stream management's extra over TLS (same server)",
        _IDLE_SM,
        _res("kb_per_session"),
        False,
        1,
        compare=False,
        baseline=_IDLE_TLS,
        against=lambda on, off: on - off,
    ),
    Metric("KB per idle session (plain)", _is("idle", tls="none"), _res("kb_per_session"), False, 1),
    Metric("MUC deliveries/s (archive on)", _muc(False), _rate),
    Metric("MUC delivery p50 ms at fixed rate", _muc(True), _lat("p50_ms"), False, 2),
    Metric("MUC delivery p99 ms at fixed rate", _muc(True), _lat("p99_ms"), False, 2),
    Metric("MAM archive size (messages)", _is("mam"), lambda r: r.get("info", {}).get("archive_count"), compare=False),
    Metric("MAM page p50 ms", _is("mam"), _lat("p50_ms"), False, 2),
    Metric("MAM page p99 ms", _is("mam"), _lat("p99_ms"), False, 2),
]


# --- the "how cost grows" curves: one row per point, the points being what the run measured -------------


def _param_values(records: list[Record], scenario: str, key: str) -> list[int]:
    """The distinct values of an integer parameter among the scenario's measured records, sorted."""
    values = set()
    for r in records:
        if r["scenario"] == scenario and "skipped" not in r:
            v = _p(r, key)
            if isinstance(v, int) or (isinstance(v, str) and v.isdigit()):
                values.add(int(v))
    return sorted(values)


def _at(scenario: str, key: str, value: int) -> Callable[[Record], bool]:
    return lambda r: r["scenario"] == scenario and str(_p(r, key)) == str(value)


def roster_curve(records: list[Record]) -> list[Metric]:
    """logins-roster: logins/s and login p50/p99 per roster size."""
    sizes = _param_values(records, "logins-roster", "roster")
    rows: list[tuple[str, Callable[[Record], float | None], bool, int]] = [
        ("logins/s, {n:,}-contact roster", _rate, True, 0),
        ("login p50 ms, {n:,}-contact roster", _lat("p50_ms"), False, 1),
        ("login p99 ms, {n:,}-contact roster", _lat("p99_ms"), False, 1),
    ]
    return [
        Metric(title.format(n=n), _at("logins-roster", "roster", n), value, better, digits)
        for title, value, better, digits in rows
        for n in sizes
    ]


def offline_curve(records: list[Record]) -> list[Metric]:
    """offline-login: per queue size, presence-to-last-message p50 and max, and messages/s."""
    metrics = []
    for n in _param_values(records, "offline-login", "backlog"):
        match = _at("offline-login", "backlog", n)
        what = f"offline queue of {n:,} messages delivered at login"
        metrics += [
            Metric(f"{what}: p50 ms, presence to last message", match, _res("delivery_p50_ms"), False, 1),
            Metric(f"{what}: max ms, presence to last message", match, _res("delivery_max_ms"), False, 1),
            Metric(f"{what}: msg/s", match, _rate),
        ]
    return metrics


def _idle_point(count: int, tls: str) -> Callable[[Record], bool]:
    return lambda r: _at("idle-curve", "count", count)(r) and _p(r, "tls") == tls


def idle_curve(records: list[Record]) -> list[Metric]:
    """idle-curve: KB per idle session per session count, TLS (STARTTLS) then plain, each point
    measured on a freshly started server."""
    counts = _param_values(records, "idle-curve", "count")
    return [
        Metric(f"KB per idle session ({label}), {n:,} sessions", _idle_point(n, tls), _res("kb_per_session"), False, 1)
        for tls, label in (("starttls", "TLS"), ("none", "plain"))
        for n in counts
    ]


def mam_curve(records: list[Record]) -> list[Metric]:
    """mam-curve (bench/mam_query.py --sizes): page latency per archive size, xmppd's store alone."""
    sizes = _param_values(records, "mam-curve", "archive_rows")
    shapes = (("latest", "latest page"), ("with", "latest page `with` the busiest contact (10%)"))
    return [
        Metric(
            f"MAM {label} {q} ms, {n:,}-message archive (PostgreSQL store, no server)",
            _at("mam-curve", "archive_rows", n),
            _res(f"{shape}_{q}_ms"),
            False,
            2,
            compare=False,
        )
        for shape, label in shapes
        for q in ("p50", "p99")
        for n in sizes
    ]


# Each curve's rows follow the row of that title (or end the table if no such row is left).
CURVES: list[tuple[str, Callable[[list[Record]], list[Metric]]]] = [
    ("login p99 ms", roster_curve),
    ("PEP: contacts' device-list events received per login", offline_curve),
    ("KB per idle session (plain)", idle_curve),
    ("MAM page p99 ms", mam_curve),
]


def metrics(records: list[Record]) -> list[Metric]:
    """METRICS with the curves' rows for the points found in the records."""
    after = {anchor: build(records) for anchor, build in CURVES}
    out: list[Metric] = []
    for m in METRICS:
        out.append(m)
        out.extend(after.pop(m.title, []))
    for rest in after.values():
        out.extend(rest)
    return out


def load(path: Path) -> list[Record]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def targets(records: list[Record]) -> list[str]:
    seen: list[str] = []
    for r in records:
        if r["target"] not in seen:
            seen.append(r["target"])
    return seen


def find(records: list[Record], target: str, m: Metric) -> Record | None:
    return _find(records, target, m.match)


def _find(records: list[Record], target: str, match: Callable[[Record], bool]) -> Record | None:
    return next((r for r in records if r["target"] == target and "skipped" not in r and match(r)), None)


def _number(m: Metric, r: Record | None) -> float | None:
    v = m.value(r) if r is not None else None
    return float(v) if isinstance(v, int | float) else None


def cell(records: list[Record], target: str, m: Metric) -> float | None:
    v = _number(m, find(records, target, m))
    if v is None or m.baseline is None or m.against is None:
        return v
    base = _number(m, _find(records, target, m.baseline))
    if base is None:
        return None
    try:
        return m.against(v, base)
    except ZeroDivisionError:
        return None


def text(records: list[Record], target: str, m: Metric) -> str:
    r = find(records, target, m)
    shown = fmt(cell(records, target, m), m.digits)
    if shown and r is not None and m.describe is not None:
        return m.describe(r)
    advertised = r.get("info", {}).get("mam_advertised") if r is not None else None
    if shown and r is not None and _p(r, "archive") == "on" and advertised is False:
        shown += " (no MAM advertised)"
    # Only xmppd's label is at stake: ejabberd advertises MAM on its archive-off host because mod_mam
    # is loaded there for MUC archives, with default: never (it archives no 1:1 chat there).
    if shown and r is not None and _p(r, "archive") == "off" and advertised is True and target.startswith("xmppd"):
        shown += " (MAM advertised)"
    return shown


def ratio(values: dict[str, float | None], m: Metric) -> str:
    if not m.compare:
        return ""
    ours = next((v for t, v in values.items() if t.startswith("xmppd") and v), None)
    others = [v for t, v in values.items() if t.startswith(("prosody", "ejabberd")) and v]
    if ours is None or not others:
        return ""
    best = max(others) if m.higher_is_better else min(others)
    return f"{(ours / best if m.higher_is_better else best / ours):.2f}x"


def comparable_archives(records: list[Record], cols: list[str]) -> bool:
    """MAM latencies compare only between archives of about the same size."""
    sizes = [
        r.get("info", {}).get("archive_count")
        for r in records
        if r["target"] in cols and r["scenario"] == "mam" and "skipped" not in r
    ]
    known = [s for s in sizes if isinstance(s, int)]
    return bool(known) and len(known) == len(sizes) and min(known) * 2 >= max(known)


def fmt(v: float | None, digits: int) -> str:
    return "" if v is None else f"{v:,.{digits}f}"


def table(records: list[Record]) -> str:
    cols = targets(records)
    lines = ["| metric | " + " | ".join(cols) + " | xmppd vs best other |", "|---" * (len(cols) + 2) + "|"]
    for m in metrics(records):
        values = {t: cell(records, t, m) for t in cols}
        if all(v is None for v in values.values()):
            continue
        shown = {t: text(records, t, m) for t in cols}
        no_archive = any(t.startswith("xmppd") and "MAM" in shown[t] for t in cols)
        row = [m.title, *shown.values(), "n/a (archive differs)" if no_archive else ratio(values, m)]
        if m.title.startswith("MAM page") and not comparable_archives(records, cols):
            row[-1] = "n/a (archive sizes differ)"
        lines.append("| " + " | ".join(row) + " |")
    skipped = [f"- {r['target']}: {r['scenario']} skipped: {r['skipped']}" for r in records if "skipped" in r]
    errors = [
        f"- {r['target']}: {r['scenario']} had {r['errors']} errors: {r.get('first_errors')}"
        for r in records
        if r.get("errors")
    ]
    for extra in (skipped, errors):
        if extra:
            lines += ["", *extra]
    return "\n".join(lines)


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in _run(["lscpu"]).splitlines() if "Model name" in ln), "")
    pkgs = _run(["dpkg-query", "-W", "-f=${Package} ${Version}\\n", "prosody", "ejabberd", "postgresql-15"])
    import lxml.etree

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "lxml": ".".join(map(str, lxml.etree.LXML_VERSION)),
        "packages": pkgs.splitlines(),
        "xmppd_rev": _run(["git", "rev-parse", "--short", "HEAD"]) or "uncommitted",
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("jsonl", type=Path)
    p.add_argument("--json", type=Path, required=True)
    p.add_argument("--md", type=Path, required=True)
    p.add_argument("--started", default="")
    p.add_argument("--command", default="bench/run.sh")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    records = load(args.jsonl)
    info = machine()
    doc = {"started": args.started, "command": args.command, "machine": info, "records": records}
    args.json.write_text(json.dumps(doc, indent=1) + "\n")
    header = (
        f"Run started {args.started} with `{args.command}`; {info['cpus']} CPUs ({info['cpu_model']}), "
        f"kernel {info['kernel']}, Python {info['python']}, lxml {info['lxml']}; "
        f"{'; '.join(info['packages'])}. Servers and PostgreSQL pinned to one core with taskset, "
        "the load generator to the other.\n\n"
    )
    args.md.write_text(header + table(records) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
