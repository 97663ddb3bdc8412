-- Notefly schema v3: what users register to be reached by push, webhook and Apprise.
-- kind: webpush | webhook | apprise; keys: JSON (p256dh/auth of a web push
-- subscription, the signing secret of a webhook); label: what may be shown of url.
CREATE TABLE endpoints (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    url        TEXT NOT NULL,
    keys       TEXT NOT NULL DEFAULT '{}',
    label      TEXT NOT NULL DEFAULT '',
    created_at TEXT NOT NULL
);
CREATE UNIQUE INDEX endpoints_by_user ON endpoints(user_id, kind, url);
-- a push subscription is one browser's: it belongs to one user at a time
CREATE UNIQUE INDEX endpoints_webpush ON endpoints(url) WHERE kind = 'webpush';
