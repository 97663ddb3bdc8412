-- Notefly schema v1: catalogue, users, subscriptions, messages, deliveries, inbox.
-- Ids are COLLATE "C": pages and cursors (fan-out by user id, queued deliveries by id)
-- must order by bytes whatever the database's locale, exactly as in SQLite.
CREATE TABLE categories (
    id          text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL
);

CREATE TABLE users (
    id          text COLLATE "C" PRIMARY KEY,
    name        text NOT NULL,
    email       text,
    phone       text,
    push_token  text,
    timezone    text NOT NULL DEFAULT 'UTC',
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE subscriptions (
    category_id text COLLATE "C" NOT NULL REFERENCES categories(id) ON DELETE CASCADE,
    user_id     text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channels    text[] NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (category_id, user_id)
);
CREATE INDEX subscriptions_by_user ON subscriptions(user_id);

-- fanout_cursor/fanout_done: how far the audience has been turned into deliveries;
-- advanced in the same transaction as the deliveries of each page.
CREATE TABLE messages (
    id              text COLLATE "C" PRIMARY KEY,
    category_id     text COLLATE "C" NOT NULL REFERENCES categories(id),
    title           text,
    body            text NOT NULL,
    data            jsonb NOT NULL DEFAULT '{}',
    priority        text NOT NULL,
    idempotency_key text UNIQUE,
    accepted_at     timestamptz NOT NULL,
    fanout_cursor   text COLLATE "C",
    fanout_done     boolean NOT NULL DEFAULT false
);
CREATE INDEX messages_fanout_pending ON messages(accepted_at) WHERE NOT fanout_done;

CREATE TABLE deliveries (
    id                  text COLLATE "C" PRIMARY KEY,
    message_id          text COLLATE "C" NOT NULL REFERENCES messages(id),
    user_id             text COLLATE "C" NOT NULL,
    channel             text COLLATE "C" NOT NULL,
    status              text NOT NULL,
    attempts            integer NOT NULL DEFAULT 0,
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
CREATE INDEX deliveries_by_message ON deliveries(message_id, status);
CREATE INDEX deliveries_queued ON deliveries(id) WHERE status = 'queued';
CREATE INDEX deliveries_by_user ON deliveries(user_id);

-- seq orders the inbox (newest first) and backs the "before" cursor.
CREATE TABLE inbox (
    seq         bigserial PRIMARY KEY,
    id          text COLLATE "C" NOT NULL UNIQUE,
    user_id     text COLLATE "C" NOT NULL,
    message_id  text COLLATE "C" NOT NULL,
    category_id text COLLATE "C" NOT NULL,
    title       text,
    body        text NOT NULL,
    priority    text NOT NULL,
    created_at  timestamptz NOT NULL,
    read_at     timestamptz
);
CREATE INDEX inbox_by_user ON inbox(user_id, seq);

INSERT INTO categories (id, name, description, created_at) VALUES
    ('finance', 'Finance', 'Markets, rates and money news', now()),
    ('movies', 'Movies', 'Releases, reviews and showtimes', now()),
    ('sports', 'Sports', 'Scores, fixtures and transfers', now());
