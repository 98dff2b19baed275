//! Any bytes as `METHOD TARGET`: the agent's request-target and authority
//! classification must never panic, and what it accepts must be consistent.
#![no_main]

use fluidity::agent::target::{Target, classify, tunnel_authority};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b' ').unwrap_or(data.len());
    let (method, rest) = data.split_at(split);
    let Ok(method) = http::Method::from_bytes(method) else { return };
    let Ok(uri) = http::Uri::try_from(rest.get(1..).unwrap_or_default()) else { return };
    match classify(&method, &uri) {
        Target::Connect(authority) => assert!(authority.port_u16().is_some()),
        Target::Http { authority, path } => {
            assert!(path.path().starts_with('/') || path.path() == "*");
            // None is answered 400 by the agent; Some must carry a port.
            if let Some(tunnel) = tunnel_authority(&authority) {
                assert!(tunnel.port_u16().is_some());
            }
        }
        Target::Invalid(reason) => assert!(!reason.is_empty()),
    }
});
