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

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    listener
        .local_addr()
        .expect("a bound socket has an address")
        .port()
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
