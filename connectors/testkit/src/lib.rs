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
//! - [`synapse`]: a throwaway Synapse homeserver (from the test venv) on loopback.
//! - [`matrix_client`]: a plain client-server API user for tests.
//! - [`fakes`]: faithful fakes of services that can't run here (Meta's Graph API…).

pub mod conformance;
pub mod fakes;
pub mod harness;
pub mod http_bridge;
pub mod irc_client;
pub mod matrix_client;
pub mod prosody;
pub mod servers;
pub mod synapse;
pub mod xmpp_client;

/// A free TCP port on 127.0.0.1 (bound and released; good enough for tests). The kernel may hand
/// a just-released port out again, so the ports given in this process are remembered and never
/// given twice: a test asking for several gets distinct ones.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
    panic!("no loopback port not given before in 1000 tries")
}

/// Serves one file (`data` as `mime`) at `/{name}` on a free loopback port until the runtime ends,
/// as another network's link would; its URL.
pub async fn file_server(name: &str, mime: &'static str, data: Vec<u8>) -> String {
    let (listener, port) = fakes::listen().await;
    let app = axum::Router::new().route(
        &format!("/{name}"),
        axum::routing::get(move || {
            let data = data.clone();
            async move { ([("content-type", mime)], data) }
        }),
    );
    fakes::serve(listener, app, tokio_util::sync::CancellationToken::new());
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
    }
}
