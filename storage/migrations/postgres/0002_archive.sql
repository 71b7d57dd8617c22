-- xmppd schema 2 (PostgreSQL): the message archive (XEP-0313).
--
-- One row per archived message per archive (a message between two local users is in both).
-- `id` is the archive id: milliseconds since the Unix epoch in the high bits, a sequence in the
-- low 21 bits (storage/archive.py), so id order is archive order and a time is an id range.
-- "A page of 50" from any archive size is one btree range read in either direction:
--   the primary key (host, username, id)       latest page, after/before an id, start/end, ids
--   archive_with (host, username, with_jid, id) the same restricted to one contact
-- Retention deletes by id alone across users: rows arrive in id order, so a BRIN index (a few
-- pages for millions of rows, next to nothing to maintain) finds the old block ranges.
-- Archive rows do not reference accounts; deleting an account deletes them explicitly.

CREATE TABLE archive (
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    id bigint NOT NULL,
    with_jid text COLLATE "C" NOT NULL,  -- the other party's bare JID
    with_resource text COLLATE "C" NOT NULL DEFAULT '',  -- and its resource, '' when the address had none
    outgoing boolean NOT NULL,
    stanza text NOT NULL,  -- the message as XML
    PRIMARY KEY (host, username, id)
);

CREATE INDEX archive_with ON archive (host, username, with_jid, id);
CREATE INDEX archive_age ON archive USING brin (id);
