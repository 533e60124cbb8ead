-- API keys (recsys/auth): only a sha256 of each key is stored, plus a short prefix to recognise it by.
CREATE TABLE IF NOT EXISTS api_keys (
    key_id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    prefix      text NOT NULL,
    hash        text NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('storefront', 'merchandiser', 'ml', 'admin')),
    name        text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_prefix ON api_keys (prefix);
