-- Work distribution between broker nodes: owners, retry times, heartbeats.
ALTER TABLE messages ADD COLUMN fanout_owner text COLLATE "C";
ALTER TABLE deliveries ADD COLUMN owner text COLLATE "C";
-- earliest time of the next attempt after a transient failure
ALTER TABLE deliveries ADD COLUMN not_before timestamptz;

CREATE TABLE nodes (
    id           text COLLATE "C" PRIMARY KEY,
    started_at   timestamptz NOT NULL,
    heartbeat_at timestamptz NOT NULL
);

DROP INDEX deliveries_queued;
-- claims look for queued, unowned deliveries in id order; releases for a node's queued ones
CREATE INDEX deliveries_queued ON deliveries(owner, id) WHERE status = 'queued';
CREATE INDEX messages_fanout_owner ON messages(fanout_owner) WHERE NOT fanout_done;
