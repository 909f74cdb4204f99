//! The WAN benchmark: 100 nodes in five regions over a simulated network (`simnet`),
//! 1 Gbit/s links, round-trip times from a published table (`simnet::RTT_MS`).
//! Everything runs on tokio's paused clock: the figures are simulated time, the same on
//! any machine, and CPU time does not count.
//!
//! `cargo bench -p benches --bench wan` (a few minutes of wall time)
//!
//! 1. proposals of 1 and 8 MiB from a leader to the 99 others: time until 67 and 99
//!    hold it, sent to all at once, nearest first as requests, and with
//!    `send_nearest_first` (tracked sends, `network::IN_ORDER_WINDOW` at a time), beside
//!    the bounds for direct sends;
//! 2. a 32 B vote from every validator to the leader while an 8 MiB proposal goes out,
//!    and a 32 B urgent message from the leader to each beside 8 MiB of bulk to each;
//! 3. a 64 MiB response across a 230 ms round trip;
//! 4. a 2 MiB response after 10 s idle against the same right after a transfer;
//! 5. the example consensus on 100 validators: blocks per second, commit spread.
#![allow(missing_docs)] // A bench binary's `main` needs no doc.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::sync::Arc;
use std::time::Duration;

use benches::wan::{BLOCKS, BULK, Cluster, LINK, PROPOSAL, PROPOSAL_RPC, VOTE, sim_config, tagged};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use parking_lot::Mutex;
use tokio::time::Instant;

/// Nodes of the proposal and vote scenarios.
const NODES: usize = 100;
const LEADER: usize = 0;
const TIMEOUT: Duration = Duration::from_secs(120);
/// Votes are tagged this plus their sender's index.
const VOTE_TAG: u64 = 1_000_000;

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Time for the leader's uplink to carry `bytes`.
fn wire_time(bytes: usize) -> Duration {
    Duration::from_secs_f64(bytes as f64 / LINK as f64)
}

/// The receivers by one-way latency from the leader, nearest first.
fn nearest_first(cluster: &Cluster) -> Vec<usize> {
    let mut others: Vec<usize> = (0..cluster.nodes.len()).filter(|i| *i != LEADER).collect();
    others.sort_by_key(|i| cluster.one_way(LEADER, *i));
    others
}

/// The bound of sending to the nearest first, one after another at the full uplink:
/// the `k`-th nearest (from 1) holds it after `k` proposals' wire time plus its latency.
fn nearest_first_bound(cluster: &Cluster, order: &[usize], size: usize, k: usize) -> Duration {
    wire_time(size * k) + cluster.one_way(LEADER, order[k - 1])
}

/// The bound of sending to all at once: all 99 proposals' wire time plus the latency.
fn all_at_once_bound(cluster: &Cluster, others: usize, size: usize, node: usize) -> Duration {
    wire_time(size * others) + cluster.one_way(LEADER, node)
}

