"""Accounts and rosters for the benchmark, written straight into a server's storage.

Every account is `<prefix><n>@<domain>` (n = 1..count) with the same password, and the first
`roster_pool` accounts each have a 20-contact roster of mutual ("both") subscriptions: n's contacts are
n±1..n±10 modulo the pool, a symmetric relation, so every item has its reverse.

Registering 10,000 users through prosodyctl or ejabberdctl takes a process start per user (minutes to
hours), so for Prosody and ejabberd the records are written directly in their own storage formats:
  prosody-files  Prosody's internal storage (util.datamanager .dat files), server stopped
  prosody-sql    Prosody's mod_storage_sql table "prosody", server started once (it creates the table)
  ejabberd-sql   ejabberd's new SQL schema (users, rosterusers)
SCRAM keys are computed here with per-account salts, and saved in the load generator's key cache file
so that no measured login pays for PBKDF2 on the client side either.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.scram import DEFAULT_KEY_CACHE, HASHES, KeyCache, ScramKeys, derive_keys

ITERATIONS = 4096  # RFC 7677's minimum; the server never runs PBKDF2 at login, so it is no factor


@dataclass(frozen=True)
class Plan:
    domain: str
    prefix: str
    count: int
    password: str
    mechanism: str
    roster_pool: int
    roster_size: int = 20

    def user(self, n: int) -> str:
        return f"{self.prefix}{n}"

    def salt(self, n: int) -> bytes:
        # Deterministic, so a re-provisioned server keeps matching the cached client keys.
        return hashlib.sha256(f"{self.domain}/{self.user(n)}".encode()).hexdigest()[:24].encode()

    def contacts(self, n: int) -> Iterator[int]:
        return roster_contacts(n, self.roster_pool, self.roster_size)


def roster_contacts(n: int, pool: int, size: int = 20) -> Iterator[int]:
    """The contacts of account n: n±1..n±size/2 modulo the pool, none outside it (distinct when
    pool > size)."""
    if n > pool:
        return
    half = size // 2
    for d in [*range(-half, 0), *range(1, half + 1)]:
        yield (n - 1 + d) % pool + 1


BASE_ROSTER = 20  # the roster size of the pool (accounts 1..roster_pool with the plain prefix)


def roster_range(size: int, accounts: int, prefix: str = "u") -> tuple[str, int]:
    """The accounts whose rosters have `size` contacts, for the logins-roster curve: (prefix, count).

    BASE_ROSTER is the existing pool (`prefix`1..); any other size has a range of its own,
    `r<size><prefix>`1..count, with count = `accounts` raised to size + 1 so that n±1..n±size/2
    modulo the range are `size` distinct contacts (the pool's symmetric relation, same range only:
    the pool's rosters keep their 20 contacts). The range's names do not collide with the
    numbered accounts the other scenarios use (idle logs in 1..10000, which must stay roster-free
    beyond the pool)."""
    if size < 2 or size % 2:
        raise ValueError(f"a roster size must be even and at least 2: n±1..n±size/2 (got {size})")
    if size == BASE_ROSTER:
        return prefix, accounts
    return f"r{size}{prefix}", max(accounts, size + 1)


def _derive(args: tuple[str, str, bytes, int]) -> ScramKeys:
    return derive_keys(*args)


def compute_keys(plan: Plan, cache: KeyCache) -> list[ScramKeys]:
    """Keys for every account, PBKDF2 on all cores for those the cache does not hold yet."""
    hash_name = HASHES[plan.mechanism]
    wanted = [(hash_name, plan.password, plan.salt(n), ITERATIONS) for n in range(1, plan.count + 1)]
    missing = [w for w in wanted if w not in cache.entries]
    if missing:
        with ProcessPoolExecutor() as pool:
            for w, keys in zip(missing, pool.map(_derive, missing, chunksize=256), strict=True):
                cache.entries[w] = keys
    return [cache.entries[w] for w in wanted]


ROSTER_ITEM_LUA = '{ ["subscription"] = "both"; ["groups"] = {}; }'


def lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def prosody_encode(value: str) -> str:
    """util.datamanager's encode: every non-alphanumeric byte becomes %xx."""
    return "".join(c if c.isalnum() and c.isascii() else f"%{ord(c):02x}" for c in value)


def write_prosody_files(plan: Plan, keys: list[ScramKeys], data_dir: Path) -> None:
    host_dir = data_dir / prosody_encode(plan.domain)
    (host_dir / "accounts").mkdir(parents=True, exist_ok=True)
    (host_dir / "roster").mkdir(parents=True, exist_ok=True)
    for n, k in enumerate(keys, start=1):
        account = {
            "stored_key": lua_string(k.stored_key.hex()),
            "server_key": lua_string(k.server_key.hex()),
            "salt": lua_string(plan.salt(n).decode()),
            "iteration_count": str(ITERATIONS),
        }
        fields = "".join(f'\t["{key}"] = {value};\n' for key, value in account.items())
        (host_dir / "accounts" / f"{prosody_encode(plan.user(n))}.dat").write_text(f"return {{\n{fields}}};\n")
        items = "".join(
            f"\t[{lua_string(f'{plan.user(c)}@{plan.domain}')}] = {ROSTER_ITEM_LUA};\n" for c in plan.contacts(n)
        )
        if items:
            (host_dir / "roster" / f"{prosody_encode(plan.user(n))}.dat").write_text(f"return {{\n{items}}};\n")


def prosody_sql_rows(plan: Plan, keys: list[ScramKeys]) -> Iterator[tuple[str, str, str, str, str, str]]:
    roster_item = json.dumps({"subscription": "both", "groups": {}})
    for n, k in enumerate(keys, start=1):
        user = plan.user(n)
        yield (plan.domain, user, "accounts", "stored_key", "string", k.stored_key.hex())
        yield (plan.domain, user, "accounts", "server_key", "string", k.server_key.hex())
        yield (plan.domain, user, "accounts", "salt", "string", plan.salt(n).decode())
        yield (plan.domain, user, "accounts", "iteration_count", "number", str(ITERATIONS))
        for c in plan.contacts(n):
            yield (plan.domain, user, "roster", f"{plan.user(c)}@{plan.domain}", "json", roster_item)


def ejabberd_user_rows(plan: Plan, keys: list[ScramKeys]) -> Iterator[tuple[str, str, str, str, str, int]]:
    # ejabberd keeps SCRAM values base64-encoded; a non-SHA-1 StoredKey carries a "sha256:" prefix.
    prefix = "" if plan.mechanism == "SCRAM-SHA-1" else "sha256:"
    for n, k in enumerate(keys, start=1):
        stored = prefix + base64.b64encode(k.stored_key).decode()
        server = base64.b64encode(k.server_key).decode()
        salt = base64.b64encode(plan.salt(n)).decode()
        yield (plan.user(n), plan.domain, stored, server, salt, ITERATIONS)


def ejabberd_roster_rows(plan: Plan) -> Iterator[tuple[str, ...]]:
    for n in range(1, plan.count + 1):
        for c in plan.contacts(n):
            # subscription B(oth), ask N(one), server N, type "item": what ejabberd writes itself.
            yield (
                plan.user(n),
                plan.domain,
                f"{plan.user(c)}@{plan.domain}",
                "",
                "B",
                "N",
                "",
                "N",
                "",
                "item",
            )


async def write_sql(flavor: str, dsn: str, plan: Plan, keys: list[ScramKeys]) -> None:
    import asyncpg  # only this step needs it

    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            if flavor == "prosody-sql":
                await conn.execute("DELETE FROM prosody WHERE host=$1 AND store IN ('accounts', 'roster')", plan.domain)
                await conn.copy_records_to_table(
                    "prosody",
                    records=list(prosody_sql_rows(plan, keys)),
                    columns=["host", "user", "store", "key", "type", "value"],
                )
                return
            await conn.execute("DELETE FROM users WHERE server_host=$1", plan.domain)
            await conn.execute("DELETE FROM rosterusers WHERE server_host=$1", plan.domain)
            await conn.copy_records_to_table(
                "users",
                records=list(ejabberd_user_rows(plan, keys)),
                columns=["username", "server_host", "password", "serverkey", "salt", "iterationcount"],
            )
            await conn.copy_records_to_table(
                "rosterusers",
                records=list(ejabberd_roster_rows(plan)),
                columns=[
                    "username", "server_host", "jid", "nick", "subscription",
                    "ask", "askmessage", "server", "subscribe", "type",
                ],
            )  # fmt: skip
    finally:
        await conn.close()


def archive_messages(domain: str, owner: str, peer: str, n: int) -> Iterator[tuple[int, str, str]]:
    """(index, stanza, body) for an archive of n chat messages, alternately in and out, 100 bytes."""
    for i in range(n):
        frm, to = (peer, owner) if i % 2 == 0 else (owner, peer)
        body = f"archived message {i:07d} " + "x" * 74
        stanza = (
            f"<message xmlns='jabber:client' from='{frm}@{domain}/bench' to='{to}@{domain}/bench' "
            f"type='chat' id='a{i}'><body>{body}</body></message>"
        )
        yield i, stanza, body


async def write_archive(flavor: str, dsn: str, domain: str, n: int, *, owner: str, peer: str) -> int:
    """Fills owner's archive to n messages with a COPY (the issue's 1,000,000-message archive takes
    seconds this way, and hours through a server that archives at 1k messages/s). Returns rows added."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        if flavor == "prosody-archive":
            have = await conn.fetchval(
                "SELECT count(*) FROM prosodyarchive WHERE host=$1 AND \"user\"=$2 AND store='archive'",
                domain,
                owner,
            )
        else:
            have = await conn.fetchval(
                "SELECT count(*) FROM archive WHERE server_host=$1 AND username=$2", domain, owner
            )
        if have >= n:
            return 0
        start = int(time.time()) - n  # one message a second, ending now
        rows: list[tuple[object, ...]]
        if flavor == "prosody-archive":
            rows = [
                (domain, owner, "archive", f"bench-{start}-{i}", start + i, f"{peer}@{domain}", "xml", stanza)
                for i, stanza, _ in archive_messages(domain, owner, peer, n - have)
            ]
            cols = ["host", "user", "store", "key", "when", "with", "type", "value"]
            await conn.copy_records_to_table("prosodyarchive", records=rows, columns=cols)
        else:
            # ejabberd uses the microsecond timestamp as the archive id: it must be unique per user.
            rows = [
                (
                    owner,
                    domain,
                    (start + i) * 1_000_000,
                    f"{peer}@{domain}/bench",
                    f"{peer}@{domain}",
                    s,
                    b,
                    "chat",
                    "",
                )
                for i, s, b in archive_messages(domain, owner, peer, n - have)
            ]
            cols = ["username", "server_host", "timestamp", "peer", "bare_peer", "xml", "txt", "kind", "nick"]
            await conn.copy_records_to_table("archive", records=rows, columns=cols)
        return len(rows)
    finally:
        await conn.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "flavor",
        choices=[
            "prosody-files",
            "prosody-sql",
            "ejabberd-sql",
            "keys-only",
            "prosody-archive",
            "ejabberd-archive",
        ],
    )
    p.add_argument("--archive", type=int, default=1_000_000, help="*-archive: messages in u1's archive")
    p.add_argument("--domain", required=True)
    p.add_argument("--prefix", default="u")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--roster-pool", type=int, default=2000, help="accounts that get a 20-contact roster")
    p.add_argument("--password", default="bench-pass")
    p.add_argument("--mechanism", default="SCRAM-SHA-256", choices=sorted(HASHES))
    p.add_argument("--data-dir", type=Path, help="prosody-files: Prosody's data_path")
    p.add_argument("--dsn", help="SQL flavours: postgresql://...")
    p.add_argument("--key-cache", type=Path, default=DEFAULT_KEY_CACHE)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.flavor.endswith("-archive"):
        owner, peer = f"{args.prefix}1", f"{args.prefix}2"
        added = asyncio.run(write_archive(args.flavor, args.dsn, args.domain, args.archive, owner=owner, peer=peer))
        print(f"archive of {owner}@{args.domain}: {added} messages added, {args.archive} wanted")
        return 0
    plan = Plan(args.domain, args.prefix, args.count, args.password, args.mechanism, min(args.roster_pool, args.count))
    cache = KeyCache()
    cache.load(args.key_cache)
    keys = compute_keys(plan, cache)
    args.key_cache.parent.mkdir(parents=True, exist_ok=True)
    cache.save(args.key_cache)
    if args.flavor == "prosody-files":
        write_prosody_files(plan, keys, args.data_dir)
    elif args.flavor in {"prosody-sql", "ejabberd-sql"}:
        asyncio.run(write_sql(args.flavor, args.dsn, plan, keys))
    print(f"provisioned {plan.count} accounts on {plan.domain} ({args.flavor}), rosters for {plan.roster_pool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
