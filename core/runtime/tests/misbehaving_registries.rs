//! Registries that lie, hang, are down or serve broken blobs, all on 127.0.0.1. Every failure is
//! named: which registry, which blob, and what is wrong with it.

mod oci;

use boxlite::image::ImageStore;
use boxlite::{Error, RegistryConfig};
use oci::{BlobAnswer, FakeRegistry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Connections made through the proxy every non-loopback request of this test binary goes to.
/// Nothing here may leave 127.0.0.1, so a connection there is an attempt at another registry.
fn proxied_connections() -> Arc<AtomicUsize> {
    static PROXY: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    PROXY
        .get_or_init(|| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let url = format!("http://{}", listener.local_addr().unwrap());
            let count = Arc::new(AtomicUsize::new(0));
            let seen = count.clone();
            std::thread::spawn(move || {
                // Accept and drop: the request fails at once, and is counted.
                for stream in listener.incoming() {
                    seen.fetch_add(1, Ordering::SeqCst);
                    drop(stream);
                }
            });
            // Set once, before any client exists (every test calls this first).
            for var in ["HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"] {
                std::env::set_var(var, &url);
            }
            std::env::set_var("NO_PROXY", "127.0.0.1,localhost");
            std::env::set_var("no_proxy", "127.0.0.1,localhost");
            count
        })
        .clone()
}

fn new_store() -> (tempfile::TempDir, ImageStore) {
    let dir = tempfile::Builder::new().prefix("bxr").tempdir_in("/tmp").unwrap();
    let store = ImageStore::new(dir.path().join("images")).unwrap();
    (dir, store)
}

fn insecure(host: &str) -> Vec<RegistryConfig> {
    vec![RegistryConfig { host: host.to_string(), insecure: true, ..Default::default() }]
}

fn tmp_entries(dir: &tempfile::TempDir) -> usize {
    std::fs::read_dir(dir.path().join("images/tmp")).unwrap().count()
}

/// A one-layer image whose layer is about 150 bytes compressed.
fn small_image() -> oci::Image {
    let layer = oci::gzip(&oci::Layer::default().file("etc/hostname", b"box\n").tar());
    oci::Image::new(vec![layer], serde_json::json!({"Cmd": ["/bin/sh"]}))
}

async fn pull(store: &ImageStore, reference: &str, registries: &[RegistryConfig]) -> (Error, Duration) {
    let started = Instant::now();
    let err = store.pull(reference, registries, None).await.expect_err("the pull must fail");
    (err, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_fake_registry_serves_a_good_image() {
    proxied_connections();
    let image = small_image();
    let registry = FakeRegistry::start(&image).await;
    let (_dir, store) = new_store();
    let pulled = store.pull("test:latest", &insecure(&registry.host), None).await.unwrap();
    assert_eq!(pulled.reference, format!("{}/test:latest", registry.host));
    assert!(pulled.base_disk.is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_bigger_than_its_descriptor_is_cut_off() {
    proxied_connections();
    let image = small_image();
    let layer = image.layer_digest(0);
    let declared = image.layers[0].len();
    assert!(declared < 200, "{declared}");
    let registry = FakeRegistry::start(&image).await;
    // 300 MB with no Content-Length: only the stream itself shows the lie.
    registry.answer(&layer, BlobAnswer::Endless { total: 300_000_000 });
    let (dir, store) = new_store();
    let (err, took) = pull(&store, &format!("{}/test:latest", registry.host), &insecure(&registry.host)).await;
    let sent = registry.blob_bytes_sent.load(Ordering::Relaxed);
    eprintln!("endless blob: failed after {took:?}, registry got {sent} bytes out");
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&layer) && msg.contains(&format!("declares {declared} bytes")) && msg.contains(&registry.host), "{msg}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // What the kernel buffers took before we stopped reading; nowhere near 300 MB.
    assert!(sent < 64 << 20, "{sent} bytes left the registry");
    assert_eq!(tmp_entries(&dir), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_content_length_bigger_than_the_descriptor_is_refused_before_the_body() {
    proxied_connections();
    let image = small_image();
    let layer = image.layer_digest(0);
    let registry = FakeRegistry::start(&image).await;
    registry.answer(&layer, BlobAnswer::Lying { declared: 300_000_000, sent: 300_000_000 });
    let (dir, store) = new_store();
    let (err, took) = pull(&store, &format!("{}/test:latest", registry.host), &insecure(&registry.host)).await;
    eprintln!("lying Content-Length: failed after {took:?}");
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&layer) && msg.contains("announces 300000000 bytes"), "{msg}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(tmp_entries(&dir), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configured_registry_that_is_down_stops_the_search() {
    let proxied = proxied_connections();
    let host = oci::dead_host();
    let (_dir, store) = new_store();
    let (err, took) = pull(&store, "busybox:latest", &insecure(&host)).await;
    eprintln!("configured registry down: failed after {took:?}: {err}");
    assert_eq!(err.code(), "REGISTRY", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&host) && !msg.contains("docker.io"), "{msg}");
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "the pull went on to another registry");
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_registry_that_never_answers_fails_within_five_seconds() {
    let proxied = proxied_connections();
    let host = oci::silent_registry().await;
    for (reference, registries) in [
        (format!("{host}/test:latest"), insecure(&host)),
        ("test:latest".to_string(), insecure(&host)),
        // https: the TLS handshake never gets an answer either.
        (format!("{host}/test:latest"), vec![RegistryConfig { host: host.clone(), ..Default::default() }]),
    ] {
        let (_dir, store) = new_store();
        let (err, took) = pull(&store, &reference, &registries).await;
        eprintln!("silent registry ({reference}, insecure: {}): failed after {took:?}: {err}", registries[0].insecure);
        assert_eq!(err.code(), "REGISTRY", "{err}");
        assert!(err.to_string().contains(&host), "{err}");
        assert!(took < Duration::from_secs(5), "{reference}: {took:?}");
    }
    assert_eq!(proxied.load(Ordering::SeqCst), 0, "the pull went on to another registry");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_is_an_integrity_failure_naming_the_digest() {
    proxied_connections();
    let image = small_image();
    let layer = image.layer_digest(0);
    let registry = FakeRegistry::start(&image).await;
    let mut tampered = image.layers[0].clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 0xff;
    registry.answer(&layer, BlobAnswer::Bytes(tampered));
    let (dir, store) = new_store();
    let (err, _) = pull(&store, &format!("{}/test:latest", registry.host), &insecure(&registry.host)).await;
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&layer) && !msg.contains("try the pull again"), "{msg}");
    assert_eq!(tmp_entries(&dir), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_blob_names_the_layer() {
    proxied_connections();
    let image = small_image();
    let layer = image.layer_digest(0);
    let registry = FakeRegistry::start(&image).await;
    registry.answer(&layer, BlobAnswer::Missing);
    let (_dir, store) = new_store();
    let (err, _) = pull(&store, &format!("{}/test:latest", registry.host), &insecure(&registry.host)).await;
    assert_eq!(err.code(), "IMAGE", "{err}");
    let msg = err.to_string();
    assert!(msg.contains(&layer) && msg.contains("does not have blob"), "{msg}");
}
