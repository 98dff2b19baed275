//! Fluidity: a secure tunnel through a server you own.
//!
//! A local HTTP proxy (the **agent**) carries every request as an HTTP/2 stream
//! over a few long-lived mutual-TLS connections to a standard forward proxy (the
//! **server**), which dials the Internet on the user's behalf.
//!
//! Module map:
//!
//! - [`cli`]: exit codes and one-line errors for the binaries.
//! - [`config`]: shared configuration pieces (durations, TLS material sources,
//!   the one-line [`config::ConfigError`]).
//! - [`tls`]: loading PEM material and building the TLS 1.3-only rustls configs.
//! - [`http_util`]: body type, hop-by-hop header handling and short text replies.
//! - [`protocol`]: the contracts between components (control API JSON, metric names).
//! - [`relay`]: two-way byte relay with idle timeout and activity counters.
//! - `h2_stream` (features `agent` or `server`): HTTP/2 streams as bodies and
//!   byte streams, with flow-control credit given back as readers take data.
//! - `upstream`: the agent's way out through a corporate HTTP or SOCKS5 proxy
//!   (used by the tunnel dial path and the control API client).
//! - [`telemetry`]: `tracing` subscriber setup (text or JSON).
//! - [`shutdown`]: SIGINT/SIGTERM to a [`tokio_util::sync::CancellationToken`].
//! - `certs` (feature `certs`): CA, server and client certificate generation.
//! - `server` (feature `server`): the mTLS forward proxy.
//! - `agent` (feature `agent`): the local proxy and the tunnel connection pool.
//! - `lambda` (feature `lambda`): the Wake/Status/Sleep/Kill control plane.
//! - `deploy` (feature `deploy`): publishing and the CloudFormation stacks.
//! - `local` (features `agent` + `server` + `certs`): both ends on this machine.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
#[cfg(any(feature = "agent", feature = "server"))]
pub mod h2_stream;
#[cfg(any(feature = "agent", feature = "server", feature = "lambda", feature = "deploy"))]
pub mod http_client;
pub mod http_util;
pub mod protocol;
pub mod relay;
pub mod shutdown;
#[cfg(any(feature = "server", feature = "lambda", feature = "deploy"))]
pub mod sigv4;
pub mod telemetry;
pub mod tls;
#[cfg(any(feature = "agent", feature = "server", feature = "lambda", feature = "deploy"))]
pub mod upstream;

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "certs")]
pub mod certs;
#[cfg(feature = "deploy")]
pub mod deploy;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(all(feature = "agent", feature = "server", feature = "certs"))]
pub mod local;
#[cfg(feature = "server")]
pub mod server;

/// Every binary allocates through jemalloc, not the C library's allocator:
/// the same allocator in the glibc builds measured here and in the static
/// musl builds that ship (musl's own is far slower), and one that keeps freed
/// relay and HTTP/2 buffers for reuse, where glibc's handed them back to the
/// kernel and faulted them in again (about 209,000 page faults per GiB of a
/// long-link download). mimalloc was measured too and doubled the idle RSS.
/// Fuzzing keeps the system allocator, which the address sanitizer watches.
#[cfg(not(fuzzing))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The DNS name the agent expects in the server certificate unless configured otherwise.
pub const DEFAULT_SERVER_NAME: &str = "fluidity-server";

/// Installs the process-wide rustls crypto provider (ring). Safe to call more than once.
pub fn install_crypto_provider() {
    // An error only means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}
