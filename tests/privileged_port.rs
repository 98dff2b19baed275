//! The server on port 443 as an unprivileged user, as on Fargate (user
//! 65532, the task setting the namespaced sysctl
//! `net.ipv4.ip_unprivileged_port_start` to 443), with the real
//! `fluidity-server` binary in a network namespace of the test's own (only
//! `lo` up; a new namespace starts with the sysctl at 1024, whatever the
//! machine's is):
//! - with the sysctl lowered, it listens on 443 and curl reaches an origin
//!   through it over mutual TLS;
//! - without, it exits 2 with one line naming the sysctl and what to do.
//!
//! Needs root (namespaces, setpriv); never skips.

mod common;

use std::path::Path;
use std::process::Command;

use common::Pki;
use common::corpnet::Netns;

/// The user (and group) the server's container runs as on Fargate.
const USER: &str = "65532";
const SYSCTL: &str = "net.ipv4.ip_unprivileged_port_start";

/// Certificates minted by our certs module, owned by [`USER`] (the server
/// refuses a key others can read, and must read it as that user).
fn pki_for_user() -> Pki {
    let pki = Pki::new();
    let status = Command::new("chown").args(["-R", &format!("{USER}:{USER}")]).arg(pki.dir.path()).status().unwrap();
    assert!(status.success(), "chown -R {USER} {}", pki.dir.path().display());
    pki
}

/// `setpriv` arguments that run the server binary as [`USER`] on `listen`.
fn server_as_user<'a>(pki_flags: &'a [String], listen: &'a str) -> Vec<&'a str> {
    let ids = ["--reuid", USER, "--regid", USER, "--clear-groups"];
    let mut args = ids.to_vec();
    args.extend([common::bin_path("fluidity-server"), "--listen", listen, "--health-listen", "off"]);
    args.push("--allow-loopback");
    args.extend(pki_flags.iter().map(String::as_str));
    args
}

async fn sysctl_in(netns: &Netns) -> String {
    let out = netns.output("cat", &["/proc/sys/net/ipv4/ip_unprivileged_port_start"], &[]).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The `Uid:` line's real and effective ids of process `pid`.
fn uids(pid: u32) -> Vec<String> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().skip(1).take(2).map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_sysctl_lowered_an_unprivileged_server_serves_on_443() {
    let pki = pki_for_user();
    let netns = Netns::alone("pp443");
    let set = netns.output("sysctl", &["-w", &format!("{SYSCTL}=443")], &[]).await;
    assert!(set.status.success(), "sysctl -w: {}", String::from_utf8_lossy(&set.stderr));
    assert_eq!(sysctl_in(&netns).await, "443");
    let origin = netns.http_origin("127.0.0.1", 8080, None).await;

    let flags = pki.flags("server");
    // `ip netns exec` and setpriv exec the server: this PID is the server's,
    // and dropping `server` kills it by that PID.
    let server = netns.spawn("setpriv", &server_as_user(&flags, "127.0.0.1:443"), &[]);
    let line = server.wait_for("server listening").await;
    assert!(line.contains("addr=127.0.0.1:443"), "{line}");
    let pid = server.pid();
    assert_eq!(std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap().trim(), "fluidity-server");
    assert_eq!(uids(pid), [USER, USER], "the server must run as {USER}, not root");

    let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
    let reply = netns
        .curl(&[
            "--proxy",
            "https://127.0.0.1:443",
            "--proxy-cacert",
            ca.to_str().unwrap(),
            "--proxy-cert",
            cert.to_str().unwrap(),
            "--proxy-key",
            key.to_str().unwrap(),
            "http://127.0.0.1:8080/through-443",
        ])
        .await;
    assert_eq!(reply.text(), "origin 8080 /through-443", "curl: {}\nserver: {:#?}", reply.stderr, server.lines());

    // A second server on the same port: one line, exit 2, like any setting to fix.
    let second = netns.output("setpriv", &server_as_user(&flags, "127.0.0.1:443"), &[]).await;
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen on 127.0.0.1:443: the address is in use"), "{stderr}");
    drop((server, origin));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_sysctl_the_server_exits_2_with_one_line_naming_it() {
    let pki = pki_for_user();
    let netns = Netns::alone("pp1024");
    assert_eq!(sysctl_in(&netns).await, "1024", "a new namespace starts at 1024");

    let out = netns.output("setpriv", &server_as_user(&pki.flags("server"), "127.0.0.1:443"), &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "exactly one line: {stderr}");
    assert!(
        stderr.starts_with("fluidity-server: ")
            && stderr.contains("cannot listen on 127.0.0.1:443")
            && stderr.contains("port 443 is privileged for this user")
            && stderr.contains(&format!("{SYSCTL} is 1024"))
            && stderr.contains("set that sysctl to 443 or lower")
            && stderr.contains("listen on 8443"),
        "{stderr}"
    );
}
