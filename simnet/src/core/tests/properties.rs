//! Properties of random networks and transfers: capacity is never exceeded, no byte
//! beats its latency and its path's rate, windows hold, and every transfer ends.

use proptest::prelude::*;

use super::*;
use crate::core::fluid::EPSILON;

/// A network of 2 to 5 nodes, one latency between every two, and transfers between them.
#[derive(Clone, Debug)]
struct Case {
    /// Each node's uplink and downlink, bytes per second.
    links: Vec<(u64, u64)>,
    latency: Duration,
    window: u64,
    /// Sender, receiver, start, bytes.
    transfers: Vec<(usize, usize, Duration, u64)>,
}

fn case() -> impl Strategy<Value = Case> {
    (2usize..6).prop_flat_map(|nodes| {
        let links = proptest::collection::vec((1u64..=1000, 1u64..=1000), nodes)
            .prop_map(|l| l.into_iter().map(|(u, d)| (mbit(u), mbit(d))).collect());
        let transfer = (0..nodes, 0..nodes, 0u64..200, 1u64..=2 * MIB)
            .prop_map(|(s, d, start, bytes)| (s, d, ms(start), bytes));
        (
            links,
            1u64..100,
            prop_oneof![Just(64 * KIB), Just(MIB), Just(64 * MIB)],
            proptest::collection::vec(transfer, 1..8),
        )
            .prop_map(|(links, latency, window, transfers)| Case {
                links,
                latency: ms(latency),
                window,
                transfers,
            })
    })
}

/// The network of `case` with a connection for each transfer, and its jobs (their
/// readers greedy), starting from the network's clock.
fn setup(case: &Case) -> (Net, Vec<NodeId>, Vec<Job>) {
    let params = Params {
        window: case.window,
        ..params()
    };
    let mut net = Net::new(params);
    let nodes: Vec<NodeId> = case
        .links
        .iter()
        .map(|(up, down)| net.core.add_node(*up, *down))
        .collect();
    for a in &nodes {
        for b in &nodes {
            if a != b {
                net.core.set_latency(*a, *b, case.latency);
            }
        }
    }
    let flows: Vec<FlowId> = case
        .transfers
        .iter()
        .map(|(s, d, _, _)| net.open(nodes[*s], nodes[*d]))
        .collect();
    let base = net.core.now();
    let jobs: Vec<Job> = case
        .transfers
        .iter()
        .zip(flows)
        .map(|((_, _, start, bytes), flow)| Job::new(flow, base + *start, *bytes))
        .collect();
    (net, nodes, jobs)
}

/// Runs `jobs` until `until`, checking after each step that no flow holds more than
/// its window in flight and unread.
fn run_until(net: &mut Net, jobs: &mut [Job], window: u64, until: Duration) {
    let window = window as f64;
    net.run_checked(jobs, ms(1), until, |core, jobs| {
        for job in jobs {
            let f = core.flow(job.flow).unwrap();
            let held = f.in_flight_and_unread(core.now());
            assert!(
                held <= window + EPSILON,
                "{held} bytes held, window {window}"
            );
        }
    });
}

/// Runs `case` to its end.
fn run(case: &Case) -> (Net, Vec<NodeId>, Vec<Job>) {
    let (mut net, nodes, mut jobs) = setup(case);
    let end = net.core.now() + ms(3_600_000);
    run_until(&mut net, &mut jobs, case.window, end);
    (net, nodes, jobs)
}

