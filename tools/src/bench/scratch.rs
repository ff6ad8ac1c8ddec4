//! The suite's scratch directory: one private directory per `rtswitch
//! bench` (mkdtemp through the `tempfile` crate: a new directory of mode
//! 0700 under the temporary directory, never one that already exists),
//! holding the children's `--json` reports and control sockets; removed
//! when the suite ends. Predictable names in a shared /tmp would let
//! another user plant a file or a symlink where a child writes.

use std::path::PathBuf;
use std::sync::OnceLock;

static DIR: OnceLock<PathBuf> = OnceLock::new();

/// Creates the directory (once); the returned guard removes it.
pub fn create() -> std::io::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("rtswitch-bench-").tempdir()?;
    let _ = DIR.set(dir.path().to_path_buf());
    Ok(dir)
}

/// `name` in the suite's scratch directory (the temporary directory
/// itself before [`create`], as in unit tests).
pub fn path(name: &str) -> PathBuf {
    DIR.get().cloned().unwrap_or_else(std::env::temp_dir).join(name)
}
