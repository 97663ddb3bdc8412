-- Access control: API keys (admin, publisher) and each user's token, as SHA-256 hashes.
-- categories: a JSON list of the category ids a publisher key may publish to.
CREATE TABLE api_keys (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL,
    categories TEXT NOT NULL DEFAULT '[]',
    key_hash   TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    revoked_at TEXT
);
ALTER TABLE users ADD COLUMN token_hash TEXT;
CREATE UNIQUE INDEX users_by_token ON users(token_hash);
