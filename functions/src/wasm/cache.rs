//! The disk cache of compiled modules, so a restarted worker does not compile again.
//!
//! A file per module, named by the SHA-256 of the WebAssembly bytes and a hash of the engine's
//! compatibility (wasmtime version and the settings that shape code), so a worker upgraded or
//! reconfigured never loads code compiled for another engine. Each file is the serialized
//! module followed by its CRC-32C; a file that fails the check is ignored and rewritten.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;

use crate::error::{FunctionError, Result};

/// The SHA-256 of a module's bytes: its identity in the cache and in metering.
pub type ModuleHash = [u8; 32];

/// Hashes WebAssembly bytes.
pub fn module_hash(wasm: &[u8]) -> ModuleHash {
    Sha256::digest(wasm).into()
}

/// Lower-case hex of a hash.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Compiled modules on disk.
pub struct ModuleCache {
    directory: PathBuf,
    engine_tag: String,
}

impl ModuleCache {
    /// A cache in `directory` (created if missing) for modules compiled by `engine`.
    pub fn open(directory: &Path, engine: &Engine) -> Result<Self> {
        std::fs::create_dir_all(directory).map_err(|error| {
            FunctionError::Cache(format!("creating {}: {error}", directory.display()))
        })?;
        // DefaultHasher is deterministic within one build of the worker, which is the span
        // over which engine compatibility matters; a new build recompiles at worst.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ModuleCache {
            directory: directory.to_owned(),
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, hash: &ModuleHash) -> PathBuf {
        self.directory
            .join(format!("{}-{}.cwasm", hex(hash), self.engine_tag))
    }

    /// The compiled bytes of a module, if cached and intact.
    pub fn load(&self, hash: &ModuleHash) -> Option<Vec<u8>> {
        let mut bytes = std::fs::read(self.path(hash)).ok()?;
        if bytes.len() < 4 {
            return None;
        }
        let checksum_at = bytes.len() - 4;
        let expected = u32::from_le_bytes(bytes[checksum_at..].try_into().ok()?);
        if crc32c::crc32c(&bytes[..checksum_at]) != expected {
            return None;
        }
        bytes.truncate(checksum_at);
        Some(bytes)
    }

    /// Stores compiled bytes; written to a temporary name and renamed, so a crash never
    /// leaves a partial file under the real name.
    pub fn store(&self, hash: &ModuleHash, compiled: &[u8]) -> Result<()> {
        let path = self.path(hash);
        let temporary = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = Vec::with_capacity(compiled.len() + 4);
        bytes.extend_from_slice(compiled);
        bytes.extend_from_slice(&crc32c::crc32c(compiled).to_le_bytes());
        std::fs::write(&temporary, &bytes)
            .and_then(|()| std::fs::rename(&temporary, &path))
            .map_err(|error| FunctionError::Cache(format!("writing {}: {error}", path.display())))
    }
}
