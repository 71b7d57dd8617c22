-- xmppd schema 5 (SQLite): the log of deleted accounts.
--
-- Deleting an account appends a row in the same transaction. A running server reads the rows
-- after the last one it saw (every few seconds), so an account deleted by another process (the
-- CLI) loses its sessions there, and nothing kept in memory for it (PEP nodes, blocklists)
-- outlives it into an account made again with the same name. One row per deletion; deletions
-- are rare, so the log is not pruned. AUTOINCREMENT: a number is never given out twice, even
-- after the newest row was removed by hand.

CREATE TABLE account_deletions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    deleted_at INTEGER NOT NULL DEFAULT (unixepoch())
) STRICT;
