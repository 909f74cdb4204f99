//! Prometheus metrics over HTTP (hyper's HTTP/1 server), and the figures the node's
//! status lines read from a registry.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::proto::MetricFamily;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tracing::debug;

/// Every metric of `registries`, families of the same name merged (each registry's
/// constant labels tell their metrics apart).
pub fn gather(registries: &[Registry]) -> Vec<MetricFamily> {
    let mut families: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for registry in registries {
        for mut family in registry.gather() {
            match families.get_mut(family.name()) {
                Some(existing) => existing.mut_metric().extend(family.take_metric()),
                None => {
                    families.insert(family.name().to_owned(), family);
                }
            }
        }
    }
    families.into_values().collect()
}

/// The text exposition of `registries`.
pub fn encode(registries: &[Registry]) -> Vec<u8> {
    let mut out = Vec::new();
    // Encoding into a Vec fails only on a malformed family, which gather never makes.
    if let Err(error) = TextEncoder::new().encode(&gather(registries), &mut out) {
        debug!(%error, "cannot encode metrics");
    }
    out
}

/// Binds `addr` for [`serve`]; the bound address tells the port when `addr`'s is 0.
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    Ok((listener, bound))
}

/// Serves `GET /metrics` with the metrics of `registries` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    registries: Vec<Registry>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    debug!(%error, "metrics accept failed");
                    continue;
                }
            },
        };
        let registries = registries.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| respond(req, registries.clone()));
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%error, "metrics connection failed");
            }
        });
    }
}

async fn respond(
    req: Request<Incoming>,
    registries: Vec<Registry>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = if req.method() == Method::GET && req.uri().path() == "/metrics" {
        let mut response = Response::new(Full::new(Bytes::from(encode(&registries))));
        if let Ok(value) = TextEncoder::new().format_type().parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    } else {
        Response::new(Full::new(Bytes::from_static(
            b"only GET /metrics is served\n",
        )))
    };
    if req.uri().path() != "/metrics" {
        *response.status_mut() = StatusCode::NOT_FOUND;
    }
    Ok(response)
}

/// The figures of one node that its status line shows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Live connections.
    pub connected: u64,
    /// Height of the last committed block.
    pub height: u64,
    /// Transactions committed in all.
    pub committed_transactions: u64,
    /// Payload bytes sent and received in all.
    pub bytes: u64,
    /// Outbound RPC latency: cumulative counts per bucket upper bound (seconds), summed
    /// over protocols.
    pub rpc_buckets: Vec<(f64, u64)>,
    /// Connections closed in all.
    pub connections_closed: u64,
}

/// Connections refused or failed in all, by reason (`network_handshake_failures_total`).
pub fn refusals(registry: &Registry) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for family in registry.gather() {
        if family.name() != "network_handshake_failures_total" {
            continue;
        }
        for metric in family.get_metric() {
            let reason = metric
                .get_label()
                .iter()
                .find(|l| l.name() == "reason")
                .map_or_else(String::new, |l| l.value().to_owned());
            *counts.entry(reason).or_default() += metric.get_counter().get_value() as u64;
        }
    }
    counts
}

