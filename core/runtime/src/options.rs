//! Plain-data options, validated once at the edge into the values the runtime uses.

use crate::error::{Error, Result};
use crate::image::RegistryConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

mod registries;
pub mod volumes;
pub use registries::{default_registries, registries_from_hosts, CONFIG_FILE, INSECURE_REGISTRIES_ENV, REGISTRIES_ENV};
pub use volumes::Volume;

/// vCPUs a box gets when none are asked for.
pub const DEFAULT_CPUS: u32 = 1;
/// Most vCPUs one box may have.
pub const MAX_CPUS: u32 = 64;
/// Guest memory when none is asked for.
pub const DEFAULT_MEMORY_MIB: u32 = 512;
/// Least guest memory: the kernel and agent need it to boot.
pub const MIN_MEMORY_MIB: u32 = 128;
/// Most guest memory.
pub const MAX_MEMORY_MIB: u32 = 65536;
/// How long a box may take from VM start to a guest that answers. Generous because software
/// emulation (TCG) on a loaded host is slow; a VM that dies fails at once anyway.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest box name.
pub const MAX_NAME_LEN: usize = 64;
/// Smallest disk a box may ask for, in GiB.
pub const MIN_DISK_SIZE_GB: u32 = 1;
/// Largest disk a box may ask for, in GiB.
pub const MAX_DISK_SIZE_GB: u32 = 1024;

/// How the VM is accelerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// KVM when it can really run a guest, else TCG with one warning.
    #[default]
    Auto,
    /// Hardware virtualization; fails with the reason when KVM cannot run a guest here.
    Kvm,
    /// QEMU's software emulation: works everywhere, several times slower.
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(Error::InvalidArgument(format!("accelerator '{other}' is not one of auto, kvm, tcg"))),
        }
    }
}

/// Options of a [`crate::Runtime`].
#[derive(Clone, Debug, Default)]
pub struct RuntimeOptions {
    /// State directory; default `$BOXLITE_HOME`, else `~/.boxlite`.
    pub home: Option<PathBuf>,
    /// Registries to search for unqualified image names (in order, before docker.io), and the
    /// credentials and transport for each host. None: [`default_registries`] (the environment,
    /// else the home's `config.json`).
    pub registries: Vec<RegistryConfig>,
    /// Accelerator; default `$BOXLITE_ACCEL`, else auto.
    pub accel: Option<Accel>,
    /// Directory with the guest `vmlinux` and `initramfs.cpio`; default [`crate::assets::assets_dir`].
    pub assets_dir: Option<PathBuf>,
    /// Most bytes one image may unpack to (all layers together); default
    /// [`crate::image::store::DEFAULT_MAX_UNPACKED_BYTES`]. Bigger images fail with an `IMAGE` error.
    pub max_unpacked_bytes: Option<u64>,
    /// DNS servers (`IP[:PORT]`) that boxes' queries are forwarded to; default `$BOXLITE_DNS`,
    /// else the host's resolvers.
    pub dns_servers: Vec<String>,
    /// Start boxes from templates (booted idle guests, made on first need) instead of booting
    /// them; default on, unless `$BOXLITE_WARM_START` is `0`. docs/snapshots.md.
    pub warm_start: Option<bool>,
}

/// Options of a new box.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct BoxOptions {
    /// Image reference (`busybox:latest`, `127.0.0.1:5000/python:slim`, `oci:/path`, ...).
    pub image: String,
    /// Optional unique name.
    pub name: Option<String>,
    /// vCPUs, 1..=64.
    pub cpus: u32,
    /// Guest memory in MiB, 128..=65536.
    pub memory_mib: u32,
    /// Extra environment ("KEY" -> "VALUE") over the image's Env.
    pub env: Vec<(String, String)>,
    /// Working directory for commands, over the image's WorkingDir.
    pub working_dir: Option<String>,
    /// User for commands, over the image's User.
    pub user: Option<String>,
    /// How long the guest may take to answer after the VM starts, in milliseconds.
    pub ready_timeout_ms: u64,
    /// Keep the box running after the process that started it ends (until stopped, removed or
    /// idle for `auto_stop_ms`). Without it the box stops cleanly when that process ends.
    pub detach: bool,
    /// Stop the box after this many milliseconds with no command running or starting.
    pub auto_stop_ms: Option<u64>,
    /// Remove the box (record and disk) once it has stopped.
    pub auto_remove: bool,
    /// Its network: on (default), none, or an egress allow/deny list.
    pub network: crate::net::Network,
    /// Ports of the box published on the host.
    pub ports: Vec<crate::net::PortSpec>,
    /// Host directories shared live into the box (host paths canonicalized at create).
    pub volumes: Vec<Volume>,
    /// Capacity of the box's root filesystem in GiB, 1..=1024 and at least the image's own disk;
    /// the disk stays sparse on the host. None: the image's size plus 2 GiB of headroom.
    pub disk_size_gb: Option<u32>,
}

