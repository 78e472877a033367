-- Sweeps (issue 12): many stack jobs sampled from the zoo's spaces, submitted a window at a
-- time by whichever coordinator's upkeep gets there first (idempotency keys make a second one
-- a no-op), so nothing holds a sweep's jobs in memory and it can be paused, resumed, extended
-- and cancelled as a unit. Job i of a sweep is a function of (seed, i) alone.

CREATE TABLE sweeps (
    id          BIGSERIAL PRIMARY KEY,
    experiment  TEXT    NOT NULL,
    -- a feature set id or name; empty until built from level1_experiment
    features    TEXT    NOT NULL,
    -- the definition to build the feature set from, once level1_experiment's jobs are finished
    definition  TEXT    NOT NULL,
    models      TEXT    NOT NULL,
    n           BIGINT  NOT NULL,
    submitted   BIGINT  NOT NULL DEFAULT 0,
    seed        BIGINT  NOT NULL,
    cpu_slots   BIGINT  NOT NULL,
    priority    BIGINT  NOT NULL,
    -- running, paused, cancelled, done, failed
    state       TEXT    NOT NULL,
    error       TEXT    NOT NULL DEFAULT '',
    created_at  BIGINT  NOT NULL,
    updated_at  BIGINT  NOT NULL
);
