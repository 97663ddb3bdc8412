-- A fan-out page's deliveries that go out at once are written with their outcome, one
-- row each, instead of first as queued and then again. Until the last of them is, the
-- page is "in flight": this row keeps the range of users it covers, so that a node
-- that dies with it leaves it for another to plan again (skipping the deliveries that
-- have a row by then). pending: the page's deliveries without a row yet.
CREATE TABLE fanout_pages (
    id         TEXT PRIMARY KEY,  -- a hash of the message id and after_user
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    after_user TEXT NOT NULL,  -- the page holds the users after this id ...
    last_user  TEXT NOT NULL,  -- ... up to and with this one
    owner      TEXT,
    pending    INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE INDEX fanout_pages_by_owner ON fanout_pages(owner);
CREATE INDEX fanout_pages_by_message ON fanout_pages(message_id);
