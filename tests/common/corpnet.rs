//! A corporate network built from three network namespaces, for tests of the
//! agent's upstream proxy:
//!
//! ```text
//!   client 198.18.1.2 ── 198.18.1.1 gateway 198.18.2.1 ── 198.18.2.2 server
//!                         Squid :3128, Dante :1080
//! ```
//!
//! - `client` has a route to 198.18.1.0/24 only: a direct dial of the server
//!   fails with "Network is unreachable", and it resolves no name but
//!   localhost, so names must travel to the proxy unresolved.
//! - `gateway` does not forward IP (`net.ipv4.ip_forward=0`): the only way
//!   through is a proxy running in it. It resolves [`SERVER_NAMES`] to
//!   [`SERVER_IP`] through `/etc/netns/<gateway>/hosts`.
//! - `server` has a route to 198.18.2.0/24 only.
//!
//! The veth pairs are created inside the namespaces, addresses come from
//! 198.18.0.0/15 (reserved for benchmarking), no namespace has a default
//! route and nothing is linked to the machine's own namespace. Everything
//! (namespaces, `/etc/netns/<name>` directories, processes, temporary
//! directories) is removed on drop, also when a test panics. Needs root; if
//! a namespace cannot be created the test fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::{CurlOutput, Proc, spawn_program};

const IP: &str = "/usr/sbin/ip";
/// Every namespace of this fixture is named `<PREFIX><pid>-<n>-<role>`.
const PREFIX: &str = "fluidity-cn";
/// Every Squid of this fixture runs as service `<SQUID_PREFIX><pid>x<n>`.
const SQUID_PREFIX: &str = "fluiditycn";

