"""Archive query latency on PostgreSQL: "a page of 50" from a user archive of a million messages.

    python -m bench.mam_query [--dsn postgresql://postgres@127.0.0.1:5432/test] [--rows 1000000]
                              [--queries 200] [--notes docs/mam-query-plans.md]

Makes a throwaway schema in the given database, migrates it, fills the archive of one user with
`--rows` messages over the last year with COPY (100 contacts: one with a tenth of the messages,
the others sharing the rest), then times, through the ArchiveStore as the MAM module calls it:

- latest:        the newest page (RSM `<before/>`), what a client opens a chat with
- with:          the newest page with the busiest contact (`with` filter, 10% of the archive)
- with_rare:     the newest page with a contact that has 0.1% of the archive
- after_id:      a page after an id deep in the archive (random among the oldest 90%), forwards,
                 with the existence check the module makes first: two statements
- before_id:     the page before such an id, backwards (scrolling back through history)
- count:         <max>0</max>, the only query that counts the whole archive

and the write path: records per second through `append` one at a time, in batches, and through
the MAM module's BatchWriter with 200 concurrent writers. Prints JSON; writes the timings and the
EXPLAIN (ANALYZE, BUFFERS) plan of each query into `--notes`. The schema is dropped at the end.

Page latency against archive size (the mam-curve scenario of bench/xmppd.sh):

    python -m bench.mam_query --sizes "10000 1000000 10000000" [--queries 200] [--dsn ...]
                              [--json-out bench/out/results.jsonl --label "xmppd ..."]

For each size a throwaway schema of its own, filled by one INSERT ... SELECT FROM generate_series per
million rows inside PostgreSQL (the same user, contacts, shares, id spread and message shape as the
COPY above, bodies cut from a fixed text; ten million rows in minutes, where generating them in
Python would take most of an hour), VACUUM ANALYZE and CHECKPOINT, then `--queries` timings of the
latest page and of the latest page `with` the busiest contact; the schema is dropped before the
next size. Prints a Markdown table (one row per size) and appends one JSON record per size to
`--json-out` in the load generator's format (scenario "mam-curve", param archive_rows), which
bench/report.py turns into rows of the results table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from storage.archive import ArchiveIds, ArchiveQuery, ArchiveRecord, datetime_ms, first_id_at, format_id
from storage.postgres import PostgresStorage, open_postgres, quote_identifier
from storage.postgres.archive import select_sql
from xmppd.batching import BatchWriter

HOST = "bench.local"
USER = "u1"
CONTACTS = 100
PAGE = 50
DEFAULT_DSN = os.environ.get("XMPPD_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def contact(n: int) -> str:
    # Contact 0 gets a tenth of the messages, contact 99 one in a thousand, the rest share evenly.
    return f"c{n:02d}@example.net"


def pick_contact(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.10:
        return 0
    if roll < 0.101:
        return 99
    return 1 + rng.randrange(98)


def rows(count: int, start_ms: int, span_ms: int, seed: int = 1) -> Iterator[tuple[Any, ...]]:
    """Archive rows in id order: host, username, id, with_jid, with_resource, outgoing, stanza."""
    rng = random.Random(seed)
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "a",
        "lazy",
        "dog",
        "while",
        "we",
        "talk",
        "about",
        "lunch",
        "and",
        "later",
        "plans",
    ]
    step = span_ms / count
    for n in range(count):
        archive_id = first_id_at(start_ms + int(n * step)) + rng.randrange(1 << 20)
        peer = contact(pick_contact(rng))
        outgoing = rng.random() < 0.5
        me, them = f"{USER}@{HOST}/phone", f"{peer}/laptop"
        sender, to = (me, peer) if outgoing else (them, f"{USER}@{HOST}")
        body = " ".join(rng.choice(words) for _ in range(rng.randint(3, 30)))
        stanza = (
            f'<message xmlns="jabber:client" from="{sender}" to="{to}" type="chat" id="{uuid.UUID(int=n)}">'
            f"<body>{body}</body>"
            f'<origin-id xmlns="urn:xmpp:sid:0" id="{uuid.UUID(int=n)}"/>'
            '<markable xmlns="urn:xmpp:chat-markers:0"/>'
            '<request xmlns="urn:xmpp:receipts"/></message>'
        )
        yield HOST, USER, archive_id, peer, "" if outgoing else "laptop", outgoing, stanza


async def fill(dsn: str, schema: str, count: int) -> dict[str, float]:
    now_ms = datetime_ms(datetime.now(UTC))
    span = int(timedelta(days=365).total_seconds() * 1000)
    conn = await asyncpg.connect(dsn)
    try:
        began = time.perf_counter()
        chunk: list[tuple[Any, ...]] = []
        columns = ["host", "username", "id", "with_jid", "with_resource", "outgoing", "stanza"]
        for row in rows(count, now_ms - span, span):
            chunk.append(row)
            if len(chunk) == 100_000:
                await conn.copy_records_to_table("archive", records=chunk, columns=columns, schema_name=schema)
                chunk = []
        if chunk:
            await conn.copy_records_to_table("archive", records=chunk, columns=columns, schema_name=schema)
        copied = time.perf_counter() - began
        await conn.execute(f"VACUUM ANALYZE {quote_identifier(schema)}.archive")
        # Write the filled pages out now, so that no checkpoint of them runs during the timings.
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval(f"SELECT pg_total_relation_size('{quote_identifier(schema)}.archive')")
    finally:
        await conn.close()
    return {"rows": count, "copy_s": round(copied, 1), "rows_per_s": round(count / copied), "table_mb": size // 2**20}


# The fill of the curve, in SQL: rows n = $5..$6 of an archive whose n-th message is at $3 + n * $4 ms,
# as rows() has them: contact 0 a tenth of the messages, contact 99 one in a thousand, the others
# evenly; half outgoing; an id of that millisecond plus 20 random bits; the message's id and
# origin-id the UUID of n; a body of 15-150 characters cut from WORDS. The random() columns come from
# a subquery so that each is drawn once per row.
FILL_SQL = """
INSERT INTO archive (host, username, id, with_jid, with_resource, outgoing, stanza)
SELECT $1, $2, id, peer, CASE WHEN outgoing THEN '' ELSE 'laptop' END, outgoing,
       format('<message xmlns="jabber:client" from="%s" to="%s" type="chat" id="%s"><body>%s</body>'
              '<origin-id xmlns="urn:xmpp:sid:0" id="%s"/><markable xmlns="urn:xmpp:chat-markers:0"/>'
              '<request xmlns="urn:xmpp:receipts"/></message>',
              CASE WHEN outgoing THEN $7 ELSE peer || '/laptop' END,
              CASE WHEN outgoing THEN peer ELSE $8 END, uid, body, uid)