/// Waits until `count` nodes received `tag`; returns the arrival times after `start`,
/// sorted.
async fn wait_arrivals(
    cluster: &Cluster,
    tag: u64,
    count: usize,
    start: Instant,
) -> Vec<(usize, Duration)> {
    loop {
        let arrived = cluster.arrivals_of(tag);
        if arrived.len() >= count {
            let mut times: Vec<(usize, Duration)> =
                arrived.iter().map(|a| (a.node, a.at - start)).collect();
            times.sort_by_key(|(_, t)| *t);
            return times;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Scenario 1, all at once: the leader queues the proposal for every other node.
async fn proposal_all_at_once(cluster: &Cluster, size: usize, tag: u64) {
    let order = nearest_first(cluster);
    let start = Instant::now();
    let leader = &cluster.nodes[LEADER];
    for &i in &order {
        leader
            .sender
            .send_to(cluster.nodes[i].peer, PROPOSAL, tagged(tag, size))
            .unwrap();
    }
    let times = wait_arrivals(cluster, tag, order.len(), start).await;
    report_proposal(cluster, "all at once", size, &order, &times);
}

/// Scenario 1, nearest first: the leader sends the proposal as requests, nearest
/// validator first, with as many unanswered as keep its uplink busy for the longest
/// round trip (the bandwidth-delay product in proposals, plus one).
async fn proposal_nearest_first(cluster: &Cluster, size: usize, tag: u64) {
    let order = nearest_first(cluster);
    let farthest = order
        .iter()
        .map(|i| cluster.one_way(LEADER, *i) * 2)
        .max()
        .unwrap();
    let window = (farthest.as_secs_f64() * LINK as f64 / size as f64).ceil() as usize + 1;
    let start = Instant::now();
    let leader = cluster.nodes[LEADER].sender.clone();
    let mut in_flight: FuturesUnordered<_> = FuturesUnordered::new();
    for &i in &order {
        if in_flight.len() >= window {
            let answer: Result<bytes::Bytes, network::RpcError> = in_flight.next().await.unwrap();
            answer.unwrap();
        }
        let (leader, peer) = (leader.clone(), cluster.nodes[i].peer);
        in_flight.push(async move {
            leader
                .rpc(peer, PROPOSAL_RPC, tagged(tag, size), TIMEOUT)
                .await
        });
    }
    while let Some(answer) = in_flight.next().await {
        answer.unwrap();
    }
    let times = wait_arrivals(cluster, tag, order.len(), start).await;
    report_proposal(
        cluster,
        &format!("nearest first, {window} in flight"),
        size,
        &order,
        &times,
    );
}

/// Scenario 1, nearest first as tracked sends: `NetworkSender::send_nearest_first`
/// orders the receivers by the round trip each connection measured and sends
/// `network::IN_ORDER_WINDOW` copies at a time, starting the next when one went to its
/// socket. `round` names the row: the first such send, or the next.
async fn proposal_sent_nearest_first(cluster: &Cluster, size: usize, tag: u64, round: &str) {
    let order = nearest_first(cluster);
    let peers: Vec<_> = order.iter().map(|i| cluster.nodes[*i].peer).collect();
    let start = Instant::now();
    let failed = cluster.nodes[LEADER]
        .sender
        .send_nearest_first(&peers, PROPOSAL, tagged(tag, size))
        .await;
    assert!(failed.is_empty(), "not sent: {failed:?}");
    let times = wait_arrivals(cluster, tag, order.len(), start).await;
    report_proposal(
        cluster,
        &format!(
            "sent nearest first, {} at a time, {round}",
            network::IN_ORDER_WINDOW
        ),
        size,
        &order,
        &times,
    );
}

fn report_proposal(
    cluster: &Cluster,
    how: &str,
    size: usize,
    order: &[usize],
    times: &[(usize, Duration)],
) {
    for k in [67, 99] {
        let (node, t) = times[k - 1];
        let nearest = nearest_first_bound(cluster, order, size, k);
        let all = all_at_once_bound(cluster, order.len(), size, node);
        println!(
            "proposal {} MiB, {how}: validator {k} holds it at {} (nearest-first bound {}, {:.2}x; all-at-once bound {})",
            size >> 20,
            ms(t),
            ms(nearest),
            t.as_secs_f64() / nearest.as_secs_f64(),
            ms(all),
        );
    }
}

/// Scenario 2: every validator sends a vote to the leader 20 ms into an 8 MiB
/// proposal going out to all; a vote's tag is [`VOTE_TAG`] plus its sender's index.
async fn votes_during_proposal(cluster: &Cluster) {
    let size = 8 << 20;
    let proposal = 30;
    let leader = &cluster.nodes[LEADER];
    for i in nearest_first(cluster) {
        leader
            .sender
            .send_to(cluster.nodes[i].peer, PROPOSAL, tagged(proposal, size))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = Instant::now();
    for (i, node) in cluster.nodes.iter().enumerate().skip(1) {
        node.sender
            .send_to(leader.peer, VOTE, tagged(VOTE_TAG + i as u64, 32))
            .unwrap();
    }
    let mut latencies = Vec::new();
    let mut excess = Vec::new();
    for i in 1..cluster.nodes.len() {
        let (_, t) = wait_arrivals(cluster, VOTE_TAG + i as u64, 1, sent).await[0];
        latencies.push(t);
        excess.push(t.saturating_sub(cluster.one_way(i, LEADER)));
    }
    latencies.sort();
    excess.sort();
    let p = |v: &[Duration], q: usize| v[(v.len() * q / 100).min(v.len() - 1)];
    println!(
        "votes during an 8 MiB proposal: latency p50 {} p99 {}; beyond the one-way latency p50 {} p99 {} (max {})",
        ms(p(&latencies, 50)),
        ms(p(&latencies, 99)),
        ms(p(&excess, 50)),
        ms(p(&excess, 99)),
        ms(*excess.last().unwrap()),
    );
    wait_arrivals(cluster, proposal, NODES - 1, sent).await;
}

/// Scenario 2, the other way: 20 ms into sending 8 MiB of bulk blocks to every
/// validator, the leader sends each a 32 B urgent message on the same connection; the
/// message's latency beyond the one-way latency, p50 and p99.
async fn urgent_beside_bulk(cluster: &Cluster) {
    let (blocks, urgent) = (40, 2_000_000);
    let leader = &cluster.nodes[LEADER];
    let others: Vec<usize> = (1..cluster.nodes.len()).collect();
    for &i in &others {
        leader
            .sender
            .send_to(cluster.nodes[i].peer, BLOCKS, tagged(blocks, 8 << 20))
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let sent = Instant::now();
    for &i in &others {
        leader
            .sender
            .send_to(cluster.nodes[i].peer, VOTE, tagged(urgent + i as u64, 32))
            .unwrap();
    }
    let mut excess = Vec::new();
    for &i in &others {
        let (_, t) = wait_arrivals(cluster, urgent + i as u64, 1, sent).await[0];
        excess.push(t.saturating_sub(cluster.one_way(LEADER, i)));
    }
    excess.sort();
    let p = |q: usize| excess[(excess.len() * q / 100).min(excess.len() - 1)];
    println!(
        "urgent 32 B from the leader beside 8 MiB of bulk to each: beyond the one-way latency p50 {} p99 {}",
        ms(p(50)),
        ms(p(99)),
    );
    wait_arrivals(cluster, blocks, others.len(), sent).await;
}

/// Scenario 3: a 64 MiB response from node `from` to node `to`; prints its time and
/// its throughput after the first 5 round trips, from samples of the bytes `to`'s
/// downlink carried.
async fn large_response(cluster: &Cluster, to: usize, from: usize) {
    let size: usize = 64 << 20;
    let rtt = cluster.one_way(to, from) + cluster.one_way(from, to);
    let receiver = cluster.nodes[to].id;
    let before = cluster.net.received(receiver);
    let start = Instant::now();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (net, samples) = (cluster.net.clone(), Arc::clone(&samples));
        tokio::spawn(async move {
            loop {
                let got = net.received(receiver) - before;
                samples.lock().push((start.elapsed(), got));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let response = cluster.nodes[to]
        .sender
        .rpc(
            cluster.nodes[from].peer,
            BULK,
            tagged(size as u64, 8),
            TIMEOUT,
        )
        .await
        .unwrap();
    assert_eq!(response.len(), size);
    let took = start.elapsed();
    sampler.abort();
    let link = LINK as f64;
    let overall = size as f64 / (took - rtt / 2).as_secs_f64();
    println!(
        "64 MiB response over a {} round trip: {} ({:.0}% of the link from the request's arrival)",
        ms(rtt),
        ms(took),
        overall / link * 100.0
    );
    let after = rtt * 5;
    let samples = samples.lock();
    // `WAN_PROGRESS=1` prints the transfer's progress every 100 ms.
    if std::env::var_os("WAN_PROGRESS").is_some() {
        for (t, got) in samples.iter().step_by(20) {
            println!("  {} {:.1} MiB", ms(*t), *got as f64 / (1 << 20) as f64);
        }
    }
    match samples.iter().rev().find(|(t, _)| *t <= after) {
        Some(&(t, got)) if took > after + rtt => {
            let rate = (size as u64).saturating_sub(got) as f64 / (took - t).as_secs_f64();
            println!(
                "  after the first 5 round trips: {:.0}% of the link",
                rate / link * 100.0
            );
        }
        _ => println!("  done within 6 round trips"),
    }
}

/// Scenario 4: a 2 MiB response after 10 s of idle connection, and right after another.
async fn burst_after_idle(cluster: &Cluster, to: usize, from: usize) {
    let size: usize = 2 << 20;
    let peer = cluster.nodes[from].peer;
    let sender = &cluster.nodes[to].sender;
    let fetch = || async {
        let start = Instant::now();
        let r = sender
            .rpc(peer, BULK, tagged(size as u64, 8), TIMEOUT)
            .await
            .unwrap();
        assert_eq!(r.len(), size);
        start.elapsed()
    };
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = fetch().await;
    let busy = fetch().await;
    println!(
        "2 MiB response: {} after 10 s idle, {} right after another ({:.2}x)",
        ms(idle),
        ms(busy),
        idle.as_secs_f64() / busy.as_secs_f64()
    );
}

/// Scenario 5: the example consensus on 100 validators for a simulated minute:
/// blocks per second after the first 10 s, and how long a block takes from its first
/// commit (the leader's, on its quorum of votes) to the quorum's (the 67th validator's).
async fn consensus() {
    let wall = std::time::Instant::now();
    let (_net, commits, handles) = benches::wan::start_consensus(NODES);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(70)).await;
    let commits = commits.lock().clone();
    let (from, to) = (
        start + Duration::from_secs(10),
        start + Duration::from_secs(70),
    );
    let mut first: std::collections::BTreeMap<u64, Vec<Instant>> = Default::default();
    for c in &commits {
        first.entry(c.height).or_default().push(c.at);
    }
    let heights: Vec<(u64, Instant, Instant)> = first
        .into_iter()
        .filter_map(|(h, mut at)| {
            at.sort();
            (at.len() >= 67).then(|| (h, at[0], at[66]))
        })
        .filter(|(_, t, _)| *t >= from && *t < to)
        .collect();
    let blocks = heights.len();
    let per_second = blocks as f64 / (to - from).as_secs_f64();
    let mut spread: Vec<Duration> = heights.iter().map(|(_, a, b)| *b - *a).collect();
    spread.sort();
    let intervals: Vec<Duration> = heights.windows(2).map(|w| w[1].1 - w[0].1).collect();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len().max(1) as u32;
    println!(
        "example consensus, {NODES} validators: {per_second:.2} blocks/s; a block every {} on average \
         (first commit to first commit); the 67th validator commits {} after the first (median)",
        ms(mean(&intervals)),
        ms(spread.get(spread.len() / 2).copied().unwrap_or_default()),
    );
    println!("  ({:.1} s wall)", wall.elapsed().as_secs_f64());
    drop(handles);
}

/// Runs the scenarios named in the arguments (`proposal`, `votes`, `large`, `burst`,
/// `consensus`), or all of them. The large-transfer scenarios run on a cluster of one node per region.
fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async {
        let wall = std::time::Instant::now();
        if wanted("proposal") || wanted("votes") {
            let start = Instant::now();
            let cluster = Cluster::start(NODES, sim_config()).await;
            println!(
                "{NODES} nodes connected (full mesh) in {} simulated, {:.1} s wall",
                ms(start.elapsed()),
                wall.elapsed().as_secs_f64()
            );
            if wanted("proposal") {
                proposal_all_at_once(&cluster, 1 << 20, 10).await;
                proposal_all_at_once(&cluster, 8 << 20, 11).await;
                proposal_nearest_first(&cluster, 1 << 20, 12).await;
                proposal_nearest_first(&cluster, 8 << 20, 13).await;
                // The first on streams whose windows grew to a 99th of the uplink
                // (the all-at-once rows), then again, as a leader's next proposals go.
                proposal_sent_nearest_first(&cluster, 1 << 20, 14, "first").await;
                proposal_sent_nearest_first(&cluster, 8 << 20, 15, "first").await;
                proposal_sent_nearest_first(&cluster, 1 << 20, 16, "next").await;
                proposal_sent_nearest_first(&cluster, 8 << 20, 17, "next").await;
            }
            if wanted("votes") {
                votes_during_proposal(&cluster).await;
                urgent_beside_bulk(&cluster).await;
            }
            cluster.shutdown().await;
        }
        if wanted("large") || wanted("burst") {
            // Node 0 is in us-east-1, node 4 in ap-southeast-2: 230 ms apart.
            let cluster = Cluster::start(5, sim_config()).await;
            if wanted("large") {
                large_response(&cluster, 0, 4).await;
            }
            if wanted("burst") {
                burst_after_idle(&cluster, 0, 4).await;
            }
            cluster.shutdown().await;
        }
        if wanted("consensus") {
            consensus().await;
        }
        println!("wall time {:.1} s", wall.elapsed().as_secs_f64());
    });
}
