//! Builds the example functions of `functions/examples` to WebAssembly: a development aid the
//! tests and `magnetar perf function` use, so they always run the examples of the same source
//! tree. It needs cargo and the source tree, and adds the `wasm32-unknown-unknown` target with
//! rustup when it is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::error::{FunctionError, Result};

/// The example functions, by crate name.
pub const EXAMPLES: [&str; 7] = [
    "identity",
    "filter",
    "enrich",
    "wordcount",
    "countmin",
    "fanout",
    "faulty",
];

const TARGET: &str = "wasm32-unknown-unknown";

fn examples_directory() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// Where the examples are built: `wasm-examples` in the cargo target directory
/// (`CARGO_TARGET_DIR`, else the workspace's `target`).
fn output_directory() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("wasm-examples")
}

fn ensure_rustup_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    if let Ok(output) = installed {
        if !String::from_utf8_lossy(&output.stdout)
            .lines()
            .any(|line| line.trim() == TARGET)
        {
            // A failure here shows up as the build's own error just below.
            let _ = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status();
        }
    }
}

fn build() -> std::result::Result<PathBuf, String> {
    ensure_rustup_target();
    let output_directory = output_directory();
    let output = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
        .current_dir(examples_directory())
        .env("CARGO_TARGET_DIR", &output_directory)
        .args(["build", "--release", "--quiet", "--target", TARGET])
        .output()
        .map_err(|error| format!("running cargo: {error}"))?;
    if !output.status.success() {
        return Err(format!(
            "building the example functions failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output_directory.join(TARGET).join("release"))
}

/// The WebAssembly bytes of example `name`, building every example once per process.
pub fn example_wasm(name: &str) -> Result<Vec<u8>> {
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let directory = BUILT
        .get_or_init(build)
        .as_ref()
        .map_err(|error| FunctionError::Runtime(error.clone()))?;
    let path = directory.join(format!("{name}.wasm"));
    std::fs::read(&path)
        .map_err(|error| FunctionError::Runtime(format!("reading {}: {error}", path.display())))
}