/// The refusals between two readings of [`refusals`], as `reason=count` pairs, or
/// `none`.
pub fn describe_refusals(
    now: &std::collections::BTreeMap<String, u64>,
    before: &std::collections::BTreeMap<String, u64>,
) -> String {
    let parts: Vec<String> = now
        .iter()
        .filter_map(|(reason, n)| {
            let delta = n.saturating_sub(before.get(reason).copied().unwrap_or(0));
            (delta > 0).then(|| format!("{reason}={delta}"))
        })
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

impl Snapshot {
    /// Reads the figures from `registry`.
    pub fn read(registry: &Registry) -> Self {
        let mut snap = Snapshot::default();
        for family in registry.gather() {
            let metrics = family.get_metric();
            match family.name() {
                "network_connections" => {
                    snap.connected = metrics
                        .iter()
                        .map(|m| m.get_gauge().get_value())
                        .sum::<f64>() as u64;
                }
                "consensus_committed_height" => {
                    snap.height = metrics
                        .iter()
                        .map(|m| m.get_gauge().get_value())
                        .sum::<f64>() as u64;
                }
                "consensus_committed_transactions_total" => {
                    snap.committed_transactions = counter_sum(&family, |_| true);
                }
                "network_bytes_in_total" | "network_bytes_out_total" => {
                    snap.bytes += counter_sum(&family, |_| true);
                }
                "network_connection_events_total" => {
                    snap.connections_closed = counter_sum(&family, |m| {
                        m.get_label().iter().any(|l| l.value() == "closed")
                    });
                }
                "network_rpc_latency_seconds" => {
                    for metric in metrics {
                        add_buckets(&mut snap.rpc_buckets, metric.get_histogram().get_bucket());
                    }
                }
                _ => {}
            }
        }
        snap
    }

    /// `self - earlier`, figure by figure (gauges keep `self`'s value).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        Snapshot {
            connected: self.connected,
            height: self.height,
            committed_transactions: self
                .committed_transactions
                .saturating_sub(earlier.committed_transactions),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            rpc_buckets: self
                .rpc_buckets
                .iter()
                .map(|&(bound, count)| {
                    let before = earlier
                        .rpc_buckets
                        .iter()
                        .find(|(b, _)| *b == bound)
                        .map_or(0, |(_, c)| *c);
                    (bound, count.saturating_sub(before))
                })
                .collect(),
            connections_closed: self
                .connections_closed
                .saturating_sub(earlier.connections_closed),
        }
    }
}

fn counter_sum(family: &MetricFamily, keep: impl Fn(&prometheus::proto::Metric) -> bool) -> u64 {
    family
        .get_metric()
        .iter()
        .filter(|m| keep(m))
        .map(|m| m.get_counter().get_value())
        .sum::<f64>() as u64
}

/// Adds the cumulative `buckets` of one histogram into `into`.
pub fn add_buckets(into: &mut Vec<(f64, u64)>, buckets: &[prometheus::proto::Bucket]) {
    for bucket in buckets {
        let bound = bucket.upper_bound();
        match into.iter_mut().find(|(b, _)| *b == bound) {
            Some((_, count)) => *count += bucket.cumulative_count(),
            None => into.push((bound, bucket.cumulative_count())),
        }
    }
    into.sort_by(|a, b| a.0.total_cmp(&b.0));
}

/// The `q` quantile (0..=1) of cumulative `buckets`, interpolated linearly within the
/// bucket it falls in; `None` without samples.
pub fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let target = q * total as f64;
    let (mut lower, mut below) = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= target {
            let within = (count - below) as f64;
            let fraction = if within > 0.0 {
                (target - below as f64) / within
            } else {
                1.0
            };
            return Some(lower + (bound - lower) * fraction);
        }
        lower = bound;
        below = count;
    }
    Some(lower)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interpolates_within_its_bucket() {
        let buckets = [(0.001, 0), (0.002, 10), (0.004, 20)];

        assert_eq!(quantile(&buckets, 0.5), Some(0.002));
        assert_eq!(quantile(&buckets, 0.75), Some(0.003));
        assert_eq!(quantile(&[(0.001, 0)], 0.5), None);
    }

    #[test]
    fn the_status_line_counts_the_refusals_since_the_last_one() {
        let before = [("untrusted_peer".to_owned(), 3), ("replay".to_owned(), 1)].into();
        let now = [
            ("untrusted_peer".to_owned(), 10),
            ("replay".to_owned(), 1),
            ("chain_mismatch".to_owned(), 2),
        ]
        .into();
        assert_eq!(
            describe_refusals(&now, &before),
            "chain_mismatch=2,untrusted_peer=7"
        );
        assert_eq!(describe_refusals(&now, &now), "none");
    }
}
