"""Bulk accounts and rosters for xmppd through its own storage API (one process, one transaction
per account) instead of one `xmppd adduser` process per account.

    python -m bench.xmppd_provision --config bench/out/xmppd.toml --domain bench.local --count 10000

Same plan as bench/provision.py (names, salts, 20-contact mutual rosters), so the load generator's key
cache is warm. Falls back to `python -m xmppd adduser --password-stdin` per account, without rosters,
if the storage API is not importable (see bench/README.md).

`--roster-sizes "20 200 1000"` adds, on the first domain, a range of accounts for each size other
than 20 (provision.roster_range: `r200u1`..`r200u1000`, `r1000u1`..`r1000u1001` with
`--roster-accounts 1000`), each with a roster of that many mutual ("both") contacts from its own
range, for the logins-roster curve. Their accounts go through the storage API as above; their
rosters (1.2 million items for those sizes) are written in bulk with xmppd's own row statements
(storage.rows), one transaction per 50 accounts (COPY on PostgreSQL), instead of one transaction
per item: a minute at most instead of an hour. A roster that already has the contacts it should have is left
alone (a second setup takes seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.provision import BASE_ROSTER, ITERATIONS, Plan, compute_keys, roster_range
from bench.scram import DEFAULT_KEY_CACHE, HASHES, KeyCache

BULK_USERS = 50  # accounts whose rosters one bulk transaction writes (50,000 items at 1,000 contacts)


def curve_plans(domain: str, prefix: str, password: str, sizes: Iterable[int], accounts: int) -> list[Plan]:
    """The account ranges of the logins-roster curve: one per size but the pool's own (20)."""
    plans = []
    for size in sorted(set(sizes)):
        range_prefix, count = roster_range(size, accounts, prefix)
        if size != BASE_ROSTER:
            plans.append(Plan(domain, range_prefix, count, password, "SCRAM-SHA-256", count, size))
    return plans


def parse_sizes(spec: str) -> list[int]:
    """ROSTER_SIZES as the shell has it: "20 200 1000" (commas too)."""
    return [int(x) for x in spec.replace(",", " ").split()]


