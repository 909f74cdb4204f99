//! What an operator sees in the log when connections are refused: one line at the
//! default level on the refusing side, naming the peer or address, the reason and what
//! to check, and only a few lines a second however many connections are refused.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Net, connect, identities, start_node};
use network::NetworkConfig;
use noise::{Identity, TrustedPeers};
use tracing_subscriber::fmt::MakeWriter;

/// The log lines written at `warn` and above while it is the thread's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_writer(self.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Waits until `lines` of the log satisfy `done`, at most 10 s.
async fn wait_for(log: &Captured, done: impl Fn(&[String]) -> bool) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines = log.lines();
        if done(&lines) || start.elapsed() > Duration::from_secs(10) {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn refusals(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("refused an inbound connection"))
        .collect()
}

#[tokio::test]
async fn a_chain_id_mismatch_is_one_line_saying_what_to_check() {
    let log = Captured::default();
    let _guard = log.install();
    let (ids, trusted) = identities(2);
    let mut ids = ids.into_iter();
    let one = NetworkConfig {
        chain_id: 1,
        ..NetworkConfig::default()
    };
    let two = NetworkConfig {
        chain_id: 2,
        ..NetworkConfig::default()
    };
    let a = start_node(Net::Memory, ids.next().unwrap(), trusted.clone(), one);
    let b = start_node(Net::Memory, ids.next().unwrap(), trusted, two);
    a.sender.dial(b.addr.clone()).await.unwrap_err();
    let lines = wait_for(&log, |l| !refusals(l).is_empty()).await;
    let refused = refusals(&lines);
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert!(refused[0].contains("WARN"), "{}", refused[0]);
    assert!(refused[0].contains("ours 2, theirs 1"), "{}", refused[0]);
    assert!(refused[0].contains("check chain_id"), "{}", refused[0]);
    assert!(
        refused[0].contains("/memory/"),
        "names the address: {}",
        refused[0]
    );
    // The dialer's side says so too.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("dial failed") && l.contains("chain_mismatch"))
    );
}

#[tokio::test]
async fn an_untrusted_dialer_is_named_with_what_to_check() {
    untrusted_dialer_over(Net::Memory).await;
}

#[tokio::test]
async fn an_untrusted_dialer_over_tcp_is_named_with_what_to_check() {
    untrusted_dialer_over(Net::Tcp).await;
}

async fn untrusted_dialer_over(net: Net) {
    let log = Captured::default();
    let _guard = log.install();
    let (mut ids, trusted) = identities(1);
    let listener = start_node(net, ids.remove(0), trusted, NetworkConfig::default());
    let stranger = Identity::generate();
    let stranger_id = stranger.peer_id();
    let trusts_listener = TrustedPeers::from_peers([listener.peer_id]).unwrap();
    let dialer = start_node(net, stranger, trusts_listener, NetworkConfig::default());
    dialer.sender.dial(listener.addr.clone()).await.unwrap_err();
    let lines = wait_for(&log, |l| !refusals(l).is_empty()).await;
    let refused = refusals(&lines);
    assert_eq!(refused.len(), 1, "{lines:#?}");
    assert!(
        refused[0].contains(&stranger_id.to_string()),
        "{}",
        refused[0]
    );
    assert!(refused[0].contains("untrusted_peer"), "{}", refused[0]);
    assert!(
        refused[0].contains("not in our trusted peers"),
        "{}",
        refused[0]
    );
    // The dialer, told nothing by the protocol, says what to check on the other side.
    let dial = lines.iter().find(|l| l.contains("dial failed")).unwrap();
    assert!(dial.contains("may not trust our key"), "{dial}");
}

#[tokio::test]
async fn a_flood_of_refused_connections_writes_a_few_lines_a_second() {
    let log = Captured::default();
    let _guard = log.install();
    let (mut ids, trusted) = identities(1);
    let listener = start_node(
        Net::Memory,
        ids.remove(0),
        trusted,
        NetworkConfig::default(),
    );
    let trusts_listener = TrustedPeers::from_peers([listener.peer_id]).unwrap();
    let start = Instant::now();
    // 300 strangers, each refused at the prologue.
    let mut strangers = Vec::new();
    for _ in 0..300 {
        let node = start_node(
            Net::Memory,
            Identity::generate(),
            trusts_listener.clone(),
            NetworkConfig::default(),
        );
        let _ = node.sender.dial(listener.addr.clone()).await;
        strangers.push(node);
    }
    let secs = start.elapsed().as_secs() + 1;
    let lines = log.lines();
    let refused = refusals(&lines).len() as u64;
    assert!(refused >= 1);
    assert!(
        refused <= 5 * secs,
        "{refused} refusal lines in {secs} s for 300 refusals"
    );
    for mut node in strangers {
        node.shutdown().await;
    }
}

#[tokio::test]
async fn two_nodes_with_one_key_are_named_as_sharing_it() {
    let log = Captured::default();
    let _guard = log.install();
    let key = [5u8; 32];
    let (mut ids, _) = identities(1);
    let shared_id = Identity::from_secret_bytes(&key).peer_id();
    let listener_identity = ids.remove(0);
    let trusted = TrustedPeers::from_peers([shared_id, listener_identity.peer_id()]).unwrap();
    let mut listener = start_node(
        Net::Memory,
        listener_identity,
        trusted.clone(),
        NetworkConfig::default(),
    );
    let mut first = start_node(
        Net::Memory,
        Identity::from_secret_bytes(&key),
        trusted.clone(),
        NetworkConfig::default(),
    );
    connect(&mut first, &mut listener).await;
    let second = start_node(
        Net::Memory,
        Identity::from_secret_bytes(&key),
        trusted,
        NetworkConfig::default(),
    );
    // Each redials when its connection is replaced by the other's, as a node's
    // connectivity manager would.
    for _ in 0..2 {
        second.sender.dial(listener.addr.clone()).await.unwrap();
        wait_for(&log, |_| !first.sender.is_connected(&listener.peer_id)).await;
        first.sender.dial(listener.addr.clone()).await.unwrap();
        wait_for(&log, |_| !second.sender.is_connected(&listener.peer_id)).await;
    }
    let lines = wait_for(&log, |l| l.iter().any(|l| l.contains("share one key"))).await;
    let shared: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("share one key"))
        .collect();
    assert_eq!(shared.len(), 1, "{lines:#?}");
    assert!(shared[0].contains(&shared_id.short_str()), "{}", shared[0]);
}
