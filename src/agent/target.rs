//! What a local client asked for, decided from the method and request target
//! alone: a `CONNECT host:port` tunnel, an absolute `http://` request, or
//! something this proxy cannot serve (with the reason).

use http::uri::Authority;
use http::{Method, Uri};

use crate::http_util::origin_form;

/// The classified request target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `CONNECT host:port`.
    Connect(Authority),
    /// An absolute `http://` URL: where to go, and the origin-form path.
    Http { authority: Authority, path: Uri },
    /// Not servable; the text says why.
    Invalid(String),
}

/// Classifies `uri` as received with `method`.
pub fn classify(method: &Method, uri: &Uri) -> Target {
    if let Some(reason) = crate::http_util::target_refusal(method == Method::CONNECT, uri) {
        return Target::Invalid(reason.into());
    }
    if method == Method::CONNECT {
        return match uri.authority() {
            Some(authority) if authority.port_u16().is_some() && !authority.host().is_empty() => {
                Target::Connect(authority.clone())
            }
            _ => Target::Invalid("CONNECT needs a host:port target".into()),
        };
    }
    match (uri.scheme_str(), uri.authority()) {
        (Some("http"), Some(authority)) if !authority.host().is_empty() => {
            Target::Http { authority: authority.clone(), path: origin_form(uri) }
        }
        _ => Target::Invalid(format!(
            "{uri} is not an http:// URL; this is a proxy: use it with curl -x or your browser's proxy settings (https goes through CONNECT)"
        )),
    }
}

/// The `host:port` to open a tunnel to for an `http://` authority (port 80 by default).
pub fn tunnel_authority(authority: &Authority) -> Option<Authority> {
    let port = authority.port_u16().unwrap_or(80);
    Authority::try_from(format!("{}:{port}", authority.host())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: [(&str, &str, &str); 11] = [
            ("CONNECT", "example.com:443", "connect example.com:443"),
            ("CONNECT", "example.com", "invalid"),
            ("GET", "http://example.com/a?b=1", "http example.com /a?b=1"),
            ("GET", "http://example.com", "http example.com /"),
            ("POST", "http://[::1]:8080/x", "http [::1]:8080 /x"),
            ("GET", "/relative", "invalid"),
            ("GET", "https://example.com/", "invalid"),
            ("GET", "ftp://example.com/", "invalid"),
            ("GET", "http://user:pw@example.com/", "invalid"),
            ("CONNECT", "http://example.com:80/", "invalid"),
            ("CONNECT", "user@example.com:443", "invalid"),
        ];
        for (method, target, want) in cases {
            let got = match classify(&method.parse().unwrap(), &target.parse().unwrap()) {
                Target::Connect(a) => format!("connect {a}"),
                Target::Http { authority, path } => format!("http {authority} {path}"),
                Target::Invalid(_) => "invalid".into(),
            };
            assert_eq!(got, want, "{method} {target}");
        }
        // Found by fuzzing: an absolute URI whose path is empty.
        let odd: Uri = "http://+7#+*#1".parse().unwrap();
        assert!(matches!(classify(&Method::GET, &odd), Target::Http { path, .. } if path.path().starts_with('/')));
        let authority: Authority = "example.com".parse().unwrap();
        assert_eq!(tunnel_authority(&authority).unwrap().as_str(), "example.com:80");
    }
}
