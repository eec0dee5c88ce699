//! Parsing image references: registry names (`[host/]name[:tag][@digest]`) and local layouts
//! (`oci:PATH[:tag]`, `oci-archive:PATH[:tag]`, or a bare path that exists).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Registry tried last for names without a host, as Docker does.
pub(crate) const DOCKER_HUB: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// A registry image, possibly without a host yet.
    Registry(RegistryRef),
    /// An OCI image layout directory.
    Layout { path: PathBuf, tag: Option<String> },
    /// A tar file holding an OCI image layout.
    Archive { path: PathBuf, tag: Option<String> },
}

/// A parsed registry reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RegistryRef {
    /// The registry host, when the reference names one.
    pub host: Option<String>,
    /// Repository path without host, e.g. `busybox` or `private/busybox`.
    pub repository: String,
    /// Tag; `latest` unless the reference pins only a digest.
    pub tag: Option<String>,
    /// Manifest digest (`sha256:...`) if pinned.
    pub digest: Option<String>,
}

/// One concrete place to look for a registry image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub host: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl Candidate {
    /// The normalized reference recorded in the store.
    pub fn normalized(&self) -> String {
        format!(
            "{}/{}{}",
            self.host,
            self.repository,
            suffix(&self.tag, &self.digest)
        )
    }
}

impl RegistryRef {
    /// The name as the user wrote it plus the default tag, for messages ("busybox:latest").
    pub fn display(&self) -> String {
        let name = match &self.host {
            Some(host) => format!("{host}/{}", self.repository),
            None => self.repository.clone(),
        };
        format!("{name}{}", suffix(&self.tag, &self.digest))
    }

    /// Every place to try, in order: the named host; or, for names without a host, each configured
    /// registry (plain name, then `library/NAME` for single-component names) and finally Docker Hub.
    pub fn candidates(&self, configured_hosts: &[&str]) -> Vec<Candidate> {
        let make = |host: &str, repository: String| Candidate {
            host: host.to_string(),
            repository,
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        };
        let single = !self.repository.contains('/');
        let library = format!("library/{}", self.repository);
        match &self.host {
            Some(host) if host == DOCKER_HUB && single => vec![make(host, library)],
            Some(host) => vec![make(host, self.repository.clone())],
            None => {
                let mut out = Vec::new();
                for host in configured_hosts.iter().filter(|h| **h != DOCKER_HUB) {
                    out.push(make(host, self.repository.clone()));
                    if single {
                        out.push(make(host, library.clone()));
                    }
                }
                out.push(make(
                    DOCKER_HUB,
                    if single {
                        library
                    } else {
                        self.repository.clone()
                    },
                ));
                out
            }
        }
    }
}

impl Source {
    /// The normalized form of a local source; registry sources normalize per candidate.
    pub fn local_normalized(&self) -> Option<String> {
        let (scheme, path, tag) = match self {
            Source::Registry(_) => return None,
            Source::Layout { path, tag } => ("oci", path, tag),
            Source::Archive { path, tag } => ("oci-archive", path, tag),
        };
        Some(format!("{scheme}:{}{}", path.display(), suffix(tag, &None)))
    }
}

fn suffix(tag: &Option<String>, digest: &Option<String>) -> String {
    let mut s = String::new();
    if let Some(tag) = tag {
        s.push(':');
        s.push_str(tag);
    }
    if let Some(digest) = digest {
        s.push('@');
        s.push_str(digest);
    }
    s
}

/// Parses a user-supplied reference.
pub(crate) fn parse(reference: &str) -> Result<Source> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(Error::InvalidArgument("image reference is empty".into()));
    }
    if let Some(rest) = reference.strip_prefix("oci:") {
        // People write oci: for layout tarballs too; the file type settles it.
        return local_by_file_type(rest, reference);
    }
    if let Some(rest) = reference.strip_prefix("oci-archive:") {
        let (path, tag) = split_local(rest)?;
        return Ok(Source::Archive {
            path: canonical(&path, reference)?,
            tag,
        });
    }
    if reference.starts_with('/') || reference.starts_with("./") || reference.starts_with("../") {
        return local_by_file_type(reference, reference);
    }
    parse_registry(reference).map(Source::Registry)
}

