-- xmppd schema 3 (PostgreSQL): XEP-0160 offline messages.
--
-- One queue per user, read oldest first. An identity never hands out an id twice, and pushes
-- for one user are serialised (an advisory lock in the push transaction), so a user's ids also
-- commit in increasing order: delivery can walk the queue by id without skipping a message
-- that committed late. The index serves the per-user fetch, count and delete.
-- stored_at is for operators (pruning, inspection); the delivered stanza carries its own
-- XEP-0203 delay stamp.

CREATE TABLE offline_messages (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    host text COLLATE "C" NOT NULL,
    username text COLLATE "C" NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    stanza text NOT NULL  -- the message as serialised XML
);

CREATE INDEX offline_messages_by_user ON offline_messages (host, username, id);
