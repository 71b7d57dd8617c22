-- xmppd schema 4 (PostgreSQL): per-host JSON documents, the MAP store shape (storage/shapes.py).
--
-- Like kv, but scoped to a host instead of an account: chat-room configurations, a server-wide
-- capabilities cache. `store` is the namespace a feature names in Storage.open_store(name, MAP).
-- Rows belong to the host: deleting an account leaves them (maps is not a user table).
-- value is json, not jsonb, for the reasons given at the kv table (migration 0001): values come
-- back exactly as on SQLite.

CREATE TABLE maps (
    host text COLLATE "C" NOT NULL,
    store text COLLATE "C" NOT NULL,
    key text COLLATE "C" NOT NULL,
    value json NOT NULL,
    PRIMARY KEY (host, store, key)
);
