//! What every CLI test needs: the test registry and the `boxlite` binary pointed at a home.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The local test registry (`scripts/test-images.sh`), or a failure that says how to start it.
pub fn registry() -> String {
    std::env::var("REGISTRY").unwrap_or_else(|_| {
        panic!("REGISTRY is not set: run the tests through `bash scripts/test.sh`, or `eval \"$(bash scripts/test-images.sh)\"` first")
    })
}

/// `boxlite --home HOME --insecure-registry REGISTRY ARGS...`.
pub fn boxlite(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boxlite"));
    cmd.arg("--home").arg(home).arg("--insecure-registry").arg(registry()).args(args);
    cmd
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh home whose boxes are removed when it goes, also when a test panics: a detached box
/// would otherwise run on after its home directory is deleted.
pub struct Home(tempfile::TempDir);

impl Home {
    pub fn new() -> Self {
        Home(tempfile::tempdir().expect("create a temporary home"))
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let cli = || {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_boxlite"));
            cmd.arg("--home").arg(self.path());
            cmd
        };
        let Ok(out) = cli().arg("ls").output() else { return };
        for id in text(&out.stdout).lines().skip(1).filter_map(|l| l.split_whitespace().next()) {
            let _ = cli().args(["rm", "-f", id]).output();
        }
    }
}
