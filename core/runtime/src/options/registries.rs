//! The registries of a runtime whose options name none: `BOXLITE_REGISTRIES` and
//! `BOXLITE_INSECURE_REGISTRIES`, else the home's `config.json`. Each source is taken whole: the
//! first that names any registry is used and the later ones are not read (options in code, or
//! CLI flags, before the environment, before the file).

use crate::error::{Error, Result};
use crate::image::RegistryConfig;
use std::path::Path;

/// Registries searched for unqualified image names, in order, spoken to over https unless also
/// listed in [`INSECURE_REGISTRIES_ENV`]: comma-separated `host[:port]`.
pub const REGISTRIES_ENV: &str = "BOXLITE_REGISTRIES";
/// Registries spoken to over plain http (and searched, after those of [`REGISTRIES_ENV`]):
/// comma-separated `host[:port]`.
pub const INSECURE_REGISTRIES_ENV: &str = "BOXLITE_INSECURE_REGISTRIES";
/// The home's settings file: `{"registries": ["host"], "insecure_registries": ["127.0.0.1:5000"]}`.
pub const CONFIG_FILE: &str = "config.json";

/// `<home>/config.json`. Unknown keys are refused, so a typo is an error rather than ignored;
/// Docker's spelling `insecure-registries` is accepted too.
#[derive(serde::Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct HomeConfig {
    registries: Vec<String>,
    #[serde(alias = "insecure-registries")]
    insecure_registries: Vec<String>,
}

/// The registries a runtime on `home` uses when its options name none: from the environment if
/// either variable is set, else from `<home>/config.json` if it exists, else none.
pub fn default_registries(home: &Path) -> Result<Vec<RegistryConfig>> {
    from_sources(|name| std::env::var(name).ok(), &home.join(CONFIG_FILE))
}

fn from_sources(env: impl Fn(&str) -> Option<String>, config: &Path) -> Result<Vec<RegistryConfig>> {
    let list = |name: &str| -> Vec<String> {
        env(name).unwrap_or_default().split(',').map(str::trim).filter(|h| !h.is_empty()).map(String::from).collect()
    };
    let (search, insecure) = (list(REGISTRIES_ENV), list(INSECURE_REGISTRIES_ENV));
    if !search.is_empty() || !insecure.is_empty() {
        return registries_from_hosts((REGISTRIES_ENV, &search), (INSECURE_REGISTRIES_ENV, &insecure));
    }
    let bytes = match std::fs::read(config) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::storage("read", config, e)),
    };
    let parsed: HomeConfig = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidArgument(format!(
            "{} is malformed: {e}; expected {{\"registries\": [\"host[:port]\", ...], \"insecure_registries\": [\"host[:port]\", ...]}}",
            config.display()
        ))
    })?;
    let key = |k: &str| format!("{} key {k}", config.display());
    registries_from_hosts((&key("registries"), &parsed.registries), (&key("insecure_registries"), &parsed.insecure_registries))
}

/// Registries from two lists of `host[:port]`, each with the name it came under (an environment
/// variable, a key of config.json, a CLI flag) for errors: `search`, in order, over https unless
/// also in `insecure`; then the rest of `insecure`, over plain http. A host listed twice is kept
/// once.
pub fn registries_from_hosts(search: (&str, &[String]), insecure: (&str, &[String])) -> Result<Vec<RegistryConfig>> {
    for (source, hosts) in [search, insecure] {
        for host in hosts {
            validate_host(host).map_err(|why| Error::InvalidArgument(format!("{source}: registry '{host}' is invalid: {why}")))?;
        }
    }
    let mut out: Vec<RegistryConfig> = Vec::new();
    for host in search.1.iter().chain(insecure.1) {
        if !out.iter().any(|r| r.host == *host) {
            out.push(RegistryConfig { host: host.clone(), insecure: insecure.1.contains(host), ..Default::default() });
        }
    }
    Ok(out)
}

