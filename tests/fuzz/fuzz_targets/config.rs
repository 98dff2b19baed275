//! Any bytes as an agent or server YAML file: parsing and validation must
//! return a value or a `ConfigError`, never panic.
#![no_main]

use fluidity::agent::config::{AgentArgs, AgentConfig, RawAgentConfig};
use fluidity::server::config::{RawServerConfig, ServerArgs, ServerConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(raw) = serde_yaml::from_str::<RawAgentConfig>(text) {
        let _ = AgentConfig::from_parts(&AgentArgs::default(), raw);
    }
    if let Ok(raw) = serde_yaml::from_str::<RawServerConfig>(text) {
        let _ = ServerConfig::from_parts(&ServerArgs::default(), raw);
    }
    let _ = fluidity::config::parse_duration(text);
    let _ = fluidity::config::parse_size(text);
    let _ = text.parse::<fluidity::server::egress::Cidr>();
});
