//! Registry access with oci-client: finding a reference among the configured registries, fetching
//! manifests and blobs, and turning transport and HTTP failures into errors a user can act on.

use std::time::Duration;

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWriteExt;

use super::blobs::{sha256_digest, BlobStore};
use super::manifest::{self, Document, Manifest, MANIFEST_MEDIA_TYPES};
use super::reference::{Candidate, RegistryRef, DOCKER_HUB};
use super::RegistryConfig;
use crate::error::{Error, Result};

/// A registry that does not accept a TCP connection within this time counts as unreachable.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// A registry that stops sending for this long mid-transfer fails the pull.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// A registry that accepted the connection but has not answered a request (a manifest, after any
/// token exchange, or the headers of a blob) within this time counts as unreachable. Together with
/// [`CONNECT_TIMEOUT`] it keeps a dead or wedged registry under 5 s to a clear error.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(4);
/// Layers downloaded at once.
const PARALLEL_DOWNLOADS: usize = 3;

/// Why one registry did not give us a manifest.
#[derive(Debug)]
enum Failure {
    /// The registry answered: no such repository or tag.
    NotFound,
    /// No answer at all (refused, DNS, timeout, TLS mismatch).
    Unreachable(String),
    /// The registry wants credentials, or refused the ones we sent.
    Auth(String),
    /// Anything else, reported as is.
    Other(Error),
}

/// A registry image resolved to its linux/amd64 manifest.
pub(crate) struct Resolved {
    pub candidate: Candidate,
    pub manifest_digest: String,
    pub manifest: Manifest,
}

/// An oci-client configured for the user's registries.
pub(crate) struct Registries {
    client: Client,
    configs: Vec<RegistryConfig>,
}

