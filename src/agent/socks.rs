//! SOCKS5 on the agent's port (RFC 1928), for programs that speak nothing
//! else: `curl --socks5-hostname`, `ALL_PROXY=socks5h://`, git, ssh helpers.
//!
//! The listener sniffs the first byte (5 is SOCKS, anything else HTTP). Only
//! CONNECT is offered, to a domain name (resolved by the server: `socks5h`),
//! an IPv4 or an IPv6 address (dialled as given). When the agent has
//! `proxy_auth`, username/password (RFC 1929) is the only method accepted.
//! The target is reached through the same HTTP/2 CONNECT stream as an HTTP
//! CONNECT, so the server's egress policy, metrics and activity apply; its
//! refusals come back as SOCKS reply codes.

use std::net::{Ipv4Addr, Ipv6Addr};

use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first byte of every SOCKS5 message from a client.
pub const VERSION: u8 = 5;

const NO_AUTH: u8 = 0x00;
const USER_PASSWORD: u8 = 0x02;
const NO_ACCEPTABLE_METHOD: u8 = 0xFF;
const CONNECT: u8 = 0x01;

/// RFC 1928 §6 reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    /// The reply for the server's answer to the CONNECT stream: its status
    /// and the dial error kind it names (`protocol::DIAL_ERROR_HEADER`).
    pub fn for_server_answer(status: StatusCode, dial_error: Option<&str>) -> Self {
        match (status, dial_error) {
            (StatusCode::OK, _) => Self::Succeeded,
            (StatusCode::FORBIDDEN, _) | (_, Some("denied")) => Self::NotAllowed,
            (_, Some("refused")) => Self::ConnectionRefused,
            (_, Some("dns")) => Self::HostUnreachable,
            (StatusCode::GATEWAY_TIMEOUT, _) | (_, Some("timeout")) => Self::TtlExpired,
            _ => Self::GeneralFailure,
        }
    }

    /// The complete reply message (the bound address is not meaningful
    /// through a tunnel: 0.0.0.0:0).
    pub fn message(self) -> [u8; 10] {
        [VERSION, self as u8, 0, 1, 0, 0, 0, 0, 0, 0]
    }
}

/// Where the client wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Name(String, u16),
    V4(Ipv4Addr, u16),
    V6(Ipv6Addr, u16),
}

impl Destination {
    /// `host:port` for the CONNECT stream (IPv6 in brackets).
    pub fn authority(&self) -> String {
        match self {
            Self::Name(name, port) => format!("{name}:{port}"),
            Self::V4(ip, port) => format!("{ip}:{port}"),
            Self::V6(ip, port) => format!("[{ip}]:{port}"),
        }
    }
}

/// Why a SOCKS negotiation ended without a destination.
#[derive(Debug, thiserror::Error)]
pub enum SocksError {
    #[error("connection closed or unreadable during SOCKS negotiation: {0}")]
    Io(#[from] std::io::Error),
    #[error("not SOCKS version 5 (got {0})")]
    Version(u8),
    #[error("the client offered no method this proxy accepts")]
    NoMethod,
    #[error("wrong SOCKS username or password")]
    BadCredentials,
    #[error("SOCKS command {0} is not supported (only CONNECT)")]
    Command(u8),
    #[error("SOCKS address type {0} is not supported")]
    AddressType(u8),
    #[error("the destination name is not valid")]
    BadName,
}

/// Runs the greeting, the optional RFC 1929 login (against `credentials`,
/// `user:password`) and reads the CONNECT request. Failures have already
/// been answered to the client when the protocol has an answer for them.
pub async fn negotiate<S>(stream: &mut S, credentials: Option<&str>) -> Result<Destination, SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let [version, count] = read_array(stream).await?;
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    let mut methods = vec![0u8; count as usize];
    stream.read_exact(&mut methods).await?;
    let wanted = if credentials.is_some() { USER_PASSWORD } else { NO_AUTH };
    if !methods.contains(&wanted) {
        stream.write_all(&[VERSION, NO_ACCEPTABLE_METHOD]).await?;
        return Err(SocksError::NoMethod);
    }
    stream.write_all(&[VERSION, wanted]).await?;
    if let Some(expected) = credentials {
        login(stream, expected).await?;
    }
    request(stream).await
}

/// RFC 1929: `1, ULEN, UNAME, PLEN, PASSWD`; answered `1, 0` or `1, 1`.
async fn login<S>(stream: &mut S, expected: &str) -> Result<(), SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let [version, user_len] = read_array(stream).await?;
    if version != 1 {
        return Err(SocksError::Version(version));
    }
    let mut user = vec![0u8; user_len as usize];
    stream.read_exact(&mut user).await?;
    let [password_len] = read_array(stream).await?;
    let mut password = vec![0u8; password_len as usize];
    stream.read_exact(&mut password).await?;
    let mut given = user;
    given.push(b':');
    given.extend_from_slice(&password);
    if !super::handler::constant_time_eq(&given, expected.as_bytes()) {
        stream.write_all(&[1, 1]).await?;
        return Err(SocksError::BadCredentials);
    }
    stream.write_all(&[1, 0]).await?;
    Ok(())
}

