-- Digests, scheduled messages, quiet hours, throttling.
-- schedule: 'immediate', 'hourly', 'daily@HH:MM', 'weekly@<0-6>@HH:MM' (notefly.schedule)
ALTER TABLE subscriptions ADD COLUMN schedule text NOT NULL DEFAULT 'immediate';
-- quiet_hours: 'HH:MM-HH:MM' in the user's time zone
ALTER TABLE users ADD COLUMN quiet_hours text;
-- deliver_at: a scheduled message is fanned out from then on
ALTER TABLE messages ADD COLUMN deliver_at timestamptz;
-- mode: 'immediate', or 'digest' (collected, goes out in the digest due at not_before)
ALTER TABLE deliveries ADD COLUMN mode text NOT NULL DEFAULT 'immediate';
ALTER TABLE deliveries ADD COLUMN digest_id text COLLATE "C";
-- note: why a delivery waits or was folded (quiet hours, throttled)
ALTER TABLE deliveries ADD COLUMN note text;
-- via: 'digest' when the message reaches the user's channels in a digest
ALTER TABLE inbox ADD COLUMN via text;

CREATE TABLE digests (
    id                  text COLLATE "C" PRIMARY KEY,
    user_id             text COLLATE "C" NOT NULL,
    channel             text COLLATE "C" NOT NULL,
    status              text NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
    owner               text COLLATE "C",
    not_before          timestamptz,
    items               integer NOT NULL,
    provider            text,
    provider_message_id text,
    recipient           text,
    subject             text,
    text                text,
    error               text,
    created_at          timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL,
    sent_at             timestamptz
);
CREATE INDEX digests_queued ON digests(owner, not_before) WHERE status = 'queued';
CREATE INDEX deliveries_collected ON deliveries(not_before)
    WHERE mode = 'digest' AND status = 'queued' AND digest_id IS NULL;
CREATE INDEX deliveries_by_digest ON deliveries(digest_id) WHERE digest_id IS NOT NULL;
CREATE INDEX deliveries_recent ON deliveries(user_id, channel, created_at);
