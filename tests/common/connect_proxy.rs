//! A minimal HTTP CONNECT proxy on loopback for tests: it records each
//! `CONNECT` target (its access log) and relays bytes, or refuses every
//! `CONNECT` with a given status.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running proxy and the targets it was asked for.
pub struct ConnectProxy {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
}

impl ConnectProxy {
    /// Relays every `CONNECT` (`refuse: None`) or answers it with `refuse`
    /// (a status line's code and reason, and optionally header lines).
    pub async fn start(refuse: Option<&'static str>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(serve(client, seen.clone(), refuse));
            }
        });
        Self { addr, log }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `CONNECT` targets so far.
    pub fn targets(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

async fn serve(mut client: TcpStream, log: Arc<Mutex<Vec<String>>>, refuse: Option<&'static str>) {
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let target = head.strip_prefix("CONNECT ").and_then(|rest| rest.split(' ').next()).unwrap_or("").to_string();
    log.lock().unwrap().push(target.clone());
    if let Some(status) = refuse {
        // A refusal closes the connection, and says so.
        let answer = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        let _ = client.write_all(answer.as_bytes()).await;
        return;
    }
    let Ok(mut upstream) = TcpStream::connect(&target).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n").await;
        return;
    };
    if client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n").await.is_ok() {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
