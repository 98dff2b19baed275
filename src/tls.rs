//! TLS material: where it comes from ([`TlsSources`]: flags, environment,
//! YAML, defaults; a file, or an environment variable holding the PEM text
//! for ECS secrets injection), loading and checking it, and the rustls
//! configurations: TLS 1.3 only, ring provider, client certificates required
//! by the server and presented by the agent.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::ConfigError;

/// ALPN protocol ids offered by the server, preferred first.
pub const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Where one piece of PEM material comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum PemSource {
    /// A file on disk.
    File(PathBuf),
    /// PEM text taken from the named environment variable.
    Env { var: String, pem: String },
}

impl fmt::Debug for PemSource {
    // Never print PEM text: it may be a private key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "File({})", path.display()),
            Self::Env { var, .. } => write!(f, "Env({var}, <redacted>)"),
        }
    }
}

impl fmt::Display for PemSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "{}", path.display()),
            Self::Env { var, .. } => write!(f, "environment variable {var}"),
        }
    }
}

impl PemSource {
    /// Reads the PEM text, naming the file or variable on failure.
    pub fn read(&self, key: &str) -> Result<String, ConfigError> {
        match self {
            Self::File(path) => std::fs::read_to_string(path).map_err(|e| {
                let problem = if e.kind() == std::io::ErrorKind::NotFound {
                    format!("file {} not found", path.display())
                } else {
                    format!("cannot read {}: {e}", path.display())
                };
                ConfigError::new(
                    key,
                    problem,
                    format!("create it with fluidity-certs, or set `{key}` to an existing PEM file"),
                )
            }),
            Self::Env { pem, .. } => Ok(pem.clone()),
        }
    }
}

/// TLS file paths as written in YAML (`tls:` section).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// This side's certificate chain (PEM).
    pub cert: Option<PathBuf>,
    /// This side's private key (PEM, PKCS#8 or SEC1).
    pub key: Option<PathBuf>,
    /// The Fluidity CA certificate that signs the peer (PEM).
    pub ca: Option<PathBuf>,
    /// The directory of the YAML file these came from: relative paths, and
    /// the default `certs/`, are resolved from it, not from the working
    /// directory (a service runs with `/` as its working directory).
    #[serde(skip)]
    pub dir: Option<PathBuf>,
}

/// TLS overrides from flags and the environment (paths and inline PEM).
#[derive(Debug, Default, Clone, clap::Args)]
pub struct TlsArgs {
    /// Certificate chain (PEM file) presented to the peer [YAML: tls.cert]
    #[arg(long = "cert", env = "FLUIDITY_TLS_CERT", value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM file, written 0600 by fluidity-certs) [YAML: tls.key]
    #[arg(long = "key", env = "FLUIDITY_TLS_KEY", value_name = "PATH")]
    pub key: Option<PathBuf>,
    /// CA certificate (PEM file) that must sign the peer's certificate [YAML: tls.ca]
    #[arg(long = "ca", env = "FLUIDITY_TLS_CA", value_name = "PATH")]
    pub ca: Option<PathBuf>,
    /// Certificate PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_CERT_PEM", hide = true, hide_env_values = true)]
    pub cert_pem: Option<String>,
    /// Private key PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_KEY_PEM", hide = true, hide_env_values = true)]
    pub key_pem: Option<String>,
    /// CA certificate PEM text, for secrets injected as environment variables.
    #[arg(long, env = "FLUIDITY_TLS_CA_PEM", hide = true, hide_env_values = true)]
    pub ca_pem: Option<String>,
}

/// Resolved sources of the three TLS inputs.
#[derive(Debug, Clone)]
pub struct TlsSources {
    pub cert: PemSource,
    pub key: PemSource,
    pub ca: PemSource,
}