impl Registries {
    pub fn new(configs: &[RegistryConfig]) -> Self {
        let insecure = configs
            .iter()
            .filter(|c| c.insecure)
            .map(|c| c.host.clone())
            .collect();
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(insecure),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            // We pick the platform ourselves, to report what an index offers when amd64 is missing.
            platform_resolver: None,
            ..Default::default()
        });
        Registries {
            client,
            configs: configs.to_vec(),
        }
    }

    fn config(&self, host: &str) -> Option<&RegistryConfig> {
        let hub = |h: &str| matches!(h, "docker.io" | "index.docker.io" | "registry-1.docker.io");
        self.configs
            .iter()
            .find(|c| c.host == host || (hub(host) && hub(&c.host)))
    }

    fn auth(&self, host: &str) -> RegistryAuth {
        match self.config(host) {
            Some(RegistryConfig {
                username: Some(u),
                password,
                ..
            }) => RegistryAuth::Basic(u.clone(), password.clone().unwrap_or_default()),
            _ => RegistryAuth::Anonymous,
        }
    }

    fn has_credentials(&self, host: &str) -> bool {
        matches!(self.auth(host), RegistryAuth::Basic(..))
    }

    /// Finds `reference` in the registries it may live in, in order, and resolves it to the
    /// linux/amd64 manifest (storing the manifests it read in `blobs`).
    pub async fn resolve(&self, reference: &RegistryRef, blobs: &BlobStore) -> Result<Resolved> {
        let hosts: Vec<&str> = self.configs.iter().map(|c| c.host.as_str()).collect();
        let candidates = reference.candidates(&hosts);
        let explicit = reference.host.is_some();
        let name = reference.display();
        let mut searched: Vec<String> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        for candidate in candidates {
            let host = &candidate.host;
            if !searched.contains(host) {
                searched.push(host.clone());
            }
            let oci_ref = to_oci_reference(&candidate, None);
            match self.fetch_manifest(&oci_ref).await {
                Ok(bytes) => return self.select(candidate, bytes, blobs).await,
                Err(Failure::NotFound) => {}
                // Only "not found" moves on: a registry that is down may well hold the image, and
                // taking the name from the next registry (Docker Hub) instead would pull whatever
                // someone published there under it.
                Err(Failure::Unreachable(msg)) if explicit => return Err(Error::Registry(msg)),
                Err(Failure::Unreachable(msg)) => {
                    return Err(Error::Registry(format!(
                        "cannot pull '{name}': {msg}; the registries after it were not searched"
                    )))
                }
                Err(Failure::Auth(msg)) if explicit || self.has_credentials(&candidate.host) => {
                    return Err(Error::Registry(msg))
                }
                Err(Failure::Auth(_)) => {
                    // Docker Hub answers "unauthorized" for repositories that do not exist.
                    if candidate.host != DOCKER_HUB {
                        notes.push(format!("{} requires credentials", candidate.host));
                    }
                }
                Err(Failure::Other(e)) => return Err(e),
            }
        }
        notes.dedup();
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        Err(Error::Image(format!(
            "image '{name}' not found in {}{notes}; check the name and tag",
            searched.join(", ")
        )))
    }

    /// Follows an index to the linux/amd64 manifest.
    async fn select(
        &self,
        candidate: Candidate,
        bytes: Vec<u8>,
        blobs: &BlobStore,
    ) -> Result<Resolved> {
        let what = candidate.normalized();
        let mut digest = sha256_digest(&bytes);
        blobs.put(&digest, &bytes)?;
        let mut document = manifest::parse_document(&bytes, &what)?;
        // An index may point at another index; two levels is plenty for real images.
        for _ in 0..2 {
            let entries = match document {
                Document::Manifest(manifest) => {
                    return Ok(Resolved {
                        candidate,
                        manifest_digest: digest,
                        manifest,
                    })
                }
                Document::Index(entries) => entries,
            };
            let entry = manifest::select_platform(&entries, &what)?;
            let oci_ref = to_oci_reference(&candidate, Some(&entry.digest));
            let bytes = self
                .fetch_manifest(&oci_ref)
                .await
                .map_err(|f| self.failure_error(f, &candidate))?;
            digest = sha256_digest(&bytes);
            blobs.put(&digest, &bytes)?;
            document = manifest::parse_document(&bytes, &what)?;
        }
        match document {
            Document::Manifest(manifest) => Ok(Resolved {
                candidate,
                manifest_digest: digest,
                manifest,
            }),
            Document::Index(_) => Err(Error::Image(format!(
                "{what}: image indexes nest too deeply"
            ))),
        }
    }

    fn failure_error(&self, failure: Failure, candidate: &Candidate) -> Error {
        match failure {
            Failure::NotFound => Error::Image(format!(
                "{} lists a manifest the registry does not have; the image is incomplete there",
                candidate.normalized()
            )),
            Failure::Unreachable(msg) | Failure::Auth(msg) => Error::Registry(msg),
            Failure::Other(e) => e,
        }
    }

    async fn fetch_manifest(&self, oci_ref: &Reference) -> std::result::Result<Vec<u8>, Failure> {
        let host = oci_ref.registry().to_string();
        let auth = self.auth(&host);
        let request = self
            .client
            .pull_manifest_raw(oci_ref, &auth, MANIFEST_MEDIA_TYPES);
        match tokio::time::timeout(ANSWER_TIMEOUT, request).await {
            Ok(Ok((bytes, _))) => Ok(bytes.to_vec()),
            Ok(Err(e)) => Err(self.classify(e, &host)),
            Err(_) => Err(no_answer(&host)),
        }
    }

    /// Downloads the blobs `digests` (with their sizes) that the store lacks. Calls `done` per blob.
    pub async fn fetch_blobs(
        &self,
        candidate: &Candidate,
        blobs: &BlobStore,
        digests: &[(String, u64)],
        done: impl Fn(&str, u64),
    ) -> Result<()> {
        let oci_ref = to_oci_reference(candidate, None);
        // Owned items: a closure over borrowed items makes the future lose `Send` (a rustc
        // higher-ranked lifetime limitation), and bindings need `Send` futures.
        let oci_ref = &oci_ref;
        let mut downloads =
            futures::stream::iter(digests.iter().cloned().map(|(digest, size)| async move {
                // Another pull of the same blob (a task here, or another process) shares its
                // download: this one waits for it, then finds the blob stored.
                if !blobs.contains(&digest)? {
                    let _download = blobs.download_lock(&digest).await?;
                    if !blobs.contains(&digest)? {
                        self.fetch_blob(oci_ref, &digest, size, blobs).await?;
                    }
                }
                Ok::<_, Error>((digest, size))
            }))
            .buffer_unordered(PARALLEL_DOWNLOADS);
        while let Some(result) = downloads.next().await {
            let (digest, size) = result?;
            done(&digest, size);
        }
        Ok(())
    }

    /// Downloads one blob of `size` bytes (as its descriptor declares) into the store. Never
    /// writes more than `size` bytes: a registry that announces or sends more is cut off.
    async fn fetch_blob(
        &self,
        oci_ref: &Reference,
        digest: &str,
        size: u64,
        blobs: &BlobStore,
    ) -> Result<()> {
        let host = oci_ref.registry().to_string();
        let request = self.client.pull_blob_stream(oci_ref, digest);
        let mut stream = match tokio::time::timeout(ANSWER_TIMEOUT, request).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                return Err(match self.classify(e, &host) {
                    Failure::NotFound => Error::Image(format!(
                        "registry {host} does not have blob {digest} that {} lists; the image is incomplete there, push it again",
                        candidate_of(oci_ref).normalized()
                    )),
                    other => self.failure_error(other, &candidate_of(oci_ref)),
                })
            }
            Err(_) => return Err(self.failure_error(no_answer(&host), &candidate_of(oci_ref))),
        };
        let oversized = |what: String| {
            Error::Image(format!(
                "registry {host} {what} for blob {digest}, whose descriptor declares {size} bytes; refusing the blob"
            ))
        };
        if let Some(announced) = stream.content_length.filter(|n| *n > size) {
            return Err(oversized(format!("announces {announced} bytes")));
        }
        let (mut writer, file) = blobs.writer(digest)?;
        let path = writer.temp_path().to_path_buf();
        let mut file = tokio::fs::File::from_std(file);
        let mut received: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| {
                let digest_error = e
                    .get_ref()
                    .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
                if digest_error {
                    Error::Image(format!(
                        "blob {digest} from registry {host} does not match its digest ({e}); the registry's copy is corrupt or was tampered with"
                    ))
                } else {
                    Error::Registry(format!(
                        "downloading {digest} from {host} failed: {e}; try the pull again"
                    ))
                }
            })?;
            received += chunk.len() as u64;
            if received > size {
                return Err(oversized(format!("sent more than {size} bytes")));
            }
            writer.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::storage("cannot write", &path, e))?;
            // A fast registry never makes this loop wait; yielding lets an abort land promptly.
            tokio::task::consume_budget().await;
        }
        if received < size {
            return Err(Error::Registry(format!(
                "downloading {digest} from {host} ended after {received} of {size} bytes; try the pull again"
            )));
        }
        let file = file.into_std().await;
        tokio::task::spawn_blocking(move || writer.commit(file))
            .await
            .map_err(|e| Error::Internal(format!("blob writer task failed: {e}")))??;
        Ok(())
    }

    /// Maps an oci-client error to what it means for the user.
    fn classify(&self, error: OciDistributionError, host: &str) -> Failure {
        let auth_failure = || {
            let config = self.config(host);
            match config.and_then(|c| c.username.as_deref()) {
                Some(user) => Failure::Auth(format!(
                    "registry {host} rejected the credentials of user '{user}'; check the username and password configured for it"
                )),
                None => Failure::Auth(format!(
                    "registry {host} requires credentials; configure a username and password for it"
                )),
            }
        };
        match error {
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    Failure::NotFound
                } else if codes
                    .iter()
                    .any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied))
                {
                    auth_failure()
                } else {
                    Failure::Other(Error::Registry(format!(
                        "registry {host} refused the request: {envelope}"
                    )))
                }
            }
            OciDistributionError::ServerError { code: 404, .. } => Failure::NotFound,
            OciDistributionError::ServerError {
                code: 401 | 403, ..
            }
            | OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => auth_failure(),
            OciDistributionError::ServerError { code, message, .. } => {
                let message: String = message.chars().take(200).collect();
                Failure::Other(Error::Registry(format!(
                    "registry {host} answered HTTP {code}: {}",
                    message.trim()
                )))
            }
            OciDistributionError::RequestError(e) => {
                let insecure = self.config(host).is_some_and(|c| c.insecure);
                let chain = error_chain(&e);
                // rustls reading an http answer as a TLS record.
                let speaks_http = chain.contains("InvalidContentType");
                let hint = if speaks_http && !insecure {
                    "it seems to serve plain http: mark it insecure in the registry config"
                } else if chain.contains("dns error") {
                    "check the host name and your network connection"
                } else if insecure {
                    "check that it is running and reachable"
                } else {
                    "check that it is running and reachable, or mark it insecure if it serves plain http"
                };
                Failure::Unreachable(format!("cannot reach registry {host}: {chain}; {hint}"))
            }
            OciDistributionError::DigestError(e) => Failure::Other(Error::Image(format!(
                "registry {host} sent a manifest that does not match its digest: {e}"
            ))),
            other => Failure::Other(Error::Registry(format!("registry {host}: {other}"))),
        }
    }
}

