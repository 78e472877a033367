-- Artifacts (checkpoints, resume states) live in the database, so every coordinator serving
-- this database serves them and a retry finds its resume checkpoint whichever coordinator it
-- reaches. An upload writes 1 MiB chunks under its own id; only when its size and BLAKE3 check
-- out does one short transaction (fenced by the job's running attempt) name it as the job's
-- artifact, replacing the earlier upload of that name. Uploads never named are removed by the
-- reaper once untouched for a while. Deleting a job deletes its uploads, chunks and artifacts.

CREATE TABLE artifact_uploads (
    id         TEXT   PRIMARY KEY,
    job_id     BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    touched_at BIGINT NOT NULL
);
CREATE INDEX artifact_uploads_job ON artifact_uploads (job_id);
CREATE INDEX artifact_uploads_touched ON artifact_uploads (touched_at);

CREATE TABLE artifact_chunks (
    upload_id TEXT   NOT NULL REFERENCES artifact_uploads (id) ON DELETE CASCADE,
    start     BIGINT NOT NULL,
    data      BYTEA  NOT NULL,
    PRIMARY KEY (upload_id, start)
);
-- Weights do not compress: store them out of line without trying.
ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL;

CREATE TABLE artifacts (
    job_id     BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    name       TEXT   NOT NULL,
    attempt    INT    NOT NULL,
    size       BIGINT NOT NULL,
    blake3     TEXT   NOT NULL,
    upload_id  TEXT   NOT NULL UNIQUE REFERENCES artifact_uploads (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, name)
);
