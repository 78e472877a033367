//! The protocol's limits, in one place: the coordinator refuses what exceeds them, the CLI
//! checks its flags against them before sending, and the worker keeps what it sends inside
//! them. Each bounds memory or time that one request can cost the coordinator.

/// A job's payload (JSON object).
pub const MAX_PAYLOAD_BYTES: usize = 64 * 1024;
pub const MAX_CPU_SLOTS: u32 = 4096;
pub const MAX_GPUS: u32 = 64;
/// Per GPU: 4 TiB.
pub const MAX_GPU_MEM_MB: u64 = 4 * 1024 * 1024;
pub const MAX_TAGS: usize = 32;
pub const MAX_ATTEMPTS: u32 = 100;
pub const MAX_TIMEOUT_S: u32 = 30 * 24 * 3600;
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i32> = -1000..=1000;
/// Names, experiments, idempotency keys, worker names and hostnames, in bytes.
pub const MAX_TEXT: usize = 256;
/// Jobs a submit request may hold, by default (the coordinator's `--max-batch-jobs`).
pub const DEFAULT_MAX_BATCH_JOBS: u32 = 10_000;
/// Copies of one job a `stackhive submit --count` may ask for (sent in batches).
pub const MAX_COUNT: u32 = 1_000_000;

/// Dependencies of one job (`depends_on` and `depends_on_batch` together, as sent), and of all
/// the jobs of one submit request: a batch of 3,000 jobs each depending on every earlier one
/// (4.5 million edges) held the SQLite writer for 12 seconds; 250,000 take well under one.
pub const MAX_DEPS_PER_JOB: usize = 10_000;
pub const MAX_DEPS_PER_BATCH: usize = 250_000;

/// A progress document of a running job (JSON), sent with each heartbeat and shown by every
/// listing of the job.
pub const MAX_PROGRESS_BYTES: usize = 16 * 1024;
/// A job's result document (JSON).
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// A failure reason; longer ones are cut (`cut_to`).
pub const MAX_REASON_BYTES: usize = 8 * 1024;

/// Cuts `s` to at most `max` bytes, on a character boundary.
pub fn cut_to(s: &mut String, max: usize) {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
}
/// Out-of-fold or test predictions of one completion, each. A completion that expects no row
/// count is still bounded.
pub const MAX_PREDICTION_ROWS: usize = 5_000_000;
/// Values of every prediction in one Complete request together (80 MB of f32 and row indices).
pub const MAX_PREDICTION_VALUES_PER_REQUEST: usize = 20_000_000;
/// When non-zero, the row counts a job's completion must carry.
pub const MAX_EXPECTED_ROWS: u32 = 100_000_000;

/// Job ids one StreamPredictions request may list.
pub const MAX_PREDICTION_IDS: usize = 100_000;

/// Job kinds a worker may advertise.
pub const MAX_WORKER_KINDS: usize = 64;
/// Job ids one Watch may follow, and Watch streams one coordinator serves at once.
pub const MAX_WATCH_IDS: usize = 10_000;
pub const DEFAULT_MAX_WATCHES: u32 = 1_000;
/// A page of jobs (ListJobs, the changed jobs of a Watch event) stops before its encoded size
/// passes this, whatever its row count, so that no response nears the message size limit.
pub const MAX_PAGE_BYTES: usize = 4 << 20;

/// True for characters that must never appear in a name, key or label: control characters
/// (terminal escapes) and the bidirectional overrides and isolates that make text display in
/// another order than it reads (U+202A–U+202E, U+2066–U+2069, and the marks U+200E, U+200F,
/// U+061C).
pub fn is_forbidden_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}')
}

/// A name-like text field: at most [`MAX_TEXT`] bytes, no forbidden characters. The error says
/// what was found.
pub fn check_text(field: &str, v: &str) -> Result<(), String> {
    if v.len() > MAX_TEXT {
        return Err(format!(
            "{field} must be at most {MAX_TEXT} bytes, found {} bytes",
            v.len()
        ));
    }
    if let Some(c) = v.chars().find(|&c| is_forbidden_char(c)) {
        return Err(format!(
            "{field} must not hold control or bidirectional-override characters, found U+{:04X}",
            c as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_refuse_escapes_and_bidi_overrides() {
        assert!(check_text("name", "fold-3 b0").is_ok());
        assert!(check_text("name", "Müller's run").is_ok());
        let err = check_text("name", "\u{1b}[2Jx").unwrap_err();
        assert_eq!(
            err,
            "name must not hold control or bidirectional-override characters, found U+001B"
        );
        assert!(check_text("key", "abc\u{202E}gpj.exe")
            .unwrap_err()
            .ends_with("found U+202E"));
        assert!(check_text("name", &"x".repeat(MAX_TEXT + 1))
            .unwrap_err()
            .ends_with("found 257 bytes"));
    }

    #[test]
    fn reasons_are_cut_on_a_character_boundary() {
        let mut s = "ééé".to_string();
        cut_to(&mut s, 3);
        assert_eq!(s, "é");
        let mut s = "short".to_string();
        cut_to(&mut s, 100);
        assert_eq!(s, "short");
    }
}
