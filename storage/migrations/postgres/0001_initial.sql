-- xmppd schema 1 (PostgreSQL): accounts, SCRAM credentials, versioned rosters, per-user key-value documents.
--
-- Every per-user table is keyed by (host, username, ...): the primary key is the index the hot
-- queries use (login, roster fetch, kv read). Identifiers use the "C" collation: JIDs are already
-- normalised, so byte equality is what we want, btree comparisons are cheaper, and sorting is by
-- code point whatever the database locale, as on SQLite.
-- Roster and kv rows do not reference accounts: users may come from elsewhere (external auth);
-- deleting an account removes them explicitly in the same transaction.

CREATE TABLE accounts (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (host, username)
);

-- RFC 5802 §3: what the server keeps of a password, one row per hash function.
CREATE TABLE scram_credentials (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    hash_name text COLLATE "C" NOT NULL,
    salt bytea NOT NULL,
    iterations integer NOT NULL CHECK (iterations > 0),
    stored_key bytea NOT NULL,
    server_key bytea NOT NULL,
    PRIMARY KEY (host, username, hash_name),
    FOREIGN KEY (host, username) REFERENCES accounts (host, username) ON DELETE CASCADE
);

-- XEP-0237: one counter per user, bumped in the same transaction as each roster change. Its row
-- lock also serialises concurrent changes to one user's roster.
CREATE TABLE roster_versions (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    version bigint NOT NULL,
    PRIMARY KEY (host, username)
);

CREATE TABLE roster_items (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    jid text COLLATE "C" NOT NULL,
    name text,
    subscription text NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    ask boolean NOT NULL,
    pending_in boolean NOT NULL,
    approved boolean NOT NULL,
    group_names text[] NOT NULL DEFAULT '{}',
    listed boolean NOT NULL,
    -- The roster version that first added the item: unique per user and increasing, it gives the
    -- stable listing order (first added first) without a sequence.
    added_version bigint NOT NULL,
    PRIMARY KEY (host, username, jid)
);

-- value is json, not jsonb: json keeps the text as written, so values come back exactly as on
-- SQLite. jsonb would rewrite numbers (the float 1e16 comes back as the integer
-- 10000000000000000), reorder object keys and refuse "\u0000". Nothing queries inside values; if
-- that is ever needed, ALTER COLUMN value TYPE jsonb USING value::jsonb.
CREATE TABLE kv (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    store text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value json NOT NULL,
    PRIMARY KEY (host, username, store, key)
);