/// `PATH[:tag]` as a layout directory or, for a file, a layout tarball.
fn local_by_file_type(spec: &str, reference: &str) -> Result<Source> {
    let (path, tag) = split_local(spec)?;
    let path = canonical(&path, reference)?;
    Ok(if path.is_file() { Source::Archive { path, tag } } else { Source::Layout { path, tag } })
}

/// Splits `PATH[:tag]`. A trailing `:x` is a tag only if it looks like one and the whole string is
/// not itself an existing path (paths may contain colons).
fn split_local(s: &str) -> Result<(PathBuf, Option<String>)> {
    if s.is_empty() {
        return Err(Error::InvalidArgument(
            "local image reference has no path".into(),
        ));
    }
    if let Some((path, tag)) = s.rsplit_once(':') {
        if valid_tag(tag) && !Path::new(s).exists() {
            return Ok((PathBuf::from(path), Some(tag.to_string())));
        }
    }
    Ok((PathBuf::from(s), None))
}

fn canonical(path: &Path, reference: &str) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(|e| {
        Error::Image(format!(
            "no OCI image layout or archive at '{}' (from '{reference}'): {e}; check the path",
            path.display()
        ))
    })
}

fn parse_registry(reference: &str) -> Result<RegistryRef> {
    let invalid =
        |why: &str| Error::InvalidArgument(format!("invalid image reference '{reference}': {why}"));
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => {
            validate_digest(d).map_err(|_| invalid("the digest must be sha256:<64 hex digits>"))?;
            (n, Some(d.to_string()))
        }
        None => (reference, None),
    };
    // A tag is the part after the last ':' unless that colon belongs to a host:port.
    let (name, tag) = match name_tag.rsplit_once(':') {
        Some((n, t)) if !t.contains('/') => (n, Some(t.to_string())),
        _ => (name_tag, None),
    };
    if let Some(t) = &tag {
        if !valid_tag(t) {
            return Err(invalid(
                "tags are up to 128 letters, digits, '_', '.' or '-'",
            ));
        }
    }
    let (host, repository) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first.to_string()), rest)
        }
        _ => (None, name),
    };
    if let Some(h) = &host {
        if !h
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        {
            return Err(invalid("the registry host has invalid characters"));
        }
    }
    if repository.is_empty() || !repository.split('/').all(valid_component) {
        return Err(invalid(
            "names are lowercase letters and digits separated by '/', '.', '_' or '-'",
        ));
    }
    let tag = if tag.is_none() && digest.is_none() {
        Some(DEFAULT_TAG.to_string())
    } else {
        tag
    };
    Ok(RegistryRef {
        host,
        repository: repository.to_string(),
        tag,
        digest,
    })
}