impl Default for BoxOptions {
    fn default() -> Self {
        BoxOptions {
            image: String::new(),
            name: None,
            cpus: DEFAULT_CPUS,
            memory_mib: DEFAULT_MEMORY_MIB,
            env: Vec::new(),
            working_dir: None,
            user: None,
            ready_timeout_ms: DEFAULT_READY_TIMEOUT.as_millis() as u64,
            detach: false,
            auto_stop_ms: None,
            auto_remove: false,
            network: Default::default(),
            ports: Vec::new(),
            volumes: Vec::new(),
            disk_size_gb: None,
        }
    }
}

impl BoxOptions {
    /// Options for `image` with every default.
    pub fn new(image: impl Into<String>) -> Self {
        BoxOptions { image: image.into(), ..Default::default() }
    }

    /// Checks every field; the error names the field, the bad value and the allowed range.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidArgument(msg));
        if self.image.trim().is_empty() {
            return bad("image must not be empty (e.g. \"busybox:latest\")".into());
        }
        validate_shape(self.cpus, self.memory_mib)?;
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        for (k, v) in &self.env {
            validate_env(k, v)?;
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') {
                return bad(format!("working_dir '{dir}' must be an absolute path"));
            }
        }
        if self.ready_timeout_ms == 0 {
            return bad("ready_timeout_ms must be greater than 0".into());
        }
        if let Some(gb) = self.disk_size_gb.filter(|gb| !(MIN_DISK_SIZE_GB..=MAX_DISK_SIZE_GB).contains(gb)) {
            return bad(format!("disk_size_gb {gb} is out of range: use {MIN_DISK_SIZE_GB} to {MAX_DISK_SIZE_GB} GiB"));
        }
        volumes::validate(&self.volumes)?;
        crate::net::validate(&self.network, &self.ports)
    }
}

/// A box's (or a template's) vCPUs and memory.
pub fn validate_shape(cpus: u32, memory_mib: u32) -> Result<()> {
    if !(1..=MAX_CPUS).contains(&cpus) {
        return Err(Error::InvalidArgument(format!("cpus {cpus} is out of range: use 1 to {MAX_CPUS}")));
    }
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&memory_mib) {
        return Err(Error::InvalidArgument(format!("memory_mib {memory_mib} is out of range: use {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB")));
    }
    Ok(())
}

/// Box names: 1..=64 of `[A-Za-z0-9_.-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "box name '{name}' is invalid: use 1 to {MAX_NAME_LEN} letters, digits, '_', '.' or '-', starting with a letter or digit"
        )))
    }
}

/// An environment variable: a non-empty key without '=' or NUL, a value without NUL.
pub fn validate_env(key: &str, value: &str) -> Result<()> {
    if key.is_empty() || key.contains('=') || key.contains('\0') || value.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "environment variable '{key}' is invalid: keys must be non-empty without '=' or NUL, values without NUL"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        BoxOptions::new("busybox").validate().unwrap();
    }

    #[test]
    fn memory_out_of_range_names_the_range() {
        let o = BoxOptions { memory_mib: 64, ..BoxOptions::new("busybox") };
        let msg = o.validate().unwrap_err().to_string();
        assert!(msg.contains("memory_mib 64") && msg.contains("128 to 65536"), "{msg}");
        let o = BoxOptions { memory_mib: 65537, ..BoxOptions::new("busybox") };
        assert!(o.validate().is_err());
    }

    #[test]
    fn cpus_and_names_are_checked() {
        assert!(BoxOptions { cpus: 0, ..BoxOptions::new("x") }.validate().is_err());
        assert!(BoxOptions { cpus: 65, ..BoxOptions::new("x") }.validate().is_err());
        assert!(validate_name("web-1.a_b").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn disk_size_is_checked() {
        for gb in [0, 1025] {
            let msg = BoxOptions { disk_size_gb: Some(gb), ..BoxOptions::new("x") }.validate().unwrap_err().to_string();
            assert!(msg.contains(&format!("disk_size_gb {gb} is out of range")) && msg.contains("1 to 1024"), "{msg}");
        }
        BoxOptions { disk_size_gb: Some(1024), ..BoxOptions::new("x") }.validate().unwrap();
    }

    #[test]
    fn env_keys_are_checked() {
        assert!(validate_env("A", "1=2").is_ok());
        assert!(validate_env("A=B", "1").is_err());
        assert!(validate_env("", "1").is_err());
    }

    #[test]
    fn accel_parses() {
        assert_eq!("KVM".parse::<Accel>().unwrap(), Accel::Kvm);
        assert!("hvf".parse::<Accel>().is_err());
    }
}
