-- API keys of platform backends, risk reviewers and support staff, shared by every service.
-- Applied with search_path set to the identity schema (credited_identity, or a test's own).
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix      text NOT NULL,
    digest      bytea NOT NULL UNIQUE CHECK (length(digest) = 32),
    scopes      text[] NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz,
    revoked_at  timestamptz
);

-- A name says one live key, so `credited keys revoke <name>` is never ambiguous.
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;
