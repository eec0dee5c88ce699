//! Local images: OCI image layout directories (`index.json` + `blobs/`) and tarballs of them
//! (`skopeo copy ... oci-archive:`, `docker save` since Docker 25). Their blobs are copied into the
//! store with the same verification as registry blobs.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::blobs::BlobStore;
use super::manifest::{self, Descriptor, Document, Manifest, REF_NAME_ANNOTATION};
use super::reference::validate_digest;
use crate::error::{Error, Result};

/// `index.json` bigger than this is not an image layout we can use.
const MAX_INDEX_BYTES: u64 = 16 << 20;

/// A local image resolved to its linux/amd64 manifest, with every blob it needs in the store.
#[derive(Debug)]
pub(crate) struct LocalImage {
    pub manifest_digest: String,
    pub manifest: Manifest,
}

/// Loads `tag` (or the only image) from the layout directory `dir`.
pub(crate) fn load_dir(
    dir: &Path,
    tag: Option<&str>,
    blobs: &BlobStore,
    what: &str,
) -> Result<LocalImage> {
    let index_path = dir.join("index.json");
    let index = std::fs::read(&index_path).map_err(|e| {
        Error::Image(format!(
            "{what} is not an OCI image layout: cannot read {}: {e}",
            index_path.display()
        ))
    })?;
    // Only the blobs the chosen image needs are imported.
    let import = |digest: &str| -> Result<()> {
        if blobs.contains(digest)? {
            return Ok(());
        }
        let path = dir.join("blobs/sha256").join(validate_digest(digest)?);
        let file = File::open(&path).map_err(|e| {
            Error::Image(format!(
                "{what} lacks blob {digest}: {e}; the layout is incomplete"
            ))
        })?;
        blobs.import(digest, file).map(drop)
    };
    let image = resolve(&index, tag, blobs, what, &import)?;
    import(&image.manifest.config.digest)?;
    for layer in &image.manifest.layers {
        import(&layer.digest)?;
    }
    Ok(image)
}

/// Loads `tag` (or the only image) from a tar of a layout (optionally gzip or zstd compressed).
pub(crate) fn load_archive(
    path: &Path,
    tag: Option<&str>,
    blobs: &BlobStore,
    what: &str,
) -> Result<LocalImage> {
    let reader = super::layers::open_layer(path)?;
    let mut archive = tar::Archive::new(reader);
    let bad =
        |e: std::io::Error| Error::Image(format!("{what} is not a readable tar archive: {e}"));
    let mut index = None;
    // One pass: blobs go straight into the store (named by digest, verified), index.json to memory.
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let name = name.trim_start_matches("./").trim_start_matches('/');
        if name == "index.json" {
            let mut bytes = Vec::new();
            entry
                .by_ref()
                .take(MAX_INDEX_BYTES)
                .read_to_end(&mut bytes)
                .map_err(bad)?;
            index = Some(bytes);
        } else if let Some(hex) = name.strip_prefix("blobs/sha256/") {
            let digest = format!("sha256:{hex}");
            if validate_digest(&digest).is_ok() && !blobs.contains(&digest)? {
                blobs.import(&digest, &mut entry)?;
            }
        }
    }
    let index = index.ok_or_else(|| {
        Error::Image(format!(
            "{what} is not an OCI image archive (no index.json); convert it with `skopeo copy docker-archive:FILE oci-archive:FILE`"
        ))
    })?;
    let image = resolve(&index, tag, blobs, what, &|digest| {
        if blobs.contains(digest)? {
            Ok(())
        } else {
            Err(Error::Image(format!(
                "{what} lacks blob {digest}; the archive is incomplete"
            )))
        }
    })?;
    let config = &image.manifest.config;
    for digest in
        std::iter::once(&config.digest).chain(image.manifest.layers.iter().map(|l| &l.digest))
    {
        if !blobs.contains(digest)? {
            return Err(Error::Image(format!(
                "{what} lacks blob {digest}; the archive is incomplete"
            )));
        }
    }
    Ok(image)
}

/// Picks the manifest for `tag` from `index.json`, following indexes to linux/amd64.
/// `import` makes a blob available in the store.
fn resolve(
    index: &[u8],
    tag: Option<&str>,
    blobs: &BlobStore,
    what: &str,
    import: &dyn Fn(&str) -> Result<()>,
) -> Result<LocalImage> {
    let entries = match manifest::parse_document(index, what)? {
        Document::Index(entries) => entries,
        Document::Manifest(_) => {
            return Err(Error::Image(format!(
                "{what}: index.json is not an image index"
            )))
        }
    };
    let mut entry = select_tag(&entries, tag, what)?.clone();
    // Entries may be manifests or platform indexes; two levels of indexes is plenty.
    for _ in 0..3 {
        import(&entry.digest)?;
        let bytes = blobs.read(&entry.digest)?;
        match manifest::parse_document(&bytes, what)? {
            Document::Manifest(manifest) => {
                return Ok(LocalImage {
                    manifest_digest: entry.digest,
                    manifest,
                })
            }
            Document::Index(entries) => entry = manifest::select_platform(&entries, what)?.clone(),
        }
    }
    Err(Error::Image(format!(
        "{what}: image indexes nest too deeply"
    )))
}