impl TlsSources {
    /// Merges flags, environment, file and defaults: an explicit path (flag or
    /// `FLUIDITY_TLS_*`) wins, then inline PEM from the environment, then the
    /// YAML path, then `default_dir/<default name>`.
    pub fn resolve(args: &TlsArgs, file: &RawTls, default_dir: &Path, names: [&str; 3]) -> Self {
        let from_file = |path: &Path| file.dir.as_deref().map_or_else(|| path.to_path_buf(), |dir| dir.join(path));
        let pick = |path: &Option<PathBuf>, pem: &Option<String>, var: &str, yaml: &Option<PathBuf>, name: &str| {
            if let Some(path) = path {
                PemSource::File(path.clone())
            } else if let Some(pem) = pem {
                PemSource::Env { var: var.to_string(), pem: pem.clone() }
            } else if let Some(path) = yaml {
                PemSource::File(from_file(path))
            } else {
                PemSource::File(from_file(&default_dir.join(name)))
            }
        };
        Self {
            cert: pick(&args.cert, &args.cert_pem, "FLUIDITY_TLS_CERT_PEM", &file.cert, names[0]),
            key: pick(&args.key, &args.key_pem, "FLUIDITY_TLS_KEY_PEM", &file.key, names[1]),
            ca: pick(&args.ca, &args.ca_pem, "FLUIDITY_TLS_CA_PEM", &file.ca, names[2]),
        }
    }
}

/// A certificate chain, its private key and the CA trusted for the peer.
#[derive(Clone)]
pub struct TlsMaterial {
    pub certs: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub roots: Arc<RootCertStore>,
}

