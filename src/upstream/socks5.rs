//! SOCKS5 `CONNECT` through a proxy (RFC 1928), with RFC 1929 login.
//!
//! Written here rather than with hyper-util's `SocksV5` connector so that a
//! refusal keeps its reply code's meaning and the proxy it came from. With
//! `socks5h://` the destination's name goes to the proxy unresolved; with
//! `socks5://` the agent resolves it first, as curl does.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Scheme, UpstreamError, UpstreamProxy, dial_proxy, join_host_port};

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const LOGIN: u8 = 2;
const NO_ACCEPTABLE: u8 = 0xff;

/// A stream to `host:port` through the SOCKS5 proxy `proxy`, and how it went.
pub(super) async fn tunnel(proxy: &UpstreamProxy, host: &str, port: u16) -> Result<(TcpStream, String), UpstreamError> {
    let target = join_host_port(host, port);
    // The address first: a name that does not resolve locally never reaches the proxy.
    let address = destination(proxy, host, port).await?;
    let mut stream = dial_proxy(proxy).await?;
    let io = |e: std::io::Error| UpstreamError::ProxyUnreachable {
        proxy: proxy.to_string(),
        reason: format!("the connection broke during the SOCKS5 handshake ({e})"),
    };
    let methods: &[u8] = if proxy.credentials.is_some() { &[NO_AUTH, LOGIN] } else { &[NO_AUTH] };
    let mut greeting = vec![VERSION, methods.len() as u8];
    greeting.extend_from_slice(methods);
    stream.write_all(&greeting).await.map_err(io)?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice).await.map_err(io)?;
    let auth = |reason: &str| UpstreamError::SocksAuth { proxy: proxy.to_string(), reason: reason.into() };
    match choice {
        [VERSION, NO_AUTH] => {}
        [VERSION, LOGIN] => login(&mut stream, proxy).await?,
        [VERSION, NO_ACCEPTABLE] if proxy.credentials.is_none() => {
            return Err(auth("it requires a login; put USER:PASSWORD in the proxy URL"));
        }
        [VERSION, NO_ACCEPTABLE] => return Err(auth("it accepts neither no authentication nor a login")),
        [VERSION, other] => {
            return Err(auth(&format!("it chose authentication method {other}, which was not offered")));
        }
        _ => {
            return Err(UpstreamError::Protocol {
                proxy: proxy.to_string(),
                reason: "it does not speak SOCKS5".into(),
            });
        }
    }
    let mut request = vec![VERSION, 1, 0];
    request.extend_from_slice(&address);
    stream.write_all(&request).await.map_err(io)?;
    let mut reply = [0u8; 4];
    stream.read_exact(&mut reply).await.map_err(io)?;
    if reply[0] != VERSION {
        return Err(UpstreamError::Protocol { proxy: proxy.to_string(), reason: "its reply is not SOCKS5".into() });
    }
    if reply[1] != 0 {
        let meaning = format!("{} (SOCKS5 reply {})", reply_meaning(reply[1]), reply[1]);
        return Err(UpstreamError::SocksRefused { proxy: proxy.to_string(), target, meaning });
    }
    // The bound address that follows is of no use here; read past it.
    let rest = match reply[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => usize::from(stream.read_u8().await.map_err(io)?) + 2,
        other => {
            let reason = format!("its reply has the unknown address type {other}");
            return Err(UpstreamError::Protocol { proxy: proxy.to_string(), reason });
        }
    };
    let mut bound = vec![0u8; rest];
    stream.read_exact(&mut bound).await.map_err(io)?;
    let login = if choice[1] == LOGIN { " after a login" } else { "" };
    Ok((stream, format!("SOCKS5 CONNECT to {target} succeeded{login}")))
}