impl Case {
    /// The one-way latency of a transfer from node `s` to node `d`.
    fn latency(&self, s: usize, d: usize) -> Duration {
        if s == d {
            params().local_latency
        } else {
            self.latency
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn every_transfer_ends_with_all_its_bytes(case in case()) {
        let (_, _, jobs) = run(&case);
        for job in &jobs {
            prop_assert_eq!(job.received, job.total);
            prop_assert!(job.done.is_some());
        }
    }

    #[test]
    fn no_transfer_beats_its_latency_and_its_path_rate(case in case()) {
        let (_, _, jobs) = run(&case);
        for (job, (s, d, _, bytes)) in jobs.iter().zip(&case.transfers) {
            let rate = case.links[*s].0.min(case.links[*d].1) as f64;
            let least = case.latency(*s, *d) + Duration::from_secs_f64(*bytes as f64 / rate);
            let took = job.done.unwrap() - job.start;
            prop_assert!(took + Duration::from_micros(1) >= least, "{took:?} < {least:?}");
        }
    }

    #[test]
    fn no_link_carries_more_than_its_capacity_over_time(case in case()) {
        let (_, _, jobs) = run(&case);
        for node in 0..case.links.len() {
            let (up, down) = case.links[node];
            let sending = |j: &&(usize, usize, Duration, u64)| j.0 == node;
            let receiving = |j: &&(usize, usize, Duration, u64)| j.1 == node;
            for (capacity, uses) in [(up, &sending as &dyn Fn(&_) -> bool), (down, &receiving)] {
                let mine: Vec<(&Job, u64, Duration)> = jobs.iter().zip(&case.transfers)
                    .filter(|(_, t)| uses(t))
                    .map(|(j, t)| (j, t.3, case.latency(t.0, t.1)))
                    .collect();
                let Some(first) = mine.iter().map(|(j, _, _)| j.start).min() else { continue };
                let last = mine.iter().filter_map(|(j, _, _)| j.done).max().unwrap();
                let bytes: u64 = mine.iter().map(|(_, b, _)| b).sum();
                let latency = mine.iter().map(|(_, _, l)| *l).min().unwrap();
                let busy = (last - first).saturating_sub(latency);
                let least = Duration::from_secs_f64(bytes as f64 / capacity as f64);
                prop_assert!(
                    busy + Duration::from_micros(1) >= least,
                    "node {node}: {bytes} bytes in {busy:?}, capacity {capacity} B/s"
                );
            }
        }
    }

    #[test]
    fn the_same_case_gives_the_same_instants(case in case()) {
        let (_, _, first) = run(&case);
        let (_, _, second) = run(&case);
        let done = |jobs: &[Job]| jobs.iter().map(|j| j.done).collect::<Vec<_>>();
        prop_assert_eq!(done(&first), done(&second));
    }
}

/// A case, and a cut between two of its nodes: after how long, and for how long.
fn cut_case() -> impl Strategy<Value = (Case, (usize, usize), Duration, Duration)> {
    case()
        .prop_flat_map(|case| {
            let n = case.links.len();
            (Just(case), (0..n, 0..n), 0u64..300, 1u64..3000)
        })
        .prop_map(|(case, pair, at, lasts)| (case, pair, ms(at), ms(lasts)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nothing_crosses_a_cut_and_everything_arrives_after_the_heal(
        (case, (a, b), at, lasts) in cut_case()
    ) {
        let (mut net, nodes, mut jobs) = setup(&case);
        let base = net.core.now();
        let window = case.window;
        let settle_at = |net: &mut Net, jobs: &mut [Job], t: Duration| {
            run_until(net, jobs, window, t);
            net.core.advance(t);
            net.pump(jobs);
        };

        settle_at(&mut net, &mut jobs, base + at);
        let before: Vec<u64> = jobs.iter().map(|j| j.received).collect();
        net.core.set_cut([(nodes[a], nodes[b])], true);
        settle_at(&mut net, &mut jobs, base + at + lasts);
        let during: Vec<u64> = jobs.iter().map(|j| j.received).collect();
        net.core.heal_all();
        run_until(&mut net, &mut jobs, window, base + ms(3_600_000));

        for (i, (s, d, _, _)) in case.transfers.iter().enumerate() {
            let across = a != b && ((*s, *d) == (a, b) || (*s, *d) == (b, a));
            if across {
                prop_assert_eq!(during[i], before[i], "bytes crossed the cut");
            }
            prop_assert_eq!(jobs[i].received, jobs[i].total);
        }
    }
}
