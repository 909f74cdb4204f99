//! The kernel mix benchmark's two processes (see `benches::kernel_mix` and
//! `scripts/kernel-mix.sh`, which runs them in two network namespaces):
//!
//! ```text
//! kernel_mix server --impl plain|stack --addr IP:PORT [--lowat BYTES|off]
//! kernel_mix client --impl plain|stack --addr IP:PORT [--lowat BYTES|off]
//!                   [--in-flight K] [--no-small] [--warmup S] [--duration S]
//! ```
//!
//! The client prints one line of `key=value` fields. `--lowat` sets
//! `TCP_NOTSENT_LOWAT` (default: 16 KiB for plain, the TCP transport's default for the
//! stack). Both run on a current-thread tokio runtime.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use benches::kernel_mix::{ClientOptions, Implementation, Lowat, Summary, ours, plain};

/// The parsed command line.
struct Args {
    client: bool,
    implementation: Implementation,
    addr: SocketAddr,
    lowat: Lowat,
    in_flight: usize,
    small: bool,
    warmup: Duration,
    duration: Duration,
}

fn parse(mut args: impl Iterator<Item = String>) -> anyhow::Result<Args> {
    let client = match args.next().as_deref() {
        Some("client") => true,
        Some("server") => false,
        _ => bail!("the first argument is `server` or `client`"),
    };
    let (mut implementation, mut addr) = (None, None);
    let mut parsed = Args {
        client,
        implementation: Implementation::Plain,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        lowat: Lowat::Default,
        in_flight: 1,
        small: true,
        warmup: Duration::from_secs(2),
        duration: Duration::from_secs(20),
    };
    while let Some(flag) = args.next() {
        if flag == "--no-small" {
            parsed.small = false;
            continue;
        }
        let value = args
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        let seconds = || value.parse().map(Duration::from_secs_f64);
        match flag.as_str() {
            "--impl" => {
                implementation = Some(match value.as_str() {
                    "plain" => Implementation::Plain,
                    "stack" => Implementation::Stack,
                    _ => bail!("--impl is `plain` or `stack`"),
                })
            }
            "--addr" => addr = Some(value.parse().context("--addr IP:PORT")?),
            "--lowat" if value == "off" => parsed.lowat = Lowat::Off,
            "--lowat" => parsed.lowat = Lowat::Bytes(value.parse().context("--lowat")?),
            "--in-flight" => parsed.in_flight = value.parse().context("--in-flight")?,
            "--warmup" => parsed.warmup = seconds().context("--warmup")?,
            "--duration" => parsed.duration = seconds().context("--duration")?,
            _ => bail!("unknown flag {flag}"),
        }
    }
    parsed.implementation = implementation.context("--impl is required")?;
    parsed.addr = addr.context("--addr is required")?;
    Ok(parsed)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let lowat = args.lowat.resolve(args.implementation);
    if !args.client {
        return match args.implementation {
            Implementation::Plain => plain::serve(args.addr, lowat).await,
            Implementation::Stack => ours::serve(args.addr, lowat).await,
        };
    }
    let options = ClientOptions {
        server: args.addr,
        in_flight: args.in_flight,
        small: args.small,
        warmup: args.warmup,
        duration: args.duration,
        lowat,
    };
    let figures = match args.implementation {
        Implementation::Plain => plain::client(&options).await?,
        Implementation::Stack => ours::client(&options).await?,
    };
    let summary = Summary {
        implementation: args.implementation,
        options,
        figures,
    };
    println!("{summary}");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse(std::env::args().skip(1))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}
