"""The flood scenario's pure parts: the flooder's reply scanner, the monitor's phases, the report rows
and the xmppd configs it runs on (not timed, no server)."""

import tomllib
from pathlib import Path

import pytest

from bench import report
from bench.loadgen import flood_note, markdown
from bench.render import render
from bench.scenarios import Phases
from bench.stream import ReplyScanner, ping

PONG = b"<iq type='result' id='f' from='bench.local' to='u3@bench.local/bench'/>"
PONG_DQ = b'<iq xmlns="jabber:client" type="result" id="f" from="bench.local"></iq>'
ERROR = (
    b"<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
    b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>too many stanzas or bytes for too long</text>"
    b"</stream:error></stream:stream>"
)


def _feed(data: bytes, size: int) -> ReplyScanner:
    scanner = ReplyScanner()
    for i in range(0, len(data), size):
        scanner.feed(data[i : i + size])
    return scanner


@pytest.mark.parametrize("size", [1, 2, 3, 5, 13, 64, 10_000])
def test_replies_and_stream_error_survive_any_split(size: int) -> None:
    # <iq/> and both quote styles count; what follows the stream error does not.
    data = PONG * 7 + PONG_DQ * 3 + b"<iq/>" + ERROR + PONG
    scanner = _feed(data, size)
    assert scanner.replies == 11
    assert scanner.error == "policy-violation"
    assert scanner.error_text == "too many stanzas or bytes for too long"
    assert scanner.closed


@pytest.mark.parametrize("size", [1, 4, 1000])
def test_closing_tag_without_error(size: int) -> None:
    scanner = _feed(PONG * 3 + b"</stream:stream>", size)
    assert (scanner.replies, scanner.error, scanner.closed) == (3, "", True)


def test_not_closed_while_the_stream_runs() -> None:
    scanner = _feed(PONG * 2 + b"<iq", 1)
    assert (scanner.replies, scanner.error, scanner.closed) == (2, "", False)
    scanner.feed(b" type='result'/>")
    assert scanner.replies == 3
    assert not _feed(b"<iqx/><iq-like/>", 1).replies


def test_error_without_text_in_double_quotes() -> None:
    scanner = _feed(b'<stream:error><conflict xmlns="urn:ietf:params:xml:ns:xmpp-streams"/></stream:error>', 2)
    assert (scanner.error, scanner.error_text, scanner.closed) == ("conflict", "", False)


def test_ping_is_one_iq_get() -> None:
    assert ping("f", "bench.local") == b"""<iq type='get' id='f' to="bench.local"><ping xmlns='urn:xmpp:ping'/></iq>"""


def test_phases_assign_by_stamp_not_arrival() -> None:
    phases = Phases(["warmup", "baseline", "flood", "after"])
    phases.begin(0)
    phases.begin(100)
    phases.begin(200)
    for stamp in (10, 100, 150, 199, 200, 250):
        phases.sent_at(stamp, 2)
    # Sent at 150 and delivered during the flood: still the baseline's.
    phases.delivered(150, 210_150)
    phases.delivered(150, 1_150)
    phases.delivered(250, 5_000_250)  # 5 ms
    phases.begin(300)
    assert phases.sent == [2, 6, 4, 0]
    assert phases.received == [0, 2, 1, 0]
    assert phases.lost("baseline") == 4
    assert phases.lost("flood") == 3
    assert phases.outstanding() == 9
    assert list(phases.latencies_us[1]) == [210, 1]
    summary = phases.summary("flood")
    assert summary["flood_p99_ms"] == 5.0
    assert summary["flood_samples"] == 1
    assert phases.summary("after") == {}
    with pytest.raises(ValueError):
        phases.begin(400)


def test_phases_must_begin_in_order() -> None:
    phases = Phases(["a", "b"])
    phases.begin(10)
    with pytest.raises(ValueError):
        phases.begin(5)


