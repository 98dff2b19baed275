//! The agent's dial path to the server, one small step per layer:
//!
//! ```text
//! transport()  TCP, direct or through the upstream proxy (crate::upstream)
//!   secure()   TLS 1.3 with the client certificate; SNI chosen apart from
//!              the name verified (fixed, our CA's)
//!   http2()    the HTTP/2 handshake, "up" once the server's first bytes arrive
//! ```
//!
//! Each step names its own failure as a [`TunnelError`] (the proxy said 407,
//! TLS saw a certificate from another CA, the server's alert), so the line a
//! person reads says which step stopped and why. A new layer (another
//! transport) is one more step here, not a branch in the pool.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::AgentConfig;
use super::config::{ServerSni, TunnelSettings};
use super::http2::{Ended, Meter, Sender, window};
use super::pool::TunnelError;
use crate::upstream::{Upstream, split_host_port};

/// ALPN offered to the server, as browsers do; the server must pick `h2`.
const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Dials the server: the layers above, with the settings they need.
#[derive(Clone)]
pub(super) struct Connector {
    pub(super) server: String,
    server_name: ServerName<'static>,
    sni: ServerSni,
    upstream: Arc<Upstream>,
    /// One TLS configuration sending SNI and one sending none.
    with_sni: TlsConnector,
    without_sni: TlsConnector,
    settings: TunnelSettings,
}

/// A running connection: its driver task and whether its transport broke
/// (an I/O error, or EOF without TLS close_notify) rather than closing cleanly.
pub(super) struct Connection {
    pub(super) task: tokio::task::JoinHandle<Result<(), Ended>>,
    pub(super) broken: Arc<AtomicBool>,
}

impl Connector {
    pub(super) fn new(config: &AgentConfig) -> Result<Self, crate::tls::TlsError> {
        let tls = |sni| crate::tls::client_config_for(&config.tls, &ALPN, config.server_name.clone(), sni);
        Ok(Self {
            server: config.server.clone(),
            server_name: config.server_name.clone(),
            sni: config.server_sni.clone(),
            upstream: Arc::new(config.upstream.clone()),
            with_sni: TlsConnector::from(tls(true)?),
            without_sni: TlsConnector::from(tls(false)?),
            settings: config.tunnel.clone(),
        })
    }

    /// The server's host and port (`server` always carries a port).
    fn target(&self) -> Result<(String, u16), TunnelError> {
        split_host_port(&self.server, super::config::DEFAULT_SERVER_PORT)
            .map_err(|reason| TunnelError::Unreachable { server: self.server.clone(), reason })
    }

    /// The upstream proxy the server is reached through, if any.
    fn proxy(&self) -> Option<&crate::upstream::UpstreamProxy> {
        let (host, _) = self.target().ok()?;
        self.upstream.for_target(true, &host)
    }

    /// The server address, with the proxy it is reached through.
    pub(super) fn shown(&self) -> String {
        match self.proxy() {
            Some(proxy) => format!("{} (through {proxy})", self.server),
            None => self.server.clone(),
        }
    }

    /// All layers, bounded by the connect timeout.
    pub(super) async fn connect(&self) -> Result<(Sender, Connection), TunnelError> {
        self.dial(&mut |_, _| {}).await
    }

    /// `--check`: the same layers once, reporting every step it passes.
    pub(super) async fn check(&self, report: &mut (dyn FnMut(&str, String) + Send)) -> Result<(), TunnelError> {
        let host = self.target()?.0;
        report("..", format!("server {}: to be reached {}", self.server, self.upstream.describe(true, &host)));
        let (_sender, connection) = self.dial(report).await?;
        connection.task.abort();
        Ok(())
    }

