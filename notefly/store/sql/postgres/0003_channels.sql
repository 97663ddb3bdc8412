-- Notefly schema v3: what users register to be reached by push, webhook and Apprise.
-- kind: webpush | webhook | apprise; keys: p256dh/auth of a web push subscription, the
-- signing secret of a webhook; label: what may be shown of url.
CREATE TABLE endpoints (
    id         text COLLATE "C" PRIMARY KEY,
    user_id    text COLLATE "C" NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       text NOT NULL,
    url        text NOT NULL,
    keys       jsonb NOT NULL DEFAULT '{}',
    label      text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);
CREATE UNIQUE INDEX endpoints_by_user ON endpoints(user_id, kind, url);
-- a push subscription is one browser's: it belongs to one user at a time
CREATE UNIQUE INDEX endpoints_webpush ON endpoints(url) WHERE kind = 'webpush';
