//! A one-shot HTTP/1.1 client for small control calls: the Lambda's signed EC2
//! query and the agent's calls to the control API. `http://` or `https://`
//! (rustls with ring, the webpki roots, TLS 1.2+ as public endpoints need);
//! the body is collected as text. Callers bound it with their own timeout.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// A client for one request at a time; cheap to clone.
#[derive(Clone)]
pub struct OneShot {
    tls: tokio_rustls::TlsConnector,
}

impl OneShot {
    /// Builds the TLS configuration (the webpki roots).
    pub fn new() -> Result<Self, String> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { tls: tokio_rustls::TlsConnector::from(Arc::new(tls)) })
    }

    /// Sends `request` to the host in its URI; returns the status and body text.
    pub async fn send(&self, request: http::Request<Full<Bytes>>) -> Result<(u16, String), String> {
        let uri = request.uri().clone();
        let host = uri.authority().ok_or("the URL has no host")?.clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let port = host.port_u16().unwrap_or(if https { 443 } else { 80 });
        let hostname = host.host().trim_start_matches('[').trim_end_matches(']');
        let tcp = TcpStream::connect((hostname, port)).await.map_err(|e| format!("connect to {host}: {e}"))?;
        if https {
            let name = rustls::pki_types::ServerName::try_from(hostname.to_string()).map_err(|e| e.to_string())?;
            let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS with {host}: {e}"))?;
            exchange(TokioIo::new(tls), request).await
        } else {
            exchange(TokioIo::new(tcp), request).await
        }
    }
}

async fn exchange<T>(io: T, request: http::Request<Full<Bytes>>) -> Result<(u16, String), String>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
