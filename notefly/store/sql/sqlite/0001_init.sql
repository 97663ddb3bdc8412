-- Notefly schema v1: catalogue, users, subscriptions, messages, deliveries, inbox.
CREATE TABLE categories (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    email       TEXT,
    phone       TEXT,
    push_token  TEXT,
    timezone    TEXT NOT NULL DEFAULT 'UTC',
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- channels: comma-separated channel names, e.g. 'email,sms'
CREATE TABLE subscriptions (
    category_id TEXT NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channels    TEXT NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (category_id, user_id)
) WITHOUT ROWID;
CREATE INDEX subscriptions_by_user ON subscriptions(user_id);

-- fanout_cursor/fanout_done: how far the audience has been turned into deliveries;
-- advanced in the same transaction as the deliveries of each page.
CREATE TABLE messages (
    id              TEXT PRIMARY KEY,
    category_id     TEXT NOT NULL REFERENCES categories(id),
    title           TEXT,
    body            TEXT NOT NULL,
    data            TEXT NOT NULL DEFAULT '{}',
    priority        TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    accepted_at     TEXT NOT NULL,
    fanout_cursor   TEXT,
    fanout_done     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_fanout_pending ON messages(accepted_at) WHERE fanout_done = 0;

CREATE TABLE deliveries (
    id                  TEXT PRIMARY KEY,
    message_id          TEXT NOT NULL REFERENCES messages(id),
    user_id             TEXT NOT NULL,
    channel             TEXT NOT NULL,
    status              TEXT NOT NULL,
    attempts            INTEGER NOT NULL DEFAULT 0,
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
CREATE INDEX deliveries_by_message ON deliveries(message_id, status);
CREATE INDEX deliveries_queued ON deliveries(id) WHERE status = 'queued';
CREATE INDEX deliveries_by_user ON deliveries(user_id);

-- seq orders the inbox (newest first) and backs the "before" cursor.
CREATE TABLE inbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL,
    message_id  TEXT NOT NULL,
    category_id TEXT NOT NULL,
    title       TEXT,
    body        TEXT NOT NULL,
    priority    TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    read_at     TEXT
);
CREATE INDEX inbox_by_user ON inbox(user_id, seq);

INSERT INTO categories (id, name, description, created_at) VALUES
    ('finance', 'Finance', 'Markets, rates and money news', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    ('movies', 'Movies', 'Releases, reviews and showtimes', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now')),
    ('sports', 'Sports', 'Scores, fixtures and transfers', strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now'));
