-- Datasets (content stored once per BLAKE3 hash, known by names) and their folds, computed
-- once per (dataset, scheme, k, seed).

CREATE TABLE datasets (
    hash          TEXT   PRIMARY KEY,
    manifest      TEXT   NOT NULL,
    summary       TEXT   NOT NULL,
    storage_path  TEXT   NOT NULL,
    total_bytes   INTEGER NOT NULL,
    files         INTEGER    NOT NULL,
    registered_at INTEGER NOT NULL
);

CREATE TABLE dataset_names (
    name TEXT PRIMARY KEY,
    hash TEXT NOT NULL REFERENCES datasets (hash) ON DELETE CASCADE
);
CREATE INDEX dataset_names_hash ON dataset_names (hash);

CREATE TABLE folds (
    dataset_hash TEXT   NOT NULL REFERENCES datasets (hash) ON DELETE CASCADE,
    scheme       TEXT   NOT NULL,
    k            INTEGER    NOT NULL,
    seed         INTEGER NOT NULL,
    assignment   BLOB  NOT NULL,
    report       TEXT   NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (dataset_hash, scheme, k, seed)
);
