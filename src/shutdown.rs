//! Turns SIGINT and SIGTERM (what ECS sends on stop) into a cancellation
//! token, and the accept step both listeners stop on.

use tokio_util::sync::CancellationToken;

/// The next connection on `listener`, or `None` once `shutdown` fires. An
/// accept error (out of file descriptors and the like) is logged and retried
/// after 100 ms instead of spinning.
pub async fn accept(
    listener: &tokio::net::TcpListener,
    shutdown: &CancellationToken,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            accepted = listener.accept() => match accepted {
                Ok(pair) => return Some(pair),
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Returns a token cancelled on the first SIGINT or SIGTERM.
///
/// Must be called inside a Tokio runtime. A second signal is not special: the
/// drain deadline bounds how long shutdown can take.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        // Cancel first: nothing that follows (a log line to a broken pipe,
        // say) may keep the process from draining.
        trigger.cancel();
        tracing::info!("shutdown signal received, draining");
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            tracing::warn!("could not install signal handlers, falling back to ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

/// Calls `reload` on every SIGHUP until `stop` fires (no-op off Unix).
pub async fn on_hangup(stop: CancellationToken, reload: impl Fn()) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("could not install the SIGHUP handler; certificate reload disabled");
            return;
        };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                received = hangups.recv() => {
                    if received.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP received, reloading certificates");
                    reload();
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = reload;
        stop.cancelled().await;
    }
}
