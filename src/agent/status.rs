//! `GET /status` on the agent's own port: how the agent and its server are,
//! as JSON, for `fluidity-agent status` and for a person's curl. Read-only:
//! nothing on this path changes the server's state, so a web page that
//! reaches the port cannot wake or stop the server. It answers loopback
//! clients whose `Host` names this machine (`localhost` or a loopback
//! address) only, so a page that rebinds its own name to 127.0.0.1 cannot
//! read it either.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde_json::{Value, json};

use super::pool::Pool;
use crate::relay::Activity;

/// Where the agent answers with its status, on its own port.
pub const STATUS_PATH: &str = "/status";

/// Control API calls this process has made (every `/wake`, `/status`, `/kill`).
pub static API_CALLS: AtomicU64 = AtomicU64::new(0);

/// The client's address, put into each request's extensions by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// Why a status request is refused, if it is.
pub fn refusal(peer: Option<SocketAddr>, host: Option<&str>) -> Option<&'static str> {
    if !peer.is_some_and(|p| p.ip().is_loopback() || p.ip().to_canonical().is_loopback()) {
        return Some("the status is for programs on this machine only");
    }
    if !host.is_some_and(names_this_machine) {
        return Some("the Host header must name this machine (localhost or a loopback address)");
    }
    None
}

/// `localhost`, `127.0.0.1`, `[::1]`… with or without a port.
fn names_this_machine(host: &str) -> bool {
    let host = host.trim();
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None if host.matches(':').count() > 1 => host,
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// What the agent knows, as JSON.
pub fn report(pool: &Pool, activity: &Activity, requests: u64, started: Instant) -> Value {
    let up = pool.connections_up();
    let last_error = pool.last_error().map(|e| e.to_string());
    let (state, reason) = if up > 0 {
        ("up", None)
    } else if pool.is_dormant() && pool.demand_pending() {
        ("waking", Some("a request is waiting for the sleeping server".to_string()))
    } else if pool.is_dormant() {
        ("asleep", Some("the control plane stopped the server; the next request wakes it".to_string()))
    } else {
        ("unreachable", Some(last_error.clone().unwrap_or_else(|| "no tunnel connection yet".into())))
    };
    json!({
        "state": state,
        "reason": reason,
        "server": pool.server(),
        "connections_up": up,
        "last_error": last_error,
        "requests": requests,
        "bytes_up": activity.bytes_up.load(Ordering::Relaxed),
        "bytes_down": activity.bytes_down.load(Ordering::Relaxed),
        "control_api_calls": API_CALLS.load(Ordering::Relaxed),
        "uptime_seconds": started.elapsed().as_secs(),
    })
}

/// Asks the agent listening on `listen` for its report.
pub async fn fetch(listen: SocketAddr) -> anyhow::Result<Value> {
    use anyhow::Context;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => SocketAddr::from(([127, 0, 0, 1], listen.port())),
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, listen.port())),
        _ => listen,
    };
    let mut tcp = tokio::time::timeout(std::time::Duration::from_secs(5), tokio::net::TcpStream::connect(address))
        .await
        .map_err(|_| anyhow::anyhow!("no answer"))
        .and_then(|connected| Ok(connected?))
        .with_context(|| format!("no agent answers on {address} (is it running, with this configuration?)"))?;
    let request = format!("GET {STATUS_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.context("asking the agent")?;
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(5), tcp.read_to_end(&mut answer))
        .await
        .context("the agent did not answer in time")?
        .context("reading the agent's answer")?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").context("the agent's answer has no body")?;
    if !head.starts_with("HTTP/1.1 200") {
        anyhow::bail!("the agent answered {}", head.lines().next().unwrap_or_default());
    }
    serde_json::from_str(body).with_context(|| format!("the agent's answer is not a status: {body}"))
}

/// The report for a person: one line per fact.
pub fn describe(report: &Value) -> String {
    let field = |k: &str| match &report[k] {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut text = format!("server: {} ({})\n", field("state"), field("server"));
    if !report["reason"].is_null() {
        text += &format!("why: {}\n", field("reason"));
    }
    text += &format!(
        "tunnel connections up: {}\nrequests: {}, bytes up {}, down {}\ncontrol API calls: {}\nrunning for {} s\n",
        field("connections_up"),
        field("requests"),
        field("bytes_up"),
        field("bytes_down"),
        field("control_api_calls"),
        field("uptime_seconds"),
    );
    if !report["last_error"].is_null() && report["state"] != "unreachable" {
        text += &format!("last error: {}\n", field("last_error"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_clients_naming_this_machine() {
        let local: Option<SocketAddr> = Some("127.0.0.1:5000".parse().unwrap());
        let v6: Option<SocketAddr> = Some("[::1]:5000".parse().unwrap());
        let lan: Option<SocketAddr> = Some("192.0.2.10:5000".parse().unwrap());
        for host in ["localhost", "localhost:8080", "127.0.0.1:8080", "127.0.0.2", "[::1]:8080", "::1", "LOCALHOST:1"] {
            assert_eq!(refusal(local, Some(host)), None, "{host}");
            assert_eq!(refusal(v6, Some(host)), None, "{host}");
        }
        // DNS rebinding: a page at attacker.example resolved to 127.0.0.1 sends its own name.
        for host in ["attacker.example:8080", "localhost.attacker.example", "127.0.0.1.nip.io", "0.0.0.0:8080", ""] {
            assert!(refusal(local, Some(host)).is_some(), "{host}");
        }
        assert!(refusal(local, None).is_some());
        assert!(refusal(lan, Some("localhost:8080")).is_some());
        assert!(refusal(None, Some("localhost")).is_some());
    }

    #[test]
    fn a_person_reads_each_fact() {
        let report = json!({"state": "asleep", "reason": "stopped", "server": "203.0.113.7:443", "connections_up": 0,
            "last_error": null, "requests": 3, "bytes_up": 10, "bytes_down": 20, "control_api_calls": 2, "uptime_seconds": 9});
        let text = describe(&report);
        for part in [
            "server: asleep (203.0.113.7:443)",
            "why: stopped",
            "requests: 3, bytes up 10, down 20",
            "control API calls: 2",
        ] {
            assert!(text.contains(part), "{part} in {text}");
        }
    }
}
