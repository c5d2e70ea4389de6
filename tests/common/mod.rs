//! Test harness shared by the end-to-end tests: real redis-server per test, real HTTP receivers.
#![allow(dead_code)]

pub mod config;
pub mod daemon;
pub mod fake_discord;
pub mod fake_gateway;
pub mod fake_slack;
pub mod fake_socket_mode;
pub mod history;
pub mod metrics;
pub mod notify;
pub mod outbox;
pub mod parts;
pub mod receiver;
pub mod redis;
pub mod seed;
pub mod synapse;
pub mod tls;
pub mod wait;

/// Serves `app` on a free loopback port in the background; its address.
pub async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}
