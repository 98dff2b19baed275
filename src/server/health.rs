//! The health and metrics port, separate from the proxy port: `GET /healthz`
//! is 200 while accepting and 503 while draining; `GET /metrics` is the
//! Prometheus text exposition. Also the client side of the container health
//! check (`fluidity-server healthcheck`), since the image has no curl.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Stats;
use crate::http_client::OneShot;

/// Serves `/healthz` and `/metrics` on `listener` until `stop` fires.
pub async fn serve(listener: TcpListener, stats: Arc<Stats>, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(error) => {
                    warn!(%error, "health port accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, stats.clone()));
            if let Err(error) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await
            {
                debug!(%error, "health connection ended with an error");
            }
        });
    }
}

async fn answer(req: Request<Incoming>, stats: Arc<Stats>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (status, content_type, body) = match req.uri().path() {
        "/healthz" if stats.draining.load(Ordering::Relaxed) => {
            (StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n".to_string())
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_string()),
        "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4", stats.render_prometheus()),
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /healthz or /metrics\n".to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, value);
    }
    Ok(response)
}

/// Asks the health port at `addr` (an unspecified address means loopback)
/// whether the server is healthy: true only for a 200 within `timeout`.
pub async fn check(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let mut target = addr;
    if target.ip().is_unspecified() {
        target.set_ip(if addr.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    let attempt = async {
        let client = OneShot::new().map_err(|e| e.to_string())?;
        let request = Request::get(format!("http://{target}/healthz"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let (status, body) = client.send(request).await.map_err(|e| format!("cannot reach {target}: {e}"))?;
        if status == StatusCode::OK.as_u16() {
            Ok(())
        } else {
            Err(format!("{target} answered {status}: {}", body.trim()))
        }
    };
    tokio::time::timeout(timeout, attempt).await.map_err(|_| format!("no answer from {target} within {timeout:?}"))?
}
