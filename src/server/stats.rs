//! Server counters and gauges: cheap atomics on the hot path, rendered as
//! Prometheus text for `/metrics` and read by the CloudWatch emitter.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::relay::Activity;

/// Why a TLS handshake failed, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    NoCertificate,
    UnknownIssuer,
    Expired,
    BadCertificate,
    Timeout,
    /// Refused unheard: `max_handshakes` were already under way.
    Busy,
    Other,
}

impl HandshakeFailure {
    /// Every reason, in metric order.
    pub const ALL: [Self; 7] = [
        Self::NoCertificate,
        Self::UnknownIssuer,
        Self::Expired,
        Self::BadCertificate,
        Self::Timeout,
        Self::Busy,
        Self::Other,
    ];

    /// The `reason` label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::UnknownIssuer => "unknown_issuer",
            Self::Expired => "expired",
            Self::BadCertificate => "bad_certificate",
            Self::Timeout => "timeout",
            Self::Busy => "busy",
            Self::Other => "other",
        }
    }

    /// Classifies a failed accept.
    pub fn of(error: &std::io::Error) -> Self {
        use rustls::CertificateError as C;
        match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::NoCertificatesPresented) => Self::NoCertificate,
            Some(rustls::Error::InvalidCertificate(C::UnknownIssuer)) => Self::UnknownIssuer,
            Some(rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. })) => Self::Expired,
            Some(rustls::Error::InvalidCertificate(_)) => Self::BadCertificate,
            _ => Self::Other,
        }
    }
}

/// Dial error kinds, in metric order (see `DialError::kind`).
pub const DIAL_KINDS: [&str; 4] = ["dns", "refused", "timeout", "other"];

/// Everything the server counts.
#[derive(Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections_accepted: AtomicU64,
    /// Agent connections open now (TLS established).
    pub connections_active: AtomicU64,
    /// TLS handshakes that completed.
    pub handshakes_ok: AtomicU64,
    /// TLS handshakes that failed, all reasons.
    pub handshakes_failed: AtomicU64,
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    /// Requests and tunnels served.
    pub streams: AtomicU64,
    /// Requests in progress and tunnels open now.
    pub streams_active: AtomicU64,
    /// Targets refused by the egress policy.
    pub egress_refused: AtomicU64,
    /// Dials that failed (DNS, refused, timeout, other).
    pub dial_errors: AtomicU64,
    dial_errors_by_kind: [AtomicU64; 4],
    /// Bytes and the time of the last one, for every kind of traffic.
    pub activity: Arc<Activity>,
    /// Set when the drain starts (`/healthz` answers 503 from then on).
    pub draining: AtomicBool,
}

impl Stats {
    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self, reason: HandshakeFailure) {
        self.handshakes_failed.fetch_add(1, Ordering::Relaxed);
        let index = HandshakeFailure::ALL.iter().position(|r| *r == reason).unwrap_or(HandshakeFailure::ALL.len() - 1);
        self.handshake_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed dial of `kind` (one of [`DIAL_KINDS`]).
    pub fn dial_failed(&self, kind: &str) {
        self.dial_errors.fetch_add(1, Ordering::Relaxed);
        let index = DIAL_KINDS.iter().position(|k| *k == kind).unwrap_or(3);
        self.dial_errors_by_kind[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Holds `gauge` one higher until the guard is dropped.
    pub fn hold(self: &Arc<Self>, gauge: fn(&Stats) -> &AtomicU64) -> GaugeGuard {
        gauge(self).fetch_add(1, Ordering::Relaxed);
        GaugeGuard { stats: self.clone(), gauge }
    }

    /// Prometheus text exposition (format 0.0.4).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, value) in samples {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        };
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        metric(
            "fluidity_connections_active",
            "gauge",
            "Agent connections open now.",
            &[("", get(&self.connections_active))],
        );
        metric(
            "fluidity_connections_accepted_total",
            "counter",
            "TCP connections accepted.",
            &[("", get(&self.connections_accepted))],
        );
        metric(
            "fluidity_streams_active",
            "gauge",
            "Requests in progress and tunnels open now.",
            &[("", get(&self.streams_active))],
        );
        metric("fluidity_streams_total", "counter", "Requests and tunnels served.", &[("", get(&self.streams))]);
        let up = get(&self.activity.bytes_up);
        let down = get(&self.activity.bytes_down);
        metric(
            "fluidity_bytes_total",
            "counter",
            "Bytes relayed, towards targets (up) and back (down).",
            &[("{direction=\"up\"}", up), ("{direction=\"down\"}", down)],
        );
        metric(
            "fluidity_last_activity_timestamp_seconds",
            "gauge",
            "Unix time of the last byte relayed (0: none yet).",
            &[("", get(&self.activity.last_activity_secs))],
        );
        let dial: Vec<(String, u64)> = DIAL_KINDS
            .iter()
            .zip(&self.dial_errors_by_kind)
            .map(|(kind, count)| (format!("{{kind=\"{kind}\"}}"), get(count)))
            .collect();
        let dial: Vec<(&str, u64)> = dial.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("fluidity_dial_errors_total", "counter", "Failed dials by kind.", &dial);
        let handshakes: Vec<(String, u64)> = HandshakeFailure::ALL
            .iter()
            .zip(&self.handshake_failures)
            .map(|(reason, count)| (format!("{{reason=\"{}\"}}", reason.label()), get(count)))
            .collect();
        let handshakes: Vec<(&str, u64)> = handshakes.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric("fluidity_handshake_failures_total", "counter", "Failed TLS handshakes by reason.", &handshakes);
        metric(
            "fluidity_egress_refused_total",
            "counter",
            "Targets refused by the egress policy.",
            &[("", get(&self.egress_refused))],
        );
        let draining = u64::from(self.draining.load(Ordering::Relaxed));
        metric("fluidity_draining", "gauge", "1 while the server drains before exit.", &[("", draining)]);
        out
    }
}

/// Decrements its gauge when dropped.
pub struct GaugeGuard {
    stats: Arc<Stats>,
    gauge: fn(&Stats) -> &AtomicU64,
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        (self.gauge)(&self.stats).fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_and_labels() {
        let stats = Arc::new(Stats::default());
        {
            let _held = stats.hold(|s| &s.connections_active);
            assert_eq!(Stats::get(&stats.connections_active), 1);
        }
        assert_eq!(Stats::get(&stats.connections_active), 0);
        stats.dial_failed("timeout");
        stats.handshake_failed(HandshakeFailure::Expired);
        let text = stats.render_prometheus();
        assert!(text.contains("fluidity_dial_errors_total{kind=\"timeout\"} 1"), "{text}");
        assert!(text.contains("fluidity_handshake_failures_total{reason=\"expired\"} 1"), "{text}");
        assert!(text.contains("fluidity_connections_active 0"), "{text}");
    }
}
