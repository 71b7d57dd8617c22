-- xmppd schema 2 (SQLite): the message archive (XEP-0313).
--
-- One row per archived message per archive (a message between two local users is in both).
-- `id` is the archive id: milliseconds since the Unix epoch in the high bits, a sequence in the
-- low 21 bits (storage/archive.py), so id order is archive order and a time is an id range. It is
-- the rowid: retention deletes a rowid range, and every secondary index ends with it implicitly,
-- which makes the two indexes below (host, username, id) and (host, username, with_jid, id):
-- "a page of 50" is one index range read backwards or forwards, whatever the archive's size.
-- Archive rows do not reference accounts; deleting an account deletes them explicitly.

CREATE TABLE archive (
    id INTEGER PRIMARY KEY,
    host TEXT NOT NULL,
    username TEXT NOT NULL,
    with_jid TEXT NOT NULL,  -- the other party's bare JID
    with_resource TEXT NOT NULL DEFAULT '',  -- and its resource, '' when the address had none
    outgoing INTEGER NOT NULL CHECK (outgoing IN (0, 1)),
    stanza TEXT NOT NULL  -- the message as XML
) STRICT;

CREATE INDEX archive_user ON archive (host, username);
CREATE INDEX archive_with ON archive (host, username, with_jid);
