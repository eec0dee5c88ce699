//! The errors users meet: each is clear, fast, and leaves nothing behind.

mod common;

use boxlite::{BoxOptions, RegistryConfig, Runtime, RuntimeOptions};
use std::time::{Duration, Instant};

fn leftover_boxes(rt: &Runtime) -> usize {
    std::fs::read_dir(rt.home().join("boxes")).map(|d| d.count()).unwrap_or(0) + rt.list().unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_image_names_the_image_and_registry() {
    let registry = common::registry();
    let (rt, _home) = common::isolated_runtime(vec![RegistryConfig { host: registry.clone(), insecure: true, ..Default::default() }]);
    let err = rt.create(BoxOptions::new(format!("{registry}/no-such-image:v1"))).await.err().expect("must fail");
    let msg = err.to_string();
    assert_eq!(err.code(), "IMAGE", "{msg}");
    assert!(msg.contains("no-such-image") && msg.contains(&registry), "{msg}");
    assert_eq!(leftover_boxes(&rt), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_registry_fails_within_seconds() {
    let (rt, _home) = common::isolated_runtime(vec![]);
    let started = Instant::now();
    // Nothing listens on port 1.
    let err = rt.create(BoxOptions::new("127.0.0.1:1/busybox:latest")).await.err().expect("must fail");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(err.code(), "REGISTRY", "{err}");
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_range_options_and_taken_names_are_rejected_cleanly() {
    let registries = vec![RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    let (rt, _home) = common::isolated_runtime(registries);
    for (opts, needle) in [
        (BoxOptions { memory_mib: 64, ..BoxOptions::new("busybox:latest") }, "memory_mib 64"),
        (BoxOptions { cpus: 0, ..BoxOptions::new("busybox:latest") }, "cpus 0"),
    ] {
        let err = rt.create(opts).await.err().expect("must fail");
        assert_eq!(err.code(), "INVALID_ARGUMENT");
        assert!(err.to_string().contains(needle), "{err}");
    }
    let named = rt.create(BoxOptions { name: Some("taken-name".into()), ..BoxOptions::new("busybox:latest") }).await.unwrap();
    let err = rt.create(BoxOptions { name: Some("taken-name".into()), ..BoxOptions::new("busybox:latest") }).await.err().expect("must fail");
    assert_eq!(err.code(), "ALREADY_EXISTS", "{err}");
    rt.remove(named.id(), false).await.unwrap();
    assert_eq!(leftover_boxes(&rt), 0);
}

/// A kernel that is not a kernel: qemu exits at once and the error says so with its stderr.
#[tokio::test(flavor = "multi_thread")]
async fn a_vm_that_dies_fails_at_once_with_its_logs() {
    let assets = tempfile::tempdir().unwrap();
    std::fs::write(assets.path().join("vmlinux"), b"not a kernel").unwrap();
    std::fs::copy(boxlite::assets::assets_dir().join("initramfs.cpio"), assets.path().join("initramfs.cpio"))
        .expect("guest assets missing: run scripts/setup.sh");
    let registries = vec![RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(common::home()), registries, accel: None, assets_dir: Some(assets.path().into()), ..Default::default() }).unwrap();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    let started = Instant::now();
    let err = b.start().await.err().expect("must fail");
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert_eq!(err.code(), "GUEST_BOOT", "{err}");
    assert!(err.to_string().contains("VM process exited"), "{err}");
    rt.remove(b.id(), true).await.unwrap();
}

/// A guest that cannot answer in time fails when the ready timeout passes, quoting the console.
#[tokio::test(flavor = "multi_thread")]
async fn the_ready_timeout_is_an_option_and_quotes_the_console() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions { ready_timeout_ms: 50, ..BoxOptions::new("busybox:latest") }).await.unwrap();
    let err = b.start().await.err().expect("must fail");
    assert_eq!(err.code(), "GUEST_BOOT", "{err}");
    assert!(err.to_string().contains("within 50 ms") && err.to_string().contains("console log"), "{err}");
    // A box that did not boot is `failed`, with the reason on record.
    let info = b.info().unwrap();
    assert_eq!(info.status, boxlite::BoxStatus::Failed);
    assert!(info.reason.unwrap_or_default().contains("within 50 ms"));
    rt.remove(b.id(), false).await.unwrap();
}

/// `kvm` asked for explicitly: boots where KVM works, else fails naming why (no silent fallback).
#[tokio::test(flavor = "multi_thread")]
async fn explicit_kvm_fails_with_the_reason_when_kvm_cannot_run_guests() {
    let registries = vec![RegistryConfig { host: common::registry(), insecure: true, ..Default::default() }];
    let rt = Runtime::new(RuntimeOptions { home: Some(common::home()), registries, accel: Some(boxlite::Accel::Kvm), assets_dir: None, ..Default::default() }).unwrap();
    let b = rt.create(BoxOptions::new("busybox:latest")).await.unwrap();
    let result = b.start().await;
    match boxlite::engine::qemu::kvm_verdict() {
        Err(why) => {
            let err = result.err().expect("kvm must be refused here");
            assert_eq!(err.code(), "ENGINE");
            assert!(err.to_string().contains(&why), "{err}");
        }
        Ok(()) => result.expect("KVM works here, so the box must boot"),
    }
    rt.remove(b.id(), true).await.unwrap();
}