/// `host[:port]` as image references write it: a DNS name, an IPv4 address or a bracketed IPv6
/// address, and a port 1..=65535.
fn validate_host(entry: &str) -> std::result::Result<(), String> {
    if entry.contains("://") {
        return Err("write host[:port] without a scheme (plain http is what the insecure list is for)".into());
    }
    if entry.contains('/') {
        return Err("write host[:port] without a path".into());
    }
    let (host, port) = match entry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, "")) => (ip, None),
            Some((ip, port)) => (ip, Some(port.strip_prefix(':').ok_or("a ':' must follow the bracketed address")?)),
            None => return Err("an IPv6 address needs its closing ']'".into()),
        },
        None => match entry.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (entry, None),
        },
    };
    let bracketed = entry.starts_with('[');
    let host_ok = !host.is_empty()
        && match bracketed {
            true => host.parse::<std::net::Ipv6Addr>().is_ok(),
            false => host.split('.').all(|label| {
                !label.is_empty() && !label.starts_with('-') && !label.ends_with('-') && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            }),
        };
    if !host_ok {
        return Err(format!("'{host}' is not a host name or IP address"));
    }
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!("port '{port}' is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| vars.get(k).cloned()
    }

    fn hosts(regs: &[RegistryConfig]) -> Vec<(String, bool)> {
        regs.iter().map(|r| (r.host.clone(), r.insecure)).collect()
    }

    #[test]
    fn the_environment_lists_search_registries_then_insecure_ones() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(CONFIG_FILE);
        let got = from_sources(env(&[(REGISTRIES_ENV, "ghcr.io, 127.0.0.1:5000,"), (INSECURE_REGISTRIES_ENV, "127.0.0.1:5000,[::1]:5001")]), &config).unwrap();
        assert_eq!(
            hosts(&got),
            [("ghcr.io".into(), false), ("127.0.0.1:5000".into(), true), ("[::1]:5001".into(), true)]
        );
        assert!(from_sources(env(&[(REGISTRIES_ENV, " , ")]), &config).unwrap().is_empty());
    }

    #[test]
    fn config_json_is_read_only_when_the_environment_names_none() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(CONFIG_FILE);
        std::fs::write(&config, r#"{"registries": ["quay.io"], "insecure-registries": ["localhost:5000"]}"#).unwrap();
        assert_eq!(hosts(&from_sources(env(&[]), &config).unwrap()), [("quay.io".into(), false), ("localhost:5000".into(), true)]);
        let from_env = from_sources(env(&[(INSECURE_REGISTRIES_ENV, "10.0.0.1:80")]), &config).unwrap();
        assert_eq!(hosts(&from_env), [("10.0.0.1:80".into(), true)]);
    }

    #[test]
    fn malformed_entries_and_files_name_their_source_and_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join(CONFIG_FILE);
        for (value, needle) in [
            ("http://127.0.0.1:5000", "without a scheme"),
            ("127.0.0.1:5000/v2", "without a path"),
            ("127.0.0.1:0", "port '0'"),
            ("127.0.0.1:http", "port 'http'"),
            ("bad host", "'bad host' is not a host name"),
            ("[::1", "closing ']'"),
        ] {
            let err = from_sources(env(&[(INSECURE_REGISTRIES_ENV, value)]), &config).unwrap_err();
            let msg = err.to_string();
            assert_eq!(err.code(), "INVALID_ARGUMENT");
            assert!(msg.starts_with(INSECURE_REGISTRIES_ENV) && msg.contains(value) && msg.contains(needle), "{msg}");
        }
        std::fs::write(&config, r#"{"insecure_registry": ["x"]}"#).unwrap();
        let msg = from_sources(env(&[]), &config).unwrap_err().to_string();
        assert!(msg.contains(&config.display().to_string()) && msg.contains("unknown field `insecure_registry`"), "{msg}");
        std::fs::write(&config, r#"{"registries": ["ok.io", "no_underscores.io"]}"#).unwrap();
        let msg = from_sources(env(&[]), &config).unwrap_err().to_string();
        assert!(msg.contains("key registries") && msg.contains("'no_underscores.io'"), "{msg}");
        std::fs::write(&config, "{").unwrap();
        assert_eq!(from_sources(env(&[]), &config).unwrap_err().code(), "INVALID_ARGUMENT");
    }
}
