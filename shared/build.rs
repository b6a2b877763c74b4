//! Records the git commit the binary was built from, so `--version` and `GET /`
//! can say exactly what is running. `ORION_GIT_COMMIT` wins (CI and Docker
//! builds set it); otherwise `git rev-parse` is asked; otherwise "unknown".
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ORION_GIT_COMMIT");
    let commit = std::env::var("ORION_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| {
            let out = Command::new("git")
                .args(["rev-parse", "--short=12", "HEAD"])
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string());
    // Re-run when HEAD moves, so a rebuild after a commit is not stale.
    if let Ok(out) = Command::new("git")
        .args(["rev-parse", "--git-dir"])
        .output()
    {
        if out.status.success() {
            let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rerun-if-changed={dir}/HEAD");
            println!("cargo:rerun-if-changed={dir}/refs/heads");
        }
    }
    println!("cargo:rustc-env=ORION_GIT_COMMIT={commit}");
}
