//! Writing a file's dirty pages back to the disk ahead of its fdatasync, in bounded pieces:
//! a flush of megabytes, or a preallocated file's zeros, then never sits in the disk's queue
//! in one block ahead of the journal's fdatasync, which every add waits for.
//!
//! Its errors must be handled, never ignored: waiting on a range reports a failed write-back
//! once per open file and then forgets it, so a later fdatasync of the same file succeeds
//! without the lost pages.

use std::fs::File;
use std::os::fd::AsRawFd;

/// How far one call goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteBack {
    /// Start writing the range back, without waiting.
    Start,
    /// Write the range back and wait until it is on the disk (not yet durable: the disk may
    /// hold it in its cache until an fdatasync).
    Finish,
}

/// Writes back `length` bytes of `file` from `offset`, as far as `step` says.
pub fn write_back(file: &File, offset: u64, length: u64, step: WriteBack) -> std::io::Result<()> {
    let flags = match step {
        WriteBack::Start => libc::SYNC_FILE_RANGE_WRITE,
        WriteBack::Finish => {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        }
    };
    // SAFETY: sync_file_range only reads its arguments; the descriptor is open.
    let outcome = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            length as libc::off64_t,
            flags,
        )
    };
    if outcome == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_range_is_written_back_and_a_failure_reaches_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let file = File::create(dir.path().join("data")).unwrap();
        file.write_all_at(&[7u8; 8192], 0).unwrap();
        write_back(&file, 0, 4096, WriteBack::Start).unwrap();
        write_back(&file, 0, 8192, WriteBack::Finish).unwrap();

        // Not a regular file: the call fails, and says so.
        let (_reader, writer) = std::io::pipe().unwrap();
        let pipe = File::from(std::os::fd::OwnedFd::from(writer));
        let error = write_back(&pipe, 0, 4096, WriteBack::Finish).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ESPIPE));
    }
}
