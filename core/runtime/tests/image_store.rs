//! The image store against the real test registry: registries taken from the environment or the
//! home's config.json when the options name none, concurrent pulls (tasks and processes) sharing
//! each download, and removing and pruning images without ever breaking a box.

mod common;

use boxlite::{BoxOptions, ExecCommand, PruneOptions, RegistryConfig, Runtime, RuntimeOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "BOXLITE_TEST_CHILD";
const REGISTRY_VARS: [&str; 2] = [boxlite::options::REGISTRIES_ENV, boxlite::options::INSECURE_REGISTRIES_ENV];

/// The other process of these tests (does nothing unless started by [`pull_in_child`]): opens a
/// runtime on `BOXLITE_TEST_HOME` whose options name no registry, pulls the reference in
/// `BOXLITE_TEST_CHILD`, and prints `PULLED <reference>` or `FAILED <code> <message>`.
#[tokio::test(flavor = "multi_thread")]
async fn child_process() {
    let Ok(reference) = std::env::var(CHILD_ENV) else { return };
    let home = std::env::var_os("BOXLITE_TEST_HOME").expect("BOXLITE_TEST_HOME");
    let pulled = match Runtime::new(RuntimeOptions { home: Some(home.into()), ..Default::default() }) {
        Ok(rt) => rt.pull(&reference, None).await,
        Err(e) => Err(e),
    };
    match pulled {
        Ok(image) => println!("PULLED {}", image.reference),
        Err(e) => println!("FAILED {} {e}", e.code()),
    }
}

/// Starts [`child_process`] pulling `reference` into `home` with exactly the registry variables
/// `vars` set.
fn pull_in_child(home: &Path, reference: &str, vars: &[(&str, &str)]) -> std::process::Child {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_process", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, reference)
        .env("BOXLITE_TEST_HOME", home)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for var in REGISTRY_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(vars.iter().copied());
    cmd.spawn().expect("spawn child test process")
}

/// What the child printed: `PULLED ...` or `FAILED ...` (libtest prints its own text before it).
fn outcome(child: std::process::Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    stdout
        .lines()
        .find_map(|l| l.find("PULLED ").or_else(|| l.find("FAILED ")).map(|at| l[at..].to_string()))
        .unwrap_or_else(|| panic!("the child printed no outcome:\n{stdout}"))
}

#[test]
fn registries_come_from_the_environment_else_config_json_and_options_in_code_win() {
    let registry = common::registry();
    let fresh = || tempfile::Builder::new().prefix("bxr").tempdir_in("/tmp").unwrap();

    // Only the environment: an unqualified name is found in the insecure registry it names.
    let home = fresh();
    let got = outcome(pull_in_child(home.path(), "busybox:latest", &[(REGISTRY_VARS[1], &registry)]));
    assert_eq!(got, format!("PULLED {registry}/busybox:latest"));

    // Only config.json (Docker's key spelling works too).
    let home = fresh();
    std::fs::write(home.path().join("config.json"), format!(r#"{{"insecure_registries": ["{registry}"]}}"#)).unwrap();
    let got = outcome(pull_in_child(home.path(), "busybox:latest", &[]));
    assert_eq!(got, format!("PULLED {registry}/busybox:latest"));

    // The environment wins over config.json, which is then not even read.
    std::fs::write(home.path().join("config.json"), "{ not json").unwrap();
    let got = outcome(pull_in_child(home.path(), &format!("{registry}/busybox:latest"), &[(REGISTRY_VARS[1], &registry)]));
    assert_eq!(got, format!("PULLED {registry}/busybox:latest"));
    // ... and without the environment the malformed file is an error naming it.
    let got = outcome(pull_in_child(home.path(), "busybox:latest", &[]));
    assert!(got.starts_with("FAILED INVALID_ARGUMENT") && got.contains("config.json is malformed"), "{got}");

    // Malformed entries fail at once, naming the variable and the entry.
    let started = Instant::now();
    let got = outcome(pull_in_child(fresh().path(), "busybox:latest", &[(REGISTRY_VARS[0], "ghcr.io,http://127.0.0.1:5000")]));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        got.starts_with("FAILED INVALID_ARGUMENT BOXLITE_REGISTRIES") && got.contains("'http://127.0.0.1:5000'") && got.contains("scheme"),
        "{got}"
    );

    // Without any, an http registry is spoken to over https, and the error says what to do.
    let got = outcome(pull_in_child(fresh().path(), &format!("{registry}/busybox:latest"), &[]));
    assert!(got.starts_with("FAILED REGISTRY") && got.contains("insecure"), "{got}");
}

#[tokio::test(flavor = "multi_thread")]
async fn registries_given_in_code_win_over_the_home_config() {
    let registry = common::registry();
    let home = tempfile::Builder::new().prefix("bxr").tempdir_in("/tmp").unwrap();
    // A config naming an unreachable registry: unqualified names would fail there.
    std::fs::write(home.path().join("config.json"), r#"{"insecure_registries": ["127.0.0.1:1"]}"#).unwrap();
    let options = |registries| RuntimeOptions { home: Some(home.path().into()), registries, ..Default::default() };
    let in_code = vec![RegistryConfig { host: registry.clone(), insecure: true, ..Default::default() }];
    let image = Runtime::new(options(in_code)).unwrap().pull("busybox:latest", None).await.unwrap();
    assert_eq!(image.reference, format!("{registry}/busybox:latest"));
    // With none in code, the config's registry is used (and is unreachable), unless the
    // environment names some: this process's environment is the test runner's.
    if REGISTRY_VARS.iter().all(|v| std::env::var_os(v).is_none()) {
        let err = Runtime::new(options(vec![])).unwrap().pull("busybox:latest", None).await.unwrap_err();
        assert!(err.code() == "REGISTRY" && err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}

/// A proxy in front of the test registry that counts blob downloads and holds each for
/// `delay`, so that concurrent pulls really overlap.
struct CountingProxy {
    host: String,
    blob_gets: Arc<AtomicUsize>,
}

impl CountingProxy {
    fn start(upstream: String, delay: Duration) -> CountingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let blob_gets = Arc::new(AtomicUsize::new(0));
        let counter = blob_gets.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&upstream) else { continue };
                let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (mut s_read, mut c_write) = (server, client);
                let counter = counter.clone();
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = c_read.read(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]);
                        let gets = text.lines().filter(|l| l.starts_with("GET ") && l.contains("/blobs/sha256:")).count();
                        if gets > 0 {
                            counter.fetch_add(gets, Ordering::SeqCst);
                            std::thread::sleep(delay);
                        }
                        if s_write.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut s_read, &mut c_write);
                    let _ = c_write.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { host, blob_gets }
    }

    fn take_count(&self) -> usize {
        self.blob_gets.swap(0, Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_share_each_download_in_one_process_and_across_processes() {
    let proxy = CountingProxy::start(common::registry(), Duration::from_millis(700));
    let reference = format!("{}/busybox:latest", proxy.host);
    let registries = vec![RegistryConfig { host: proxy.host.clone(), insecure: true, ..Default::default() }];

    // Two tasks, each with a runtime of its own on one home; a prune that starts meanwhile
    // waits for both pulls and then finds everything referenced.
    let (a, home) = common::isolated_runtime(registries.clone());
    let b = Runtime::new(RuntimeOptions { home: Some(home.path().into()), registries: registries.clone(), ..Default::default() }).unwrap();
    let prune_meanwhile = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        a.prune(PruneOptions::default()).await
    };
    let (x, y, pruned) = tokio::join!(a.pull(&reference, None), b.pull(&reference, None), prune_meanwhile);
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.base_disk, y.base_disk);
    let pruned = pruned.unwrap();
    assert!(pruned.blobs.is_empty() && pruned.base_disks.is_empty(), "a prune during the pulls removed {pruned:?}");
    // The config and the one layer, each downloaded once.
    assert_eq!(proxy.take_count(), 2, "two concurrent pulls of one image in one process");
    assert!(a.create(BoxOptions::new(&reference)).await.is_ok(), "the pulled image is complete");

    // Two processes on a fresh home, the proxy named by the environment only.
    let home = tempfile::Builder::new().prefix("bxp").tempdir_in("/tmp").unwrap();
    let vars = [(REGISTRY_VARS[1], proxy.host.as_str())];
    let children = [pull_in_child(home.path(), &reference, &vars), pull_in_child(home.path(), &reference, &vars)];
    for child in children {
        assert_eq!(outcome(child), format!("PULLED {reference}"));
    }
    assert_eq!(proxy.take_count(), 2, "two concurrent pulls of one image in two processes");
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_and_pruning_images_never_breaks_a_box() {
    let registry = common::registry();
    let (rt, home) = common::isolated_runtime(vec![RegistryConfig { host: registry.clone(), insecure: true, ..Default::default() }]);
    let count = |sub: &str| std::fs::read_dir(home.path().join("images").join(sub)).unwrap().count();
    let b = rt.create(BoxOptions { name: Some("user".into()), ..BoxOptions::new("busybox:latest") }).await.unwrap();
    let image = rt.find_image("busybox:latest").unwrap().expect("pulled by create");

    let err = rt.remove_image("busybox:latest", false).await.unwrap_err();
    assert_eq!(err.code(), "INVALID_STATE", "{err}");
    assert!(err.to_string().contains("user") && err.to_string().contains("force"), "{err}");
    let err = rt.remove_image("nosuch:latest", false).await.unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND", "{err}");

    // With force: the reference and blobs go, the base disk stays for the box.
    let removed = rt.remove_image("busybox:latest", true).await.unwrap();
    assert_eq!(removed.images, std::slice::from_ref(&image.reference));
    assert_eq!((removed.blobs.len(), removed.base_disks.len()), (3, 0), "{removed:?}");
    assert!(removed.bytes_freed > 0 && image.base_disk.is_file());
    assert!(rt.images().unwrap().is_empty() && rt.find_image("busybox:latest").unwrap().is_none());
    let pruned = rt.prune(PruneOptions::default()).await.unwrap();
    assert_eq!(pruned, boxlite::Removed::default(), "the box's base disk is in use");

    // The box boots from its base disk as before.
    let out = b.exec(ExecCommand::new("echo", ["still here"])).await.unwrap().output().await.unwrap();
    assert_eq!(out.stdout, b"still here\n");
    b.stop().await.unwrap();

    // Pruning stopped boxes too frees the disk nothing uses any more.
    let pruned = rt.prune(PruneOptions { boxes: true, ..Default::default() }).await.unwrap();
    assert_eq!(pruned.boxes, [b.id().to_string()]);
    assert_eq!(pruned.base_disks, std::slice::from_ref(&image.config_digest));
    assert!(pruned.bytes_freed > 0);
    assert!(rt.list().unwrap().is_empty());
    assert_eq!((count("blobs/sha256"), count("disks"), count("refs")), (0, 0, 0));

    // Pulled again, then removed with everything it had; and `all_images` removes unused ones.
    rt.pull("busybox:latest", None).await.unwrap();
    let removed = rt.remove_image(&image.reference, false).await.unwrap();
    assert_eq!((removed.blobs.len(), removed.base_disks.len()), (3, 1), "{removed:?}");
    rt.pull("busybox:latest", None).await.unwrap();
    let pruned = rt.prune(PruneOptions { all_images: true, ..Default::default() }).await.unwrap();
    assert_eq!((pruned.images.len(), pruned.blobs.len(), pruned.base_disks.len()), (1, 3, 1), "{pruned:?}");
    assert_eq!((count("blobs/sha256"), count("disks"), count("refs")), (0, 0, 0));
}
