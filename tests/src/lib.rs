//! Helpers shared by the end-to-end tests: paths to the workspace and its
//! built binaries, and processes started for one test.

pub mod cli;
pub mod desktop;
pub mod fault;

use std::path::PathBuf;

/// Returns the workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits inside the workspace root")
        .to_path_buf()
}
