//! Seven validators over memsocket (and once over TCP), each behind a `FaultyTransport`
//! sharing one `FaultController`, under faults: a partition of four from three and its
//! healing, latency, cut connections. What must hold throughout:
//!
//! - after a heal every validator reconnects to every other within the backoff cap
//!   (plus one connectivity check);
//! - every RPC ends, with a response or a typed error, within its timeout: none hangs;
//! - every DirectSend message the network accepted is delivered or counted in the drop
//!   counters: no substream could be opened for it, or it was written to a substream
//!   that ended before the receiver acknowledged it.
//!
//! Time is paused (it advances when every task waits), so the runs are short in wall
//! time; the TCP test runs in real time. The process-kill case is in
//! `node/tests/cluster_kill.rs`.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use netcore::transport::{FaultController, MemoryTransport, TcpTransport};
use proto::consensus::{
    BlockRetrievalRequest, BlockRetrievalResponse, ConsensusMsg, SyncInfo,
    block_retrieval_response::Status, consensus_msg,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use validator_network::{
    AppEvent, Identity, Intervals, NetworkAddress, PeerId, Registry, RequestError, ShutdownHandle,
    StackBuilder, StackConfig,
};

mod common;
use common::{Consensus, ConsensusEvents, ConsensusSender};

/// Validators in the cluster.
const N: usize = 7;

/// The largest redial delay: short, so a heal is quick to observe.
const BACKOFF_CAP: Duration = Duration::from_millis(2000);

/// Time between the connectivity manager's checks.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);

/// Each RPC's timeout.
const RPC_TIMEOUT: Duration = Duration::from_millis(500);

/// Slack on top of an RPC's timeout before it counts as hung, in paused time (the timer
/// fires on time; the slack covers the response in flight).
const HANG_SLACK: Duration = Duration::from_millis(100);

/// The same in real time, where a loaded machine fires timers late.
const HANG_SLACK_REAL_TIME: Duration = Duration::from_secs(2);

/// Time between one caller's RPCs.
const CALL_PACE: Duration = Duration::from_millis(50);

/// Memory ports of the clusters of this test binary (tests run in parallel threads and
/// share memsocket's port table).
static NEXT_PORT: AtomicU16 = AtomicU16::new(41_000);

fn intervals() -> Intervals {
    Intervals {
        connectivity_check_ms: CHECK_INTERVAL.as_millis() as u64,
        backoff_base_ms: 100,
        backoff_cap_ms: BACKOFF_CAP.as_millis() as u64,
        ping_interval_ms: 500,
        ping_timeout_ms: 500,
        ..Intervals::default()
    }
}

/// What a validator's event task saw.
#[derive(Default)]
struct Seen {
    /// DirectSend messages received, by sender.
    messages: Mutex<HashMap<PeerId, u64>>,
    rpcs_answered: AtomicU64,
}

struct Validator {
    name: String,
    peer_id: PeerId,
    sender: ConsensusSender,
    registry: Registry,
    seen: Arc<Seen>,
    events_task: JoinHandle<()>,
    shutdown: Option<ShutdownHandle>,
}

impl Validator {
    fn connected(&self) -> usize {
        self.sender.connected_peers().len()
    }

    /// A counter of the registry summed over the label sets whose labels include
    /// every one of `labels`.
    fn counter(&self, name: &str, labels: &[&str]) -> u64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter())
            .filter(|m| {
                labels
                    .iter()
                    .all(|l| m.get_label().iter().any(|x| x.value() == *l))
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

struct Cluster {
    faults: FaultController,
    validators: Vec<Validator>,
}

/// The base transport under the fault wrapper.
#[derive(Clone, Copy)]
enum Net {
    Memory,
    Tcp,
}

/// A loopback TCP port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// Starts `N` validators over memsocket that know every address and trust each other.
    fn start() -> Self {
        Self::start_on(Net::Memory)
    }

    /// Starts `N` validators over `net` that know every address and trust each other.
    fn start_on(net: Net) -> Self {
        let faults = FaultController::new();
        let identities: Vec<Identity> = (0..N).map(|_| Identity::generate()).collect();
        let peers: Vec<PeerId> = identities.iter().map(Identity::peer_id).collect();
        let listen: Vec<String> = match net {
            Net::Memory => {
                let base = NEXT_PORT.fetch_add(N as u16, Ordering::SeqCst);
                (0..N)
                    .map(|i| format!("/memory/{}", base + i as u16))
                    .collect()
            }
            Net::Tcp => (0..N)
                .map(|_| format!("/ip4/127.0.0.1/tcp/{}", free_port()))
                .collect(),
        };
        let addrs: Vec<NetworkAddress> = (0..N)
            .map(|i| {
                listen[i]
                    .parse::<NetworkAddress>()
                    .unwrap()
                    .with_peer_id(peers[i])
            })
            .collect();
        let validators = identities
            .into_iter()
            .enumerate()
            .map(|(i, identity)| {
                let name = format!("v{i}");
                let mut config = StackConfig::for_validator_set(&listen[i], &peers, &addrs);
                config.intervals = intervals();
                let registry = Registry::new();
                let builder = StackBuilder::new(config, registry.clone()).with_identity(identity);
                let builder = match net {
                    Net::Memory => {
                        builder.with_transport(faults.transport(MemoryTransport::default(), &name))
                    }
                    Net::Tcp => {
                        builder.with_transport(faults.transport(TcpTransport::default(), &name))
                    }
                };
                let mut builder = builder;
                let consensus = builder.register::<Consensus>();
                let mut running = builder.start().unwrap();
                let (sender, events) = running.take(consensus);
                let seen = Arc::new(Seen::default());
                let events_task = tokio::spawn(serve(events, seen.clone()));
                Validator {
                    name,
                    peer_id: running.peer_id,
                    sender,
                    registry,
                    seen,
                    events_task,
                    shutdown: Some(running.shutdown),
                }
            })
            .collect();
        Self { faults, validators }
    }

    fn names(&self, range: std::ops::Range<usize>) -> Vec<String> {
        self.validators[range]
            .iter()
            .map(|v| v.name.clone())
            .collect()
    }

    /// Waits until validator `i` has `want(i)` peers for every `i`; returns the time it
    /// took. Panics past `limit`.
    async fn wait_for(&self, want: impl Fn(usize) -> usize, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self
                .validators
                .iter()
                .enumerate()
                .all(|(i, v)| v.connected() == want(i))
            {
                return start.elapsed();
            }
            let counts: Vec<usize> = self.validators.iter().map(Validator::connected).collect();
            assert!(
                start.elapsed() < limit,
                "peers per validator still {counts:?} after {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn fully_connected(&self, limit: Duration) -> Duration {
        self.wait_for(|_| N - 1, limit).await
    }

    async fn shutdown(mut self) {
        for v in &mut self.validators {
            v.events_task.abort();
            if let Some(s) = v.shutdown.take() {
                s.shutdown().await;
            }
        }
    }
}

/// Answers every block request and counts every message, for as long as the stack runs.
async fn serve(mut events: ConsensusEvents, seen: Arc<Seen>) {
    while let Some(event) = events.next().await {
        match event {
            AppEvent::RpcRequest {
                request, responder, ..
            } => {
                seen.rpcs_answered.fetch_add(1, Ordering::Relaxed);
                responder
                    .respond(BlockRetrievalResponse {
                        status: Status::Ok.into(),
                        blocks: Vec::new(),
                    })
                    .unwrap();
                let _ = request;
            }
            AppEvent::Message { peer_id, .. } => {
                *seen.messages.lock().unwrap().entry(peer_id).or_default() += 1;
            }
            _ => {}
        }
    }
}

/// What the RPC load saw.
#[derive(Debug, Default)]
struct RpcTally {
    ok: u64,
    typed_errors: u64,
}

/// Every validator calls every other, one call at a time per pair, until `stop`;
/// panics if any call outlives its timeout plus `slack`.
fn rpc_load(
    cluster: &Cluster,
    stop: Arc<tokio::sync::Notify>,
    slack: Duration,
) -> JoinHandle<RpcTally> {
    let senders: Vec<ConsensusSender> = cluster
        .validators
        .iter()
        .map(|v| v.sender.clone())
        .collect();
    let peers: Vec<PeerId> = cluster.validators.iter().map(|v| v.peer_id).collect();
    tokio::spawn(async move {
        let mut calls = Vec::new();
        for (i, sender) in senders.iter().enumerate() {
            for (j, &peer) in peers.iter().enumerate() {
                if i == j {
                    continue;
                }
                let sender = sender.clone();
                let stop = stop.clone();
                calls.push(tokio::spawn(async move {
                    let mut tally = RpcTally::default();
                    let stopped = stop.notified();
                    tokio::pin!(stopped);
                    loop {
                        let call = sender.request(
                            peer,
                            &BlockRetrievalRequest {
                                from_height: 1,
                                max_blocks: 1,
                            },
                            RPC_TIMEOUT,
                        );
                        let started = Instant::now();
                        let outcome = tokio::select! {
                            _ = &mut stopped => return tally,
                            outcome = tokio::time::timeout(RPC_TIMEOUT + slack, call) => outcome,
                        };
                        match outcome {
                            Ok(Ok(_)) => tally.ok += 1,
                            Ok(Err(
                                RequestError::Rpc(_)
                                | RequestError::Decode(_)
                                | RequestError::Decompress(_),
                            )) => {
                                tally.typed_errors += 1;
                            }
                            Err(_) => panic!(
                                "an RPC from validator {i} to {j} hung past {:?} (started {:?} ago)",
                                RPC_TIMEOUT + slack,
                                started.elapsed()
                            ),
                        }
                        // Paced: in paused time, calls that take no time would keep the
                        // runtime busy and the clock still.
                        tokio::time::sleep(CALL_PACE).await;
                    }
                }));
            }
        }
        let mut total = RpcTally::default();
        for call in calls {
            let t = call.await.unwrap();
            total.ok += t.ok;
            total.typed_errors += t.typed_errors;
        }
        total
    })
}

#[tokio::test(start_paused = true)]
async fn four_partitioned_from_three_reconnect_within_the_backoff_cap_after_the_heal() {
    let cluster = Cluster::start();
    cluster.fully_connected(Duration::from_secs(30)).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = rpc_load(&cluster, stop.clone(), HANG_SLACK);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (big, small) = (cluster.names(0..4), cluster.names(4..N));
    cluster.faults.partition(&big, &small);
    // Each side sees only its own: 3 peers in the four, 2 in the three.
    cluster
        .wait_for(|i| if i < 4 { 3 } else { 2 }, Duration::from_secs(10))
        .await;
    // Keep it partitioned long enough for every redial to fail and back off to the cap.
    tokio::time::sleep(BACKOFF_CAP * 3).await;
    assert!(cluster.faults.stats().dials_refused > 0);

    cluster.faults.heal();
    let took = cluster.fully_connected(BACKOFF_CAP * 5).await;
    println!("every validator reconnected {took:?} after the heal (cap {BACKOFF_CAP:?})");
    assert!(
        took <= BACKOFF_CAP + CHECK_INTERVAL,
        "reconnecting took {took:?}, past the backoff cap {BACKOFF_CAP:?} and one check"
    );

    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.notify_waiters();
    let tally = load.await.unwrap();
    println!("RPCs during the partition and heal: {tally:?}");
    assert!(tally.ok > 0 && tally.typed_errors > 0, "{tally:?}");
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn under_latency_and_cuts_every_rpc_ends_within_its_timeout() {
    let cluster = Cluster::start();
    cluster.fully_connected(Duration::from_secs(30)).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = rpc_load(&cluster, stop.clone(), HANG_SLACK);

    // Latency close to the RPC timeout: some calls answer, some time out.
    cluster.faults.set_latency(RPC_TIMEOUT / 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Every connection cut at once, twice, and one validator's repeatedly.
    cluster.faults.cut_all();
    tokio::time::sleep(Duration::from_millis(700)).await;
    cluster.faults.cut_all();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.faults.cut_node("v3");
    }
    cluster.faults.set_latency(Duration::ZERO);
    let took = cluster.fully_connected(BACKOFF_CAP * 5).await;
    println!("reconnected {took:?} after the last cut");

    stop.notify_waiters();
    let tally = load.await.unwrap();
    println!("RPCs under latency and cuts: {tally:?}");
    assert!(tally.ok > 0, "{tally:?}");
    cluster.shutdown().await;
}

/// A small DirectSend message.
fn note(round: u64) -> ConsensusMsg {
    ConsensusMsg {
        message: Some(consensus_msg::Message::SyncInfo(SyncInfo {
            round,
            ..SyncInfo::default()
        })),
    }
}

#[tokio::test(start_paused = true)]
async fn during_a_partition_every_accepted_direct_send_message_is_delivered_or_counted() {
    let cluster = Cluster::start();
    cluster.fully_connected(Duration::from_secs(30)).await;
    let sender = &cluster.validators[0];
    let mut accepted: HashMap<PeerId, u64> = HashMap::new();
    let mut refused = 0u64;

    // v0 streams messages to everyone while v4..v6 are cut off from it, then healed.
    for round in 0..600u64 {
        if round == 200 {
            let (big, small) = (cluster.names(0..4), cluster.names(4..N));
            cluster.faults.partition(&big, &small);
        }
        if round == 400 {
            cluster.faults.heal();
        }
        for v in &cluster.validators[1..] {
            match sender.sender.send_to(v.peer_id, &note(round)) {
                Ok(()) => *accepted.entry(v.peer_id).or_default() += 1,
                Err(_) => refused += 1,
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.fully_connected(BACKOFF_CAP * 5).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let accepted_total: u64 = accepted.values().sum();
    let received: u64 = cluster.validators[1..]
        .iter()
        .map(|v| {
            v.seen
                .messages
                .lock()
                .unwrap()
                .get(&sender.peer_id)
                .copied()
                .unwrap_or(0)
        })
        .sum();
    let protocol = common::CONSENSUS_DIRECT_SEND.as_str();
    let drops = |reason: &str| sender.counter("network_queue_drops_total", &[protocol, reason]);
    let (queue_full, stream_failed, unconfirmed) = (
        drops("queue_full"),
        drops("stream_failed"),
        drops("unconfirmed"),
    );
    let written = sender.counter("network_messages_out_total", &[protocol]);
    let cut = cluster.faults.stats().connections_cut;
    println!(
        "DirectSend: {accepted_total} accepted, {refused} refused at once ({queue_full} of them \
         on a full queue), {received} received; {written} written to a substream, \
         {stream_failed} with no substream, {unconfirmed} unconfirmed when their substream \
         ended; {cut} connection ends cut"
    );
    assert!(refused > 0, "the partition refused nothing");
    // The sender accounts for every message it accepted: written to a substream, or
    // counted as dropped because no substream could be opened.
    assert_eq!(written + stream_failed, accepted_total);
    // Of the messages written, every one is received or counted as unconfirmed (an
    // upper bound: an unconfirmed message may have arrived).
    assert!(
        received <= written,
        "{received} received, {written} written"
    );
    let lost_in_flight = written - received;
    assert!(
        lost_in_flight <= unconfirmed,
        "{lost_in_flight} lost, {unconfirmed} counted as unconfirmed"
    );
    // And the bound is close: at one message per peer per 10 ms, a cut connection had at
    // most a few messages unacknowledged.
    assert!(
        unconfirmed <= 4 * cut.max(1),
        "{unconfirmed} unconfirmed on {cut} cut connection ends"
    );
    cluster.shutdown().await;
}

#[tokio::test(start_paused = true)]
#[ignore = "long variant (about 20 s of wall time, 100 s of paused time): \
            cargo test -p validator-network --test cluster -- --ignored --nocapture"]
async fn thirty_rounds_of_changing_partitions_and_cuts_always_heal() {
    let cluster = Cluster::start();
    cluster.fully_connected(Duration::from_secs(30)).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = rpc_load(&cluster, stop.clone(), HANG_SLACK);
    let mut worst = Duration::ZERO;
    for round in 0..30usize {
        // A different split each round: the first k validators against the rest.
        let k = 1 + round % (N - 1);
        let (a, b) = (cluster.names(0..k), cluster.names(k..N));
        cluster.faults.partition(&a, &b);
        if round % 3 == 0 {
            cluster.faults.set_latency(Duration::from_millis(100));
        }
        cluster
            .wait_for(
                |i| if i < k { k - 1 } else { N - k - 1 },
                Duration::from_secs(10),
            )
            .await;
        tokio::time::sleep(BACKOFF_CAP * 2).await;
        if round % 5 == 0 {
            cluster.faults.cut_all();
        }
        cluster.faults.heal();
        cluster.faults.set_latency(Duration::ZERO);
        let took = cluster.fully_connected(BACKOFF_CAP * 5).await;
        worst = worst.max(took);
        assert!(
            took <= BACKOFF_CAP + CHECK_INTERVAL,
            "round {round}: {took:?}"
        );
    }
    stop.notify_waiters();
    let tally = load.await.unwrap();
    println!("30 rounds: slowest reconnection {worst:?}; RPCs {tally:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tcp_four_partitioned_from_three_reconnect_after_the_heal() {
    // Real time: paused time would fire timeouts while sockets wait.
    let cluster = Cluster::start_on(Net::Tcp);
    cluster.fully_connected(Duration::from_secs(30)).await;
    let stop = Arc::new(tokio::sync::Notify::new());
    let load = rpc_load(&cluster, stop.clone(), HANG_SLACK_REAL_TIME);

    let (big, small) = (cluster.names(0..4), cluster.names(4..N));
    cluster.faults.partition(&big, &small);
    cluster
        .wait_for(|i| if i < 4 { 3 } else { 2 }, Duration::from_secs(10))
        .await;
    tokio::time::sleep(BACKOFF_CAP).await;
    cluster.faults.heal();
    let took = cluster.fully_connected(BACKOFF_CAP * 5).await;
    println!("over TCP, every validator reconnected {took:?} after the heal");
    // Real time on a shared machine: a second of slack past the cap and one check.
    assert!(
        took <= BACKOFF_CAP + CHECK_INTERVAL + Duration::from_secs(1),
        "{took:?}"
    );

    stop.notify_waiters();
    let tally = load.await.unwrap();
    println!("RPCs over TCP during the partition and heal: {tally:?}");
    assert!(tally.ok > 0 && tally.typed_errors > 0, "{tally:?}");
    cluster.shutdown().await;
}