pub const CLIENT_IP: &str = "198.18.1.2";
/// The gateway's address on the client's side, where the proxies listen.
pub const GATEWAY_IP: &str = "198.18.1.1";
/// The gateway's address on the server's side (the proxies' outgoing address).
pub const GATEWAY_OUTSIDE_IP: &str = "198.18.2.1";
pub const SERVER_IP: &str = "198.18.2.2";
/// Names the gateway (only) resolves to [`SERVER_IP`].
pub const SERVER_NAMES: [&str; 2] = ["fluidity.test", "api.fluidity.test"];

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Runs `ip args`, panicking with its stderr and `hint` if it fails.
fn ip(args: &[&str], hint: &str) {
    let output = Command::new(IP)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {IP} (iproute2): {e}; {hint}"));
    assert!(
        output.status.success(),
        "ip {} failed: {}; {hint}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

/// One network namespace, deleted on drop with its `/etc/netns/<name>` directory.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A namespace of its own with only `lo` up, named like the
    /// [`Corpnet`]'s (so a test process killed before its drops has it
    /// removed by the next fixture, as theirs).
    pub fn alone(role: &str) -> Self {
        remove_stale();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self::create(format!("{PREFIX}{}-{n}-{role}", std::process::id()))
    }

    fn create(name: String) -> Self {
        ip(
            &["netns", "add", &name],
            "the corpnet tests build network namespaces and need root (CAP_SYS_ADMIN); they do not skip",
        );
        let netns = Self { name };
        ip(&["-n", &netns.name, "link", "set", "lo", "up"], "bringing lo up");
        netns
    }

    /// `/etc/netns/<name>`: `ip netns exec` bind-mounts each file in it over
    /// the same file in /etc for the program it runs.
    pub fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.name)
    }

    /// Writes `/etc/netns/<name>/<file>` (see [`Netns::etc_dir`]).
    pub fn write_etc(&self, file: &str, text: &str) {
        std::fs::create_dir_all(self.etc_dir()).unwrap();
        std::fs::write(self.etc_dir().join(file), text).unwrap();
    }

    fn exec_args<'a>(&'a self, program: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        all
    }

    /// `program args` inside the namespace, stderr collected, killed on drop.
    pub fn spawn(&self, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        spawn_program(Path::new(IP), &self.exec_args(program, args), envs)
    }

    /// Runs `program args` inside the namespace to completion (60 s cap).
    pub async fn output(&self, program: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
        let mut command = tokio::process::Command::new(IP);
        command.args(self.exec_args(program, args)).envs(envs.iter().copied());
        command.stdin(Stdio::null()).kill_on_drop(true);
        tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .unwrap_or_else(|_| panic!("{program} {args:?} in {} ran over 60 s", self.name))
            .unwrap()
    }

    /// Debian's curl inside the namespace (`-sS --max-time 10`, then `args`).
    pub async fn curl(&self, args: &[&str]) -> CurlOutput {
        let all = [&["-sS", "--max-time", "10"], args].concat();
        let output = self.output("curl", &all, &[]).await;
        CurlOutput {
            code: output.status.code(),
            stdout: output.stdout,
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Tries to open a TCP connection to `host:port` from inside the
    /// namespace until one succeeds (Ok) or `within` has passed (Err with the
    /// last error, e.g. "[Errno 101] Network is unreachable").
    pub async fn dial(&self, host: &str, port: u16, within: Duration) -> Result<(), String> {
        let output = self
            .output("python3", &["-c", DIAL, host, &port.to_string(), &within.as_secs_f64().to_string()], &[])
            .await;
        if output.status.success() { Ok(()) } else { Err(String::from_utf8_lossy(&output.stderr).trim().to_string()) }
    }

    /// A Python HTTP origin on `ip:port` answering every GET with
    /// `origin <port> <path>`, over TLS with `tls` = (cert, key) PEM files.
    /// Returns once it listens.
    pub async fn http_origin(&self, ip: &str, port: u16, tls: Option<(&Path, &Path)>) -> Proc {
        let port = port.to_string();
        let mut args = vec!["-c", ORIGIN, ip, &port];
        if let Some((cert, key)) = tls {
            args.extend([cert.to_str().unwrap(), key.to_str().unwrap()]);
        }
        let origin = self.spawn("python3", &args, &[]);
        origin.wait_for("origin listening").await;
        origin
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new(IP).args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

/// Connects to argv[1]:argv[2] until it works or argv[3] seconds have passed.
const DIAL: &str = r#"
import socket, sys, time
host, port, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + float(sys.argv[3])
while True:
    try:
        socket.create_connection((host, port), timeout=2).close()
        sys.exit(0)
    except OSError as e:
        if time.monotonic() >= deadline:
            print(e, file=sys.stderr)
            sys.exit(1)
        time.sleep(0.05)
"#;

/// HTTP(S) origin: argv = ip port [cert key].
const ORIGIN: &str = r#"
import http.server, ssl, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("origin %s %s" % (sys.argv[2], self.path)).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), Handler)
if len(sys.argv) > 4:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = context.wrap_socket(server.socket, server_side=True)
print("origin listening", file=sys.stderr, flush=True)
server.serve_forever()
"#;

/// The three namespaces, linked by two veth pairs; dropping it deletes them
/// (and their veths) and their `/etc/netns` directories.
pub struct Corpnet {
    pub client: Netns,
    pub gateway: Netns,
    pub server: Netns,
}

impl Corpnet {
    pub fn new() -> Self {
        remove_stale();
        let stem = format!("{PREFIX}{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let client = Netns::create(format!("{stem}-client"));
        let gateway = Netns::create(format!("{stem}-gateway"));
        let server = Netns::create(format!("{stem}-server"));
        let net = Self { client, gateway, server };
        let (c, g, s) = (net.client.name.as_str(), net.gateway.name.as_str(), net.server.name.as_str());
        // Interface names live inside each namespace, so they need not be unique.
        let veth = "creating a veth pair between two namespaces";
        ip(&["link", "add", "to-gw", "netns", c, "type", "veth", "peer", "name", "to-client", "netns", g], veth);
        ip(&["link", "add", "to-server", "netns", g, "type", "veth", "peer", "name", "to-gw", "netns", s], veth);
        for (ns, dev, address) in [
            (c, "to-gw", "198.18.1.2/24"),
            (g, "to-client", "198.18.1.1/24"),
            (g, "to-server", "198.18.2.1/24"),
            (s, "to-gw", "198.18.2.2/24"),
        ] {
            ip(&["-n", ns, "addr", "add", address, "dev", dev], "adding an address");
            ip(&["-n", ns, "link", "set", dev, "up"], "bringing a veth up");
        }
        // The default in a new namespace; made explicit, since the whole
        // point is that only a proxy gets through the gateway.
        let forwarding = Command::new(IP)
            .args(["netns", "exec", g, "sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward"])
            .status()
            .unwrap();
        assert!(forwarding.success(), "cannot turn IP forwarding off in {g}");

        let localhost = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n";
        // A resolver that answers nothing, at once (port unreachable), whatever the machine's own is.
        let resolv = "nameserver 127.0.0.1\n";
        for netns in [&net.client, &net.gateway, &net.server] {
            netns.write_etc("resolv.conf", resolv);
            netns.write_etc("hosts", localhost);
        }
        net.gateway.write_etc("hosts", &format!("{localhost}{SERVER_IP} {}\n", SERVER_NAMES.join(" ")));
        net
    }
}

/// Deletes namespaces (and their /etc/netns directories) this fixture left
/// behind in a test process that no longer runs (killed before its drops).
fn remove_stale() {
    let dead = |pid: &str| pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists();
    for entry in std::fs::read_dir("/run/netns").into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(PREFIX).and_then(|rest| rest.split('-').next()) else { continue };
        if dead(pid) {
            drop(Netns { name });
        }
    }
    for segment in squid_segments(SQUID_PREFIX) {
        let name = segment.file_name().unwrap().to_string_lossy().into_owned();
        let pid = name.strip_prefix(SQUID_PREFIX).and_then(|rest| rest.split('x').next()).unwrap_or("");
        if dead(pid) {
            let _ = std::fs::remove_file(segment);
        }
    }
}

/// Waits (15 s) until `proc` has logged a line with `needle`; panics if it
/// exits first or never does, with everything it wrote.
async fn wait_started(proc: &mut Proc, what: &str, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if proc.lines().iter().any(|l| l.contains(needle)) {
            return;
        }
        if let Ok(Some(status)) = proc.child.try_wait() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            panic!("{what} exited ({status}) before it listened:\n{}", proc.lines().join("\n"));
        }
        if Instant::now() > deadline {
            panic!("{what} did not log {needle:?} within 15 s:\n{}", proc.lines().join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn chown_recursive(dir: &Path, owner: &str) {
    let status = Command::new("chown").args(["-R", owner, dir.to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "chown -R {owner} {}", dir.display());
}

/// Polls `path` (5 s) until it contains `needle`; its contents.
async fn wait_file(path: &Path, needle: &str) -> String {
    for _ in 0..100 {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{} never held {needle:?}:\n{}", path.display(), std::fs::read_to_string(path).unwrap_or_default());
}

#[derive(Debug, Clone, Default)]
pub enum SquidAuth {
    #[default]
    None,
    /// `basic_ncsa_auth` with an htpasswd file holding this one user.
    Basic { user: String, password: String },
    /// `ntlm_fake_auth`: the real three-message exchange, any credentials
    /// accepted. Squid 5.7's NTLM decoder logs the names one byte too long:
    /// `CORP\bob` appears as `CORPb\bobw` (first letter of the next field).
    Ntlm,
}

#[derive(Debug, Clone, Default)]
pub struct SquidOptions {
    pub auth: SquidAuth,
    /// (CA certificate, CA key), PEM: TLS inside CONNECT is bumped
    /// (intercepted) with certificates this CA signs on the fly.
    pub bump_ca: Option<(PathBuf, PathBuf)>,
}

/// Squid 5 in the gateway namespace on [`Squid::addr`]. CONNECT is allowed to
/// port 443 only (Debian's stock rule; anything else gets 403); plain
/// `GET http://…` is forwarded; upstream certificates are not verified when
/// bumping (the server's certificate comes from a private CA).
pub struct Squid {
    pub proc: Proc,
    pub addr: &'static str,
    dir: tempfile::TempDir,
    /// Squid's `-n`: it prefixes the shared-memory segments Squid creates in
    /// /dev/shm, which network namespaces do not separate. Two instances
    /// with the stock name `squid` refuse each other ("shm_open … File
    /// exists"), and one killed on drop leaves its segments behind.
    service: String,
}

/// `/dev/shm` files whose names start with `prefix` (Squid's segments are
/// `/<service>-<segment>.shm`).
fn squid_segments(prefix: &str) -> Vec<PathBuf> {
    let entries = std::fs::read_dir("/dev/shm").into_iter().flatten().flatten();
    let named = |p: &PathBuf| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with(prefix));
    entries.map(|e| e.path()).filter(named).collect()
}

impl Drop for Squid {
    fn drop(&mut self) {
        // Unlinking a segment the (about to be killed) process still maps is fine.
        for segment in squid_segments(&format!("{}-", self.service)) {
            let _ = std::fs::remove_file(segment);
        }
    }
}

impl Squid {
    pub async fn start(net: &Corpnet, options: SquidOptions) -> Squid {
        let dir = tempfile::Builder::new().prefix("corpnet-squid").tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let mut port = "http_port 198.18.1.1:3128".to_string();
        let mut extra = String::new();
        if let Some((cert, key)) = &options.bump_ca {
            std::fs::copy(cert, path("bump-ca.crt")).unwrap();
            std::fs::copy(key, path("bump-ca.key")).unwrap();
            let db = path("ssl_db");
            let init = Command::new("/usr/lib/squid/security_file_certgen")
                .args(["-c", "-s", &db, "-M", "4MB"])
                .output()
                .expect("security_file_certgen (package squid-openssl) is installed");
            assert!(init.status.success(), "security_file_certgen -c: {}", String::from_utf8_lossy(&init.stderr));
            port += &format!(
                " ssl-bump generate-host-certificates=on dynamic_cert_mem_cache_size=4MB tls-cert={} tls-key={}",
                path("bump-ca.crt"),
                path("bump-ca.key")
            );
            extra += &format!(
                "sslcrtd_program /usr/lib/squid/security_file_certgen -s {db} -M 4MB\n\
                 sslcrtd_children 2 startup=1 idle=1\n\
                 acl step1 at_step SslBump1\n\
                 ssl_bump peek step1\n\
                 ssl_bump bump all\n\
                 sslproxy_cert_error allow all\n\
                 tls_outgoing_options flags=DONT_VERIFY_PEER\n"
            );
        }
        let allow = match &options.auth {
            SquidAuth::None => "http_access allow all\n".to_string(),
            SquidAuth::Basic { user, password } => {
                let made = Command::new("htpasswd")
                    .args(["-b", "-c", &path("htpasswd"), user, password])
                    .output()
                    .expect("htpasswd (package apache2-utils) is installed");
                assert!(made.status.success(), "htpasswd: {}", String::from_utf8_lossy(&made.stderr));
                format!(
                    "auth_param basic program /usr/lib/squid/basic_ncsa_auth {}\n\
                     auth_param basic children 2 startup=1 idle=1\n\
                     auth_param basic realm corpnet\n\
                     acl authenticated proxy_auth REQUIRED\n\
                     http_access allow authenticated\n",
                    path("htpasswd")
                )
            }
            SquidAuth::Ntlm => "auth_param ntlm program /usr/lib/squid/ntlm_fake_auth\n\
                 auth_param ntlm children 2 startup=1 idle=1\n\
                 auth_param ntlm keep_alive on\n\
                 acl authenticated proxy_auth REQUIRED\n\
                 http_access allow authenticated\n"
                .to_string(),
        };
        let conf = format!(
            "{port}\n\
             {extra}\
             visible_hostname corpnet-gateway\n\
             pid_filename {pid}\n\
             access_log stdio:{access} squid\n\
             cache_log {cache}\n\
             cache_store_log none\n\
             coredump_dir {dir}\n\
             netdb_filename none\n\
             cache deny all\n\
             cache_mem 8 MB\n\
             cache_effective_user proxy\n\
             pinger_enable off\n\
             shutdown_lifetime 0 seconds\n\
             acl localnet src 198.18.0.0/15\n\
             acl SSL_ports port 443\n\
             acl Safe_ports port 80 443 1025-65535\n\
             acl CONNECT method CONNECT\n\
             http_access deny !Safe_ports\n\
             http_access deny CONNECT !SSL_ports\n\
             http_access deny !localnet\n\
             {allow}\
             http_access deny all\n",
            pid = path("squid.pid"),
            access = path("access.log"),
            cache = path("cache.log"),
            dir = dir.path().display(),
        );
        std::fs::write(path("squid.conf"), conf).unwrap();
        // Squid drops to `proxy`: its helpers read the htpasswd file and the
        // certificate database, its logs are reopened as it.
        chown_recursive(dir.path(), "proxy:proxy");
        // Alphanumeric only (Squid refuses anything else); the pid lets
        // `remove_stale` find the segments of a test process that died.
        let service = format!("{SQUID_PREFIX}{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
        let args = ["-N", "-n", &service, "-d", "1", "-f", &path("squid.conf")];
        let proc = net.gateway.spawn("/usr/sbin/squid", &args, &[]);
        let mut squid = Squid { proc, addr: "198.18.1.1:3128", dir, service };
        wait_started(&mut squid.proc, "squid", "Socket connections at conn").await;
        squid
    }

    /// `http://198.18.1.1:3128`, for curl's `-x`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The access log so far (Squid's native format: one line per
    /// transaction, written when it ends; the user name is the 8th field).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits (5 s) until the access log holds `needle`; the whole log.
    pub async fn wait_access_log(&self, needle: &str) -> String {
        wait_file(&self.dir.path().join("access.log"), needle).await
    }

    pub fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }
}

/// Dante in the gateway namespace on [`Dante::addr`]: SOCKS5 CONNECT to
/// anywhere, names resolved by the gateway, outgoing from 198.18.2.1.
pub struct Dante {
    pub proc: Proc,
    pub addr: &'static str,
    dir: tempfile::TempDir,
}

impl Dante {
    /// With `login`, RFC 1929 username/password is required. Dante checks it
    /// against the system's passwd and shadow, so this writes a passwd
    /// (root, proxy, nobody and the user) and a shadow (the user) into
    /// `/etc/netns/<gateway>/`: only programs started in the gateway from now
    /// on see them, the machine's own files are not touched. One login per
    /// Corpnet (a second Dante replaces it).
    pub async fn start(net: &Corpnet, login: Option<(&str, &str)>) -> Dante {
        let dir = tempfile::Builder::new().prefix("corpnet-dante").tempdir().unwrap();
        let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
        let method = match login {
            None => "none",
            Some((user, password)) => {
                write_login(&net.gateway, user, password);
                "username"
            }
        };
        let conf = format!(
            "logoutput: stderr {log}\n\
             internal: 198.18.1.1 port = 1080\n\
             external: 198.18.2.1\n\
             clientmethod: none\n\
             socksmethod: {method}\n\
             user.privileged: root\n\
             user.unprivileged: nobody\n\
             client pass {{\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    log: error connect disconnect\n}}\n\
             socks pass {{\n    from: 0.0.0.0/0 to: 0.0.0.0/0\n    command: connect\n    log: error connect disconnect\n}}\n",
            log = path("danted.log"),
        );
        std::fs::write(path("danted.conf"), conf).unwrap();
        // Its lock files go to TMPDIR, used by its unprivileged user too.
        chown_recursive(dir.path(), "nobody");
        let tmp = dir.path().to_str().unwrap();
        let mut proc = net.gateway.spawn("/usr/sbin/danted", &["-f", &path("danted.conf")], &[("TMPDIR", tmp)]);
        wait_started(&mut proc, "danted", "running").await;
        Dante { proc, addr: "198.18.1.1:1080", dir }
    }

    /// Dante's log so far (one line per accepted, passed or blocked session).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("danted.log")).unwrap_or_default()
    }

    /// Waits (5 s) until the log holds `needle`; the whole log.
    pub async fn wait_log(&self, needle: &str) -> String {
        wait_file(&self.dir.path().join("danted.log"), needle).await
    }
}

/// passwd and shadow for the gateway namespace holding `user` (see [`Dante::start`]).
fn write_login(gateway: &Netns, user: &str, password: &str) {
    use std::io::Write;
    let mut openssl = Command::new("openssl")
        .args(["passwd", "-6", "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl is installed");
    openssl.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let hash = openssl.wait_with_output().unwrap();
    assert!(hash.status.success(), "openssl passwd -6 failed");
    let hash = String::from_utf8(hash.stdout).unwrap();
    let system = std::fs::read_to_string("/etc/passwd").unwrap();
    let mut passwd: String = system
        .lines()
        .filter(|l| ["root:", "proxy:", "nobody:"].iter().any(|p| l.starts_with(p)))
        .map(|l| format!("{l}\n"))
        .collect();
    passwd += &format!("{user}:x:60999:65534:corpnet test user:/nonexistent:/usr/sbin/nologin\n");
    gateway.write_etc("passwd", &passwd);
    gateway.write_etc("shadow", &format!("{user}:{}:19000:0:99999:7:::\n", hash.trim()));
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(gateway.etc_dir().join("shadow"), std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A bump CA made with `openssl req` in `dir`: (certificate, key, subject as
/// curl prints it: `O=Corpnet; CN=Corpnet Bump CA`).
pub fn make_bump_ca(dir: &Path) -> (PathBuf, PathBuf, &'static str) {
    let (cert, key) = (dir.join("bump-ca.crt"), dir.join("bump-ca.key"));
    let output = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2"])
        .args(["-keyout", key.to_str().unwrap(), "-out", cert.to_str().unwrap()])
        .args(["-subj", "/O=Corpnet/CN=Corpnet Bump CA"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        .output()
        .expect("openssl is installed");
    assert!(output.status.success(), "openssl req: {}", String::from_utf8_lossy(&output.stderr));
    (cert, key, "O=Corpnet; CN=Corpnet Bump CA")
}