fn no_answer(host: &str) -> Failure {
    Failure::Unreachable(format!(
        "registry {host} accepted the connection but did not answer within {} s; check that it is running and reachable",
        ANSWER_TIMEOUT.as_secs()
    ))
}

fn to_oci_reference(candidate: &Candidate, digest: Option<&str>) -> Reference {
    let (host, repo) = (candidate.host.clone(), candidate.repository.clone());
    match (digest.or(candidate.digest.as_deref()), &candidate.tag) {
        (Some(d), _) => Reference::with_digest(host, repo, d.to_string()),
        (None, Some(tag)) => Reference::with_tag(host, repo, tag.clone()),
        (None, None) => Reference::with_tag(host, repo, "latest".to_string()),
    }
}

fn candidate_of(oci_ref: &Reference) -> Candidate {
    Candidate {
        host: oci_ref.registry().to_string(),
        repository: oci_ref.repository().to_string(),
        tag: oci_ref.tag().map(str::to_string),
        digest: oci_ref.digest().map(str::to_string),
    }
}

/// "a: b: c" from an error and its sources, skipping repeats (reqwest nests the same text).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = vec![error.to_string()];
    let mut source = error.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(configs: Vec<RegistryConfig>) -> Registries {
        Registries::new(&configs)
    }

    #[test]
    fn classifies_registry_answers() {
        let r = regs(vec![RegistryConfig {
            host: "r:1".into(),
            insecure: true,
            username: Some("u".into()),
            password: Some("p".into()),
        }]);
        let not_found: OciDistributionError = OciDistributionError::RegistryError {
            envelope: serde_json::from_str(
                r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"x"}]}"#,
            )
            .unwrap(),
            url: "u".into(),
        };
        assert!(matches!(r.classify(not_found, "r:1"), Failure::NotFound));
        let unauthorized = OciDistributionError::UnauthorizedError { url: "u".into() };
        match r.classify(unauthorized, "r:1") {
            Failure::Auth(m) => assert!(m.contains("rejected the credentials of user 'u'"), "{m}"),
            other => panic!("{other:?}"),
        }
        let unauthorized = OciDistributionError::UnauthorizedError { url: "u".into() };
        match r.classify(unauthorized, "other:2") {
            Failure::Auth(m) => assert!(m.contains("other:2 requires credentials"), "{m}"),
            other => panic!("{other:?}"),
        }
        let server = OciDistributionError::ServerError {
            code: 500,
            url: "u".into(),
            message: "boom".into(),
        };
        assert!(
            matches!(r.classify(server, "r:1"), Failure::Other(Error::Registry(m)) if m.contains("HTTP 500"))
        );
    }

    #[tokio::test]
    async fn unreachable_registry_fails_fast_with_a_hint() {
        // Bind then drop a listener to get a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let host = format!("127.0.0.1:{port}");
        let r = regs(vec![RegistryConfig {
            host: host.clone(),
            insecure: true,
            ..Default::default()
        }]);
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("b")).unwrap();
        let blobs = BlobStore::new(dir.path().join("b"), dir.path().to_path_buf(), dir.path().to_path_buf());
        let reference = match super::super::reference::parse(&format!("{host}/busybox")).unwrap() {
            super::super::reference::Source::Registry(r) => r,
            _ => unreachable!(),
        };
        let start = std::time::Instant::now();
        let err = r.resolve(&reference, &blobs).await.err().unwrap();
        assert!(start.elapsed() < Duration::from_secs(5));
        match err {
            Error::Registry(m) => assert!(
                m.contains(&host) && m.contains("check that it is running"),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
    }
}