FROM (
    SELECT (($3::bigint + floor(n * $4::float8)::bigint) << 21) + floor(s * 1048576)::bigint AS id,
           'c' || lpad((CASE WHEN r < 0.10 THEN 0 WHEN r < 0.101 THEN 99 ELSE 1 + floor(c * 98)::int END)::text,
                       2, '0') || '@example.net' AS peer,
           o < 0.5 AS outgoing,
           substr($9, 1 + floor(b * 80)::int, 15 + floor(l * 136)::int) AS body,
           lpad(to_hex(n), 32, '0')::uuid::text AS uid
    FROM (SELECT n, random() AS r, random() AS c, random() AS o, random() AS s, random() AS b, random() AS l
          FROM generate_series($5::bigint, $6::bigint) AS n) AS drawn
) AS made
"""
WORDS = " ".join(["the quick brown fox jumps over a lazy dog while we talk about lunch and later plans"] * 4)
FILL_CHUNK = 1_000_000  # rows per statement (one transaction each)
CURVE_SHAPES = ("latest", "with")


async def fill_sql(dsn: str, schema: str, count: int) -> dict[str, float]:
    """As fill(), by SQL inside the server."""
    now_ms = datetime_ms(datetime.now(UTC))
    span = int(timedelta(days=365).total_seconds() * 1000)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": quote_identifier(schema)})
    try:
        await conn.execute("SELECT setseed(0.5)")
        began = time.perf_counter()
        for start in range(0, count, FILL_CHUNK):
            end = min(count, start + FILL_CHUNK) - 1
            await conn.execute(
                FILL_SQL, HOST, USER, now_ms - span, span / count, start, end, f"{USER}@{HOST}/phone",
                f"{USER}@{HOST}", WORDS,
            )  # fmt: skip
        copied = time.perf_counter() - began
        await conn.execute("VACUUM ANALYZE archive")
        await conn.execute("CHECKPOINT")
        size = await conn.fetchval("SELECT pg_total_relation_size('archive')")
    finally:
        await conn.close()
    return {"rows": count, "fill_s": round(copied, 1), "rows_per_s": round(count / copied), "table_mb": size // 2**20}


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 3)

    return {
        "n": len(ordered),
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
        "max_ms": round(ordered[-1] * 1000, 3),
    }


async def timed(n: int, run: Callable[[], Awaitable[Any]]) -> dict[str, float]:
    for _ in range(10):  # warm-up: connections, prepared statements, the planner's generic-plan switch
        await run()
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        await run()
        samples.append(time.perf_counter() - began)
    return summary(samples)


def query_shapes(deep_ids: list[int]) -> dict[str, Callable[[], ArchiveQuery]]:
    rng = random.Random(2)
    return {
        "latest": lambda: ArchiveQuery(limit=PAGE, last=True),
        "with": lambda: ArchiveQuery(with_jid=contact(0), limit=PAGE, last=True),
        "with_rare": lambda: ArchiveQuery(with_jid=contact(99), limit=PAGE, last=True),
        "after_id": lambda: ArchiveQuery(after_id=rng.choice(deep_ids), limit=PAGE),
        "before_id": lambda: ArchiveQuery(before_id=rng.choice(deep_ids), limit=PAGE, last=True),
    }


async def queries(
    storage: PostgresStorage, n: int, deep_ids: list[int], only: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Timings of each query shape (`only` those named, and then no count), and an example of each."""
    archive = storage.archive
    shapes = query_shapes(deep_ids)
    if only:
        shapes = {name: make for name, make in shapes.items() if name in only}
    results: dict[str, Any] = {}
    examples: dict[str, ArchiveQuery] = {}
    for name, make in shapes.items():
        examples[name] = make()

        async def run(make: Callable[[], ArchiveQuery] = make, name: str = name) -> None:
            query = make()
            if query.after_id is not None or query.before_id is not None:
                # What the module does for an id the client names: check it exists, then read.
                named = query.after_id if query.after_id is not None else query.before_id
                assert named is not None
                assert await archive.existing(HOST, USER, [named])
            page = await archive.query(HOST, USER, query)
            assert page.records, name

        results[name] = await timed(n, run)
    if only:
        return results, examples

    async def count() -> None:
        await archive.count(HOST, USER, ArchiveQuery())

    results["count"] = await timed(max(10, n // 10), count)
    examples["count"] = ArchiveQuery()
    return results, examples


async def writes(storage: PostgresStorage) -> dict[str, Any]:
    """Records per second into the same (big) table, for another user."""
    ids = ArchiveIds()
    stanza = '<message xmlns="jabber:client" type="chat"><body>hello there, how are you?</body></message>'

    def record(n: int) -> ArchiveRecord:
        return ArchiveRecord(HOST, f"w{n % 50}", ids.next(int(time.time() * 1000)), "c@example.net", "", True, stanza)

    out: dict[str, Any] = {}
    for batch, total in ((1, 500), (10, 2000), (100, 10_000), (500, 20_000)):
        began = time.perf_counter()
        for start in range(0, total, batch):
            await storage.archive.append([record(n) for n in range(start, start + batch)])
        elapsed = time.perf_counter() - began
        out[f"append_batch_{batch}"] = {"rows": total, "rows_per_s": round(total / elapsed)}

    writer: BatchWriter[ArchiveRecord] = BatchWriter(storage.archive.append)
    total, concurrency = 20_000, 200
    began = time.perf_counter()

    async def one_writer(k: int) -> None:
        for n in range(k, total, concurrency):
            await writer.write(record(n))  # each waits for its own commit, as the module does

    await asyncio.gather(*(one_writer(k) for k in range(concurrency)))
    elapsed = time.perf_counter() - began
    out["batch_writer_200_concurrent"] = {
        "rows": total,
        "rows_per_s": round(total / elapsed),
        "transactions": writer.batches,
        "mean_batch": round(writer.items / max(1, writer.batches), 1),
    }
    return out


async def explain(dsn: str, schema: str, examples: dict[str, ArchiveQuery]) -> dict[str, str]:
    conn = await asyncpg.connect(dsn, server_settings={"search_path": quote_identifier(schema)})
    plans: dict[str, str] = {}
    try:
        for name, query in examples.items():
            if name == "count":
                sql = "SELECT count(*) FROM archive WHERE host = $1 AND username = $2 AND id > $3 AND id < $4"
                low, high = query.id_range()
                args: list[Any] = [low, high]
            else:
                sql, args = select_sql(query)
            rows_ = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", HOST, USER, *args)
            plans[name] = "\n".join(row[0] for row in rows_)
        # The plan a prepared statement settles on after five runs (asyncpg prepares everything).
        sql, args = select_sql(examples["with"])
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE generic_with AS {sql}")
        params = ", ".join(_literal(v) for v in [HOST, USER, *args])
        rows_ = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) EXECUTE generic_with({params})")
        plans["with (generic plan)"] = "\n".join(row[0] for row in rows_)
    finally:
        await conn.close()
    return plans


def _literal(value: Any) -> str:
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def notes(
    path: Path, result: dict[str, Any], plans: dict[str, str], examples: dict[str, ArchiveQuery], command: str
) -> None:
    q = result["queries"]
    lines = [
        "# MAM queries on a million-message archive (PostgreSQL)",
        "",
        "Generated by `bench/mam_query.py`; reproduce with:",
        "",
        "```sh",
        command,
        "```",
        "",
        f"Run {result['date']} on {result['machine']}, PostgreSQL {result['postgres']}, "
        f"Python {result['python']}; load average {result['load_average']} at the end (other test "
        "suites share the machine and the database, which is the stock test cluster, not tuned for "
        "this). Every figure is client-side wall time through `storage.archive` (asyncpg pool), "
        "round trips included.",
        "",
        f"One user, {result['fill']['rows']:,} messages over a year, 100 contacts (one with 10%, one with "
        f"0.1%); table and indexes {result['fill']['table_mb']} MB; filled with COPY at "
        f"{result['fill']['rows_per_s']:,} rows/s.",
        "",
        "| query (page of 50) | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|",
    ]
    for name, label in (
        ("latest", "latest page (RSM `<before/>`)"),
        ("with", "latest page `with` the busiest contact (10%)"),
        ("with_rare", "latest page `with` a rare contact (0.1%)"),
        ("after_id", "page after an id deep in the archive (+ existence check)"),
        ("before_id", "page before an id deep in the archive (+ existence check)"),
        ("count", "`<max>0</max>`: count the whole archive (not a page)"),
    ):
        lines.append(f"| {label} | {q[name]['p50_ms']} | {q[name]['p99_ms']} | {q[name]['max_ms']} |")
    lines += [
        "",
        "Writes into the same table (another 50 users), records per second:",
        "",
        "| path | rows/s |",
        "|---|---|",
    ]
    for name, value in result["writes"].items():
        extra = ""
        if "transactions" in value:
            extra = f" ({value['transactions']} transactions, {value['mean_batch']} rows each)"
        lines.append(f"| `{name}` | {value['rows_per_s']:,}{extra} |")
    lines += [
        "",
        "`append_batch_1` pays one commit (a WAL flush) per message, which is what an unbatched archive "
        "costs; it is also the figure that moves most with other load on the disk (0.3-2.5k rows/s across "
        "runs on this machine). The BatchWriter is the module's path: each writer still waits for its own "
        "commit, but the records that arrive during one commit share the next.",
        "",
        "## Why it is fast",
        "",
        "The archive id is time-ordered (milliseconds << 21 | random sequence), so archive order, "
        "`start`/`end` and RSM paging are all ranges of one btree: the primary key (host, username, id) "
        "or `archive_with` (host, username, with_jid, id). Every page is an Index Scan (Backward for "
        "the latest page) that stops after 51 rows, whatever the archive's size; LIMIT is written into "
        "the statement so that the generic plan a prepared statement switches to keeps that shape. "
        "Only `count` visits the whole archive (an index-only scan), which is why `<count/>` is sent "
        "only when the page is the whole result or the client asks for nothing but the count.",
        "",
        "## Plans (EXPLAIN ANALYZE, BUFFERS)",
        "",
    ]
    for name, plan in plans.items():
        example = examples.get(name.split(" ")[0])
        lines += [f"### {name}", ""]
        if example is not None and name != "count":
            lines += ["```sql", select_sql(example)[0], "```", ""]
        lines += ["```", plan, "```", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


async def curve_point(dsn: str, rows_: int, n: int) -> dict[str, Any]:
    """One size of the curve: a schema of its own, filled by SQL, timed, dropped."""
    schema = f"xmppd_bench_mam_{uuid.uuid4().hex[:12]}"
    storage = await open_postgres(dsn, schema=schema, pool_size=4)
    try:
        await storage.migrate()
        filled = await fill_sql(dsn, schema, rows_)
        timings, _ = await queries(storage, n, [], only=CURVE_SHAPES)
    finally:
        await storage.close()
        await drop_schema(dsn, schema)
    return {"fill": filled, "queries": timings}


async def drop_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
    finally:
        await conn.close()


def parse_sizes(spec: str) -> list[int]:
    """MAM_SIZES as the shell has it: "10000 1000000 10000000" (commas and underscores too)."""
    sizes = [int(x.replace("_", "")) for x in spec.replace(",", " ").split()]
    if not sizes or min(sizes) < 1:
        raise ValueError(f"archive sizes must be positive row counts: {spec!r}")
    return sizes


def curve_record(label: str, point: dict[str, Any], n: int, postgres: str) -> dict[str, Any]:
    """One point as a load generator record (bench/loadgen.py's format): scenario mam-curve."""
    q, fill_ = point["queries"], point["fill"]
    results: dict[str, float] = {
        f"{shape}_{k}": q[shape][k] for shape in CURVE_SHAPES for k in ("p50_ms", "p99_ms", "max_ms")
    }
    results.update(fill_s=fill_["fill_s"], fill_rows_per_s=fill_["rows_per_s"], table_mb=fill_["table_mb"])
    latest = q["latest"]
    return {
        "target": label,
        "scenario": "mam-curve",
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "params": {"archive_rows": fill_["rows"], "page": PAGE, "queries": n, "storage": "postgresql", "fill": "sql"},
        "results": results,
        "errors": 0,
        "latency": {"samples": latest["n"], "p50_ms": latest["p50_ms"], "p99_ms": latest["p99_ms"],
                    "max_ms": latest["max_ms"]},
        "window_s": 0.0,
        "cpu": {},
        "pinning": {"loadgen_cpus": ",".join(map(str, sorted(os.sched_getaffinity(0))))},
        "info": {"postgres": postgres, "what": "latency: the latest page; results: latest and with pages"},
    }  # fmt: skip


def curve_table(records: list[dict[str, Any]]) -> str:
    """The curve as Markdown: one row per archive size."""
    lines = [
        "| archive (messages) | table + indexes MB | fill s | latest page p50 ms | latest page p99 ms "
        "| `with` page p50 ms | `with` page p99 ms |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in records:
        res = r["results"]
        cells = [
            f"{r['params']['archive_rows']:,}", res["table_mb"], res["fill_s"], res["latest_p50_ms"],
            res["latest_p99_ms"], res["with_p50_ms"], res["with_p99_ms"],
        ]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


async def curve(args: argparse.Namespace) -> None:
    conn = await asyncpg.connect(args.dsn)
    try:
        version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    records = []
    for size in parse_sizes(args.sizes):
        print(f"mam-curve: {size:,} messages ...", file=sys.stderr, flush=True)
        point = await curve_point(args.dsn, size, args.queries)
        rec = curve_record(args.label, point, args.queries, version)
        records.append(rec)
        if args.json_out:
            args.json_out.parent.mkdir(parents=True, exist_ok=True)
            with args.json_out.open("a") as f:
                f.write(json.dumps(rec) + "\n")
    print(
        f"MAM page of {PAGE} against archive size: one user's archive in xmppd's PostgreSQL store "
        f"(PostgreSQL {version}), {args.queries} queries per shape through storage.archive, no server; "
        f"load average {', '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.\n"
    )
    print(curve_table(records))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsn", default=DEFAULT_DSN)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--notes", type=Path, default=Path("docs/mam-query-plans.md"))
    parser.add_argument("--no-notes", action="store_true", help="print the JSON only")
    parser.add_argument("--sizes", default="", help='the curve instead: archive sizes, e.g. "10000 1000000 10000000"')
    parser.add_argument("--json-out", type=Path, help="--sizes: append one JSON record per size to this file")
    parser.add_argument("--label", default="xmppd (postgresql)", help="--sizes: the records' target")
    args = parser.parse_args()
    if "127.0.0.1" not in args.dsn and "localhost" not in args.dsn:
        sys.exit("refusing a database that is not on this machine")
    if args.sizes:
        await curve(args)
        return

    schema = f"xmppd_bench_mam_{uuid.uuid4().hex[:12]}"
    storage = await open_postgres(args.dsn, schema=schema, pool_size=4)
    try:
        await storage.migrate()
        filled = await fill(args.dsn, schema, args.rows)
        conn = await asyncpg.connect(args.dsn, server_settings={"search_path": quote_identifier(schema)})
        try:
            version = await conn.fetchval("SHOW server_version")
            # Deep ids: among the oldest 90% of the archive, so that each has a full page after it.
            sample = await conn.fetch(
                "SELECT id FROM archive WHERE host = $1 AND username = $2 AND random() < 0.001",
                HOST,
                USER,
            )
        finally:
            await conn.close()
        ordered = sorted(row[0] for row in sample)
        deep = ordered[len(ordered) // 20 : len(ordered) * 9 // 10]
        timings, examples = await queries(storage, args.queries, deep)
        written = await writes(storage)
        plans = await explain(args.dsn, schema, examples)
    finally:
        await storage.close()
        conn = await asyncpg.connect(args.dsn)
        try:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote_identifier(schema)} CASCADE")
        finally:
            await conn.close()

    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
        "postgres": version,
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "fill": filled,
        "queries": timings,
        "writes": written,
        "example_ids": {"deep_after": format_id(deep[0])},
    }
    print(json.dumps(result, indent=2))
    if not args.no_notes:
        command = f"python -m bench.mam_query --rows {args.rows} --queries {args.queries}"
        notes(args.notes, result, plans, examples, command)


if __name__ == "__main__":
    asyncio.run(main())
