//! Local mode: agent and server on this machine, with certificates freshly
//! generated into a private temporary directory and a small built-in page to
//! fetch. No AWS account needed. Loopback targets are allowed only here.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, AgentArgs, AgentConfig};
use crate::certs::{self, CertOptions};
use crate::server::{Server, ServerArgs, ServerConfig};
use crate::telemetry::LogFormat;
use crate::tls::TlsArgs;

/// Command line of `fluidity-local`.
#[derive(Debug, Clone, clap::Args)]
pub struct LocalArgs {
    /// Local proxy address of the agent
    #[arg(long, env = "FLUIDITY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Fetch the built-in page once through the tunnel, print it and exit (0 on success)
    #[arg(long)]
    pub check: bool,
    /// Log line format
    #[arg(long, env = "FLUIDITY_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The page served by the built-in origin.
pub const DEMO_BODY: &str = "hello through fluidity\n";

/// Runs server, agent and demo origin until `shutdown` fires (or once with `--check`).
pub async fn run(args: LocalArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let dir = private_temp_dir()?;
    let result = run_in(&args, &dir, shutdown).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(args: &LocalArgs, dir: &std::path::Path, shutdown: CancellationToken) -> anyhow::Result<()> {
    let options =
        CertOptions { dir: dir.to_path_buf(), sans: vec![], client_name: "local-agent".into(), days: 1, force: false };
    certs::generate(&options).context("generating certificates")?;
    let tls = |cert: &str, key: &str| TlsArgs {
        cert: Some(dir.join(cert)),
        key: Some(dir.join(key)),
        ca: Some(dir.join("ca.crt")),
        ..TlsArgs::default()
    };
    let server_args = ServerArgs {
        listen: Some("127.0.0.1:0".into()),
        tls: tls("server.crt", "server.key"),
        allow_loopback: Some(true),
        drain_timeout: Some("2s".into()),
        health_listen: Some("off".into()),
        ..ServerArgs::default()
    };
    let server = Server::bind(ServerConfig::from_parts(&server_args, Default::default())?).await?;
    let server_addr = server.local_addr();
    let agent_args = AgentArgs {
        listen: Some(args.listen.clone()),
        server: Some(server_addr.to_string()),
        tls: tls("client.crt", "client.key"),
        drain_timeout: Some("2s".into()),
        // Both ends are on this machine: a corporate HTTPS_PROXY must not carry them.
        reach: crate::agent::config::ReachArgs {
            upstream_proxy: Some(crate::config::Secret::new("none")),
            server_sni: None,
        },
        ..AgentArgs::default()
    };
    let agent = Agent::bind(AgentConfig::from_parts(&agent_args, Default::default())?).await?;
    let proxy = agent.local_addr();
    let origin = TcpListener::bind("127.0.0.1:0").await.context("binding the demo page")?;
    let page = format!("http://{}/", origin.local_addr()?);

    let stop = shutdown.child_token();
    let server_task = tokio::spawn(server.run(stop.clone()));
    let origin_task = tokio::spawn(serve_demo(origin, stop.clone()));
    agent.check_server().await?;
    let agent_task = tokio::spawn(agent.run(stop.clone()));

    crate::telemetry::to_stdout(format_args!(
        "fluidity local mode: agent http://{proxy} -> mutual TLS -> server {server_addr}\n"
    ));
    crate::telemetry::to_stdout(format_args!("certificates: {} (removed on exit)\n", dir.display()));
    crate::telemetry::to_stdout(format_args!("try:  curl -x http://{proxy} {page}\n"));
    crate::telemetry::to_stdout(format_args!("stop: Ctrl-C\n"));
    let outcome = if args.check {
        let body = fetch_through(proxy, &page).await;
        stop.cancel();
        match body {
            Ok(text) if text == DEMO_BODY => {
                crate::telemetry::to_stdout(format_args!("check ok: {text}"));
                Ok(())
            }
            Ok(text) => Err(anyhow::anyhow!("check failed: unexpected body {text:?}")),
            Err(error) => Err(error.context("check failed")),
        }
    } else {
        stop.cancelled().await;
        Ok(())
    };
    let (server, agent, _) = tokio::join!(server_task, agent_task, origin_task);
    server.context("server task")??;
    agent.context("agent task")??;
    outcome
}

fn private_temp_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("fluidity-local-{}", std::process::id()));
    let mut builder = std::fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn serve_demo(listener: TcpListener, stop: CancellationToken) {
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok((tcp, _)) => tcp, Err(_) => continue },
        };
        tokio::spawn(async move {
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from_static(
                    DEMO_BODY.as_bytes(),
                ))))
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
        });
    }
}

/// One GET of `url` through the HTTP proxy at `proxy`, returning the body.
async fn fetch_through(proxy: SocketAddr, url: &str) -> anyhow::Result<String> {
    let tcp = TcpStream::connect(proxy).await.context("connecting to the agent")?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(url).body(http_body_util::Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    anyhow::ensure!(status.is_success(), "status {status}: {}", String::from_utf8_lossy(&body));
    Ok(String::from_utf8_lossy(&body).into_owned())
}
