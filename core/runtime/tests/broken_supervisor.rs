//! A supervisor binary that cannot run fails the start at once, names the binary, and records
//! the box failed (this file is a process of its own: it sets `BOXLITE_SHIM` for all of it).

mod common;

use boxlite::{BoxOptions, BoxStatus};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn a_supervisor_that_cannot_run_fails_the_start_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let shim = dir.path().join("boxlite-shim");
    std::fs::write(&shim, b"not executable").unwrap();
    std::env::set_var(boxlite::shim::SHIM_ENV, &shim);
    let (rt, _home) = common::isolated_runtime(vec![boxlite::RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }]);
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    let started = Instant::now();
    let err = tokio::time::timeout(Duration::from_secs(10), b.start()).await.expect("the start hung").expect_err("must fail");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(err.code(), "ENGINE", "{err}");
    assert!(err.to_string().contains(&shim.display().to_string()), "{err}");
    let info = b.info().unwrap();
    assert_eq!(info.status, BoxStatus::Failed);
    assert!(info.reason.unwrap_or_default().contains("supervisor"));
    rt.remove(b.id(), false).await.unwrap();
}