    /// The layers in order, each reported as it passes, bounded together by
    /// the connect timeout; a timeout names the step it stopped in.
    async fn dial(&self, report: &mut (dyn FnMut(&str, String) + Send)) -> Result<(Sender, Connection), TunnelError> {
        let step = AtomicUsize::new(0);
        let layers = async {
            let (tcp, how) = self.transport().await?;
            report("ok", how);
            step.store(1, Ordering::Relaxed);
            let tls = self.secure(tcp).await?;
            let sni = self.sni().map_or_else(|| "none".to_string(), |name| name.to_str().into_owned());
            let name = self.server_name.to_str();
            let line = format!(
                "TLS 1.3: the server's certificate is from the Fluidity CA and valid for {name} (SNI sent: {sni}); ALPN h2"
            );
            report("ok", line);
            step.store(2, Ordering::Relaxed);
            let connected = self.http2(tls).await?;
            report("ok", "HTTP/2: the server accepted this agent's client certificate and sent its settings".into());
            Ok(connected)
        };
        match tokio::time::timeout(self.settings.connect_timeout, layers).await {
            Ok(result) => result,
            Err(_) => Err(self.timeout(step.load(Ordering::Relaxed))),
        }
    }

    /// The timeout error for layer `step` (0 transport, 1 TLS, 2 HTTP/2).
    fn timeout(&self, step: usize) -> TunnelError {
        let step = match step {
            0 if self.proxy().is_some() => "no answer through the upstream proxy: is it one, of the scheme given?",
            0 => "no answer to the TCP connection: a firewall dropping it, or the wrong address?",
            1 => "in the TLS handshake: is it a Fluidity server?",
            _ => "waiting for the server's first HTTP/2 frames",
        };
        TunnelError::Timeout { server: self.shown(), after: self.settings.connect_timeout, step }
    }

    /// TCP to the server, directly or through the upstream proxy; with a
    /// line saying how.
    async fn transport(&self) -> Result<(TcpStream, String), TunnelError> {
        let (host, port) = self.target()?;
        let proxy = self.upstream.for_target(true, &host);
        crate::upstream::open_described(proxy, &host, port).await.map_err(|error| match error {
            crate::upstream::UpstreamError::Direct { reason, .. } => {
                TunnelError::Unreachable { server: self.server.clone(), reason }
            }
            error => TunnelError::Upstream { server: self.server.clone(), error },
        })
    }

