//! Directory helpers shared by the journal and the entry logs, whose files are named by a
//! hexadecimal id and a suffix.

use std::fs::File;
use std::path::Path;

use crate::error::{BookieError, Result};

/// Ids of the files in `dir` named `<hex id><suffix>`, in order; other names are skipped.
pub fn list_file_ids(dir: &Path, suffix: &str) -> Result<Vec<u64>> {
    let listing_error = |source| BookieError::io(format!("listing {}", dir.display()), source);
    let mut ids = Vec::new();
    for item in std::fs::read_dir(dir).map_err(listing_error)? {
        let name = item.map_err(listing_error)?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(hex) = name.strip_suffix(suffix) {
            if let Ok(id) = u64::from_str_radix(hex, 16) {
                ids.push(id);
            }
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes a directory's entries (new or removed files) durable.
pub fn sync_directory(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|directory| directory.sync_all())
        .map_err(|source| BookieError::io(format!("syncing directory {}", dir.display()), source))
}
