//! Background threads (the write-cache flusher, compaction, journal preallocation) run at a
//! lower CPU priority than the threads that answer adds. Each flush inserts a second's worth of
//! entries into the index in one burst; at normal priority that burst takes the CPU from the
//! journal and the gRPC workers on a small machine, and shows as an add latency tail. The
//! flusher still gets the CPU whenever the add path is idle or blocked on it (adds wait once the
//! write cache holds twice the flush size), so nothing falls behind for long.

use tracing::debug;

/// How much lower: the scheduler then gives the thread about a third of the CPU a normal thread
/// gets when both want it.
const BACKGROUND_NICE: libc::c_int = 5;

/// Lowers the calling thread's CPU priority. Advisory: a failure is logged and ignored.
pub fn lower_current_thread() {
    // SAFETY: gettid has no preconditions; setpriority only reads its arguments. On Linux a
    // thread id given to PRIO_PROCESS changes that one thread.
    let outcome = unsafe {
        let thread_id = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, thread_id as libc::id_t, BACKGROUND_NICE)
    };
    if outcome != 0 {
        debug!(
            error = %std::io::Error::last_os_error(),
            "cannot lower a background thread's priority"
        );
    }
}