fn valid_component(c: &str) -> bool {
    let bytes = c.as_bytes();
    !bytes.is_empty()
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(b))
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && !t.starts_with(['.', '-'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// Checks a `sha256:<hex>` digest and returns the hex part. Digests become file names, so
/// anything else is refused before it gets near a path.
pub(crate) fn validate_digest(digest: &str) -> Result<&str> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(hex)
        }
        _ => Err(Error::Image(format!(
            "unsupported or malformed digest '{digest}'; only sha256 digests are supported"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        match parse(s).unwrap() {
            Source::Registry(r) => r,
            other => panic!("expected registry ref, got {other:?}"),
        }
    }

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn parses_names_tags_hosts_and_digests() {
        let r = reg("busybox");
        assert_eq!(
            (r.host, r.repository.as_str(), r.tag.as_deref()),
            (None, "busybox", Some("latest"))
        );
        let r = reg("127.0.0.1:5000/private/busybox:1.36");
        assert_eq!(r.host.as_deref(), Some("127.0.0.1:5000"));
        assert_eq!(r.repository, "private/busybox");
        assert_eq!(r.tag.as_deref(), Some("1.36"));
        let r = reg("localhost/x");
        assert_eq!(r.host.as_deref(), Some("localhost"));
        let r = reg("library/busybox:1");
        assert_eq!(r.host, None);
        let r = reg(&format!("ghcr.io/a/b@{D}"));
        assert_eq!((r.tag, r.digest.as_deref()), (None, Some(D)));
        let r = reg(&format!("a:v1@{D}"));
        assert_eq!(r.display(), format!("a:v1@{D}"));
    }

    #[test]
    fn rejects_malformed_references() {
        for bad in [
            "",
            "Busybox",
            "a//b",
            "a:",
            "a:-x",
            "a@sha256:12",
            "a@md5:00",
            "-a",
            "bad host/x",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidArgument(_))),
                "{bad:?} should be rejected, got {:?}",
                parse(bad)
            );
        }
    }

    #[test]
    fn candidates_follow_configured_registries_then_docker_hub() {
        let hosts = ["127.0.0.1:5000", "r.example"];
        let names = |reference: &str, hosts: &[&str]| -> Vec<String> {
            reg(reference).candidates(hosts).iter().map(Candidate::normalized).collect()
        };
        assert_eq!(
            names("busybox", &hosts),
            [
                "127.0.0.1:5000/busybox:latest",
                "127.0.0.1:5000/library/busybox:latest",
                "r.example/busybox:latest",
                "r.example/library/busybox:latest",
                "docker.io/library/busybox:latest",
            ]
        );
        assert_eq!(names("a/b:1", &hosts), ["127.0.0.1:5000/a/b:1", "r.example/a/b:1", "docker.io/a/b:1"]);
        assert_eq!(names("docker.io/alpine", &hosts), ["docker.io/library/alpine:latest"]);
        assert_eq!(names("127.0.0.1:5000/busybox", &[]), ["127.0.0.1:5000/busybox:latest"]);
    }

    #[test]
    fn local_references() {
        let dir = tempfile::tempdir().unwrap();
        let layout = dir.path().join("layout");
        std::fs::create_dir(&layout).unwrap();
        let archive = dir.path().join("img.tar");
        std::fs::write(&archive, b"").unwrap();
        let canon = std::fs::canonicalize(&layout).unwrap();

        let s = parse(&format!("oci:{}:v1", layout.display())).unwrap();
        assert_eq!(
            s,
            Source::Layout {
                path: canon.clone(),
                tag: Some("v1".into())
            }
        );
        assert_eq!(
            s.local_normalized().unwrap(),
            format!("oci:{}:v1", canon.display())
        );
        let s = parse(layout.to_str().unwrap()).unwrap();
        assert_eq!(
            s,
            Source::Layout {
                path: canon,
                tag: None
            }
        );
        let s = parse(&format!("{}:latest", archive.display())).unwrap();
        assert!(matches!(s, Source::Archive { tag: Some(ref t), .. } if t == "latest"));
        let s = parse(&format!("oci-archive:{}", archive.display())).unwrap();
        assert!(matches!(s, Source::Archive { tag: None, .. }));
        let s = parse(&format!("oci:{}", archive.display())).unwrap();
        assert!(matches!(s, Source::Archive { tag: None, .. }));
        assert!(matches!(parse("/no/such/layout"), Err(Error::Image(_))));
    }

    #[test]
    fn digest_validation() {
        assert_eq!(validate_digest(D).unwrap().len(), 64);
        assert!(validate_digest("sha256:../../etc/passwd").is_err());
        assert!(validate_digest(
            "sha256:ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789"
        )
        .is_err());
    }
}
