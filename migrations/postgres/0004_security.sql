-- Identities (issue 14). A worker proves who it is with the key its registration handed out;
-- only the key's SHA-256 is kept. Workers registered before this have no key and register
-- again. Access tokens carry one role; only the SHA-256 of the secret part is kept, and a
-- revoked token keeps its row (revoked_at) so that listings show what was revoked and when.

ALTER TABLE workers ADD COLUMN key_hash TEXT NOT NULL DEFAULT '';

CREATE TABLE tokens (
    id          TEXT   PRIMARY KEY,
    name        TEXT   NOT NULL,
    role        TEXT   NOT NULL,
    secret_hash TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
