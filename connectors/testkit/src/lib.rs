//! # passerelle-testkit
//!
//! What a connector author needs to prove a connector: an in-memory [`harness::Harness`] that runs
//! a connector as the daemon would, the [`conformance`] suite every connector must pass against its
//! real server (or a faithful fake), and helpers that start real servers on loopback for tests
//! ([`servers`]) and speak to them as a plain user would ([`irc_client`]).
//!
//! ## Layout
//! - [`harness`]: runs one connector with in-memory channels and state.
//! - [`conformance`]: the shared suite and the [`conformance::Peer`] trait a connector's test
//!   implements to act as a remote user.
//! - [`servers`]: real servers started per test on a free loopback port, stopped on drop.
//! - [`irc_client`]: a raw IRC client for tests.
//! - [`loopback`]: an HTTP listener on a free loopback port, served until cancelled.
//! - [`http_bridge`]: a connector's webhook handler behind a plain HTTP listener.
//!
//! What is one network's own (the throwaway Synapse and Prosody, the Matrix and XMPP test clients,
//! the fakes of Meta, Telegram and signal-cli) lives in that connector's crate behind its
//! `testing` feature, so a connector's tests build no other network's crate.

pub mod conformance;
pub mod harness;
pub mod http_bridge;
pub mod irc_client;
pub mod loopback;
pub mod postgres;
pub mod servers;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests), never one given
/// before in this process, and always **below the kernel's ephemeral range**: ports from there
/// are also the local ports of outgoing connections, so a daemon restarted on such a port can
/// find it taken by some client's connection in the moment it was down ("address already in
/// use"). Picked at random below that range, so that test processes running side by side rarely
/// meet.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_500));
    let mut seed = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_usize(given.len());
        h.finish()
    };
    for _ in 0..10_000 {
        // xorshift: cheap, and seeded per process and call.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let port = low + (seed % u64::from(high - low)) as u16;
        if given.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free loopback port below the ephemeral range in 10,000 tries")
}

/// Serves one file (`data` as `mime`) at `/{name}` on a free loopback port until the runtime ends,
/// as another network's link would; its URL.
pub async fn file_server(name: &str, mime: &'static str, data: Vec<u8>) -> String {
    let (listener, port) = loopback::listen().await;
    let app = axum::Router::new().route(
        &format!("/{name}"),
        axum::routing::get(move || {
            let data = data.clone();
            async move { ([("content-type", mime)], data) }
        }),
    );
    loopback::serve(listener, app, tokio_util::sync::CancellationToken::new());
    format!("http://127.0.0.1:{port}/{name}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn free_ports_are_never_given_twice() {
        let ports: Vec<u16> = (0..300).map(|_| super::free_port()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len());
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok())
            .unwrap_or(32768);
        assert!(
            ports.iter().all(|&p| (10_000..ephemeral_low).contains(&p)),
            "outside the range clients' connections take their local ports from"
        );
    }
}
