//! Turns SIGINT and SIGTERM (what ECS sends on stop) into a cancellation token.

use tokio_util::sync::CancellationToken;

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
