//! The cost of refusing a socket at accept: CPU time of the node's thread per refused
//! connection, over loopback TCP, with every socket refused by admission (before any
//! cryptography); and the admission check alone.
//!
//! `cargo bench -p benches --bench admission`
//!
//! The node runs on a thread of its own (a current-thread runtime); a second thread
//! connects and closes as fast as it can. The node thread's CPU time comes from
//! `/proc/self/task/<tid>/stat` (user and system, in clock ticks), read before and after.
#![allow(missing_docs)] // A bench binary's `main` needs no doc.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netcore::address::{Endpoint, Host};
use netcore::transport::TcpTransport;
use network::admission::{Admission, AdmissionConfig, ValidatorAddresses};
use network::{NetworkBuilder, NetworkConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader};

/// Sockets refused per run.
const SOCKETS: u64 = 20_000;

/// The node thread's CPU time (user + system), from its `/proc` stat line.
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // The kernel's USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// This thread's id, as `/proc` names it.
fn current_tid() -> u32 {
    std::fs::read_link("/proc/thread-self")
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Starts a node that refuses every socket from a stranger; returns its address and its
/// thread's id.
fn start_refusing_node() -> (SocketAddr, u32) {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("node".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let config = NetworkConfig {
                    admission: AdmissionConfig {
                        max_pending_per_ip: 0,
                        ..AdmissionConfig::default()
                    },
                    ..NetworkConfig::default()
                };
                let upgrader = NoiseUpgrader::new(Identity::generate(), NoiseConfig::open());
                let mut builder =
                    NetworkBuilder::new(config, upgrader, prometheus::Registry::new());
                builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
                let network = builder.start(TcpTransport::default()).unwrap();
                let addr = match network.listen_addrs()[0].endpoint() {
                    Endpoint::Tcp {
                        host: Host::Ip4(ip),
                        port,
                    } => SocketAddr::from((*ip, *port)),
                    _ => unreachable!("a TCP listen address"),
                };
                tx.send((addr, current_tid())).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .unwrap();
    rx.recv().unwrap()
}

fn main() {
    let (addr, tid) = start_refusing_node();
    std::thread::sleep(Duration::from_millis(200));
    for run in 1..=3 {
        let cpu_before = thread_cpu(tid);
        let start = Instant::now();
        for _ in 0..SOCKETS {
            // Connect, then close: the node accepts and refuses it.
            drop(TcpStream::connect(addr).unwrap());
        }
        // Let the node drain its accept queue.
        std::thread::sleep(Duration::from_millis(300));
        let cpu = thread_cpu(tid) - cpu_before;
        println!(
            "run {run}: {SOCKETS} sockets refused in {:.2} s; node thread CPU {:.3} s = {:.2} µs per refused socket",
            start.elapsed().as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / SOCKETS as f64
        );
    }

    // The admission check alone, refusing (the pending limit of a stranger's IP).
    let mut admission = Admission::new(
        AdmissionConfig {
            max_pending_per_ip: 0,
            ..AdmissionConfig::default()
        },
        ValidatorAddresses::default(),
    );
    let now = Instant::now();
    let checks = 10_000_000u32;
    let start = Instant::now();
    let mut refused = 0u32;
    for i in 0..checks {
        let ip = IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + (i & 0xffff)));
        refused += u32::from(admission.admit(ip, now).is_err());
    }
    let elapsed = start.elapsed();
    assert_eq!(refused, checks);
    println!(
        "admission check alone: {:.1} ns per refusal",
        elapsed.as_secs_f64() * 1e9 / f64::from(checks)
    );
}
