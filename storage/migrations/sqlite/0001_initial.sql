-- xmppd schema 1 (SQLite): accounts, SCRAM credentials, versioned rosters, per-user key-value documents.
--
-- Every per-user table is keyed by (host, username, ...): the primary key is the index the hot
-- queries use (login, roster fetch, kv read), and WITHOUT ROWID stores the rows clustered in that
-- order. STRICT makes SQLite enforce the declared types. TEXT compares with the BINARY collation,
-- i.e. by code point, as PostgreSQL's "C" collation does, so both backends sort alike.
-- Roster and kv rows do not reference accounts: users may come from elsewhere (external auth);
-- deleting an account removes them explicitly in the same transaction.

CREATE TABLE accounts (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (host, username)
) STRICT, WITHOUT ROWID;

-- RFC 5802 §3: what the server keeps of a password, one row per hash function.
CREATE TABLE scram_credentials (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    hash_name TEXT NOT NULL,
    salt BLOB NOT NULL,
    iterations INTEGER NOT NULL CHECK (iterations > 0),
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    PRIMARY KEY (host, username, hash_name),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username) ON DELETE CASCADE
) STRICT, WITHOUT ROWID;

-- XEP-0237: one counter per user, bumped in the same transaction as each roster change.
CREATE TABLE roster_versions (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (host, username)
) STRICT, WITHOUT ROWID;

CREATE TABLE roster_items (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    jid TEXT NOT NULL,
    name TEXT,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask INTEGER NOT NULL CHECK (ask IN (0, 1)),
    pending_in INTEGER NOT NULL CHECK (pending_in IN (0, 1)),
    approved INTEGER NOT NULL CHECK (approved IN (0, 1)),
    group_names TEXT NOT NULL DEFAULT '[]',  -- JSON array of group names, in the client's order
    listed INTEGER NOT NULL CHECK (listed IN (0, 1)),
    -- The roster version that first added the item: unique per user and increasing, it gives the
    -- stable listing order (first added first) without a sequence.
    added_version INTEGER NOT NULL,
    PRIMARY KEY (host, username, jid)
) STRICT, WITHOUT ROWID;

CREATE TABLE kv (
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,  -- JSON text
    PRIMARY KEY (host, username, store, key)
) STRICT, WITHOUT ROWID;
