"""Bulk accounts and rosters for xmppd through its own storage API (one process, one transaction
per account) instead of one `xmppd adduser` process per account.

    python -m bench.xmppd_provision --config bench/out/xmppd.toml --domain bench.local --count 10000

Same plan as bench/provision.py (names, salts, 20-contact mutual rosters), so the load generator's key
cache is warm. Falls back to `python -m xmppd adduser --password-stdin` per account, without rosters,
if the storage API is not importable (see bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

from bench.provision import ITERATIONS, Plan, compute_keys
from bench.scram import HASHES, KeyCache


async def provision_api(config_path: str, plans: list[Plan], cache: KeyCache) -> None:
    from storage import RosterItem, ScramCredentials, open_storage
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
            per_hash = {
                h: compute_keys(Plan(**{**plan.__dict__, "mechanism": mech}), cache) for mech, h in HASHES.items()
            }
            for n in range(1, plan.count + 1):
                user = plan.user(n)
                creds = [
                    ScramCredentials(h, plan.salt(n), ITERATIONS, k[n - 1].stored_key, k[n - 1].server_key)
                    for h, k in per_hash.items()
                ]
                if not await storage.accounts.create(plan.domain, user, creds):
                    # Re-provisioning: touch only what differs, so a second run takes seconds.
                    stored = await storage.accounts.credentials(plan.domain, user, "sha256")
                    wanted = next(c for c in creds if c.hash_name == "sha256")
                    if stored is None or stored.stored_key != wanted.stored_key:
                        await storage.accounts.set_credentials(plan.domain, user, creds)
                    _, items = await storage.rosters.items(plan.domain, user)
                    if len(items) == len(list(plan.contacts(n))):
                        continue
                for c in plan.contacts(n):
                    item = RosterItem(jid=f"{plan.user(c)}@{plan.domain}", subscription="both")
                    await storage.rosters.put(plan.domain, user, item)
    finally:
        await storage.close()


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
    p.add_argument("--password", default="bench-pass")
    p.add_argument("--key-cache", type=Path, default=Path("bench/out/scram-keys.jsonl"))
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    plans = []
    for spec in args.domain:
        domain, _, count = spec.partition(":")
        n = int(count) if count else args.count
        plans.append(Plan(domain, args.prefix, n, args.password, "SCRAM-SHA-256", min(args.roster_pool, n)))
    cache = KeyCache()
    cache.load(args.key_cache)
    try:
        asyncio.run(provision_api(args.config, plans, cache))
    except ImportError as exc:
        print(f"xmppd storage API not importable ({exc}); falling back to adduser, no rosters", file=sys.stderr)
        provision_cli(args.config, plans)
    cache.save(args.key_cache)
    for plan in plans:
        print(f"provisioned {plan.count} accounts on {plan.domain} (xmppd), rosters for {plan.roster_pool}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
