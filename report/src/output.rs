//! Writing the report atomically: the HTML goes to a temp file in the target's directory and is
//! renamed over the target, so a reader (or a browser left open on the old report) never sees
//! a half-written page, and a failed write leaves the old report as it was.
//! Must not: leave its temp file behind on any error (tempfile removes it when dropped).

use std::io::Write as _;
use std::path::Path;

use crate::error::ReportError;

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    // Same directory as the target: a rename across file systems would not be atomic.
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".stackhive-report-").suffix(".tmp");
    // tempfile creates files readable by their owner only; a report is meant to be shared.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(bytes).map_err(err)?;
    // Flushed to disk before the rename, so a crash cannot leave an empty report in its place.
    tmp.as_file().sync_all().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(())
}
