"""The message archive on PostgreSQL (see storage/archive.py and migration 0002).

A batch of records is one INSERT ... SELECT FROM unnest(arrays): one statement, one round trip and
one commit however many messages it carries, which is what makes the batched archive writer pay
off. Queries are built from a handful of fixed shapes, so asyncpg's per-connection statement cache
keeps them prepared; every shape reads one btree range (primary key or archive_with) in id order.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from storage.archive import ArchivePage, ArchiveQuery, ArchiveRecord, datetime_ms, first_id_at
from storage.postgres.connection import Pool
from storage.rows import ARCHIVE_COLUMNS, ARCHIVE_INSERT_COLUMNS, archive_record, archive_values

__all__ = ["PostgresArchive", "select_sql"]

_INSERT = (
    f"INSERT INTO archive ({', '.join(ARCHIVE_INSERT_COLUMNS)})"
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[],"
    " $6::boolean[], $7::text[])"
)


def _where(query: ArchiveQuery) -> tuple[str, list[Any]]:
    """The WHERE clause for an archive ($1 host, $2 username) and the arguments after those."""
    low, high = query.id_range()
    clauses = ["host = $1", "username = $2", "id > $3", "id < $4"]
    args: list[Any] = [low, high]
    if query.with_jid is not None:
        args.append(query.with_jid)
        clauses.append(f"with_jid = ${len(args) + 2}")
        if query.with_resource is not None:
            args.append(query.with_resource)
            clauses.append(f"with_resource = ${len(args) + 2}")
    if query.ids is not None:
        args.append(list(query.ids))
        clauses.append(f"id = ANY(${len(args) + 2}::bigint[])")
    return " AND ".join(clauses), args


def select_sql(query: ArchiveQuery) -> tuple[str, list[Any]]:
    """The statement `query()` runs ($1 host, $2 username, then the arguments returned); the
    benchmark explains it (bench/mam_query.py)."""
    where, args = _where(query)
    order = "DESC" if query.last else "ASC"
    # LIMIT and OFFSET are written into the statement, not passed as parameters: after five runs
    # PostgreSQL may switch a prepared statement to a generic plan, and with an unknown LIMIT
    # that plan could sort the whole archive instead of reading the index in order.
    sql = (
        f"SELECT {ARCHIVE_COLUMNS} FROM archive WHERE {where}"
        f" ORDER BY id {order} LIMIT {int(query.limit) + 1} OFFSET {int(query.offset)}"
    )
    return sql, args


class PostgresArchive:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool

    async def append(self, records: Sequence[ArchiveRecord]) -> None:
        if not records:
            return
        columns = [list(column) for column in zip(*map(archive_values, records), strict=True)]
        async with self._pool.connection() as conn:
            await conn.execute(_INSERT, *columns)  # one statement: all rows or none

    async def query(self, host: str, username: str, query: ArchiveQuery) -> ArchivePage:
        if query.ids is not None and not query.ids:
            return ArchivePage([], True)
        sql, args = select_sql(query)
        async with self._pool.connection() as conn:
            rows = await conn.fetch(sql, host, username, *args)
        complete = len(rows) <= query.limit
        rows = rows[: query.limit]
        if query.last:
            rows.reverse()
        return ArchivePage([archive_record(host, username, tuple(row)) for row in rows], complete)

    async def count(self, host: str, username: str, query: ArchiveQuery) -> int:
        if query.ids is not None and not query.ids:
            return 0
        where, args = _where(query)
        async with self._pool.connection() as conn:
            return int(await conn.fetchval(f"SELECT count(*) FROM archive WHERE {where}", host, username, *args))

    async def existing(self, host: str, username: str, ids: Sequence[int]) -> builtins.set[int]:
        if not ids:
            return set()
        async with self._pool.connection() as conn:
            rows = await conn.fetch(
                "SELECT id FROM archive WHERE host = $1 AND username = $2 AND id = ANY($3::bigint[])",
                host,
                username,
                list(ids),
            )
        return {row[0] for row in rows}

    async def delete_before(self, host: str, before: datetime) -> int:
        cutoff = first_id_at(datetime_ms(before))
        async with self._pool.connection() as conn:
            # The BRIN index on id finds the old block ranges; one statement, so no holes.
            status = await conn.execute("DELETE FROM archive WHERE id < $1 AND host = $2", cutoff, host)
        return int(status.split()[-1])

    async def delete_archive(self, host: str, username: str) -> int:
        async with self._pool.connection() as conn:
            # The primary key (host, username, id) finds exactly that owner's rows; one statement.
            status = await conn.execute("DELETE FROM archive WHERE host = $1 AND username = $2", host, username)
        return int(status.split()[-1])