    /// The SNI for this dial: the configured name, none, or (by default)
    /// the dialled host when it is a name and none for an IP address.
    fn sni(&self) -> Option<ServerName<'static>> {
        match &self.sni {
            ServerSni::Off => None,
            ServerSni::Name(name) => Some(name.clone()),
            ServerSni::Auto => {
                let (host, _) = self.target().ok()?;
                if host.parse::<std::net::IpAddr>().is_ok() {
                    return None;
                }
                ServerName::try_from(host).ok()
            }
        }
    }

    /// TLS 1.3 with the client certificate, verified against `server_name`.
    async fn secure(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, TunnelError> {
        let (connector, name) = match self.sni() {
            Some(sni) => (&self.with_sni, sni),
            None => (&self.without_sni, self.server_name.clone()),
        };
        let tls = connector.connect(name, tcp).await.map_err(|e| self.tls_error(&e))?;
        if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(TunnelError::NoH2 { server: self.shown() });
        }
        Ok(tls)
    }

    /// The HTTP/2 handshake; up only when the server has sent its first bytes.
    async fn http2(&self, tls: TlsStream<TcpStream>) -> Result<(Sender, Connection), TunnelError> {
        let s = &self.settings;
        let broken = Arc::new(AtomicBool::new(false));
        let (heard, first_bytes) = tokio::sync::oneshot::channel();
        let failure = Arc::new(Mutex::new(None));
        let limits = window::Limits {
            stream: s.stream_window,
            connection: s.connection_window,
            keepalive_interval: s.keepalive_interval,
            keepalive_timeout: s.keepalive_timeout,
        };
        let (sender, connection) = h2::client::Builder::new()
            .initial_window_size(limits.start())
            .initial_connection_window_size(limits.connection_for(limits.start()))
            .max_send_buffer_size(1024 * 1024)
            // Larger DATA frames from the server: fewer frames and writes per MiB.
            .max_frame_size(crate::tls::MAX_H2_FRAME)
            .max_header_list_size(s.max_header_bytes)
            .enable_push(false)
            .handshake(Watched { inner: tls, broken: broken.clone(), heard: Some(heard), failure: failure.clone() })
            .await
            .map_err(|e| TunnelError::Http2 { server: self.shown(), reason: e.to_string() })?;
        let meter = Arc::new(Meter::default());
        let sender = Sender::new(sender, meter.clone());
        let mut task = tokio::spawn(window::drive(connection, meter, limits));
        // Dropped by the connect timeout, the unconfirmed connection goes too.
        let unconfirmed = AbortOnDrop(Some(task.abort_handle()));
        // In TLS 1.3 the client's handshake ends before the server has judged
        // its certificate: the server's verdict is its first record, an alert
        // or its HTTP/2 SETTINGS. Only the latter makes the connection "up".
        tokio::select! {
            heard = first_bytes => match heard {
                Ok(()) => {
                    unconfirmed.disarm();
                    Ok((sender, Connection { task, broken }))
                }
                // The transport was dropped unheard: the task has ended.
                Err(_) => Err(self.ended_unheard((&mut task).await, lock(&failure).clone())),
            },
            ended = &mut task => Err(self.ended_unheard(ended, lock(&failure).clone())),
        }
    }

    /// The error for a connection that ended before the server sent a byte.
    fn ended_unheard(
        &self,
        ended: Result<Result<(), Ended>, tokio::task::JoinError>,
        failure: Option<TransportFailure>,
    ) -> TunnelError {
        let server = self.shown();
        let reason = match (failure, ended) {
            (Some(TransportFailure::Alert(alert)), _) => {
                return TunnelError::Rejected { server, reason: alert_meaning(alert) };
            }
            // The server accepted the handshake, then cut the connection
            // before a word: what a server that refused the client
            // certificate looks like when its alert is lost with the reset.
            (Some(TransportFailure::Io(kind, io)), _) if is_cut(kind) => {
                return TunnelError::Rejected {
                    server,
                    reason: format!(
                        "it cut the connection right after the TLS handshake ({io}), which is how a refused client certificate looks; check tls.cert is issued by the server's CA and the server's log"
                    ),
                };
            }
            (Some(TransportFailure::Io(_, io)), _) => format!("the connection broke before the server answered ({io})"),
            (None, Ok(Ok(()))) => "the server closed the connection before it answered".to_owned(),
            (None, Ok(Err(error))) => error.to_string(),
            (None, Err(error)) => error.to_string(),
        };
        TunnelError::Http2 { server, reason }
    }

    fn tls_error(&self, error: &std::io::Error) -> TunnelError {
        let server = self.shown();
        let name = self.server_name.to_str();
        match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidCertificate(reason)) => certificate_error(server, &name, reason),
            Some(rustls::Error::InvalidMessage(_)) => TunnelError::Tls {
                server,
                reason: "what answered does not speak TLS (an HTTP server or proxy on that port?)".into(),
            },
            Some(rustls::Error::AlertReceived(alert)) => {
                TunnelError::Rejected { server, reason: alert_meaning(*alert) }
            }
            Some(other) => TunnelError::Tls { server, reason: other.to_string() },
            None if is_cut(error.kind()) || error.kind() == std::io::ErrorKind::UnexpectedEof => TunnelError::Tls {
                server,
                reason: format!("the connection was cut during the TLS handshake ({error}); is it a Fluidity server?"),
            },
            None => TunnelError::Tls { server, reason: error.to_string() },
        }
    }
}

