//! The JSON documents of an image: indexes (manifest lists), manifests and configs, in both OCI and
//! Docker v2 media types, which share one shape for the fields we need.

use std::collections::HashMap;

use serde::Deserialize;

use super::ImageConfig;
use crate::error::{Error, Result};

/// The platform BoxLite guests run.
pub(crate) const OS: &str = "linux";
/// The architecture BoxLite guests run.
pub(crate) const ARCH: &str = "amd64";

/// Annotation naming a manifest in an OCI image layout's `index.json`.
pub(crate) const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Manifest media types we ask registries for.
pub(crate) const MANIFEST_MEDIA_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A content descriptor.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: Option<HashMap<String, String>>,
}

/// A platform in an index entry.
#[derive(Clone, Debug, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
}

impl Platform {
    fn name(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.architecture),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }
}

/// An image manifest.
#[derive(Clone, Debug)]
pub(crate) struct Manifest {
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// A parsed manifest document.
#[derive(Clone, Debug)]
pub(crate) enum Document {
    /// A list of manifests for different platforms.
    Index(Vec<Descriptor>),
    /// A single-platform image.
    Manifest(Manifest),
}

#[derive(Deserialize)]
struct Raw {
    #[serde(rename = "schemaVersion", default)]
    schema_version: u32,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// Parses an index or manifest, telling them apart by shape (registries do not always send a
/// media type in the body).
pub(crate) fn parse_document(bytes: &[u8], what: &str) -> Result<Document> {
    let raw: Raw = serde_json::from_slice(bytes)
        .map_err(|e| Error::Image(format!("the manifest of {what} is not valid JSON: {e}")))?;
    if raw.schema_version == 1 {
        return Err(Error::Image(format!(
            "{what} uses a Docker schema 1 manifest, which is not supported; push it again with a current docker or skopeo"
        )));
    }
    match (raw.manifests, raw.config, raw.layers) {
        (Some(manifests), _, _) => Ok(Document::Index(manifests)),
        (None, Some(config), layers) => {
            let layers = layers.unwrap_or_default();
            for layer in &layers {
                if !is_layer_media_type(&layer.media_type) {
                    return Err(Error::Image(format!(
                        "{what} is not a container image: layer {} has media type '{}'",
                        layer.digest, layer.media_type
                    )));
                }
            }
            Ok(Document::Manifest(Manifest { config, layers }))
        }
        _ => Err(Error::Image(format!(
            "the manifest of {what} has neither layers nor manifests"
        ))),
    }
}

/// Layer media types are tarballs, compressed or not; we sniff the compression from the bytes.
fn is_layer_media_type(media_type: &str) -> bool {
    // Some old tools leave the media type out; the content decides then.
    media_type.is_empty() || media_type.contains(".tar")
}

/// Picks the linux/amd64 entry of an index, or explains which platforms exist.
pub(crate) fn select_platform<'a>(entries: &'a [Descriptor], what: &str) -> Result<&'a Descriptor> {
    let is_target = |d: &&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| p.os == OS && p.architecture == ARCH)
    };
    if let Some(entry) = entries.iter().find(is_target) {
        return Ok(entry);
    }
    let mut found: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .filter(|p| p.os != "unknown")
        .map(Platform::name)
        .collect();
    found.dedup();
    let found = if found.is_empty() {
        "none".to_string()
    } else {
        found.join(", ")
    };
    Err(Error::Image(format!(
        "{what} has no {OS}/{ARCH} variant (it provides: {found}); BoxLite runs {OS}/{ARCH} guests"
    )))
}

#[derive(Deserialize, Default)]
struct RawConfigFile {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    config: Option<RawConfig>,
    #[serde(default)]
    rootfs: Option<RawRootfs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RawConfig {
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct RawRootfs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

/// What we keep of an image config blob.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParsedConfig {
    pub config: ImageConfig,
    /// Digests of the uncompressed layers, in order.
    pub diff_ids: Vec<String>,
}

/// Parses an image config and checks it is for our platform.
pub(crate) fn parse_config(bytes: &[u8], what: &str) -> Result<ParsedConfig> {
    let raw: RawConfigFile = serde_json::from_slice(bytes)
        .map_err(|e| Error::Image(format!("the config of {what} is not valid JSON: {e}")))?;
    // Configs without os/arch exist (hand-made images); only refuse an explicit mismatch.
    if (!raw.os.is_empty() && raw.os != OS)
        || (!raw.architecture.is_empty() && raw.architecture != ARCH)
    {
        return Err(Error::Image(format!(
            "{what} is built for {}/{}; BoxLite runs {OS}/{ARCH} guests",
            raw.os, raw.architecture
        )));
    }
    let c = raw.config.unwrap_or_default();
    Ok(ParsedConfig {
        config: ImageConfig {
            env: c.env.unwrap_or_default(),
            working_dir: c.working_dir.filter(|w| !w.is_empty()),
            user: c.user.filter(|u| !u.is_empty()),
            entrypoint: c.entrypoint.unwrap_or_default(),
            cmd: c.cmd.unwrap_or_default(),
        },
        diff_ids: raw.rootfs.unwrap_or_default().diff_ids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn index_picks_amd64_even_when_not_first() {
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
              {{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let Document::Index(entries) = parse_document(index.as_bytes(), "x").unwrap() else {
            panic!()
        };
        assert_eq!(select_platform(&entries, "x").unwrap().digest, D2);
        let err = select_platform(&entries[..1], "multiarch:latest")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux/arm64/v8") && err.contains("multiarch:latest"),
            "{err}"
        );
    }

    #[test]
    fn docker_v2_manifest_parses() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",
              "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":7,"digest":"{D1}"}},
              "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":9,"digest":"{D2}"}}]}}"#
        );
        let Document::Manifest(m) = parse_document(m.as_bytes(), "x").unwrap() else {
            panic!()
        };
        assert_eq!(
            (m.config.digest.as_str(), m.layers.len(), m.layers[0].size),
            (D1, 1, 9)
        );
    }

    #[test]
    fn non_image_artifacts_and_schema1_are_refused() {
        let wasm = format!(
            r#"{{"schemaVersion":2,"config":{{"digest":"{D1}","size":1}},"layers":[{{"mediaType":"application/vnd.wasm.content.layer.v1+wasm","digest":"{D2}","size":1}}]}}"#
        );
        assert!(matches!(
            parse_document(wasm.as_bytes(), "x"),
            Err(Error::Image(_))
        ));
        assert!(matches!(
            parse_document(br#"{"schemaVersion":1}"#, "x"),
            Err(Error::Image(_))
        ));
    }

    #[test]
    fn config_defaults_and_platform_check() {
        let c = parse_config(
            br#"{"os":"linux","architecture":"amd64","config":{"Env":["PATH=/bin"],"WorkingDir":"/w","User":"",
                "Entrypoint":null,"Cmd":["sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:aa"]}}"#,
            "x",
        )
        .unwrap();
        assert_eq!(
            c.config,
            ImageConfig {
                env: vec!["PATH=/bin".into()],
                working_dir: Some("/w".into()),
                user: None,
                entrypoint: vec![],
                cmd: vec!["sh".into()]
            }
        );
        assert_eq!(c.diff_ids, ["sha256:aa"]);
        assert!(parse_config(br#"{"os":"linux","architecture":"arm64"}"#, "x").is_err());
        assert_eq!(
            parse_config(b"{}", "x").unwrap().config,
            ImageConfig::default()
        );
    }
}
