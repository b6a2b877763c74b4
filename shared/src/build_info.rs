//! What is running: version from Cargo, commit from the build script.

/// The workspace version (`Cargo.toml`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binary was built from, or `unknown` when the build had
/// no git checkout and no `ORION_GIT_COMMIT`.
pub const COMMIT: &str = env!("ORION_GIT_COMMIT");

/// The line `--version` prints: `orion-api 0.1.0 (commit abc123)`.
pub fn version_line(binary: &str) -> String {
    format!("{binary} {VERSION} (commit {COMMIT})")
}
