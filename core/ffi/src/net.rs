//! The network options of the C ABI (`"network"` and `"ports"` of `boxlite_box_create`, the
//! argument of `boxlite_box_set_network`) and their translation to the runtime's types. The
//! runtime checks the values (entries, port numbers, ports in use); this module checks the shape.

use crate::error::Failure;
use serde::{Deserialize, Serialize};

/// `"default"` (outbound to everything), `"none"` (no NIC), `{"allow": [...]}` or
/// `{"deny": [...]}`. The same JSON in options and in `boxlite_box_info`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum NetworkConfig {
    #[default]
    Default,
    None,
    Allow(Vec<String>),
    Deny(Vec<String>),
}

impl From<NetworkConfig> for boxlite::Network {
    fn from(n: NetworkConfig) -> Self {
        match n {
            NetworkConfig::Default => boxlite::Network::Enabled,
            NetworkConfig::None => boxlite::Network::None,
            NetworkConfig::Allow(list) => boxlite::Network::Allow(list),
            NetworkConfig::Deny(list) => boxlite::Network::Deny(list),
        }
    }
}

impl From<&boxlite::Network> for NetworkConfig {
    fn from(n: &boxlite::Network) -> Self {
        match n {
            boxlite::Network::Enabled => NetworkConfig::Default,
            boxlite::Network::None => NetworkConfig::None,
            boxlite::Network::Allow(list) => NetworkConfig::Allow(list.clone()),
            boxlite::Network::Deny(list) => NetworkConfig::Deny(list.clone()),
        }
    }
}

/// One entry of `"ports"`. Unknown keys are rejected, as everywhere in options.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Port {
    #[serde(default)]
    host_port: u16,
    guest_port: u16,
    #[serde(default)]
    protocol: boxlite::Protocol,
    host_ip: Option<String>,
}

/// The `"ports"` entries, each read on its own so that a malformed one is named by its index
/// and text (serde alone would only give a column).
pub(crate) fn port_specs(entries: Vec<serde_json::Value>) -> Result<Vec<boxlite::PortSpec>, Failure> {
    entries
        .into_iter()
        .enumerate()
        .map(|(i, entry)| {
            let text = entry.to_string();
            let p: Port = serde_json::from_value(entry).map_err(|e| {
                Failure::invalid(format!(
                    "ports[{i}] {text} is not a port: {e} (use {{\"host_port\": 0-65535, \"guest_port\": 1-65535, \"protocol\": \"tcp\"|\"udp\", \"host_ip\": \"127.0.0.1\"}})"
                ))
            })?;
            let defaults = boxlite::PortSpec::tcp(p.host_port, p.guest_port);
            Ok(boxlite::PortSpec { host_ip: p.host_ip.unwrap_or(defaults.host_ip), protocol: p.protocol, ..defaults })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn network_json_maps_both_ways() {
        for (text, network) in [
            (json!("default"), boxlite::Network::Enabled),
            (json!("none"), boxlite::Network::None),
            (json!({"allow": ["pypi.org"]}), boxlite::Network::Allow(vec!["pypi.org".into()])),
            (json!({"deny": ["10.0.0.0/8"]}), boxlite::Network::Deny(vec!["10.0.0.0/8".into()])),
        ] {
            let config: NetworkConfig = serde_json::from_value(text.clone()).unwrap();
            assert_eq!(boxlite::Network::from(config), network);
            assert_eq!(serde_json::to_value(NetworkConfig::from(&network)).unwrap(), text);
        }
        let err = serde_json::from_value::<NetworkConfig>(json!("enabled")).unwrap_err().to_string();
        assert!(err.contains("unknown variant `enabled`"), "{err}");
    }

    #[test]
    fn ports_take_defaults_and_name_a_bad_entry() {
        let ports = port_specs(vec![
            json!({"guest_port": 80}),
            json!({"host_port": 5353, "guest_port": 53, "protocol": "udp", "host_ip": "0.0.0.0"}),
        ])
        .unwrap();
        assert_eq!(ports[0], boxlite::PortSpec::tcp(0, 80));
        assert_eq!(
            ports[1],
            boxlite::PortSpec { host_ip: "0.0.0.0".into(), host_port: 5353, guest_port: 53, protocol: boxlite::Protocol::Udp }
        );
        for (entry, needle) in [
            (json!({"host_port": 70000, "guest_port": 80}), "70000"),
            (json!({"hostPort": 8080, "guest_port": 80}), "unknown field `hostPort`"),
            (json!({"host_port": 8080}), "missing field `guest_port`"),
            (json!({"guest_port": 80, "protocol": "sctp"}), "unknown variant `sctp`"),
            (json!("8080:80"), "expected struct Port"),
        ] {
            let failure = port_specs(vec![json!({"guest_port": 1}), entry]).unwrap_err();
            assert_eq!(failure.code, crate::error::boxlite_result::BOXLITE_ERR_INVALID_ARGUMENT);
            assert!(failure.message.starts_with("ports[1] ") && failure.message.contains(needle), "{}", failure.message);
        }
    }
}