/// `5, CMD, 0, ATYP, ADDR, PORT`; unsupported commands and address types
/// are answered with their reply code.
async fn request<S>(stream: &mut S) -> Result<Destination, SocksError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let [version, command, _reserved, kind] = read_array(stream).await?;
    if version != VERSION {
        return Err(SocksError::Version(version));
    }
    if command != CONNECT {
        stream.write_all(&Reply::CommandNotSupported.message()).await?;
        return Err(SocksError::Command(command));
    }
    let destination = match kind {
        1 => {
            let ip: [u8; 4] = read_array(stream).await?;
            Destination::V4(ip.into(), u16::from_be_bytes(read_array(stream).await?))
        }
        3 => {
            let [len] = read_array(stream).await?;
            let mut name = vec![0u8; len as usize];
            stream.read_exact(&mut name).await?;
            let port = u16::from_be_bytes(read_array(stream).await?);
            match String::from_utf8(name) {
                Ok(name) if valid_name(&name) => Destination::Name(name, port),
                _ => {
                    stream.write_all(&Reply::HostUnreachable.message()).await?;
                    return Err(SocksError::BadName);
                }
            }
        }
        4 => {
            let ip: [u8; 16] = read_array(stream).await?;
            Destination::V6(ip.into(), u16::from_be_bytes(read_array(stream).await?))
        }
        other => {
            stream.write_all(&Reply::AddressTypeNotSupported.message()).await?;
            return Err(SocksError::AddressType(other));
        }
    };
    Ok(destination)
}

/// A host name that can stand in an authority: letters, digits, `-`, `.`,
/// `_` (no spaces, colons, slashes or `@`).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

async fn read_array<const N: usize, S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    stream.read_exact(&mut bytes).await?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `negotiate` on `input`; what it returned and what it wrote back.
    async fn run(input: &[u8], credentials: Option<&str>) -> (Result<Destination, String>, Vec<u8>) {
        let (mut client, mut agent) = tokio::io::duplex(1024);
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let result = negotiate(&mut agent, credentials).await.map_err(|e| e.to_string());
        drop(agent);
        let mut written = Vec::new();
        client.read_to_end(&mut written).await.unwrap();
        (result, written)
    }

    #[tokio::test]
    async fn negotiations_as_rfc_1928_and_1929_write_them() {
        let name = [&[5, 1, 0][..], &[5, 1, 0, 3, 11], b"example.com", &[1, 187]].concat();
        assert_eq!(run(&name, None).await, (Ok(Destination::Name("example.com".into(), 443)), vec![5, 0]));
        let v4 = [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 80];
        assert_eq!(run(&v4, None).await.0, Ok(Destination::V4(Ipv4Addr::LOCALHOST, 80)));
        let v6 = [&[5, 1, 0, 5, 1, 0, 4][..], &Ipv6Addr::LOCALHOST.octets(), &[0, 80]].concat();
        assert_eq!(run(&v6, None).await.0.unwrap().authority(), "[::1]:80");
        let login = [&[5, 1, 2, 1, 4][..], b"user", &[2], b"pw", &[5, 1, 0, 1, 10, 0, 0, 1, 0, 22]].concat();
        assert_eq!(
            run(&login, Some("user:pw")).await,
            (Ok(Destination::V4([10, 0, 0, 1].into(), 22)), vec![5, 2, 1, 0])
        );
    }

    #[tokio::test]
    async fn refusals_are_answered_and_malformed_input_ends_quietly() {
        let wrong = [&[5, 1, 2, 1, 4][..], b"user", &[2], b"no"].concat();
        assert_eq!(run(&wrong, Some("user:pw")).await, (Err(SocksError::BadCredentials.to_string()), vec![5, 2, 1, 1]));
        // Without the login method offered, auth cannot be skipped.
        assert_eq!(run(&[5, 1, 0], Some("user:pw")).await.1, vec![5, 0xFF]);
        assert_eq!(run(&[5, 1, 0, 5, 2, 0, 1], None).await.1[3..5], [0x07, 0]);
        assert_eq!(run(&[5, 1, 0, 5, 1, 0, 9], None).await.1[3..5], [0x08, 0]);
        let spaced = [&[5, 1, 0, 5, 1, 0, 3, 5][..], b"a b@c", &[0, 80]].concat();
        assert_eq!(run(&spaced, None).await.1[3..5], [0x04, 0]);
        for malformed in [&[4, 1, 0][..], &[5, 0], &[5, 3, 0], &[5], &[], &[5, 1, 0, 5, 1, 0, 3, 200, b'a']] {
            let (result, _) = run(malformed, None).await;
            assert!(result.is_err(), "{malformed:?}");
        }
    }

    #[test]
    fn server_answers_map_to_reply_codes() {
        let cases = [
            (StatusCode::OK, None, Reply::Succeeded),
            (StatusCode::FORBIDDEN, Some("denied"), Reply::NotAllowed),
            (StatusCode::BAD_GATEWAY, Some("refused"), Reply::ConnectionRefused),
            (StatusCode::BAD_GATEWAY, Some("dns"), Reply::HostUnreachable),
            (StatusCode::GATEWAY_TIMEOUT, Some("timeout"), Reply::TtlExpired),
            (StatusCode::SERVICE_UNAVAILABLE, None, Reply::GeneralFailure),
        ];
        for (status, kind, want) in cases {
            assert_eq!(Reply::for_server_answer(status, kind), want, "{status} {kind:?}");
        }
    }
}