/// The request's address field: a name for `socks5h`, else an IP address.
async fn destination(proxy: &UpstreamProxy, host: &str, port: u16) -> Result<Vec<u8>, UpstreamError> {
    let ip = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip,
        Err(_) if proxy.scheme == Scheme::Socks5h => {
            let name = host.as_bytes();
            let length = u8::try_from(name.len()).map_err(|_| UpstreamError::Direct {
                target: host.to_string(),
                reason: "the name is longer than SOCKS5 allows (255 bytes)".into(),
            })?;
            let mut field = vec![3, length];
            field.extend_from_slice(name);
            field.extend_from_slice(&port.to_be_bytes());
            return Ok(field);
        }
        Err(_) => {
            let resolved = tokio::net::lookup_host((host, port)).await.ok().and_then(|mut addrs| addrs.next());
            let Some(addr) = resolved else {
                return Err(UpstreamError::Direct {
                    target: join_host_port(host, port),
                    reason: "the name does not resolve here; use socks5h:// to let the proxy resolve it".into(),
                });
            };
            addr.ip()
        }
    };
    let mut field = match ip {
        std::net::IpAddr::V4(v4) => [&[1u8][..], &v4.octets()].concat(),
        std::net::IpAddr::V6(v6) => [&[4u8][..], &v6.octets()].concat(),
    };
    field.extend_from_slice(&port.to_be_bytes());
    Ok(field)
}

/// RFC 1929 username/password sub-negotiation.
async fn login(stream: &mut TcpStream, proxy: &UpstreamProxy) -> Result<(), UpstreamError> {
    let auth = |reason: &str| UpstreamError::SocksAuth { proxy: proxy.to_string(), reason: reason.into() };
    let Some((user, password)) = &proxy.credentials else {
        return Err(auth("it chose a login, which was not offered"));
    };
    let (user, password) = (user.as_bytes(), password.expose().as_bytes());
    // RFC 1929: both fields are 1 to 255 bytes.
    let (Ok(user_len @ 1..), Ok(password_len @ 1..)) = (u8::try_from(user.len()), u8::try_from(password.len())) else {
        return Err(auth("the user name and password must each be 1 to 255 bytes for a SOCKS5 login"));
    };
    let mut message = vec![1, user_len];
    message.extend_from_slice(user);
    message.push(password_len);
    message.extend_from_slice(password);
    let io = |e: std::io::Error| auth(&format!("the connection broke during the login ({e})"));
    stream.write_all(&message).await.map_err(io)?;
    let mut status = [0u8; 2];
    stream.read_exact(&mut status).await.map_err(io)?;
    if status[0] != 1 {
        return Err(auth("its answer to the login is not RFC 1929's"));
    }
    if status[1] != 0 {
        return Err(auth("the user name or password was not accepted"));
    }
    Ok(())
}

/// What a SOCKS5 reply code means (RFC 1928 §6).
fn reply_meaning(code: u8) -> &'static str {
    match code {
        1 => "general failure at the proxy",
        2 => "its rules do not allow this connection",
        3 => "the network is unreachable from the proxy",
        4 => "the host is unreachable from the proxy",
        5 => "the connection was refused (nothing listens there?)",
        6 => "the connection timed out at the proxy",
        7 => "the proxy does not support CONNECT",
        8 => "the proxy does not support this address type",
        _ => "an unassigned reply code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// A SOCKS5 proxy that accepts a login and answers CONNECT with `reply`;
    /// returns what the client sent as the request.
    async fn proxy(reply: u8) -> (UpstreamProxy, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut greeting = [0u8; 4];
            s.read_exact(&mut greeting).await.unwrap();
            assert_eq!(greeting, [5, 2, 0, 2]);
            s.write_all(&[5, 2]).await.unwrap();
            let mut login = [0u8; 2 + 4 + 1 + 6];
            s.read_exact(&mut login).await.unwrap();
            assert_eq!(&login, b"\x01\x04jane\x06secret");
            s.write_all(&[1, 0]).await.unwrap();
            let mut request = vec![0u8; 4 + 1 + 13 + 2];
            s.read_exact(&mut request).await.unwrap();
            s.write_all(&[5, reply, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
            request
        });
        (UpstreamProxy::parse(&format!("socks5h://jane:secret@{addr}"), "test").unwrap(), task)
    }

    #[tokio::test]
    async fn names_go_unresolved_and_refusals_keep_their_meaning() {
        let (p, request) = proxy(0).await;
        tunnel(&p, "fluidity.test", 443).await.unwrap();
        assert_eq!(request.await.unwrap(), b"\x05\x01\x00\x03\x0dfluidity.test\x01\xbb");
        let (p, _) = proxy(5).await;
        let error = tunnel(&p, "fluidity.test", 443).await.unwrap_err().to_string();
        assert!(error.contains("could not connect to fluidity.test:443: the connection was refused"), "{error}");
        assert!(error.contains("(SOCKS5 reply 5)") && !error.contains("secret"), "{error}");
    }
}
