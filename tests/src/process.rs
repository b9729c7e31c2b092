//! Real `magnetar` processes for tests.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The `magnetar` binary next to the test executable (`target/<profile>/magnetar`), or the one
/// named by `MAGNETAR_BIN`.
///
/// `cargo test --workspace` builds it before running any test; a test run limited to this
/// crate needs `cargo build -p magnetar` first, and the panic says so.
pub fn magnetar_binary() -> PathBuf {
    if let Ok(path) = std::env::var("MAGNETAR_BIN") {
        return PathBuf::from(path);
    }
    let test_executable = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>/magnetar
    let profile_dir = test_executable
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let binary = profile_dir.join("magnetar");
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build -p magnetar` (or `cargo test --workspace`) first",
        binary.display()
    );
    binary
}

/// A loopback port that was free a moment ago, for a server a test starts.
///
/// Taken below Linux's ephemeral range (32768 and up): a port from that range can be handed,
/// between this check and the server's bind, to the local end of any outgoing connection (a
/// gRPC client of another test), and the server then fails with "address in use". Ports go
/// out in turn from a per-process counter, so tests running side by side never get the same
/// one; the start depends on the process id, so test binaries run one after another start in
/// different places.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::AcqRel,
        Ordering::Acquire,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::AcqRel) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {FIRST} and {}", FIRST + SPAN);
}

/// A child `magnetar` process, SIGKILLed when dropped so a failing test leaves nothing behind.
pub struct MagnetarProcess {
    child: Option<Child>,
    description: String,
}

impl MagnetarProcess {
    /// Starts `magnetar <args...>` with its stdout and stderr inherited (cargo's test runner
    /// captures them per test).
    pub fn start(args: &[&str]) -> std::io::Result<Self> {
        let child = Command::new(magnetar_binary())
            .args(args)
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Self {
            child: Some(child),
            description: format!("magnetar {}", args.join(" ")),
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, then reap, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        // SAFETY: kill(2) on our own child's pid; at worst the signal goes nowhere.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        child.wait().map(|status| status.success()).unwrap_or(false)
    }

    /// Whether the process has exited on its own.
    pub fn has_exited(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(Some(_))),
            None => true,
        }
    }

    pub fn description(&self) -> &str {
        &self.description
    }
}

impl Drop for MagnetarProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
