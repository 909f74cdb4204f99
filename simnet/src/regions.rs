//! A ready-made WAN: five cloud regions on four continents, with measured round trips.

use std::time::Duration;

use crate::config::LatencyMatrix;

/// The regions of [`five_regions`], in the order of [`RTT_MS`]: AWS us-east-1
/// (N. Virginia), us-west-2 (Oregon), eu-central-1 (Frankfurt), ap-northeast-1 (Tokyo)
/// and ap-southeast-2 (Sydney).
pub const REGIONS: [&str; 5] = [
    "us-east-1",
    "us-west-2",
    "eu-central-1",
    "ap-northeast-1",
    "ap-southeast-2",
];

/// Average round-trip times between [`REGIONS`], in milliseconds: the table "Latency
/// Between AWS Global Regions" as reproduced in
/// <https://acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html>.
pub const RTT_MS: [(usize, usize, f64); 10] = [
    (0, 1, 86.98),
    (0, 2, 88.66),
    (0, 3, 145.3),
    (0, 4, 230.0),
    (1, 2, 159.5),
    (1, 3, 89.1),
    (1, 4, 162.2),
    (2, 3, 236.5),
    (2, 4, 323.5),
    (3, 4, 103.9),
];

/// The one-way latencies between [`REGIONS`]: half of each round trip of [`RTT_MS`].
/// Nodes of one region are `SimConfig::local_latency` apart.
///
/// ```
/// use simnet::LatencyModel;
///
/// let latency = simnet::five_regions();
/// let one_way = latency.one_way("us-east-1", "ap-southeast-2");
/// assert_eq!(one_way.as_millis(), 115);
/// ```
pub fn five_regions() -> LatencyMatrix {
    RTT_MS.iter().fold(
        LatencyMatrix::new(Duration::from_millis(100)),
        |m, &(a, b, rtt)| {
            m.with(
                REGIONS[a],
                REGIONS[b],
                Duration::from_secs_f64(rtt / 2_000.0),
            )
        },
    )
}
