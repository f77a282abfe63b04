-- Identities: operator tokens (viewer, operator, admin), the agent join token, and the
-- credential each host received when its agent joined. See controlplane/tokens.py.
--
-- A token as handed out is `<id>.<secret>`: the id finds the row, the secret is checked
-- against `hash` (SHA-256 of the secret) in constant time. The secret itself is never stored.
CREATE TABLE token (
    id          text        PRIMARY KEY,
    -- An operator token's name (its events' actor), `join`, or `host/<name>` for a host.
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('viewer', 'operator', 'admin', 'join', 'host')),
    -- The host a `host` credential may sync; NULL for every other role.
    host        text        CHECK ((role = 'host') = (host IS NOT NULL)),
    hash        bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text        NOT NULL DEFAULT '',
    revoked_at  timestamptz
);

-- One live token per name: a host has one credential, and a name means one token.
CREATE UNIQUE INDEX token_live_name ON token (name) WHERE revoked_at IS NULL;
