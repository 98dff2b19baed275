//! Certificate tooling: a private CA, a server certificate (DNS name
//! `fluidity-server` plus extra names) and client certificates, ECDSA P-256,
//! generated with rcgen (no openssl). Keys are written with mode 0600 and no
//! file is ever overwritten without `force`.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

/// File names written by [`generate`].
pub const FILES: [&str; 5] = ["ca.crt", "server.crt", "server.key", "client.crt", "client.key"];

/// Errors from certificate generation and writing.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} is a symbolic link; remove it (certificates and keys are never written through links)")]
    Symlink(PathBuf),
    #[error("{0} already exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("invalid subject alternative name `{0}`: use a DNS name or an IP address")]
    BadSan(String),
    #[error("validity must be at least one day")]
    BadValidity,
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

/// A PEM certificate and its PEM private key.
#[derive(Clone)]
pub struct Pair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair").field("key_pem", &"<redacted>").finish_non_exhaustive()
    }
}

/// Validity window of a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From one hour ago (clock skew) to `days` from now.
    pub fn days(days: u32) -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - Duration::hours(1), not_after: now + Duration::days(i64::from(days)) }
    }

    /// A window that ended yesterday (for tests of expiry handling).
    pub fn expired() -> Self {
        let now = OffsetDateTime::now_utc();
        Self { not_before: now - Duration::days(30), not_after: now - Duration::days(1) }
    }
}

/// A certificate authority able to sign server and client certificates.
pub struct Ca {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    /// Creates a self-signed CA named `name` plus a tag of its own key, so
    /// that two CAs never share a subject: a certificate from another
    /// Fluidity CA is then reported as "unknown issuer", not "bad signature".
    pub fn new(name: &str, validity: Validity) -> Result<Self, CertsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let tag: String = key.public_key_raw().iter().rev().take(4).map(|b| format!("{b:02x}")).collect();
        params.distinguished_name = subject(&format!("{name} {tag}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// The CA certificate in PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a server certificate for `fluidity-server` (or whatever `names` hold:
    /// DNS names and IP addresses).
    pub fn issue_server(&self, names: &[String], validity: Validity) -> Result<Pair, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = names.iter().map(|n| san(n)).collect::<Result<_, _>>()?;
        params.distinguished_name = subject(names.first().map(String::as_str).unwrap_or(crate::DEFAULT_SERVER_NAME));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, validity)
    }

    /// Issues a client certificate whose subject CN is `name`.
    pub fn issue_client(&self, name: &str, validity: Validity) -> Result<Pair, CertsError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = subject(name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, validity)
    }

    fn issue(&self, mut params: CertificateParams, validity: Validity) -> Result<Pair, CertsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = validity.not_before;
        params.not_after = validity.not_after;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(Pair { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }
}

fn subject(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "Fluidity");
    name.push(DnType::CommonName, common_name);
    name
}

fn san(name: &str) -> Result<SanType, CertsError> {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '*')
        });
    if !valid {
        return Err(CertsError::BadSan(name.to_string()));
    }
    Ok(SanType::DnsName(name.try_into().map_err(|_| CertsError::BadSan(name.to_string()))?))
}

/// What `fluidity-certs` should create.
#[derive(Debug, Clone, clap::Args)]
pub struct CertOptions {
    /// Directory the five files are written to
    #[arg(long, env = "FLUIDITY_CERTS_DIR", default_value = "certs")]
    pub dir: PathBuf,
    /// Extra names for the server certificate (DNS names or IPs); repeatable.
    /// `fluidity-server` is always included.
    #[arg(long = "san", env = "FLUIDITY_CERTS_SAN", value_delimiter = ',')]
    pub sans: Vec<String>,
    /// Common name of the client certificate (shown in server logs)
    #[arg(long, env = "FLUIDITY_CERTS_CLIENT_NAME", default_value = "fluidity-agent")]
    pub client_name: String,
    /// Validity of every certificate, in days
    #[arg(long, env = "FLUIDITY_CERTS_DAYS", default_value_t = 825)]
    pub days: u32,
    /// Overwrite existing files (the old CA stops being trusted by anything new)
    #[arg(long)]
    pub force: bool,
}

