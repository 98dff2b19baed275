//! HTTP helpers shared by the agent and the server: the boxed body type,
//! hop-by-hop header removal, short plain-text replies, request bodies
//! that remember their own failure, and the jitter retries wait with.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full, combinators::BoxBody};

/// Error type carried inside proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A streaming body of any origin.
pub type Body = BoxBody<Bytes, BoxError>;

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> Body
where
    B: http_body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// An empty body.
pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|never| match never {}).boxed()
}

/// A plain-text reply: one line naming what went wrong.
pub fn text_response(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut line = message.into();
    line.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(line)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

pin_project_lite::pin_project! {
    /// A client's request body that keeps its first error: a malformed body
    /// (bad chunked encoding, fewer bytes than its Content-Length) is the
    /// client's fault, answered 400, not blamed on the tunnel or the origin.
    pub struct Noted<B> {
        #[pin]
        inner: B,
        failure: Arc<OnceLock<String>>,
    }
}

/// Wraps `body`; the returned cell holds its error once it has failed.
pub fn noting_failure<B>(body: B) -> (Noted<B>, Arc<OnceLock<String>>) {
    let failure = Arc::new(OnceLock::new());
    (Noted { inner: body, failure: failure.clone() }, failure)
}

impl<B> http_body::Body for Noted<B>
where
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let std::task::Poll::Ready(Some(Err(error))) = &polled {
            let _ = this.failure.set(error.to_string());
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// The 400 for a request whose body failed as it was read.
pub fn malformed_body(failure: &str) -> Response<Body> {
    text_response(StatusCode::BAD_REQUEST, format!("the request body is malformed: {failure}"))
}

/// Headers that describe one hop, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, including any named in `Connection`.
///
/// `Upgrade` is removed too unless `keep_upgrade` is set, in which case it and a
/// `Connection: upgrade` are kept so an upgrade can pass through this hop.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if keep_upgrade && name == header::UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// The origin-form target (`/path?query`) of an absolute URI; never empty.
/// Why a proxy request target is refused before anything is dialled, if it
/// is: a `CONNECT` target must be `host:port` (RFC 9110 §9.3.6), not a URL;
/// userinfo (`user:password@`) is never forwarded (RFC 9110 §4.2.4).
pub fn target_refusal(connect: bool, uri: &http::Uri) -> Option<&'static str> {
    if connect && (uri.scheme().is_some() || uri.path_and_query().is_some_and(|p| p.as_str() != "/")) {
        return Some("CONNECT takes host:port (authority form), not a URL");
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Some(
            "userinfo (user:password@) in the URL is never forwarded (RFC 9110 §4.2.4); send credentials in an Authorization header",
        );
    }
    None
}

/// `uri` as an origin-form target (`/path?query`).
pub fn origin_form(uri: &http::Uri) -> http::Uri {
    let path = if uri.path().starts_with('/') { uri.path().to_string() } else { format!("/{}", uri.path()) };
    let text = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    http::Uri::try_from(text).unwrap_or_else(|_| http::Uri::from_static("/"))
}

/// True when the request or response asks to switch protocols (`Connection: upgrade`).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// A random number in [0, 1) from the standard library's per-hasher random
/// keys: enough to spread retries, not for anything secret.
pub fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0);
    (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn strips_standard_and_listed_headers() {
        let mut headers = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let left: Vec<_> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn keeps_upgrade_when_asked() {
        let mut headers = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("host", "a")]);
        assert!(wants_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["connection"], "upgrade");
    }

    #[test]
    fn upgrade_needs_connection_token() {
        assert!(!wants_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(!wants_upgrade(&map(&[("connection", "upgrade")])));
        assert!(wants_upgrade(&map(&[("connection", "keep-alive, Upgrade"), ("upgrade", "h2c")])));
    }
}
