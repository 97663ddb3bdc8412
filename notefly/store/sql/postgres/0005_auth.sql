-- Access control: API keys (admin, publisher) and each user's token, as SHA-256 hashes.
-- categories: the category ids a publisher key may publish to.
CREATE TABLE api_keys (
    id         text COLLATE "C" PRIMARY KEY,
    name       text NOT NULL,
    kind       text NOT NULL,
    categories text[] NOT NULL DEFAULT '{}',
    key_hash   text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL,
    revoked_at timestamptz
);
ALTER TABLE users ADD COLUMN token_hash text;
CREATE UNIQUE INDEX users_by_token ON users(token_hash);
