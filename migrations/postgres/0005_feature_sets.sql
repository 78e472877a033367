-- Feature sets (issue 12): the fold-aligned matrices of level-2 jobs, named by the hash of
-- their resolved definition, stored once in 1 MiB chunks so every coordinator serves them, and
-- known by any number of names.

CREATE TABLE feature_sets (
    id         TEXT    PRIMARY KEY,
    definition TEXT    NOT NULL,
    -- rows, columns, folds and models as JSON
    info       TEXT    NOT NULL,
    size       BIGINT  NOT NULL,
    blake3     TEXT    NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE TABLE feature_set_names (
    name TEXT PRIMARY KEY,
    id   TEXT NOT NULL REFERENCES feature_sets (id) ON DELETE CASCADE
);
CREATE INDEX feature_set_names_id ON feature_set_names (id);

CREATE TABLE feature_chunks (
    id    TEXT   NOT NULL REFERENCES feature_sets (id) ON DELETE CASCADE,
    start BIGINT NOT NULL,
    data  BYTEA  NOT NULL,
    PRIMARY KEY (id, start)
);
