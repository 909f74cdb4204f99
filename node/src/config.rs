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

/// What a node is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A validator: consensus and mempool on `[network]`, the validator network, and
    /// the chain served to full nodes on `[public_network]` if there is one.
    #[default]
    Validator,
    /// A full node: `[network]` is the public network it follows the chain on.
    FullNode,
}

/// A node's configuration file (`node run --config node.toml`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where to serve `/metrics`.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: SocketAddr,
    /// What this node is.
    #[serde(default)]
    pub role: Role,
    /// The network: the validator network of a validator, the public network of a full
    /// node. `identity_key` is relative to the file's folder.
    pub network: StackConfig,
    /// A validator's public network, on which it serves the chain to full nodes (open
    /// authentication, only the state-sync protocol). Its identity key defaults to
    /// `[network]`'s.
    #[serde(default)]
    pub public_network: Option<StackConfig>,
    /// The example consensus.
    #[serde(default)]
    pub consensus: ConsensusSection,
    /// The example mempool.
    #[serde(default)]
    pub mempool: MempoolSection,
}

/// Takes a relative `identity_key` from the file's folder `dir`.
fn resolve_key(network: &mut StackConfig, dir: Option<&Path>) {
    if let Some(key) = &network.identity_key
        && key.is_relative()
        && let Some(dir) = dir
    {
        network.identity_key = Some(dir.join(key));
    }
}

/// Validates one network section, naming a field as it appears in the file (under
/// `[section]`).
fn validate_section(network: &StackConfig, section: &str) -> Result<(), ConfigError> {
    network.validate().map_err(|e| match e {
        ConfigError::Invalid { field, error } => ConfigError::Invalid {
            field: format!("{section}.{field}"),
            error,
        },
        other => other,
    })
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
        let dir = path.parent();
        resolve_key(&mut config.network, dir);
        validate_section(&config.network, "network")
            .with_context(|| format!("invalid config {}", path.display()))?;
        if let Some(public) = &mut config.public_network {
            if config.role == Role::FullNode {
                bail!(
                    "public_network: a full node runs one network, its public network, \
                     under [network]"
                );
            }
            if public.identity_key.is_none() {
                public.identity_key = config.network.identity_key.clone();
            }
            resolve_key(public, dir);
            validate_section(public, "public_network")
                .with_context(|| format!("invalid config {}", path.display()))?;
        }
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
        assert_eq!(config.network.socket, defaults.socket);
        assert_eq!(config.consensus, ConsensusSection::default());
        assert_eq!(config.mempool, MempoolSection::default());
        assert_eq!(
            config.network.identity_key,
            Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("validator.key"))
        );
    }

    /// Writes `text` as a config file in a fresh folder and loads it.
    fn load_text(name: &str, text: &str) -> anyhow::Result<NodeConfig> {
        let dir = std::env::temp_dir().join(format!("node-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("node.toml");
        std::fs::write(&path, text)?;
        let loaded = NodeConfig::load(&path);
        let _ = std::fs::remove_dir_all(&dir);
        loaded
    }

    const NETWORK: &str = "[network]\nlisten_addresses = [\"/ip4/127.0.0.1/tcp/0\"]\n";

    #[test]
    fn an_error_in_the_public_network_names_its_section() {
        let text =
            format!("{NETWORK}[public_network]\nlisten_addresses = [\"/ip4/127.0.0.1/udp/1\"]\n");
        let error = format!("{:#}", load_text("public", &text).unwrap_err());
        assert!(error.contains("public_network.listen_addresses"), "{error}");
    }

    #[test]
    fn a_full_node_runs_one_network() {
        let text = format!("role = \"full_node\"\n{NETWORK}[public_network]\n");
        let error = format!("{:#}", load_text("full", &text).unwrap_err());
        assert!(
            error.contains("public_network: a full node runs one network"),
            "{error}"
        );
        let text = format!("role = \"full_node\"\n{NETWORK}");
        assert_eq!(load_text("full-ok", &text).unwrap().role, Role::FullNode);
    }

    #[test]
    fn the_public_network_takes_the_identity_key_of_the_validator_network() {
        let text = "[network]\nidentity_key = \"v.key\"\nlisten_addresses = [\"/ip4/127.0.0.1/tcp/0\"]\n\
             [public_network]\nlisten_addresses = [\"/ip4/127.0.0.1/tcp/0\"]\n";
        let config = load_text("key", text).unwrap();
        let public = config.public_network.unwrap();
        assert_eq!(public.identity_key, config.network.identity_key);
    }
}