def _flood_record(target: str, baseline: float, flood: float, closed: bool) -> dict:
    results = {
        "baseline_p50_ms": 1.0, "baseline_p99_ms": baseline, "baseline_max_ms": baseline + 1,
        "flood_p50_ms": 2.0, "flood_p99_ms": flood, "flood_max_ms": flood + 1,
        "baseline_s": 5.0, "flood_s": 11.2, "monitor_sent": 1620, "monitor_lost": 0,
        "pings_sent": 250_000, "pongs": 3_000, "flooder_closed": int(closed),
    }  # fmt: skip
    info = {"flooder_end": "still open after 30 s", "flooder_stream_error": "none"}
    if closed:
        results["flooder_closed_after_s"] = 11.2
        info = {"flooder_end": "stream error", "flooder_stream_error": "policy-violation"}
    return {
        "target": target, "scenario": "flood", "params": {"duration": 10.0, "tls": "starttls"},
        "results": results, "errors": 0, "info": info, "rate": 22321.4, "rate_unit": "pings/s",
        "latency": {"p50_ms": 2.0, "p99_ms": flood},
    }  # fmt: skip


def _rows(md: str) -> dict[str, list[str]]:
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| flood:"):
            rows[cells[0]] = cells[1:]
    return rows


def test_report_shows_the_monitor_p99_without_and_with_the_flood() -> None:
    records = [
        _flood_record("xmppd abc (postgresql)", 4.0, 20.0, closed=True),
        _flood_record("prosody 0.12", 5.0, 8000.0, closed=False),
    ]
    rows = _rows(report.table(records))
    no_flood = next(v for k, v in rows.items() if "no flood" in k)
    during = next(v for k, v in rows.items() if "floods iq pings" in k)
    assert no_flood == ["4.00", "5.00", "1.25x"]  # lower is better: 5 / 4
    assert during == ["20.00", "8,000.00", "400.00x"]
    closed = next(v for k, v in rows.items() if "closed" in k)
    assert closed == ["after 11.2 s, policy-violation", "no, still open after 30 s", ""]
    lost = next(v for k, v in rows.items() if "lost" in k)
    assert lost == ["0", "0", ""]


def test_report_has_no_flood_rows_without_flood_records() -> None:
    assert not _rows(report.table([{"target": "xmppd", "scenario": "logins", "params": {}, "rate": 50.0}]))


def test_loadgen_markdown_spells_out_the_flood() -> None:
    rec = _flood_record("xmppd", 4.0, 20.0, closed=True)
    note = flood_note(rec)
    assert "1 / 4 / 5 ms without the flood (5 s)" in note
    assert "2 / 20 / 21 ms with it (11.2 s)" in note
    assert "250,000 pings sent, 3,000 pongs received" in note
    assert "closed by the server after 11.2 s (stream error: policy-violation)" in note
    assert note in markdown([rec])
    assert "not closed (still open after 30 s)" in flood_note(_flood_record("p", 1, 2, closed=False))


TEMPLATES = Path(__file__).resolve().parents[2] / "bench" / "templates"
RATE_KEYS = {"stanza_rate", "stanza_burst", "byte_rate", "byte_burst"}


def _render(tmp_path: Path, limits: str) -> dict:
    out = tmp_path / "xmppd.toml"
    values = {
        "OUT": "/tmp/bench", "DOMAIN": "bench.local", "C2S_PORT": "35222", "C2S_TLS_PORT": "35223",
        "HTTP_PORT": "35280", "HTTP_TLS_PORT": "35281",
        "PG_PORT": "15432", "STORAGE": "sqlite", "MODULES": '"ping"', "C2S_LIMITS": limits,
        "MODULE_OPTIONS": "",
    }  # fmt: skip
    render(TEMPLATES / "xmppd.toml", out, values)
    return tomllib.loads(out.read_text())


def test_flood_config_keeps_xmppds_default_limits(tmp_path: Path) -> None:
    c2s = _render(tmp_path, "")["c2s"]
    assert not RATE_KEYS & c2s.keys()
    assert "max_throttled_seconds" not in c2s
    assert c2s["max_unauthenticated"] == 20000  # the rest of [c2s] is the same


def test_throughput_configs_raise_the_limits(tmp_path: Path) -> None:
    c2s = _render(tmp_path, (TEMPLATES / "xmppd-raised-limits.toml").read_text())["c2s"]
    assert c2s.keys() >= RATE_KEYS
    assert c2s["stanza_rate"] >= 1e6
    assert c2s["byte_rate"] >= 2**30
