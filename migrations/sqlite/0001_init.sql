-- stackhive job store, SQLite flavour (the embedded single-machine default). A mirror of the
-- PostgreSQL schema: times are Unix epoch milliseconds from the coordinator process clock,
-- booleans are 0/1 integers and arrays are JSON text.
-- States: 1 blocked, 2 queued, 3 running, 4 succeeded, 5 failed, 6 cancelled.

CREATE TABLE jobs (
    -- AUTOINCREMENT: an id is never reused after a purge, so an old id in a log or a client
    -- can never name a different job.
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    kind             TEXT    NOT NULL,
    name             TEXT    NOT NULL DEFAULT '',
    experiment       TEXT    NOT NULL DEFAULT '',
    payload          TEXT    NOT NULL DEFAULT '{}',
    priority         INTEGER NOT NULL DEFAULT 0,
    sort_key         INTEGER NOT NULL,
    state            INTEGER NOT NULL,
    cpu_slots        INTEGER NOT NULL DEFAULT 1,
    gpus             INTEGER NOT NULL DEFAULT 0,
    gpu_mem_mb       INTEGER NOT NULL DEFAULT 0,
    tags             TEXT    NOT NULL DEFAULT '[]',
    max_attempts     INTEGER NOT NULL,
    crash_limit      INTEGER NOT NULL,
    timeout_s        INTEGER NOT NULL DEFAULT 0,
    expect_oof_rows  INTEGER NOT NULL DEFAULT 0,
    expect_test_rows INTEGER NOT NULL DEFAULT 0,
    deps_pending     INTEGER NOT NULL DEFAULT 0,
    has_dependents   INTEGER NOT NULL DEFAULT 0,
    -- failed or cancelled because a dependency did: `retry` of that dependency revives it
    dep_failed       INTEGER NOT NULL DEFAULT 0,
    attempt          INTEGER NOT NULL DEFAULT 0,
    failures         INTEGER NOT NULL DEFAULT 0,
    crashes          INTEGER NOT NULL DEFAULT 0,
    worker_id        TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_expires_at INTEGER,
    run_after        INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    error            TEXT,
    result           TEXT,
    progress         TEXT
);

-- The queue holds only queued rows, so millions of finished jobs never slow a claim.
CREATE INDEX jobs_queue ON jobs (sort_key, id) WHERE state = 2;
-- The reaper and the running-job counts look only at running rows.
CREATE INDEX jobs_leases ON jobs (lease_expires_at) WHERE state = 3;
-- Not partial (unlike PostgreSQL): SQLite cannot prove `experiment = ?` implies
-- `experiment <> ''`, so a partial index would never be used for a bound parameter.
CREATE INDEX jobs_experiment ON jobs (experiment, id);
-- Retention scans finished rows by age.
CREATE INDEX jobs_finished ON jobs (finished_at) WHERE state >= 4;

CREATE TABLE job_deps (
    job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    dep_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    PRIMARY KEY (job_id, dep_id)
) WITHOUT ROWID;
CREATE INDEX job_deps_dep ON job_deps (dep_id);

CREATE TABLE submissions (
    key        TEXT    PRIMARY KEY,
    body_hash  TEXT    NOT NULL,
    job_ids    TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);

CREATE TABLE predictions (
    job_id   INTEGER PRIMARY KEY REFERENCES jobs (id) ON DELETE CASCADE,
    attempt  INTEGER NOT NULL,
    oof_rows BLOB    NOT NULL,
    oof      BLOB    NOT NULL,
    test     BLOB    NOT NULL
);

CREATE TABLE workers (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    hostname      TEXT    NOT NULL,
    cpu_slots     INTEGER NOT NULL,
    gpus          INTEGER NOT NULL,
    gpu_mem_mb    TEXT    NOT NULL,
    tags          TEXT    NOT NULL,
    kinds         TEXT    NOT NULL,
    version       TEXT    NOT NULL,
    registered_at INTEGER NOT NULL,
    last_seen     INTEGER NOT NULL,
    deregistered  INTEGER NOT NULL DEFAULT 0
);
