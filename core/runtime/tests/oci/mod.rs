//! Test images built in the test: tar layers, OCI layouts on disk, and a small fake registry on
//! 127.0.0.1 that can be told to misbehave. No fixtures, no network beyond loopback.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// A tar layer built entry by entry.
pub struct Layer(tar::Builder<Vec<u8>>);

impl Default for Layer {
    fn default() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }
}

impl Layer {
    pub fn entry(mut self, path: &str, kind: tar::EntryType, mode: u32, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(path, tar::EntryType::Regular, 0o644, data)
    }

    pub fn dir(self, path: &str) -> Self {
        self.entry(path, tar::EntryType::Directory, 0o755, b"")
    }

    pub fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_path(path).unwrap();
        h.set_entry_type(kind);
        h.set_mode(0o666);
        h.set_size(0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.0.append(&h, &b""[..]).unwrap();
        self
    }

    /// A file with PAX xattrs (`SCHILY.xattr.<name>`).
    pub fn file_with_xattr(mut self, path: &str, mode: u32, data: &[u8], name: &str, value: &[u8]) -> Self {
        let key = format!("SCHILY.xattr.{name}");
        self.0.append_pax_extensions([(key.as_str(), value)]).unwrap();
        self.entry(path, tar::EntryType::Regular, mode, data)
    }

    /// Appends raw bytes of a hand-made header block plus data (for entries tar::Builder cannot make).
    pub fn raw(mut self, header: &tar::Header, data: &[u8]) -> Self {
        self.0.append(header, data).unwrap();
        self
    }

    pub fn tar(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// An image: config, layer blobs (as stored, possibly compressed) and the manifest over them.
pub struct Image {
    pub config: Vec<u8>,
    pub layers: Vec<Vec<u8>>,
    pub manifest: Vec<u8>,
}

impl Image {
    /// An image of `layers` (blobs as stored). `config` is the `config` object of the image config.
    pub fn new(layers: Vec<Vec<u8>>, config: serde_json::Value) -> Self {
        let config = serde_json::to_vec(&serde_json::json!({
            "os": "linux", "architecture": "amd64", "config": config,
        }))
        .unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(&config), "size": config.len()},
            "layers": layers.iter().map(|l| serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(l), "size": l.len(),
            })).collect::<Vec<_>>(),
        });
        Image { config, layers, manifest: serde_json::to_vec(&manifest).unwrap() }
    }

    /// Same image, but the manifest declares `size` bytes for layer `i`.
    pub fn with_declared_layer_size(mut self, i: usize, size: u64) -> Self {
        let mut m: serde_json::Value = serde_json::from_slice(&self.manifest).unwrap();
        m["layers"][i]["size"] = size.into();
        self.manifest = serde_json::to_vec(&m).unwrap();
        self
    }

    pub fn layer_digest(&self, i: usize) -> String {
        digest(&self.layers[i])
    }

    /// Writes an OCI image layout to `dir`, the image tagged `tag`.
    pub fn write_layout(&self, dir: &Path, tag: &str) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for blob in std::iter::once(&self.config).chain(&self.layers).chain(std::iter::once(&self.manifest)) {
            std::fs::write(blobs.join(&digest(blob)[7..]), blob).unwrap();
        }
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest(&self.manifest),
            "size": self.manifest.len(), "annotations": {"org.opencontainers.image.ref.name": tag},
        }]});
        std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }
}

/// How the fake registry answers a blob request.
#[derive(Clone)]
pub enum BlobAnswer {
    /// The bytes, with a correct Content-Length.
    Bytes(Vec<u8>),
    /// `total` bytes of junk with no Content-Length (connection close ends the body).
    Endless { total: u64 },
    /// A Content-Length of `declared` and then `sent` bytes of junk.
    Lying { declared: u64, sent: u64 },
    /// 404 with a BLOB_UNKNOWN error body.
    Missing,
}

/// A registry on 127.0.0.1 serving one repository (`test`) with tag `latest`, plain HTTP/1.1.
pub struct FakeRegistry {
    pub host: String,
    /// Body bytes the registry managed to hand to the kernel, all blob answers together.
    pub blob_bytes_sent: Arc<AtomicU64>,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    blobs: Arc<Mutex<HashMap<String, BlobAnswer>>>,
}

