-- Work distribution between broker nodes: owners, retry times, heartbeats.
ALTER TABLE messages ADD COLUMN fanout_owner TEXT;
ALTER TABLE deliveries ADD COLUMN owner TEXT;
-- earliest time of the next attempt after a transient failure
ALTER TABLE deliveries ADD COLUMN not_before TEXT;

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    started_at   TEXT NOT NULL,
    heartbeat_at TEXT NOT NULL
);

DROP INDEX deliveries_queued;
-- claims look for queued, unowned deliveries; releases for a node's queued ones
CREATE INDEX deliveries_queued ON deliveries(owner, id) WHERE status = 'queued';
CREATE INDEX messages_fanout_owner ON messages(fanout_owner) WHERE fanout_done = 0;