async def provision_api(config_path: str, plans: list[Plan], cache: KeyCache, bulk: Sequence[Plan] = ()) -> None:
    from storage import RosterItem, open_storage
    from xmppd.config import load_config

    config = load_config(config_path)
    st = config.storage
    sqlite_path = str(config.data_dir / st.sqlite_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    storage = await open_storage(
        st.backend, sqlite_path=sqlite_path, postgres_dsn=st.postgres_dsn, postgres_schema=st.postgres_schema
    )
    try:
        await storage.migrate()
        for plan in plans:
            per_hash = keys_by_hash(plan, cache)
            for n in range(1, plan.count + 1):
                user = plan.user(n)
                if await ensure_account(storage, plan, n, per_hash):
                    _, items = await storage.rosters.items(plan.domain, user)
                    if len(items) == len(list(plan.contacts(n))):
                        continue
                for c in plan.contacts(n):
                    item = RosterItem(jid=f"{plan.user(c)}@{plan.domain}", subscription="both")
                    await storage.rosters.put(plan.domain, user, item)
        for plan in bulk:
            await provision_bulk(storage, plan, cache)
    finally:
        await storage.close()


def keys_by_hash(plan: Plan, cache: KeyCache) -> dict[str, Any]:
    """The plan's SCRAM keys for each hash xmppd stores, by hash name."""
    return {h: compute_keys(Plan(**{**plan.__dict__, "mechanism": mech}), cache) for mech, h in HASHES.items()}


async def ensure_account(storage: Any, plan: Plan, n: int, per_hash: dict[str, Any]) -> bool:
    """Create the plan's account n with its keys; True when it existed already (its keys are then
    put right if they differ: re-provisioning touches only what differs, so it takes seconds)."""
    from storage import ScramCredentials

    user = plan.user(n)
    creds = [
        ScramCredentials(h, plan.salt(n), ITERATIONS, k[n - 1].stored_key, k[n - 1].server_key)
        for h, k in per_hash.items()
    ]
    if await storage.accounts.create(plan.domain, user, creds):
        return False
    stored = await storage.accounts.credentials(plan.domain, user, "sha256")
    wanted = next(c for c in creds if c.hash_name == "sha256")
    if stored is None or stored.stored_key != wanted.stored_key:
        await storage.accounts.set_credentials(plan.domain, user, creds)
    return True


async def provision_bulk(storage: Any, plan: Plan, cache: KeyCache) -> None:
    """A logins-roster range: accounts through the storage API (only those missing or with other
    keys), then the rosters that do not have their contacts yet, in bulk."""
    per_hash = keys_by_hash(plan, cache)
    existing = await roster_digests(storage, plan.domain, plan.prefix)
    for n in range(1, plan.count + 1):
        await ensure_account(storage, plan, n, per_hash)
    rosters = {
        plan.user(n): [f"{plan.user(c)}@{plan.domain}" for c in plan.contacts(n)] for n in range(1, plan.count + 1)
    }
    todo = [user for user, contacts in rosters.items() if existing.get(user) != roster_digest(contacts)]
    for start in range(0, len(todo), BULK_USERS):
        await write_rosters(storage, plan.domain, [(user, rosters[user]) for user in todo[start : start + BULK_USERS]])


def roster_rows(host: str, rosters: list[tuple[str, list[str]]], groups: object) -> list[tuple[Any, ...]]:
    """roster_items rows in xmppd's column order (storage.rows.roster_values): every contact "both",
    added in list order (added_version 1..N, the listing order), `groups` as the engine keeps an
    empty group list."""
    from storage import RosterItem
    from storage.rows import roster_values

    return [
        roster_values(host, user, RosterItem(jid=contact, subscription="both"), groups, version)
        for user, contacts in rosters
        for version, contact in enumerate(contacts, start=1)
    ]


ROSTER_ITEM_COLUMNS = [
    "host", "username", "jid", "name", "subscription", "ask", "pending_in", "approved", "group_names", "listed",
    "added_version",
]  # fmt: skip


def roster_digest(contacts: Iterable[str]) -> str:
    """What identifies a roster's contents here: MD5 of its JIDs in code point order, comma-joined
    (PostgreSQL computes the same with md5(string_agg(jid, ',' ORDER BY jid)), "C" collation)."""
    return hashlib.md5(",".join(sorted(contacts)).encode()).hexdigest()


async def roster_digests(storage: Any, host: str, prefix: str) -> dict[str, str]:
    """{username: roster_digest} of the accounts named `prefix`<n>, in one statement: a range
    re-provisioned with another size or account count has other contacts, not only other counts."""
    from storage.postgres import PostgresStorage
    from storage.sqlite import SqliteStorage

    pattern = prefix + "%"  # bench prefixes have no LIKE wildcards; r200u% does not match r2000u1
    found: dict[str, str] = {}
    if isinstance(storage, PostgresStorage):
        async with storage.connection() as conn:
            rows = await conn.fetch(
                "SELECT username, md5(string_agg(jid, ',' ORDER BY jid)) FROM roster_items"
                " WHERE host = $1 AND username LIKE $2 GROUP BY username",
                host,
                pattern,
            )
        found = {r[0]: r[1] for r in rows}
    elif isinstance(storage, SqliteStorage):
        sql = "SELECT username, group_concat(jid, ',') FROM roster_items WHERE host = ? AND username LIKE ? GROUP BY 1"
        rows = await storage._conn.run(lambda db: db.execute(sql, (host, pattern)).fetchall())
        found = {r[0]: roster_digest(r[1].split(",")) for r in rows}
    else:
        for h, user in await storage.accounts.list(host):
            if h == host and user.startswith(prefix):
                found[user] = roster_digest(item.jid for item in (await storage.rosters.items(host, user))[1])
    return {user: digest for user, digest in found.items() if user[len(prefix) :].isdigit()}


async def write_rosters(storage: Any, host: str, rosters: list[tuple[str, list[str]]]) -> None:
    """Replaces these users' rosters in one transaction, versions set past their items'."""
    from storage import RosterItem
    from storage.postgres import PostgresStorage
    from storage.sqlite import SqliteStorage

    users = [user for user, _ in rosters]
    versions = [(host, user, len(contacts)) for user, contacts in rosters]
    upsert_version = (
        "INSERT INTO roster_versions (host, username, version) VALUES ({0}, {1}, {2}) ON CONFLICT (host, username)"
        " DO UPDATE SET version = {3}(roster_versions.version + 1, excluded.version)"
    )
    if isinstance(storage, PostgresStorage):
        async with storage.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM roster_items WHERE host = $1 AND username = ANY($2::text[])", host, users)
            await conn.copy_records_to_table(
                "roster_items", records=roster_rows(host, rosters, []), columns=ROSTER_ITEM_COLUMNS,
                schema_name=storage.schema,
            )  # fmt: skip
            await conn.executemany(upsert_version.format("$1", "$2", "$3", "GREATEST"), versions)
        return
    if isinstance(storage, SqliteStorage):
        from storage.sqlite.connection import transaction

        rows = roster_rows(host, rosters, "[]")
        insert = f"INSERT INTO roster_items ({', '.join(ROSTER_ITEM_COLUMNS)}) VALUES ({', '.join('?' * 11)})"

        def write(db: Any) -> None:
            with transaction(db):
                db.executemany("DELETE FROM roster_items WHERE host = ? AND username = ?", [(host, u) for u in users])
                db.executemany(insert, rows)
                db.executemany(upsert_version.format("?", "?", "?", "max"), versions)

        await storage._conn.run(write)
        return
    for user, contacts in rosters:  # another backend: its own API, one transaction per item
        for contact in contacts:
            await storage.rosters.put(host, user, RosterItem(jid=contact, subscription="both"))


def provision_cli(config_path: str, plans: list[Plan]) -> None:
    for plan in plans:
        for n in range(1, plan.count + 1):
            subprocess.run(
                [sys.executable, "-m", "xmppd", "--config", config_path, "adduser",
                 f"{plan.user(n)}@{plan.domain}", "--password-stdin"],
                input=plan.password + "\n", text=True, check=True, capture_output=True,
            )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True)
    p.add_argument("--domain", action="append", required=True, help="DOMAIN or DOMAIN:COUNT, repeatable")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--roster-pool", type=int, default=2000)
    p.add_argument("--prefix", default="u")
    p.add_argument("--roster-sizes", default="", help='logins-roster: e.g. "20 200 1000" (20: the pool itself)')
    p.add_argument("--roster-accounts", type=int, default=1000, help="logins-roster: accounts per roster size")
    p.add_argument("--password", default="bench-pass")
    p.add_argument("--key-cache", type=Path, default=DEFAULT_KEY_CACHE)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    plans = []
    for spec in args.domain:
        domain, _, count = spec.partition(":")
        n = int(count) if count else args.count
        plans.append(Plan(domain, args.prefix, n, args.password, "SCRAM-SHA-256", min(args.roster_pool, n)))
    bulk = curve_plans(plans[0].domain, args.prefix, args.password, parse_sizes(args.roster_sizes),
                       args.roster_accounts)  # fmt: skip
    cache = KeyCache()
    cache.load(args.key_cache)
    try:
        asyncio.run(provision_api(args.config, plans, cache, bulk))
    except ImportError as exc:
        print(f"xmppd storage API not importable ({exc}); falling back to adduser, no rosters", file=sys.stderr)
        provision_cli(args.config, plans + bulk)
    cache.save(args.key_cache)
    for plan in plans:
        print(f"provisioned {plan.count} accounts on {plan.domain} (xmppd), rosters for {plan.roster_pool}")
    for plan in bulk:
        first, last = plan.user(1), plan.user(plan.count)
        print(f"provisioned {first}..{last}@{plan.domain} (xmppd), {plan.roster_size} contacts each")
    return 0


if __name__ == "__main__":
    sys.exit(main())