fn select_tag<'a>(
    entries: &'a [Descriptor],
    tag: Option<&str>,
    what: &str,
) -> Result<&'a Descriptor> {
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|e| {
            e.annotations
                .as_ref()?
                .get(REF_NAME_ANNOTATION)
                .map(String::as_str)
        })
        .collect();
    let Some(tag) = tag else {
        return match entries {
            [only] => Ok(only),
            [] => Err(Error::Image(format!("{what} holds no images"))),
            _ => Err(Error::Image(format!(
                "{what} holds {} images; name one with :TAG (tags: {})",
                entries.len(),
                names.join(", ")
            ))),
        };
    };
    // Tools write either the bare tag or a full reference ("docker.io/library/x:tag").
    let matches = |name: &str| {
        name == tag
            || name
                .rsplit_once(':')
                .is_some_and(|(repo, t)| t == tag && !repo.contains('@'))
    };
    entries
        .iter()
        .find(|e| {
            e.annotations
                .as_ref()
                .and_then(|a| a.get(REF_NAME_ANNOTATION))
                .is_some_and(|n| matches(n))
        })
        .ok_or_else(|| {
            let available = if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            };
            Error::Image(format!(
                "{what} has no image tagged '{tag}' (tags: {available})"
            ))
        })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::blobs::sha256_digest;

    /// A one-layer layout in `dir`: returns (manifest digest, layer digest).
    pub(crate) fn write_layout(dir: &Path, tag: &str) -> (String, String) {
        let blob_dir = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blob_dir).unwrap();
        let put = |bytes: &[u8]| {
            let d = sha256_digest(bytes);
            std::fs::write(blob_dir.join(&d[7..]), bytes).unwrap();
            d
        };
        let mut layer = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        layer.append_data(&mut h, "hello", &b"hi\n"[..]).unwrap();
        let layer = layer.into_inner().unwrap();
        let layer_digest = put(&layer);
        let config = put(br#"{"os":"linux","architecture":"amd64","config":{"Cmd":["/bin/sh"]}}"#);
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
            layer.len()
        );
        let manifest_digest = put(manifest.as_bytes());
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json",
               "digest":"{manifest_digest}","size":{},"annotations":{{"{REF_NAME_ANNOTATION}":"{tag}"}}}}]}}"#,
            manifest.len()
        );
        std::fs::write(dir.join("index.json"), index).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        (manifest_digest, layer_digest)
    }

    fn store(dir: &Path) -> BlobStore {
        std::fs::create_dir_all(dir.join("blobs")).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        BlobStore::new(dir.join("blobs"), dir.join("tmp"), dir.to_path_buf())
    }

    #[test]
    fn loads_tagged_and_untagged_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let (manifest_digest, layer) = write_layout(&layout, "v1");
        let blobs = store(&dir.path().join("store"));
        let img = load_dir(&layout, Some("v1"), &blobs, "x").unwrap();
        assert_eq!(img.manifest_digest, manifest_digest);
        assert!(blobs.contains(&layer).unwrap());
        assert!(load_dir(&layout, None, &blobs, "x").is_ok());
        let err = load_dir(&layout, Some("v2"), &blobs, "x")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no image tagged 'v2'") && err.contains("v1"),
            "{err}"
        );
    }

    #[test]
    fn loads_archives_and_rejects_corrupt_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        let (manifest_digest, layer) = write_layout(&layout, "latest");
        let archive = dir.path().join("img.tar");
        let mut builder = tar::Builder::new(File::create(&archive).unwrap());
        builder.append_dir_all(".", &layout).unwrap();
        builder.finish().unwrap();
        let blobs = store(&dir.path().join("store"));
        let img = load_archive(&archive, Some("latest"), &blobs, "x").unwrap();
        assert_eq!(img.manifest_digest, manifest_digest);
        assert!(blobs.contains(&layer).unwrap());

        std::fs::write(layout.join("blobs/sha256").join(&layer[7..]), b"tampered").unwrap();
        let blobs = store(&dir.path().join("store2"));
        let err = load_dir(&layout, None, &blobs, "x").unwrap_err();
        assert!(
            matches!(err, Error::Image(ref m) if m.contains("corrupt")),
            "{err}"
        );
        assert!(!blobs.contains(&layer).unwrap());
    }
}