impl FakeRegistry {
    /// Serves `image` as `test:latest`; blobs answer with their bytes unless overridden.
    pub async fn start(image: &Image) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let mut blobs = HashMap::new();
        for blob in std::iter::once(&image.config).chain(&image.layers) {
            blobs.insert(digest(blob), BlobAnswer::Bytes(blob.clone()));
        }
        let blobs = Arc::new(Mutex::new(blobs));
        let manifest = image.manifest.clone();
        let sent = Arc::new(AtomicU64::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let registry = FakeRegistry { host, blob_bytes_sent: sent.clone(), connections: connections.clone(), blobs: blobs.clone() };
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                connections.fetch_add(1, Ordering::Relaxed);
                let (blobs, manifest, sent) = (blobs.clone(), manifest.clone(), sent.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, &blobs, &manifest, &sent).await;
                });
            }
        });
        registry
    }

    pub fn answer(&self, digest: &str, answer: BlobAnswer) {
        self.blobs.lock().unwrap().insert(digest.to_string(), answer);
    }
}

async fn serve(
    mut stream: tokio::net::TcpStream,
    blobs: &Mutex<HashMap<String, BlobAnswer>>,
    manifest: &[u8],
    sent: &AtomicU64,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        // One request at a time: read up to the end of the headers (requests here have no body).
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut parts = head.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").to_string());
        let body_of_head = method == "HEAD";
        let respond = |status: &str, kind: &str, extra: &str, body: &[u8]| {
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\n{extra}\r\n",
                body.len()
            )
            .into_bytes();
            if !body_of_head {
                out.extend_from_slice(body);
            }
            out
        };
        let answer = if path == "/v2/" {
            respond("200 OK", "application/json", "", b"{}")
        } else if path.starts_with("/v2/test/manifests/") {
            let extra = format!("Docker-Content-Digest: {}\r\n", digest(manifest));
            respond("200 OK", "application/vnd.oci.image.manifest.v1+json", &extra, manifest)
        } else if let Some(d) = path.strip_prefix("/v2/test/blobs/") {
            let found = blobs.lock().unwrap().get(d).cloned();
            match found {
                Some(BlobAnswer::Bytes(bytes)) => {
                    let out = respond("200 OK", "application/octet-stream", "", &bytes);
                    sent.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    out
                }
                Some(BlobAnswer::Endless { total }) => {
                    stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n").await?;
                    return send_junk(&mut stream, total, sent).await;
                }
                Some(BlobAnswer::Lying { declared, sent: n }) => {
                    let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {declared}\r\n\r\n");
                    stream.write_all(head.as_bytes()).await?;
                    return send_junk(&mut stream, n, sent).await;
                }
                Some(BlobAnswer::Missing) | None => respond(
                    "404 Not Found",
                    "application/json",
                    "",
                    br#"{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}"#,
                ),
            }
        } else {
            respond(
                "404 Not Found",
                "application/json",
                "",
                br#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
            )
        };
        stream.write_all(&answer).await?;
    }
}

async fn send_junk(stream: &mut tokio::net::TcpStream, total: u64, sent: &AtomicU64) -> std::io::Result<()> {
    let chunk = vec![b'x'; 64 * 1024];
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        sent.fetch_add(n as u64, Ordering::Relaxed);
        left -= n as u64;
    }
    stream.shutdown().await
}

/// A TCP listener on 127.0.0.1 that accepts connections and never answers. Returns its host.
pub async fn silent_registry() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    host
}

/// A port on 127.0.0.1 that nothing listens on.
pub fn dead_host() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    format!("127.0.0.1:{port}")
}

/// A gzip layer that expands to one file `name` of `mib` MiB of zeros, built as concatenated gzip
/// members (one per MiB, all the same bytes), so a 4 GiB bomb costs the test about 4 MB and no
/// compression time.
pub fn gzip_zero_bomb(name: &str, mib: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(mib << 20);
    h.set_cksum();
    let mut out = gzip(h.as_bytes());
    let mib_of_zeros = gzip(&vec![0u8; 1 << 20]);
    for _ in 0..mib {
        out.extend_from_slice(&mib_of_zeros);
    }
    // End of archive: two zero blocks.
    out.extend(gzip(&[0u8; 1024]));
    out
}

/// A tar layer with one GNU sparse entry `name` of `real_size` bytes holding 512 bytes of data.
pub fn gnu_sparse_layer(name: &str, real_size: u64) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path(name).unwrap();
    h.set_entry_type(tar::EntryType::GNUSparse);
    h.set_mode(0o644);
    h.set_size(512);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.set_real_size(real_size);
    gnu.sparse[0].set_offset(real_size - 512);
    gnu.sparse[0].set_length(512);
    h.set_cksum();
    Layer::default().raw(&h, &[b'x'; 512]).tar()
}
