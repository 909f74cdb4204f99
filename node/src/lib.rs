//! The node: a validator running the example consensus and mempool over
//! `validator-network`'s validator network, and serving the chain to full nodes over a
//! public network; or a full node following the chain over the public network alone.
//! As a demo cluster in one process or one real node per machine, with prometheus
//! metrics over HTTP.
//!
//! This crate owns the command line (`src/main.rs`), the node's configuration file
//! ([`config`]), the wiring of networks, mempool, consensus and state sync
//! ([`validator`], [`full_node`]), the demo ([`demo`]), `node run` ([`run`]) and the
//! `/metrics` endpoint ([`metrics`]). It owns no networking: that is
//! `validator-network` and below.

pub mod config;
pub mod demo;
pub mod full_node;
pub mod metrics;
pub mod run;
pub mod validator;

/// Resolves when the process is asked to stop: Ctrl-C or SIGTERM.
pub async fn stop_signal() {
    let ctrl_c = async {
        // Without a signal handler the node runs until killed.
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
