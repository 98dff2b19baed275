//! Test helpers: certificates minted by our own `certs` module, server and
//! agent started in-process on 127.0.0.1:0, local origins (HTTP, HTTPS,
//! WebSocket, TCP echo) and a `curl` runner.
#![allow(dead_code)]

pub mod connect_proxy;
#[cfg(feature = "lambda")]
pub mod control;
pub mod corpnet;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fluidity::agent::{Agent, AgentArgs, AgentConfig, pool::Pool};
use fluidity::certs::{Ca, Pair, Validity, write_file};
use fluidity::server::{Server, ServerArgs, ServerConfig, Stats};
use fluidity::tls::TlsArgs;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A directory holding a CA and server/client pairs, plus spare bad material.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
}

impl Pki {
    /// CA, server cert for `fluidity-server` and 127.0.0.1, client cert `test-agent`.
    pub fn new() -> Self {
        fluidity::install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("Test CA", Validity::days(2)).unwrap();
        let pki = Self { dir, ca };
        pki.write("ca.crt", pki.ca.cert_pem());
        let server = pki.ca.issue_server(&["fluidity-server".into(), "127.0.0.1".into()], Validity::days(2)).unwrap();
        pki.write_pair("server", &server);
        let client = pki.ca.issue_client("test-agent", Validity::days(2)).unwrap();
        pki.write_pair("client", &client);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, text: &str) {
        write_file(&self.path(name), text, name.ends_with(".key"), true).unwrap();
    }

    pub fn write_pair(&self, stem: &str, pair: &Pair) {
        self.write(&format!("{stem}.crt"), &pair.cert_pem);
        self.write(&format!("{stem}.key"), &pair.key_pem);
    }

    /// `--cert`, `--key` (the `stem` pair) and `--ca` flags for a binary.
    pub fn flags(&self, stem: &str) -> Vec<String> {
        let path = |name: String| self.path(&name).to_str().unwrap().to_owned();
        let (cert, key, ca) = (path(format!("{stem}.crt")), path(format!("{stem}.key")), path("ca.crt".into()));
        ["--cert".into(), cert, "--key".into(), key, "--ca".into(), ca].into()
    }

    pub fn tls_args(&self, stem: &str) -> TlsArgs {
        TlsArgs {
            cert: Some(self.path(&format!("{stem}.crt"))),
            key: Some(self.path(&format!("{stem}.key"))),
            ca: Some(self.path("ca.crt")),
            ..TlsArgs::default()
        }
    }
}

