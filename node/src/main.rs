//! The `node` command: `demo` (the default), `keygen`, `peer-id` and `run`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use node::demo::{self, DemoOptions};
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use validator_network::Identity;

/// A validator node over the validator network. With no command it runs the demo.
#[derive(Parser, Debug)]
#[command(name = "node", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    demo: DemoArgs,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs a validator set on loopback TCP in this process, printing a line per second
    /// and a summary (the default).
    Demo(DemoArgs),
    /// Writes a new identity key to a file (mode 0600; never overwrites) and prints its
    /// peer id.
    Keygen {
        /// The key file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Prints the peer id of an identity key file.
    PeerId {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Runs one validator from a configuration file (see node/node.example.toml).
    Run {
        /// The configuration file.
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Args, Debug, Clone)]
struct DemoArgs {
    /// How long to run: seconds, or with a unit (`500ms`, `10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Validators to run.
    #[arg(long, default_value_t = demo::DEFAULT_VALIDATORS)]
    validators: usize,
    /// Full nodes to run: each follows the chain over the validators' public network.
    #[arg(long, default_value_t = demo::DEFAULT_FULL_NODES)]
    full_nodes: usize,
    /// The height at which one more validator replaces validator 0 (epoch 1); 0: the
    /// set never changes.
    #[arg(long, default_value_t = demo::DEFAULT_EPOCH_CHANGE_AT)]
    epoch_change_at: u64,
    /// Transactions each validator creates per second.
    #[arg(long, default_value_t = DemoOptions::default().transactions_per_second)]
    tps: u64,
    /// Where to serve /metrics of every node.
    #[arg(long, default_value = "127.0.0.1:9100")]
    metrics_address: SocketAddr,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a duration (e.g. 10s, 500ms, 2m)"))?;
    Duration::try_from_secs_f64(value * scale).map_err(|e| format!("`{text}`: {e}"))
}

#[tokio::main]
async fn main() {
    if let Err(error) = run().await {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn,node=info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a terminal only: a log written to a file or a pipe stays plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    match cli.command {
        None => run_demo(cli.demo).await,
        Some(Command::Demo(args)) => run_demo(args).await,
        Some(Command::Keygen { out }) => {
            let identity = Identity::generate_and_save(&out)
                .with_context(|| format!("cannot write a key to {}", out.display()))?;
            println!("{}", identity.peer_id());
            Ok(())
        }
        Some(Command::PeerId { key }) => {
            let identity = Identity::load(&key)?;
            println!("{}", identity.peer_id());
            Ok(())
        }
        Some(Command::Run { config }) => {
            node::run::run(
                &config,
                |addr| println!("metrics: http://{addr}/metrics"),
                node::stop_signal(),
            )
            .await
        }
    }
}

async fn run_demo(args: DemoArgs) -> anyhow::Result<()> {
    let options = DemoOptions {
        validators: args.validators,
        full_nodes: args.full_nodes,
        epoch_change_at: (args.epoch_change_at > 0).then_some(args.epoch_change_at),
        duration: args.duration,
        metrics_address: Some(args.metrics_address),
        transactions_per_second: args.tps,
    };
    let mut out = LineWriter(std::io::stdout());
    demo::run(&options, &mut out, node::stop_signal()).await?;
    Ok(())
}

/// Flushes stdout after each write, so each status line shows when it is written.
struct LineWriter(std::io::Stdout);

impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(buf)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
