-- xmppd schema 4 (SQLite): per-host JSON documents, the MAP store shape (storage/shapes.py).
--
-- Like kv, but scoped to a host instead of an account: chat-room configurations, a server-wide
-- capabilities cache. `store` is the namespace a feature names in Storage.open_store(name, MAP).
-- Rows belong to the host: deleting an account leaves them (maps is not a user table).

CREATE TABLE maps (
    host TEXT NOT NULL,
    store TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,  -- JSON text
    PRIMARY KEY (host, store, key)
) STRICT, WITHOUT ROWID;