/// A running in-process server.
pub struct TestServer {
    pub addr: SocketAddr,
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start_server(pki: &Pki, stem: &str) -> TestServer {
    start_server_with(pki, stem, |_| {}, Default::default()).await
}

/// Starts an in-process server after `adjust` has changed its arguments, with `file` as its YAML.
pub async fn start_server_with(
    pki: &Pki,
    stem: &str,
    adjust: impl FnOnce(&mut ServerArgs),
    file: fluidity::server::config::RawServerConfig,
) -> TestServer {
    let mut args = ServerArgs {
        listen: Some("127.0.0.1:0".into()),
        tls: pki.tls_args(stem),
        allow_loopback: Some(true),
        drain_timeout: Some("2s".into()),
        health_listen: Some("127.0.0.1:0".into()),
        ..ServerArgs::default()
    };
    adjust(&mut args);
    let server = Server::bind(ServerConfig::from_parts(&args, file).unwrap()).await.unwrap();
    let (addr, stats, stop) = (server.local_addr(), server.stats(), CancellationToken::new());
    let task = tokio::spawn(server.run(stop.clone()));
    TestServer { addr, stats, stop, task }
}

/// A running in-process agent.
pub struct TestAgent {
    pub addr: SocketAddr,
    pub pool: Arc<Pool>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub async fn start_agent(pki: &Pki, server: SocketAddr) -> TestAgent {
    start_agent_with(pki, server, |_| {}).await
}

/// Starts an in-process agent after `adjust` has changed its arguments.
pub async fn start_agent_with(pki: &Pki, server: SocketAddr, adjust: impl FnOnce(&mut AgentArgs)) -> TestAgent {
    let mut args = AgentArgs {
        listen: Some("127.0.0.1:0".into()),
        server: Some(server.to_string()),
        tls: pki.tls_args("client"),
        drain_timeout: Some("2s".into()),
        ..AgentArgs::default()
    };
    adjust(&mut args);
    let agent = Agent::bind(AgentConfig::from_parts(&args, Default::default()).unwrap()).await.unwrap();
    let (addr, pool, stop) = (agent.local_addr(), agent.pool(), CancellationToken::new());
    let task = tokio::spawn(agent.run(stop.clone()));
    TestAgent { addr, pool, stop, task }
}

/// Byte `i` of every download: a pattern that catches reordering and loss.
pub fn pattern_chunk(index: u64, len: usize) -> Bytes {
    let mut chunk = Vec::with_capacity(len);
    for i in 0..len as u64 {
        let n = index * len as u64 + i;
        chunk.push((n.wrapping_mul(31) ^ (n >> 13)) as u8);
    }
    Bytes::from(chunk)
}

pub const CHUNK: usize = 64 * 1024;

/// SHA-256 of the `total` bytes that `/download/<total>` streams.
pub fn pattern_sha256(total: u64) -> String {
    let mut hasher = Sha256::new();
    let mut sent = 0u64;
    let mut index = 0;
    while sent < total {
        let len = CHUNK.min((total - sent) as usize);
        hasher.update(pattern_chunk(index, CHUNK).slice(..len));
        sent += len as u64;
        index += 1;
    }
    hex(&hasher.finalize())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

type OriginBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(text: impl Into<Bytes>) -> OriginBody {
    Full::new(text.into()).map_err(|never| match never {}).boxed()
}

/// The plain HTTP origin:
/// - `/download/<n>`: n pattern bytes, streamed;
/// - `/upload`: answers `<len> <sha256>` of the request body;
/// - `/slow`: answers after 300 ms;
/// - anything else: `<METHOD> <path>`, and echoes `x-echo`.
async fn origin_service(req: Request<Incoming>) -> Result<Response<OriginBody>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if let Some(size) = path.strip_prefix("/download/") {
        let total: u64 = size.parse().unwrap_or(0);
        let stream = futures_util::stream::unfold((0u64, 0u64), move |(index, sent)| async move {
            if sent >= total {
                return None;
            }
            let len = CHUNK.min((total - sent) as usize);
            let chunk = pattern_chunk(index, CHUNK).slice(..len);
            Some((Ok::<_, std::io::Error>(Frame::data(chunk)), (index + 1, sent + len as u64)))
        });
        let mut response = Response::new(StreamBody::new(stream).boxed());
        response.headers_mut().insert("content-length", total.into());
        return Ok(response);
    }
    if let Some(size) = path.strip_prefix("/trickle/") {
        // n bytes, 16 KiB every 20 ms: a slow origin, so nothing piles up in buffers.
        let total: u64 = size.parse().unwrap_or(0);
        let stream = futures_util::stream::unfold(0u64, move |sent| async move {
            if sent >= total {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            let len = 16384.min(total - sent);
            Some((Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b'x'; len as usize]))), sent + len))
        });
        let mut response = Response::new(StreamBody::new(stream).boxed());
        response.headers_mut().insert("content-length", total.into());
        return Ok(response);
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            if let Some(data) = frame.data_ref() {
                len += data.len() as u64;
                hasher.update(data);
            }
        }
        return Ok(Response::new(full(format!("{len} {}", hex(&hasher.finalize())))));
    }
    if path == "/slow" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let echo = req.headers().get("x-echo").cloned();
    let hop = req.headers().contains_key("x-hop-secret") || req.headers().contains_key("proxy-authorization");
    let mut body_bytes = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default().to_vec();
    let mut text = format!("{method} {path}").into_bytes();
    if !body_bytes.is_empty() {
        text.push(b' ');
        text.append(&mut body_bytes);
    }
    let mut response = Response::new(full(text));
    if let Some(echo) = echo {
        response.headers_mut().insert("x-echo", echo);
    }
    if hop {
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
    }
    Ok(response)
}

