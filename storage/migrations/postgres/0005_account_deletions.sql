-- xmppd schema 5 (PostgreSQL): the log of deleted accounts.
--
-- Deleting an account appends a row in the same transaction. A running server reads the rows
-- after the last one it saw (every few seconds), so an account deleted by another process (the
-- CLI, or another node of a cluster) loses its sessions there, and nothing kept in memory for it
-- (PEP nodes, blocklists) outlives it into an account made again with the same name. One row per
-- deletion; deletions are rare, so the log is not pruned.

CREATE TABLE account_deletions (
    seq bigserial PRIMARY KEY,
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);
