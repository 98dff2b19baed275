//! Any bytes as a SOCKS5 client's side of the negotiation (the first byte
//! chooses whether the agent requires a login): `negotiate` must never
//! panic or hang, and a destination it accepts must make a valid authority.
#![no_main]

use fluidity::agent::socks::negotiate;
use libfuzzer_sys::fuzz_target;
use tokio::io::AsyncWriteExt;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else { return };
    let credentials = (mode & 1 == 1).then_some("user:password");
    let runtime = tokio::runtime::Builder::new_current_thread().build().expect("a current-thread runtime builds");
    runtime.block_on(async {
        let (mut client, mut agent) = tokio::io::duplex(1024);
        let input = input.to_vec();
        let write = async move {
            let _ = client.write_all(&input).await;
            let _ = client.shutdown().await;
            client
        };
        let agent_side = async move { negotiate(&mut agent, credentials).await };
        let (_client, result) = tokio::join!(write, agent_side);
        if let Ok(destination) = result {
            assert!(http::uri::Authority::try_from(destination.authority()).is_ok(), "{destination:?}");
        }
    });
});
