-- Digests, scheduled messages, quiet hours, throttling.
-- schedule: 'immediate', 'hourly', 'daily@HH:MM', 'weekly@<0-6>@HH:MM' (notefly.schedule)
ALTER TABLE subscriptions ADD COLUMN schedule TEXT NOT NULL DEFAULT 'immediate';
-- quiet_hours: 'HH:MM-HH:MM' in the user's time zone
ALTER TABLE users ADD COLUMN quiet_hours TEXT;
-- deliver_at: a scheduled message is fanned out from then on
ALTER TABLE messages ADD COLUMN deliver_at TEXT;
-- mode: 'immediate', or 'digest' (collected, goes out in the digest due at not_before)
ALTER TABLE deliveries ADD COLUMN mode TEXT NOT NULL DEFAULT 'immediate';
ALTER TABLE deliveries ADD COLUMN digest_id TEXT;
-- note: why a delivery waits or was folded (quiet hours, throttled)
ALTER TABLE deliveries ADD COLUMN note TEXT;
-- via: 'digest' when the message reaches the user's channels in a digest
ALTER TABLE inbox ADD COLUMN via TEXT;

CREATE TABLE digests (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    channel             TEXT NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    owner               TEXT,
    not_before          TEXT,
    items               INTEGER NOT NULL,
    provider            TEXT,
    provider_message_id TEXT,
    recipient           TEXT,
    subject             TEXT,
    text                TEXT,
    error               TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    sent_at             TEXT
);
CREATE INDEX digests_queued ON digests(owner, not_before) WHERE status = 'queued';
CREATE INDEX deliveries_collected ON deliveries(not_before)
    WHERE mode = 'digest' AND status = 'queued' AND digest_id IS NULL;
CREATE INDEX deliveries_by_digest ON deliveries(digest_id) WHERE digest_id IS NOT NULL;
CREATE INDEX deliveries_recent ON deliveries(user_id, channel, created_at);
-- the operators' list of failed deliveries, newest first
CREATE INDEX deliveries_failed ON deliveries(updated_at) WHERE status = 'failed';
-- statistics, so the planner prefers the partial indexes over scanning by message
ANALYZE;