/// Creates the CA, server and client pairs in `options.dir`; refuses, writing
/// nothing, if any target exists and `force` is not set. Returns the paths written.
pub fn generate(options: &CertOptions) -> Result<Vec<PathBuf>, CertsError> {
    if options.days == 0 {
        return Err(CertsError::BadValidity);
    }
    let paths: Vec<PathBuf> = FILES.iter().map(|f| options.dir.join(f)).collect();
    // symlink_metadata: a dangling symbolic link counts as existing too, and
    // a link is never written through, even with --force.
    for path in &paths {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(CertsError::Symlink(path.clone())),
            Ok(_) if !options.force => return Err(CertsError::Exists(path.clone())),
            _ => {}
        }
    }
    let mut names = vec![crate::DEFAULT_SERVER_NAME.to_string()];
    names.extend(options.sans.iter().filter(|s| *s != crate::DEFAULT_SERVER_NAME).cloned());
    let validity = Validity::days(options.days);
    let ca = Ca::new("Fluidity CA", validity)?;
    let server = ca.issue_server(&names, validity)?;
    let client = ca.issue_client(&options.client_name, validity)?;

    std::fs::create_dir_all(&options.dir).map_err(|source| CertsError::Write { path: options.dir.clone(), source })?;
    let contents = [&ca.cert_pem, &server.cert_pem, &server.key_pem, &client.cert_pem, &client.key_pem];
    // All five are written beside their targets first, then put in place:
    // nothing is changed unless everything could be written.
    let staged: Vec<PathBuf> = paths.iter().map(|p| p.with_extension(format!("{}.new", extension(p)))).collect();
    let outcome = (|| {
        for ((path, text), stage) in paths.iter().zip(contents).zip(&staged) {
            let private = path.extension().is_some_and(|e| e == "key");
            write_file(stage, text, private, false)?;
        }
        for (stage, path) in staged.iter().zip(&paths) {
            place(stage, path, options.force)?;
        }
        Ok(())
    })();
    for stage in &staged {
        let _ = std::fs::remove_file(stage);
    }
    outcome.map(|()| paths)
}

fn extension(path: &Path) -> String {
    path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default()
}

/// Moves the staged file to `path`: a rename (which replaces a link itself,
/// never its target) with `force`, else a hard link that fails if anything
/// appeared at `path` meanwhile.
fn place(stage: &Path, path: &Path, force: bool) -> Result<(), CertsError> {
    let wrap = |source| CertsError::Write { path: path.to_path_buf(), source };
    if force {
        return std::fs::rename(stage, path).map_err(wrap);
    }
    std::fs::hard_link(stage, path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists { CertsError::Exists(path.to_path_buf()) } else { wrap(e) }
    })
}

/// Writes `text` to `path`; private files get mode 0600 from creation on.
pub fn write_file(path: &Path, text: &str, private: bool, overwrite: bool) -> Result<(), CertsError> {
    let wrap = |source| CertsError::Write { path: path.to_path_buf(), source };
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    if overwrite {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists { CertsError::Exists(path.to_path_buf()) } else { wrap(e) }
    })?;
    #[cfg(unix)]
    if private {
        // An overwritten file keeps its old mode; force 0600 for keys.
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(wrap)?;
    }
    file.write_all(text.as_bytes()).map_err(wrap)?;
    file.sync_all().map_err(wrap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(dir: &Path) -> CertOptions {
        CertOptions {
            dir: dir.to_path_buf(),
            sans: vec!["127.0.0.1".into(), "vpn.example".into()],
            client_name: "laptop".into(),
            days: 30,
            force: false,
        }
    }

    #[test]
    fn writes_five_files_keys_private() {
        let dir = tempfile::tempdir().unwrap();
        let written = generate(&options(dir.path())).unwrap();
        assert_eq!(written.len(), 5);
        #[cfg(unix)]
        for path in &written {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
            let want = if path.extension().unwrap() == "key" { 0o600 } else { 0o644 };
            assert_eq!(mode, want, "{}", path.display());
        }
        let server = std::fs::read(dir.path().join("server.crt")).unwrap();
        let der = rustls_pemfile::certs(&mut server.as_slice()).next().unwrap().unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = format!("{:?}", cert.subject_alternative_name().unwrap().unwrap().value);
        assert!(
            sans.contains("fluidity-server")
                && sans.contains("vpn.example")
                && sans.contains("IPAddress([127, 0, 0, 1])"),
            "{sans}"
        );
        let client = std::fs::read(dir.path().join("client.crt")).unwrap();
        let der = rustls_pemfile::certs(&mut client.as_slice()).next().unwrap().unwrap();
        assert_eq!(crate::tls::peer_name(&der).as_deref(), Some("laptop"));
    }

    #[test]
    fn refuses_to_overwrite_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.key"), "keep me").unwrap();
        let err = generate(&options(dir.path())).unwrap_err();
        assert!(matches!(err, CertsError::Exists(ref p) if p.ends_with("client.key")), "{err}");
        assert!(!dir.path().join("ca.crt").exists());
        assert_eq!(std::fs::read_to_string(dir.path().join("client.key")).unwrap(), "keep me");

        let mut forced = options(dir.path());
        forced.force = true;
        generate(&forced).unwrap();
        assert!(std::fs::read_to_string(dir.path().join("client.key")).unwrap().contains("PRIVATE KEY"));
    }

    #[test]
    fn bad_san_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut bad = options(dir.path());
        bad.sans = vec!["not a name".into()];
        assert!(generate(&bad).unwrap_err().to_string().contains("`not a name`"));
        assert!(!dir.path().join("ca.crt").exists());
    }
}
