//! Max-min fair shares of capacities among flows.
//!
//! Each flow crosses two resources: its sender's uplink and its receiver's downlink.
//! Progressive filling: every flow's rate grows at the same pace until some resource is
//! full; the flows through it keep that rate, the others keep growing. The resource that
//! fills first is the one with the least capacity left per flow still growing through
//! it, so each round freezes the flows of that resource at that share.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// The max-min fair rate of each flow. `flows[i]` names the two resources (indices into
/// `capacity`) flow `i` crosses; a resource's flows together get at most its capacity.
pub(crate) fn max_min(capacity: &[f64], flows: &[[usize; 2]]) -> Vec<f64> {
    // Only the resources some flow crosses take part; they are numbered afresh, so that
    // each round looks at those alone, however many nodes the network has.
    let mut local = vec![usize::MAX; capacity.len()];
    let mut remaining = Vec::new();
    let mut through: Vec<Vec<usize>> = Vec::new();
    let paths: Vec<[usize; 2]> = flows
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            pair.map(|r| {
                if local[r] == usize::MAX {
                    local[r] = remaining.len();
                    remaining.push(capacity[r]);
                    through.push(Vec::new());
                }
                let l = local[r];
                if through[l].last() != Some(&i) {
                    through[l].push(i);
                }
                l
            })
        })
        .collect();
    let mut growing: Vec<usize> = through.iter().map(Vec::len).collect();
    let mut rates = vec![0.0; flows.len()];
    let mut frozen = vec![false; flows.len()];
    let mut shares = Shares::new(&remaining, &growing);
    // Each round freezes the flows still growing through the fullest resource.
    while let Some((bottleneck, share)) = shares.least(&remaining, &growing) {
        for &i in &through[bottleneck] {
            if frozen[i] {
                continue;
            }
            frozen[i] = true;
            rates[i] = share;
            for r in resources(&paths[i]) {
                remaining[r] = (remaining[r] - share).max(0.0);
                growing[r] -= 1;
                shares.changed(r, &remaining, &growing);
            }
        }
    }
    rates
}

/// A resource's capacity left per flow still growing through it, ordered as numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Share(f64);

impl Eq for Share {}

impl PartialOrd for Share {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Share {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The resources by share, least first (the lowest-numbered of equals, so that the
/// result depends on the input alone). An entry is stale once its resource changed
/// again; stale entries are skipped.
struct Shares {
    heap: BinaryHeap<Reverse<(Share, usize, u32)>>,
    version: Vec<u32>,
}

impl Shares {
    fn new(remaining: &[f64], growing: &[usize]) -> Self {
        let mut shares = Self {
            heap: BinaryHeap::new(),
            version: vec![0; remaining.len()],
        };
        for r in 0..remaining.len() {
            shares.push(r, remaining, growing);
        }
        shares
    }

    fn push(&mut self, r: usize, remaining: &[f64], growing: &[usize]) {
        if growing[r] > 0 {
            let share = Share(remaining[r] / growing[r] as f64);
            self.heap.push(Reverse((share, r, self.version[r])));
        }
    }

    fn changed(&mut self, r: usize, remaining: &[f64], growing: &[usize]) {
        self.version[r] += 1;
        self.push(r, remaining, growing);
    }

    /// The resource with flows still growing whose share is least, and its share.
    fn least(&mut self, remaining: &[f64], growing: &[usize]) -> Option<(usize, f64)> {
        while let Some(Reverse((share, r, version))) = self.heap.pop() {
            if version == self.version[r] && growing[r] > 0 {
                debug_assert_eq!(share.0, remaining[r] / growing[r] as f64);
                return Some((r, share.0));
            }
        }
        None
    }
}

/// The distinct resources of a flow.
fn resources(pair: &[usize; 2]) -> impl Iterator<Item = usize> {
    let second = (pair[1] != pair[0]).then_some(pair[1]);
    std::iter::once(pair[0]).chain(second)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Uplink of node `n`, then its downlink, as the core numbers them.
    fn up(n: usize) -> usize {
        2 * n
    }
    fn down(n: usize) -> usize {
        2 * n + 1
    }

    #[test]
    fn two_flows_sharing_an_uplink_get_half_each() {
        let capacity = [100.0, 100.0, 100.0, 100.0, 100.0, 100.0];
        let rates = max_min(&capacity, &[[up(0), down(1)], [up(0), down(2)]]);
        assert_eq!(rates, [50.0, 50.0]);
    }

    #[test]
    fn a_flow_held_back_by_its_receiver_leaves_the_rest_of_the_uplink_to_others() {
        // Node 1 receives at 10; node 0's uplink is 100.
        let capacity = [100.0, 100.0, 100.0, 10.0, 100.0, 100.0];
        let rates = max_min(&capacity, &[[up(0), down(1)], [up(0), down(2)]]);
        assert_eq!(rates, [10.0, 90.0]);
    }

    #[test]
    fn a_downlink_is_shared_among_its_senders() {
        let capacity = [100.0, 100.0, 100.0, 100.0, 100.0, 30.0];
        let rates = max_min(&capacity, &[[up(0), down(2)], [up(1), down(2)]]);
        assert_eq!(rates, [15.0, 15.0]);
    }

    #[test]
    fn no_flows_no_rates() {
        assert!(max_min(&[1.0, 1.0], &[]).is_empty());
    }

    /// Flows among `nodes` nodes, by their two resources.
    fn network() -> impl Strategy<Value = (Vec<f64>, Vec<[usize; 2]>)> {
        (2usize..6).prop_flat_map(|nodes| {
            let capacity = proptest::collection::vec(1.0f64..1000.0, 2 * nodes);
            let flows = proptest::collection::vec((0..nodes, 0..nodes), 0..20)
                .prop_map(|pairs| pairs.into_iter().map(|(s, d)| [up(s), down(d)]).collect());
            (capacity, flows)
        })
    }

    proptest! {
        #[test]
        fn no_resource_is_oversubscribed((capacity, flows) in network()) {
            let rates = max_min(&capacity, &flows);
            for (r, cap) in capacity.iter().enumerate() {
                let used: f64 = flows.iter().zip(&rates)
                    .filter(|(pair, _)| pair.contains(&r))
                    .map(|(_, rate)| rate)
                    .sum();
                prop_assert!(used <= cap * (1.0 + 1e-9), "resource {r}: {used} > {cap}");
            }
        }

        #[test]
        fn every_flow_is_held_by_a_full_resource_where_it_is_among_the_fastest(
            (capacity, flows) in network()
        ) {
            // The definition of max-min fairness: a flow cannot go faster without
            // slowing one that is no faster than it.
            let rates = max_min(&capacity, &flows);
            for (i, pair) in flows.iter().enumerate() {
                let held = pair.iter().any(|&r| {
                    let users: Vec<f64> = flows.iter().zip(&rates)
                        .filter(|(p, _)| p.contains(&r))
                        .map(|(_, rate)| *rate)
                        .collect();
                    let used: f64 = users.iter().sum();
                    let full = used >= capacity[r] * (1.0 - 1e-9);
                    let fastest = users.iter().all(|u| *u <= rates[i] * (1.0 + 1e-9));
                    full && fastest
                });
                prop_assert!(held, "flow {i} at {} could go faster", rates[i]);
            }
        }
    }
}
