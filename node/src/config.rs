//! The node's configuration file: the network (see `validator_network::StackConfig`),
//! the metrics address, and the example consensus and mempool.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use toy_consensus::ConsensusConfig;
use toy_mempool::MempoolConfig;
use validator_network::{ConfigError, PeerId, StackConfig};

/// The example consensus's settings in the file (milliseconds for durations).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusSection {
    /// Time a round may take before the next leader takes over.
    pub round_timeout_ms: u64,
    /// Least time from a commit to the next proposal.
    pub min_block_interval_ms: u64,
    /// Transactions per block at most.
    pub max_block_transactions: usize,
    /// Committed blocks kept to serve validators that fall behind; the node's memory
    /// grows until this many are kept, then stays flat.
    pub max_blocks_kept: usize,
}

impl Default for ConsensusSection {
    fn default() -> Self {
        let d = ConsensusConfig::new(Vec::new());
        Self {
            round_timeout_ms: millis(d.round_timeout),
            min_block_interval_ms: millis(d.min_block_interval),
            max_block_transactions: d.max_block_transactions,
            max_blocks_kept: d.max_blocks_kept,
        }
    }
}

/// The example mempool's settings in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MempoolSection {
    /// Transactions this node creates per second.
    pub transactions_per_second: u64,
    /// Pending transactions at most.
    pub max_pending: usize,
}

impl Default for MempoolSection {
    fn default() -> Self {
        let d = MempoolConfig::default();
        Self {
            transactions_per_second: d.transactions_per_second,
            max_pending: d.max_pending,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A node's configuration file (`node run --config node.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where to serve `/metrics`.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: SocketAddr,
    /// The network. `identity_key` is relative to the file's folder.
    pub network: StackConfig,
    /// The example consensus.
    #[serde(default)]
    pub consensus: ConsensusSection,
    /// The example mempool.
    #[serde(default)]
    pub mempool: MempoolSection,
}

/// Where `node run` serves `/metrics` unless the file says otherwise: loopback only, so
/// metrics are not exposed to the network by default.
fn default_metrics_address() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9101))
}

impl NodeConfig {
    /// Reads and validates `path`; a relative `identity_key` is taken from the file's
    /// folder.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let mut config: NodeConfig =
            toml::from_str(&text).with_context(|| format!("invalid config {}", path.display()))?;
        if let Some(key) = &config.network.identity_key
            && key.is_relative()
            && let Some(dir) = path.parent()
        {
            config.network.identity_key = Some(dir.join(key));
        }
        config
            .network
            .validate()
            .map_err(|e| match e {
                // Name the field as it appears in this file: under `[network]`.
                ConfigError::Invalid { field, error } => ConfigError::Invalid {
                    field: format!("network.{field}"),
                    error,
                },
                other => other,
            })
            .with_context(|| format!("invalid config {}", path.display()))?;
        if config.consensus.round_timeout_ms == 0 {
            bail!("consensus.round_timeout_ms: must be greater than zero");
        }
        Ok(config)
    }

    /// The validator set: every trusted peer and this node.
    pub fn validators(&self, me: PeerId) -> anyhow::Result<Vec<PeerId>> {
        let mut validators = vec![me];
        for (i, peer) in self.network.trusted_peers.iter().enumerate() {
            let id: PeerId = peer
                .peer_id
                .parse()
                .with_context(|| format!("network.trusted_peers[{i}].peer_id"))?;
            if !validators.contains(&id) {
                validators.push(id);
            }
        }
        Ok(validators)
    }

    /// The consensus configuration for `validators`.
    pub fn consensus(&self, validators: Vec<PeerId>) -> ConsensusConfig {
        ConsensusConfig {
            round_timeout: Duration::from_millis(self.consensus.round_timeout_ms),
            min_block_interval: Duration::from_millis(self.consensus.min_block_interval_ms),
            max_block_transactions: self.consensus.max_block_transactions,
            max_blocks_kept: self.consensus.max_blocks_kept,
            ..ConsensusConfig::new(validators)
        }
    }

    /// The mempool configuration.
    pub fn mempool(&self) -> MempoolConfig {
        MempoolConfig {
            transactions_per_second: self.mempool.transactions_per_second,
            max_pending: self.mempool.max_pending,
            ..MempoolConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("node.example.toml");
        let config = NodeConfig::load(&path).unwrap_or_else(|e| panic!("{e:#}"));

        assert_eq!(config.network.trusted_peers.len(), 3);
        // It says its values are the defaults: keep it true.
        let defaults = StackConfig::default();
        assert_eq!(config.network.limits, defaults.limits);
        assert_eq!(config.network.intervals, defaults.intervals);
        assert_eq!(config.consensus, ConsensusSection::default());
        assert_eq!(config.mempool, MempoolSection::default());
        assert_eq!(
            config.network.identity_key,
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("validator.key"))
        );
    }
}
