//! The TOML configuration: defaults from the network crate, and errors that name the
//! field at fault.

#![allow(clippy::unwrap_used)] // A panic in a test is a failed assertion.

use std::time::Duration;

use validator_network::{
    ConfigError, FieldError, Identity, Mode, Registry, StackBuilder, StackConfig, TrustedPeer,
};

fn valid() -> StackConfig {
    StackConfig {
        listen_addresses: vec!["/ip4/127.0.0.1/tcp/0".to_owned()],
        trusted_peers: vec![TrustedPeer {
            peer_id: Identity::generate().peer_id().to_string(),
            addresses: vec!["/ip4/127.0.0.1/tcp/6180".to_owned()],
        }],
        ..StackConfig::default()
    }
}

/// The field named by the error `config` fails validation with.
fn invalid_field(config: &StackConfig) -> (String, FieldError) {
    match config.validate().unwrap_err() {
        ConfigError::Invalid { field, error } => (field, error),
        other => panic!("expected an invalid field, got {other}"),
    }
}

#[test]
fn defaults_are_the_network_crates_constants() {
    let config = StackConfig::default();

    assert_eq!(
        config.limits.max_message_size,
        network::config::DEFAULT_MAX_MESSAGE_SIZE
    );
    assert_eq!(
        Duration::from_millis(config.intervals.connectivity_check_ms),
        network::connectivity_manager::DEFAULT_CHECK_INTERVAL
    );
    assert_eq!(
        Duration::from_millis(config.intervals.ping_interval_ms),
        network::health_checker::DEFAULT_PING_INTERVAL
    );
    assert_eq!(config.mode, Mode::Mutual);
}

#[test]
fn a_minimal_file_takes_every_other_value_from_the_defaults() {
    let config = StackConfig::from_toml(
        r#"
        identity_key = "validator.key"
        listen_addresses = ["/ip4/0.0.0.0/tcp/6180"]
        chain_id = 7
        "#,
    )
    .unwrap();

    assert_eq!(config.chain_id, 7);
    assert_eq!(config.limits, StackConfig::default().limits);
    assert_eq!(config.intervals, StackConfig::default().intervals);
    config.validate().unwrap();
}

#[test]
fn to_toml_and_from_toml_round_trip() {
    let config = valid();

    assert_eq!(StackConfig::from_toml(&config.to_toml()).unwrap(), config);
}

#[test]
fn an_unknown_key_is_refused_by_name() {
    let err = StackConfig::from_toml("listen_adresses = []").unwrap_err();

    assert!(err.to_string().contains("listen_adresses"), "{err}");
}

#[test]
fn a_bad_trusted_peer_address_names_its_field() {
    let mut config = valid();
    config.trusted_peers[0]
        .addresses
        .push("/ip4/1.2.3.4/udp/1".to_owned());

    let (field, error) = invalid_field(&config);

    assert_eq!(field, "trusted_peers[0].addresses[1]");
    assert!(matches!(error, FieldError::Address(_)), "{error}");
}

#[test]
fn a_malformed_peer_id_names_its_field() {
    let mut config = valid();
    config.trusted_peers[0].peer_id = "abc".to_owned();

    assert_eq!(invalid_field(&config).0, "trusted_peers[0].peer_id");
}

#[test]
fn a_seed_without_a_peer_id_is_refused() {
    let mut config = valid();
    config.seeds.push("/ip4/127.0.0.1/tcp/6180".to_owned());

    assert_eq!(
        invalid_field(&config),
        ("seeds[0]".to_owned(), FieldError::MissingPeerId)
    );
}

#[test]
fn no_listen_address_is_refused() {
    let mut config = valid();
    config.listen_addresses.clear();

    assert_eq!(
        invalid_field(&config),
        ("listen_addresses".to_owned(), FieldError::Empty)
    );
}

#[test]
fn memory_and_tcp_addresses_cannot_be_mixed() {
    let mut config = valid();
    config.listen_addresses = vec!["/memory/0".to_owned()];

    assert_eq!(
        invalid_field(&config),
        (
            "trusted_peers[0].addresses[0]".to_owned(),
            FieldError::MixedTransports
        )
    );
}

#[test]
fn a_zero_limit_names_its_field() {
    let mut config = valid();
    config.limits.inbound_queue_size = 0;

    assert_eq!(
        invalid_field(&config),
        ("limits.inbound_queue_size".to_owned(), FieldError::Zero)
    );
}

#[test]
fn a_backoff_base_above_its_cap_is_refused() {
    let mut config = valid();
    config.intervals.backoff_base_ms = config.intervals.backoff_cap_ms + 1;

    assert_eq!(invalid_field(&config).0, "intervals.backoff_base_ms");
}

#[tokio::test]
async fn starting_without_an_identity_names_the_identity_key_field() {
    let err = StackBuilder::new(valid(), Registry::new())
        .start()
        .unwrap_err();

    assert!(err.to_string().starts_with("identity_key"), "{err}");
}