impl std::fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("certs", &self.certs.len())
            .field("key", &"<redacted>")
            .field("roots", &self.roots.len())
            .finish()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Errors building a rustls configuration from already-validated material.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("TLS setup failed: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

impl TlsMaterial {
    /// Loads and cross-checks the three inputs; `prefix` is the YAML section
    /// (`tls`) used to name the key at fault.
    pub fn load(sources: &TlsSources, prefix: &str) -> Result<Self, ConfigError> {
        let cert_key = format!("{prefix}.cert");
        let key_key = format!("{prefix}.key");
        let ca_key = format!("{prefix}.ca");
        let certs = parse_certs(&sources.cert.read(&cert_key)?, &cert_key, &sources.cert.to_string())?;
        let key = parse_key(&sources.key.read(&key_key)?, &key_key, &sources.key.to_string())?;
        let ca = parse_certs(&sources.ca.read(&ca_key)?, &ca_key, &sources.ca.to_string())?;

        let mut roots = RootCertStore::empty();
        for cert in ca {
            check_is_ca(cert.as_ref(), &ca_key, &sources.ca.to_string())?;
            roots.add(cert).map_err(|e| {
                ConfigError::new(
                    &ca_key,
                    format!("{} is not a usable CA certificate: {e}", sources.ca),
                    "use the ca.crt written by fluidity-certs",
                )
            })?;
        }
        let signing = provider().key_provider.load_private_key(key.clone_key()).map_err(|e| {
            ConfigError::new(
                &key_key,
                format!("{} is not a usable private key: {e}", sources.key),
                "use an ECDSA P-256, Ed25519 or RSA key in PEM",
            )
        })?;
        let certified = rustls::sign::CertifiedKey::new(certs.clone(), signing);
        if certified.keys_match().is_err() {
            return Err(ConfigError::new(
                &key_key,
                format!("{} does not match the certificate in {}", sources.key, sources.cert),
                "use the key generated together with that certificate",
            ));
        }
        if let Some(leaf) = certs.first() {
            check_validity(leaf.as_ref(), &cert_key, &sources.cert.to_string())?;
        }
        Ok(Self { certs, key: Arc::new(key), roots: Arc::new(roots) })
    }

    /// Refuses a certificate made for the other side: a server presenting a
    /// client certificate as its identity (its extended key usage names
    /// clientAuth only) would start and then fail every handshake.
    pub fn require_purpose(&self, server: bool, sources: &TlsSources, prefix: &str) -> Result<(), ConfigError> {
        let Some(leaf) = self.certs.first() else { return Ok(()) };
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else { return Ok(()) };
        let Ok(Some(usage)) = parsed.extended_key_usage() else { return Ok(()) };
        let usage = usage.value;
        let fits = usage.any || if server { usage.server_auth } else { usage.client_auth };
        if fits {
            return Ok(());
        }
        let (wanted, other, file) =
            if server { ("server", "client", "server.crt") } else { ("client", "server", "client.crt") };
        Err(ConfigError::new(
            format!("{prefix}.cert"),
            format!("{} is a {other} certificate (its extended key usage lacks {wanted} authentication)", sources.cert),
            format!("use the {file} written by fluidity-certs"),
        ))
    }

    /// The server side: TLS 1.3 only, a client certificate chained to our CA
    /// required, ALPN `h2` and `http/1.1`.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider()).build()?;
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }

    /// The agent side: TLS 1.3 only, trusts only our CA, presents the client
    /// certificate, offers `alpn` (the agent uses `h2`).
    pub fn client_config(&self, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(self.certs.clone(), self.key.clone_key())?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

/// The agent side with the server's identity decoupled from the handshake's
/// name: the certificate must be valid for `name` (fixed, our CA's), while
/// the SNI sent is the caller's choice (`sni` off sends none). An untrusted
/// certificate's error names its issuer ([`UntrustedIssuer`]).
pub fn client_config_for(
    material: &TlsMaterial,
    alpn: &[&[u8]],
    name: ServerName<'static>,
    sni: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let inner = WebPkiServerVerifier::builder_with_provider(material.roots.clone(), provider()).build()?;
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(FixedName { inner, name }))
        .with_client_auth_cert(material.certs.clone(), material.key.clone_key())?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.enable_sni = sni;
    Ok(Arc::new(config))
}

/// The certificate presented was not issued by a CA this side trusts; `issuer`
/// is the subject of the CA that did issue it (an intercepting proxy's, say).
#[derive(Debug, thiserror::Error)]
#[error("the certificate was issued by {issuer}, which is not a trusted CA")]
pub struct UntrustedIssuer {
    pub issuer: String,
    /// The issuer looks like a CA made by `fluidity-certs` (its name, or a
    /// CA of the trusted one's name whose key differs): the certificates
    /// were regenerated on one side, not intercepted.
    pub fluidity: bool,
}

/// Verifies against a fixed name with webpki, whatever name the handshake used.
#[derive(Debug)]
struct FixedName {
    inner: Arc<WebPkiServerVerifier>,
    name: ServerName<'static>,
}

impl ServerCertVerifier for FixedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _sent_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{BadSignature, UnknownIssuer};
        let verified = self.inner.verify_server_cert(end_entity, intermediates, &self.name, ocsp_response, now);
        match verified {
            Err(rustls::Error::InvalidCertificate(reason @ (UnknownIssuer | BadSignature))) => {
                let parsed = x509_parser::parse_x509_certificate(end_entity.as_ref());
                let issuer =
                    parsed.as_ref().map_or_else(|_| "an unreadable issuer".into(), |(_, c)| c.issuer().to_string());
                let fluidity_name = parsed.as_ref().is_ok_and(|(_, cert)| {
                    cert.issuer().iter_common_name().any(|cn| cn.as_str().is_ok_and(|cn| cn.starts_with("Fluidity CA")))
                });
                let fluidity = fluidity_name || reason == BadSignature;
                let other = rustls::OtherError(Arc::new(UntrustedIssuer { issuer, fluidity }));
                Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Other(other)))
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Refuses a trust anchor that is not a CA certificate (a leaf given as
/// `tls.ca` would otherwise fail every handshake with "unknown issuer").
fn check_is_ca(der: &[u8], key: &str, source: &str) -> Result<(), ConfigError> {
    let fix = "point it at the ca.crt written by fluidity-certs";
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| ConfigError::new(key, format!("{source} is not a readable certificate: {e}"), fix))?;
    let is_ca = cert.basic_constraints().ok().flatten().is_some_and(|bc| bc.value.ca);
    if !is_ca {
        return Err(ConfigError::new(
            key,
            format!(
                "{source} holds {}, which is not a CA certificate (a server or client certificate?)",
                cert.subject()
            ),
            fix,
        ));
    }
    Ok(())
}

fn parse_certs(pem: &str, key: &str, origin: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        Ok(_) => Err(ConfigError::new(
            key,
            format!("{origin} holds no PEM certificate"),
            "point it at a file starting with -----BEGIN CERTIFICATE-----",
        )),
        Err(e) => {
            Err(ConfigError::new(key, format!("{origin} is not valid PEM: {e}"), "regenerate it with fluidity-certs"))
        }
    }
}

