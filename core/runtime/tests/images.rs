//! Image sources: local OCI layouts, zstd layers, image indexes, registries with basic auth.

mod common;

use boxlite::{BoxOptions, ExecCommand, RegistryConfig};

#[tokio::test(flavor = "multi_thread")]
async fn local_layouts_and_archives_boot_without_a_registry() {
    let (rt, _home) = common::isolated_runtime(vec![]);
    let layout = common::fixture("OCI_LAYOUT");
    let archive = common::fixture("OCI_ARCHIVE");
    let from_archive = rt.pull(&format!("oci-archive:{archive}:latest"), None).await.unwrap();
    assert_eq!(from_archive.layer_count, 1);
    let b = rt.create(BoxOptions::new(format!("oci:{layout}:latest"))).await.unwrap();
    let out = b.exec(ExecCommand::new("cat", ["/ARCH"])).await.unwrap().output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "amd64\n");
    rt.remove(b.id(), true).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_resolves_to_linux_amd64_and_zstd_layers_unpack() {
    let rt = common::runtime();
    let b = rt.create(BoxOptions::new("multiarch:latest")).await.unwrap();
    let out = b.exec(ExecCommand::new("cat", ["/ARCH"])).await.unwrap().output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "amd64\n");
    rt.remove(b.id(), true).await.unwrap();
    let zstd = rt.pull("busybox-zstd:latest", None).await.unwrap();
    assert!(zstd.base_disk.is_file());
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_registries_need_the_right_credentials() {
    let host = common::fixture("AUTH_REGISTRY");
    let reference = format!("{host}/private/busybox:latest");
    let anonymous = vec![RegistryConfig { host: host.clone(), insecure: true, ..Default::default() }];
    let (rt, _home) = common::isolated_runtime(anonymous);
    let err = rt.pull(&reference, None).await.expect_err("must need credentials");
    assert_eq!(err.code(), "REGISTRY", "{err}");
    assert!(err.to_string().contains("credentials"), "{err}");

    let with_creds = vec![RegistryConfig {
        host,
        insecure: true,
        username: Some("boxlite".into()),
        password: Some("boxlite-test".into()),
    }];
    let (rt, _home) = common::isolated_runtime(with_creds);
    let image = rt.pull(&reference, None).await.unwrap();
    assert!(image.base_disk.is_file());
}
