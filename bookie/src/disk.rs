//! Free space and the read-only state.
//!
//! The bookie turns read-only (adds fail with READ_ONLY, reads go on) when free space falls
//! under the configured minimum or when a write fails. Out of space is temporary: once free
//! space is back above the minimum by 10%, the bookie takes adds again. Any other I/O error
//! keeps it read-only until an operator restarts it, because the disk can no longer be trusted.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{info, warn};

/// Why the bookie is read-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadOnlyCause {
    /// Free space is below the minimum; clears itself when space returns.
    DiskFull,
    /// A write failed for another reason; clears only on restart.
    IoError,
}

/// Free and total bytes of the file system holding `path`.
pub fn disk_space(path: &Path) -> std::io::Result<(u64, u64)> {
    let path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("path holds a NUL byte"))?;
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stats` is a valid out-parameter.
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
    if status != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let block = stats.f_frsize as u64;
    Ok((stats.f_bavail as u64 * block, stats.f_blocks as u64 * block))
}

/// Whether adds are refused, and why.
#[derive(Default)]
pub struct ReadOnlyState {
    read_only: AtomicBool,
    reason: Mutex<Option<(ReadOnlyCause, String)>>,
}

impl ReadOnlyState {
    /// Cheap check on the add path.
    pub fn is_read_only(&self) -> bool {
        self.read_only.load(Ordering::Acquire)
    }

    pub fn reason(&self) -> Option<String> {
        self.reason
            .lock()
            .as_ref()
            .map(|(_, reason)| reason.clone())
    }

    pub fn enter(&self, cause: ReadOnlyCause, reason: String) {
        let mut current = self.reason.lock();
        // An I/O error outranks a full disk: it must not be cleared by space returning.
        if matches!(current.as_ref(), Some((ReadOnlyCause::IoError, _))) {
            return;
        }
        if current.as_ref().map(|(_, text)| text) != Some(&reason) {
            warn!(%reason, "bookie is now read-only: adds are refused, reads continue");
        }
        *current = Some((cause, reason));
        self.read_only.store(true, Ordering::Release);
    }

    /// Applies a free-space reading against the minimum.
    pub fn observe_free_space(&self, free_bytes: u64, min_free_bytes: u64) {
        if free_bytes < min_free_bytes {
            self.enter(
                ReadOnlyCause::DiskFull,
                format!(
                    "disk full: {free_bytes} bytes free, under the minimum of {min_free_bytes}; \
                     free space or raise the disk to take adds again"
                ),
            );
            return;
        }
        let margin = min_free_bytes + min_free_bytes / 10;
        let mut current = self.reason.lock();
        if matches!(current.as_ref(), Some((ReadOnlyCause::DiskFull, _))) && free_bytes >= margin {
            info!(free_bytes, "free space is back: bookie takes adds again");
            *current = None;
            self.read_only.store(false, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_clears_with_margin_but_io_error_stays() {
        let state = ReadOnlyState::default();
        state.observe_free_space(50, 100);
        assert!(state.is_read_only());
        state.observe_free_space(105, 100);
        assert!(
            state.is_read_only(),
            "within the 10% margin it stays read-only"
        );
        state.observe_free_space(111, 100);
        assert!(!state.is_read_only());

        state.enter(ReadOnlyCause::IoError, "fdatasync failed".into());
        state.observe_free_space(1_000, 100);
        assert!(state.is_read_only());
        assert_eq!(state.reason().as_deref(), Some("fdatasync failed"));
    }

    #[test]
    fn disk_space_reads_this_file_system() {
        let (free, total) = disk_space(Path::new(".")).expect("statvfs");
        assert!(total > 0 && free <= total);
    }
}
