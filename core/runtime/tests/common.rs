//! Fixtures shared by the VM tests: the local registry and guest assets made by
//! `scripts/test-images.sh` and `scripts/setup.sh`. Missing fixtures fail loudly with the fix.
#![allow(dead_code)]

use boxlite::{RegistryConfig, Runtime, RuntimeOptions};
use std::path::PathBuf;
use std::sync::OnceLock;

/// An env var set by `scripts/test.sh` (from `scripts/test-images.sh`), or a failure that says so.
pub fn fixture(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through `bash scripts/test.sh`, or `eval \"$(bash scripts/test-images.sh)\"` first")
    })
}

/// The anonymous test registry (plain http on 127.0.0.1).
pub fn registry() -> String {
    let host = fixture("REGISTRY");
    let url = format!("http://{host}/v2/");
    let ok = std::process::Command::new("curl").args(["-fsS", "-m", "3", "-o", "/dev/null", &url]).status().map(|s| s.success());
    assert!(ok.unwrap_or(false), "the test registry at {host} does not answer: run `bash scripts/test-images.sh`");
    host
}

static HOME: OnceLock<PathBuf> = OnceLock::new();

/// One home for the whole test binary, so each image is pulled once (a child process of a test
/// gets its parent's through `BOXLITE_TEST_HOME`). Removed when the test binary exits.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("BOXLITE_TEST_HOME") {
        return home.into();
    }
    HOME.get_or_init(|| {
        let home = tempfile::Builder::new().prefix("bxt").tempdir_in("/tmp").expect("tempdir").keep();
        // A static is never dropped, so a TempDir here would leave its images behind every run.
        extern "C" fn remove_home() {
            if let Some(home) = HOME.get() {
                let _ = std::fs::remove_dir_all(home);
            }
        }
        // SAFETY: registers a plain function to run at exit.
        unsafe { libc::atexit(remove_home) };
        home
    })
    .clone()
}

/// A runtime on the shared home that searches the test registry.
pub fn runtime() -> Runtime {
    let registries = vec![RegistryConfig { host: registry(), insecure: true, ..Default::default() }];
    Runtime::new(RuntimeOptions { home: Some(home()), registries, accel: None, assets_dir: None, ..Default::default() }).expect("runtime")
}

/// A runtime on a fresh home of its own.
pub fn isolated_runtime(registries: Vec<RegistryConfig>) -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::Builder::new().prefix("bxi").tempdir_in("/tmp").expect("tempdir");
    let rt = Runtime::new(RuntimeOptions { home: Some(dir.path().to_path_buf()), registries, accel: None, assets_dir: None, ..Default::default() }).expect("runtime");
    (rt, dir)
}
