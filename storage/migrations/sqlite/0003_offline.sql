-- xmppd schema 3 (SQLite): XEP-0160 offline messages.
--
-- One queue per user, read oldest first. AUTOINCREMENT (not plain rowid) so that an id is never
-- reused: delivery walks the queue by id and deletes behind itself, and a deleted id coming back
-- could reorder or skip a message. The index serves the per-user fetch, count and delete.
-- stored_at is for operators (pruning, inspection); the delivered stanza carries its own
-- XEP-0203 delay stamp.

CREATE TABLE offline_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    stored_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    stanza TEXT NOT NULL  -- the message as serialised XML
) STRICT;

CREATE INDEX offline_messages_by_user ON offline_messages (host, username, id);