/// Serves `origin_service` over plain HTTP/1.1.
pub async fn http_origin() -> SocketAddr {
    http_origin_on("127.0.0.1:0").await
}

/// [`http_origin`] on another address (e.g. `[::1]:0`).
pub async fn http_origin_on(addr: &str) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service_fn(origin_service))
                    .await;
            });
        }
    });
    addr
}

/// Serves `origin_service` over TLS with its own CA; returns the address and CA path.
pub async fn https_origin(pki: &Pki) -> SocketAddr {
    let ca = Ca::new("Origin CA", Validity::days(2)).unwrap();
    let pair = ca.issue_server(&["localhost".into(), "127.0.0.1".into()], Validity::days(2)).unwrap();
    pki.write("origin-ca.crt", ca.cert_pem());
    let acceptor = tls_acceptor(&pair);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service_fn(origin_service))
                    .await;
            });
        }
    });
    addr
}

pub fn tls_acceptor(pair: &Pair) -> tokio_rustls::TlsAcceptor {
    let certs: Vec<_> = rustls_pemfile::certs(&mut pair.cert_pem.as_bytes()).map(|c| c.unwrap()).collect();
    let key = rustls_pemfile::private_key(&mut pair.key_pem.as_bytes()).unwrap().unwrap();
    let config = rustls::ServerConfig::builder().with_no_client_auth().with_single_cert(certs, key).unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TCP echo server.
pub async fn echo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut tcp, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Waits up to 10 s for `condition` to hold, checking every 10 ms.
pub async fn wait_until(condition: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Result of one curl run.
pub struct CurlOutput {
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl CurlOutput {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs Debian's curl with `args` (silent, fail-less, 60 s cap).
pub async fn curl(args: &[&str]) -> CurlOutput {
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "120"])
        .args(args)
        .output()
        .await
        .expect("curl must be installed (.ci/run installs it)");
    CurlOutput {
        code: output.status.code(),
        stdout: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Sends `CONNECT target` to the proxy at `proxy`, asserts 200 and returns the stream.
pub async fn connect_through(proxy: SocketAddr, target: &str) -> tokio::net::TcpStream {
    let mut tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
    let head = read_head(&mut tcp).await;
    assert!(head.starts_with("HTTP/1.1 200"), "CONNECT answered: {head}");
    tcp
}

/// Reads an HTTP response head byte by byte (so nothing after it is consumed).
pub async fn read_head(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = stream.read_u8().await.expect("connection closed inside a response head");
        head.push(byte);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// VmHWM (peak RSS) of a process, in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

pub fn exists(path: &Path) -> bool {
    path.exists()
}

/// A binary of this package running as a child process, its stderr collected.
pub struct Proc {
    pub child: tokio::process::Child,
    pub lines: Arc<std::sync::Mutex<Vec<String>>>,
}

/// Path of a `[[bin]]` of this package built for these tests.
pub fn bin_path(bin: &str) -> &'static str {
    let path = match bin {
        "fluidity-server" => option_env!("CARGO_BIN_EXE_fluidity-server"),
        "fluidity-agent" => option_env!("CARGO_BIN_EXE_fluidity-agent"),
        "fluidity-certs" => option_env!("CARGO_BIN_EXE_fluidity-certs"),
        "fluidity-local" => option_env!("CARGO_BIN_EXE_fluidity-local"),
        "fluidity-lambda" => option_env!("CARGO_BIN_EXE_fluidity-lambda"),
        "fluidity-deploy" => option_env!("CARGO_BIN_EXE_fluidity-deploy"),
        _ => None,
    };
    path.unwrap_or_else(|| panic!("binary {bin} is not built for this test (check required-features)"))
}

/// Starts `bin` (a `[[bin]]` of this package) with `args`, stderr captured.
pub fn spawn_bin(bin: &str, args: &[&str]) -> Proc {
    spawn_bin_with(bin, args, &[])
}

/// Like [`spawn_bin`], with extra environment variables.
pub fn spawn_bin_with(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    spawn_program(Path::new(bin_path(bin)), args, envs)
}

/// Starts the executable at `path` with stderr captured, killed on drop.
pub fn spawn_program(path: &Path, args: &[&str], envs: &[(&str, &str)]) -> Proc {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(path)
        .args(args)
        .envs(envs.iter().copied())
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut reader = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = reader.next_line().await {
            sink.lock().unwrap().push(line);
        }
    });
    Proc { child, lines }
}

impl Proc {
    /// Waits up to 10 s for a stderr line containing `needle`; returns it.
    pub async fn wait_for(&self, needle: &str) -> String {
        for _ in 0..200 {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no line with {needle:?} in {:#?}", self.lines.lock().unwrap());
    }

    /// The address logged as `addr=…` on the line containing `needle`.
    pub async fn logged_addr(&self, needle: &str) -> SocketAddr {
        let line = self.wait_for(needle).await;
        let addr = line.split("addr=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap();
        addr.parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// Sends `signal` (e.g. "HUP") to this child, by PID.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        std::process::Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status().unwrap();
    }

    /// Everything written to stderr so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits (up to 30 s) for the process to exit by itself; its exit code.
    pub async fn wait_exit(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.unwrap().unwrap();
        // Let the stderr reader catch up with the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        status.code()
    }

    /// Sends SIGTERM (by PID, to our own child) and waits for the exit code.
    pub async fn terminate(mut self) -> Option<i32> {
        let pid = self.pid();
        std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await.unwrap().unwrap();
        status.code()
    }
}

/// Starts the server binary with `pki`'s `stem` pair on a loopback port.
pub async fn server_process(pki: &Pki, stem: &str) -> (Proc, SocketAddr) {
    server_process_on(pki, stem, "127.0.0.1:0", &[]).await
}

/// Starts the server binary on `listen` with extra flags.
pub async fn server_process_on(pki: &Pki, stem: &str, listen: &str, extra: &[&str]) -> (Proc, SocketAddr) {
    server_process_with(pki, stem, listen, extra, &[]).await
}

/// As [`server_process_on`], with environment variables (e.g. [`AWS_TEST_ENV`]).
pub async fn server_process_with(
    pki: &Pki,
    stem: &str,
    listen: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> (Proc, SocketAddr) {
    let tls = pki.flags(stem);
    let mut args = vec!["--listen", listen, "--allow-loopback", "--health-listen", "127.0.0.1:0"];
    args.extend(tls.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let server = spawn_bin_with("fluidity-server", &args, envs);
    let addr = server.logged_addr("server listening").await;
    (server, addr)
}

/// Starts the agent binary pointed at `server`.
pub async fn agent_process(pki: &Pki, server: SocketAddr) -> Proc {
    agent_process_with(pki, server, &[]).await
}

/// Starts the agent binary pointed at `server`, with extra flags.
pub async fn agent_process_with(pki: &Pki, server: SocketAddr, extra: &[&str]) -> Proc {
    let (tls, server) = (pki.flags("client"), server.to_string());
    let mut args = vec!["--listen", "127.0.0.1:0", "--server", &server];
    args.extend(tls.iter().map(String::as_str));
    args.extend_from_slice(extra);
    spawn_bin("fluidity-agent", &args)
}

/// Counts stderr lines containing `needle`.
pub fn count_lines(proc: &Proc, needle: &str) -> usize {
    proc.lines.lock().unwrap().iter().filter(|l| l.contains(needle)).count()
}

/// Runs a binary to completion: (exit code, stdout, stderr).
pub async fn run_bin(bin: &str, args: &[&str], envs: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let path = bin_path(bin);
    let mut command = tokio::process::Command::new(path);
    command.args(args).env("NO_COLOR", "1").stdin(std::process::Stdio::null()).kill_on_drop(true);
    for (k, v) in envs {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output()).await.unwrap().unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A moto server (local AWS emulator) on a free loopback port, stopped on drop.
pub struct Moto {
    pub port: u16,
    child: std::process::Child,
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers.
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_on(port).await
    }

    /// Starts `moto_server` on `port` (e.g. again after [`Moto::stop`]).
    pub async fn start_on(port: u16) -> Self {
        Self::start_with(port, &[]).await
    }

    /// Starts it on a free port answering drift detection from
    /// tests/recorded/drift (see `moto_launcher.py --recorded-drift`).
    /// Also recording every request to `recording` (see `moto_launcher.py --record`).
    pub async fn start_with_recorded_drift(recording: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let drift = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/recorded/drift");
        Self::start_with(port, &["--recorded-drift", drift, "--record", recording.to_str().unwrap()]).await
    }

    /// Starts it on a free port recording every request to `file`
    /// (see `moto_launcher.py --record`).
    pub async fn start_recording(file: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        Self::start_with(port, &["--record", file.to_str().unwrap()]).await
    }

    async fn start_with(port: u16, extra: &[&str]) -> Self {
        let launcher = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/moto_launcher.py");
        let child = std::process::Command::new("python3")
            .args([launcher, "-H", "127.0.0.1", "-p", &port.to_string()])
            .args(extra)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 with moto must be installed (tests/setup.sh installs it)");
        let moto = Self { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return moto;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("moto_server did not start on port {port}");
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the emulator (by PID, our own child).
    pub fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// An SDK configuration for this emulator: fixed region, dummy static
    /// credentials, never the machine's real AWS configuration.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        self.sdk_config_as("test").await
    }

    /// As [`Moto::sdk_config`], signing with the access key id `key` (which
    /// tells whose calls a recording holds).
    pub async fn sdk_config_as(&self, key: &str) -> aws_config::SdkConfig {
        use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
        let http =
            aws_smithy_http_client::Builder::new().tls_provider(Provider::Rustls(CryptoMode::Ring)).build_https();
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_cloudwatch::config::Credentials::new(key, "test", None, None, "tests"))
            .endpoint_url(self.url())
            .load()
            .await
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The environment of a process that talks to the emulator: static dummy
/// credentials, a fixed region, and never the machine's own AWS configuration.
pub const AWS_TEST_ENV: [(&str, &str); 6] = [
    ("AWS_REGION", "us-east-1"),
    ("AWS_ACCESS_KEY_ID", "test"),
    ("AWS_SECRET_ACCESS_KEY", "test"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/dev/null"),
    ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
];

/// Unix seconds now.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

/// A TLS connection to the server at `addr` with `pki`'s client certificate,
/// offering `alpn` (e.g. `b"http/1.1"` or `b"h2"`).
pub async fn tls_to_server(
    pki: &Pki,
    addr: SocketAddr,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let sources =
        fluidity::tls::TlsSources::resolve(&pki.tls_args("client"), &Default::default(), pki.dir.path(), ["", "", ""]);
    let material = fluidity::tls::TlsMaterial::load(&sources, "tls").unwrap();
    let connector = tokio_rustls::TlsConnector::from(material.client_config(&[alpn]).unwrap());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector.connect("fluidity-server".try_into().unwrap(), tcp).await.unwrap()
}

/// A WebSocket origin that echoes every message.
pub async fn ws_echo_origin() -> std::net::SocketAddr {
    use futures_util::{SinkExt, StreamExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else { return };
                while let Some(Ok(message)) = ws.next().await {
                    if message.is_text() && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Checks every hand-signed request in a `moto_launcher.py --record`
/// recording against AWS's published models, and recomputes its signature
/// with botocore's signer (tests/model_check.py): the operations checked
/// (with counts), how many signatures were recomputed, and the problems found.
pub fn model_check(recording: &Path) -> (serde_json::Value, u64, Vec<String>) {
    let output = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/model_check.py"))
        .arg(recording)
        .output()
        .unwrap();
    assert!(output.status.success(), "model_check.py: {}", String::from_utf8_lossy(&output.stderr));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let problems = report["problems"].as_array().unwrap().iter().map(|p| p.as_str().unwrap().to_owned()).collect();
    (report["checked"].clone(), report["signatures"].as_u64().unwrap(), problems)
}