fn parse_key(pem: &str, key: &str, origin: &str) -> Result<PrivateKeyDer<'static>, ConfigError> {
    match rustls_pemfile::private_key(&mut pem.as_bytes()) {
        Ok(Some(der)) => Ok(der),
        Ok(None) => Err(ConfigError::new(
            key,
            format!("{origin} holds no PEM private key"),
            "point it at the PKCS#8 or SEC1 PEM key written by fluidity-certs",
        )),
        Err(e) => {
            Err(ConfigError::new(key, format!("{origin} is not valid PEM: {e}"), "regenerate it with fluidity-certs"))
        }
    }
}

/// A readable name for a peer certificate: its subject CN, else its first DNS SAN.
pub fn peer_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    if let Some(cn) = parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()) {
        return Some(cn.to_string());
    }
    let san = parsed.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
        _ => None,
    })
}

/// Describes a handshake failure in a few words, for logs and metrics.
pub fn describe_handshake_error(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::NoCertificatesPresented) => "client presented no certificate".into(),
        Some(rustls::Error::InvalidCertificate(reason)) => {
            format!("invalid certificate: {reason:?}")
        }
        Some(rustls::Error::PeerIncompatible(reason)) => format!("incompatible peer: {reason:?}"),
        Some(other) => other.to_string(),
        None => error.to_string(),
    }
}

/// Largest HTTP/2 DATA frame either side accepts (the protocol default is
/// 16 KiB); bulk transfers then need fewer frames and write calls.
pub const MAX_H2_FRAME: u32 = 256 * 1024;

/// Refuses a certificate outside its validity window: the peer would refuse
/// it after the handshake, which in TLS 1.3 looks like success to the client
/// until its first read.
fn check_validity(der: &[u8], key: &str, source: &str) -> Result<(), ConfigError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| {
        ConfigError::new(
            key,
            format!("{source} is not a readable certificate: {e}"),
            "use the certificate fluidity-certs wrote",
        )
    })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if now > validity.not_after {
        return Err(ConfigError::new(
            key,
            format!("{source} expired on {}", validity.not_after),
            "issue a new one (fluidity-certs --force writes a new CA and pairs)",
        ));
    }
    if now < validity.not_before {
        return Err(ConfigError::new(
            key,
            format!("{source} is not valid before {} (is the clock right?)", validity.not_before),
            "check the system clock or issue a new certificate",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_source_debug_redacts() {
        let secret = "not-a-real-key-but-secret-text";
        let source = PemSource::Env { var: "FLUIDITY_TLS_KEY_PEM".into(), pem: secret.into() };
        assert!(!format!("{source:?}").contains(secret));
    }

    #[test]
    fn tls_precedence() {
        let file = RawTls { cert: Some("file.crt".into()), key: Some("file.key".into()), ca: None, dir: None };
        let args = TlsArgs { cert: Some("flag.crt".into()), key_pem: Some("PEM".into()), ..TlsArgs::default() };
        let got = TlsSources::resolve(&args, &file, Path::new("certs"), ["c.crt", "c.key", "ca.crt"]);
        assert_eq!(got.cert, PemSource::File("flag.crt".into()));
        assert!(matches!(got.key, PemSource::Env { .. }));
        assert_eq!(got.ca, PemSource::File("certs/ca.crt".into()));
    }
}