/// What a refused server certificate means, and what to do about it.
fn certificate_error(server: String, name: &str, reason: &rustls::CertificateError) -> TunnelError {
    use rustls::CertificateError as E;
    let reason = match reason {
        E::Other(other) => match other.0.downcast_ref::<crate::tls::UntrustedIssuer>() {
            Some(untrusted) if untrusted.fluidity => format!(
                "its certificate was issued by {}, a Fluidity CA other than the one in tls.ca: the certificates were regenerated on one side; give the agent the ca.crt made with the server's certificate (or redeploy the server with the new one)",
                untrusted.issuer
            ),
            Some(untrusted) => {
                return TunnelError::Intercepted { server, issuer: untrusted.issuer.clone() };
            }
            None => format!("its certificate is not trusted ({other}); check tls.ca points at the CA that signed it"),
        },
        E::NotValidForName | E::NotValidForNameContext { .. } => format!(
            "its certificate is not valid for the name {name}; set server_name to the name it carries or reissue it with fluidity-certs --san"
        ),
        E::InvalidPurpose | E::InvalidPurposeContext { .. } => {
            "it presented a certificate made for clients, not for a server (wrong purpose); give the server the server.crt written by fluidity-certs".into()
        }
        E::Expired | E::ExpiredContext { .. } => {
            "its certificate has expired; issue a new server certificate with fluidity-certs".into()
        }
        other => format!("its certificate is not trusted ({other:?}); check tls.ca points at the CA that signed it"),
    };
    TunnelError::Certificate { server, reason }
}

fn is_cut(kind: std::io::ErrorKind) -> bool {
    matches!(kind, std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pin_project_lite::pin_project! {
    /// Transport wrapper that records a broken read or write and tells when
    /// the first bytes from the server arrive.
    struct Watched<T> {
        #[pin]
        inner: T,
        broken: Arc<AtomicBool>,
        heard: Option<tokio::sync::oneshot::Sender<()>>,
        failure: Arc<Mutex<Option<TransportFailure>>>,
    }
}

/// What broke a transport: HTTP/2 errors do not carry their I/O cause, so
/// the wrapper keeps it (an alert from the server wins over later errors).
#[derive(Debug, Clone)]
enum TransportFailure {
    Alert(rustls::AlertDescription),
    Io(std::io::ErrorKind, String),
}

fn record(failure: &Mutex<Option<TransportFailure>>, error: &std::io::Error) {
    let mut failure = lock(failure);
    if let Some(rustls::Error::AlertReceived(alert)) = error.get_ref().and_then(|e| e.downcast_ref()) {
        *failure = Some(TransportFailure::Alert(*alert));
    } else if failure.is_none() {
        *failure = Some(TransportFailure::Io(error.kind(), error.to_string()));
    }
}

impl<T: tokio::io::AsyncRead> tokio::io::AsyncRead for Watched<T> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        match &polled {
            std::task::Poll::Ready(Err(error)) => {
                this.broken.store(true, Ordering::Relaxed);
                record(this.failure, error);
            }
            std::task::Poll::Ready(Ok(())) if buf.filled().len() > before => {
                if let Some(heard) = this.heard.take() {
                    let _ = heard.send(());
                }
            }
            _ => {}
        }
        polled
    }
}

impl<T: tokio::io::AsyncWrite> tokio::io::AsyncWrite for Watched<T> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if let std::task::Poll::Ready(Err(error)) = &polled {
            this.broken.store(true, Ordering::Relaxed);
            record(this.failure, error);
        }
        polled
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// Aborts a task when dropped, unless disarmed first.
struct AbortOnDrop(Option<tokio::task::AbortHandle>);

impl AbortOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// What a server's TLS alert means for this agent, and what to do about it.
fn alert_meaning(alert: rustls::AlertDescription) -> String {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateExpired => {
            "its TLS alert says this agent's client certificate has expired (or is not valid yet); issue a new one with fluidity-certs and send SIGHUP".into()
        }
        A::UnknownCA => {
            "its TLS alert says this agent's client certificate is from a CA it does not trust; use a client certificate issued by the server's CA".into()
        }
        A::CertificateRequired => "its TLS alert says a client certificate is required; set tls.cert and tls.key".into(),
        A::DecryptError => {
            "its TLS alert says this agent's client certificate fails verification (a CA of the same name but another key?)".into()
        }
        A::CertificateRevoked => "its TLS alert says this agent's client certificate was revoked".into(),
        A::BadCertificate | A::UnsupportedCertificate | A::CertificateUnknown => {
            format!("its TLS alert says this agent's client certificate is not acceptable ({alert:?})")
        }
        other => format!("it ended the TLS session with the alert {other:?}"),
    }
}
