//! Large transfers through the real binaries with curl: 200 MiB each way,
//! checked by SHA-256, while agent and server each stay under 64 MiB of RSS
//! (no full buffering, no size cap).

mod common;

use common::*;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

const SIZE: u64 = 200 * 1024 * 1024;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_mib_each_way_in_bounded_memory() {
    let pki = Pki::new();
    let (server, server_addr) = server_process(&pki, "server").await;
    let agent = agent_process(&pki, server_addr).await;
    let proxy_addr = agent.logged_addr("local proxy listening").await;
    agent.wait_for("tunnel to server established").await;
    let origin = http_origin().await;
    let proxy = format!("http://{proxy_addr}");

    // Download, hashed as it streams out of curl.
    let mut child = tokio::process::Command::new("curl")
        .args(["-sS", "--fail", "-x", &proxy, &format!("http://{origin}/download/{SIZE}")])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = stdout.read(&mut buffer).await.unwrap();
        if n == 0 {
            break;
        }
        received += n as u64;
        hasher.update(&buffer[..n]);
    }
    assert!(child.wait().await.unwrap().success());
    assert_eq!(received, SIZE);
    assert_eq!(hex(&hasher.finalize()), pattern_sha256(SIZE));

    // Upload from a file; the origin answers with the length and hash it saw.
    let file = pki.path("upload.bin");
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
        let mut hasher = Sha256::new();
        for index in 0..SIZE / CHUNK as u64 {
            let chunk = pattern_chunk(index + 7, CHUNK);
            hasher.update(&chunk);
            out.write_all(&chunk).unwrap();
        }
        out.flush().unwrap();
        let want = format!("{SIZE} {}", hex(&hasher.finalize()));
        let out =
            curl(&["--fail", "-x", &proxy, "-T", file.to_str().unwrap(), &format!("http://{origin}/upload")]).await;
        assert_eq!(out.code, Some(0), "{}", out.stderr);
        assert_eq!(out.text(), want);
    }

    let server_kib = peak_rss_kib(server.pid());
    let agent_kib = peak_rss_kib(agent.pid());
    println!("peak RSS: server {server_kib} KiB, agent {agent_kib} KiB");
    assert!(server_kib < RSS_LIMIT_KIB, "server peak RSS {server_kib} KiB");
    assert!(agent_kib < RSS_LIMIT_KIB, "agent peak RSS {agent_kib} KiB");
    assert_eq!(agent.terminate().await, Some(0));
    assert_eq!(server.terminate().await, Some(0));
}
