//! The default egress policy against real sockets, in a network namespace
//! this test creates: the private addresses live on the namespace's own `lo`,
//! and the namespace has no other interface and no route out, so nothing a
//! wrong policy dials can leave the machine. The server, the origin and curl
//! all run inside it; the namespace is deleted afterwards.
//!
//! Every private and embedded-IPv4 form is refused with 403 by default, and
//! each is lifted by an explicit `--egress-allow` (then reached, or failing
//! to connect where no route exists, but never refused).

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

const IP: &str = "/usr/sbin/ip";
const ORIGIN_PORT: u16 = 8080;

/// A network namespace with addresses on its loopback, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(addresses: &[&str]) -> Self {
        let name = format!("fluidity-egress-{}", std::process::id());
        let netns = Self { name };
        let _ = std::process::Command::new(IP).args(["netns", "del", &netns.name]).status();
        netns.ip(&["netns", "add", &netns.name]);
        netns.ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        for address in addresses {
            netns.ip(&["-n", &netns.name, "addr", "add", address, "dev", "lo"]);
        }
        netns
    }

    fn ip(&self, args: &[&str]) {
        let status = std::process::Command::new(IP).args(args).status().expect("iproute2 (ip) is installed");
        assert!(status.success(), "ip {args:?} (network namespaces need root)");
    }

    /// `program args` run inside the namespace, stderr captured, killed on drop.
    fn spawn(&self, program: &str, args: &[&str]) -> Proc {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        spawn_program(Path::new(IP), &all, &[])
    }

    /// curl inside the namespace; the HTTP status it saw.
    async fn status_through(&self, pki: &Pki, server_port: u16, url: &str) -> String {
        let (ca, cert, key) = (pki.path("ca.crt"), pki.path("client.crt"), pki.path("client.key"));
        let proxy = format!("https://127.0.0.1:{server_port}");
        let out = tokio::process::Command::new(IP)
            .args(["netns", "exec", &self.name, "curl", "-sS", "-g", "--max-time", "10", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--proxy", &proxy, "--proxy-cacert", ca.to_str().unwrap()])
            .args(["--proxy-cert", cert.to_str().unwrap(), "--proxy-key", key.to_str().unwrap(), url])
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::process::Command::new(IP).args(["netns", "del", &self.name]).status();
    }
}

/// A dual-stack HTTP origin on every address of the namespace.
const ORIGIN: &str = r#"
import http.server, socket, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"origin"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
print("origin listening", file=sys.stderr, flush=True)
Server(("::", int(sys.argv[1])), Handler).serve_forever()
"#;

async fn server_in(netns: &Netns, pki: &Pki, extra: &[&str]) -> (Proc, u16) {
    let tls = pki.flags("server");
    let listen = if extra.contains(&"--listen") { vec![] } else { vec!["--listen", "127.0.0.1:0"] };
    let mut args = [listen, vec!["--health-listen", "off"]].concat();
    args.extend(tls.iter().map(String::as_str));
    args.extend_from_slice(extra);
    let server = netns.spawn(bin_path("fluidity-server"), &args);
    let port = server.logged_addr("server listening").await.port();
    (server, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_embedded_forms_are_refused_by_default_and_lifted_by_allow() {
    let netns = Netns::new(&[
        "10.1.2.3/32",
        "172.16.5.5/32",
        "192.168.7.7/32",
        "100.64.1.1/32",
        "fd12::5/128",
        "169.254.170.2/32",
    ]);
    let pki = Pki::new();
    let origin = netns.spawn("python3", &["-c", ORIGIN, &ORIGIN_PORT.to_string()]);
    origin.wait_for("origin listening").await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let url = |host: &str| format!("http://{host}:{ORIGIN_PORT}/");
    // (target, reachable here once allowed)
    let targets = [
        ("10.1.2.3", true),
        ("172.16.5.5", true),
        ("192.168.7.7", true),
        ("100.64.1.1", true),
        ("[fd12::5]", true),
        ("[::ffff:10.1.2.3]", true),     // IPv4-mapped
        ("[::a9fe:aa02]", false),        // IPv4-compatible 169.254.170.2
        ("[::ffff:0:a9fe:aa02]", false), // IPv4-translated
        ("[64:ff9b::a9fe:aa02]", false), // NAT64 (no translator here)
        ("0.0.0.1", false),
    ];

    let (_server, port) = server_in(&netns, &pki, &[]).await;
    for (target, _) in targets {
        assert_eq!(netns.status_through(&pki, port, &url(target)).await, "403", "{target} must be refused by default");
    }

    let allow = "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16,100.64.0.0/10,fc00::/7,169.254.170.2/32,0.0.0.0/8";
    // Listening on every address: its own port on a non-loopback address of
    // this host (on Fargate, the task's ENI address) is still itself.
    let (_wide, port) = server_in(&netns, &pki, &["--listen", "0.0.0.0:0", "--egress-allow", allow]).await;
    for own in ["10.1.2.3", "192.168.7.7", "127.0.0.1"] {
        let status = netns.status_through(&pki, port, &format!("http://{own}:{port}/")).await;
        assert_eq!(status, "403", "{own}:{port} is this server's own port");
    }
    let (_open, port) = server_in(&netns, &pki, &["--egress-allow", allow]).await;
    for (target, reachable) in targets {
        let status = netns.status_through(&pki, port, &url(target)).await;
        if reachable {
            assert_eq!(status, "200", "{target} allowed and on this namespace's lo");
        } else {
            assert_ne!(status, "403", "{target} allowed: dialled (no route here), not refused");
        }
    }
}
