//! The cost of refusing a socket at accept: CPU time of the node's thread per refused
//! connection, over loopback TCP, with every socket refused by admission (before any
//! cryptography); beside it the floor, a bare thread that accepts each socket and
//! resets it; the cost of a SYN that the node's socket filter drops before any accept
//! (a source blocked for its rate); and the admission check alone.
//!
//! `cargo bench -p benches --bench admission`
//!
//! The node runs on a thread of its own (a current-thread runtime); a second thread
//! connects and closes as fast as it can. The node thread's CPU time comes from
//! `/proc/self/task/<tid>/schedstat` (the scheduler's count, in nanoseconds), read
//! before and after.
#![allow(missing_docs)] // A bench binary's `main` needs no doc.
#![allow(clippy::unwrap_used)] // A panic in a bench is a failed run.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use netcore::address::{Endpoint, Host};
use netcore::transport::{FilterRules, Prefix, SourceFilter, TcpTransport, Transport};
use network::admission::{Admission, AdmissionConfig, ValidatorAddresses};
use network::rate_limit::Rate;
use network::{NetworkBuilder, NetworkConfig};
use noise::{Identity, NoiseConfig, NoiseUpgrader, TrustedPeers};

/// Sockets refused per run.
const SOCKETS: u64 = 20_000;

/// A thread's CPU time, from the scheduler's count in nanoseconds (the first field
/// of its `/proc` schedstat line).
fn thread_cpu(tid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/schedstat")).unwrap();
    let nanos = stat.split_whitespace().next().unwrap().parse().unwrap();
    Duration::from_nanos(nanos)
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

/// Starts a node with `admission` and Noise's `mode` on a thread of its own, its
/// listener with a socket filter if `filtered`; returns its address, its thread's id and
/// its static key.
fn start_node(
    admission: AdmissionConfig,
    mutual: bool,
    filtered: bool,
) -> (SocketAddr, u32, [u8; 32]) {
    let identity = Identity::generate();
    let key = *identity.x25519_public().as_bytes();
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
                    admission,
                    ..NetworkConfig::default()
                };
                let noise = match mutual {
                    true => NoiseConfig::mutual(TrustedPeers::new()),
                    false => NoiseConfig::open(),
                };
                let upgrader = NoiseUpgrader::new(identity, noise);
                let mut builder =
                    NetworkBuilder::new(config, upgrader, prometheus::Registry::new());
                builder.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap());
                let mut tcp = TcpTransport::default();
                if filtered {
                    let filter = SourceFilter::default();
                    builder.source_filter(filter.clone());
                    tcp = tcp.with_source_filter(filter);
                }
                let network = builder.start(tcp).unwrap();
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
    let (addr, tid) = rx.recv().unwrap();
    (addr, tid, key)
}

/// Starts the floor: a thread that only accepts each socket and resets it, with
/// blocking system calls and no runtime, as cheap as refusing after an accept can be.
fn start_bare_acceptor() -> (SocketAddr, u32) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("floor".into())
        .spawn(move || {
            tx.send(current_tid()).unwrap();
            for socket in listener.incoming().flatten() {
                socket2::SockRef::from(&socket)
                    .set_linger(Some(Duration::ZERO))
                    .unwrap();
            }
        })
        .unwrap();
    (addr, rx.recv().unwrap())
}

/// Connects, writes `first` and waits for the close, `SOCKETS` times, three runs, and
/// prints the CPU time of the accepting thread `tid` per socket.
fn measure(what: &str, addr: SocketAddr, tid: u32, first: &[u8]) {
    for run in 1..=3 {
        let cpu_before = thread_cpu(tid);
        let start = Instant::now();
        for _ in 0..SOCKETS {
            // The other end accepts and refuses it. A reset that arrives while
            // connecting or writing is a refusal too.
            if let Ok(mut socket) = TcpStream::connect(addr)
                && !first.is_empty()
                && socket.write_all(first).is_ok()
            {
                let _ = socket.read(&mut [0u8; 64]);
            }
        }
        // Let the acceptor drain its accept queue.
        std::thread::sleep(Duration::from_millis(300));
        let cpu = thread_cpu(tid) - cpu_before;
        println!(
            "{what}, run {run}: {SOCKETS} sockets in {:.2} s; accepting thread CPU {:.3} s = {:.2} µs per socket",
            start.elapsed().as_secs_f64(),
            cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / SOCKETS as f64
        );
    }
}

/// SYNs per run of the filter's measurements.
const SYNS: u64 = 200_000;

/// Opens [`SYNS`] sockets to `addr` as fast as it can, each a nonblocking connect (the
/// SYN goes out) and a close; returns this thread's CPU time per SYN and the wall time.
/// Over loopback the listener's kernel receives each SYN on this thread (softirq run in
/// its context), so its CPU time is the whole cost of an attempt, both ends.
fn syn_loop(addr: SocketAddr) -> (Duration, Duration) {
    let me = current_tid();
    let before = thread_cpu(me);
    let start = Instant::now();
    for _ in 0..SYNS {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_nonblocking(true).unwrap();
        // EINPROGRESS: the SYN is out; the close drops the socket in SYN_SENT.
        let _ = socket.connect(&addr.into());
    }
    ((thread_cpu(me) - before) / SYNS as u32, start.elapsed())
}

/// A source over its rate is blocked in the node's socket filter, then opens sockets as
/// fast as it can; the node's thread should spend nothing on them.
fn measure_dropped_syns() {
    // One socket a second, in a burst of one: the second is refused and blocks the
    // source for a second, and each block lets one more socket in as it ends.
    let one_per_second = AdmissionConfig {
        rate_per_ip: Rate {
            per_second: 1,
            burst: 1,
        },
        ..AdmissionConfig::default()
    };
    let (addr, node_tid, _) = start_node(one_per_second, false, true);
    std::thread::sleep(Duration::from_millis(200));
    let _ = TcpStream::connect(addr);
    let _ = TcpStream::connect(addr);
    std::thread::sleep(Duration::from_millis(100));
    for run in 1..=3 {
        let node_before = thread_cpu(node_tid);
        let (per_syn, wall) = syn_loop(addr);
        let node = thread_cpu(node_tid) - node_before;
        println!(
            "node: SYN dropped by its socket filter (1 rule), run {run}: {SYNS} SYNs in {:.2} s; \
             both ends {:.2} µs per SYN (connecting thread), node thread {:.3} µs per SYN",
            wall.as_secs_f64(),
            per_syn.as_secs_f64() * 1e6,
            node.as_secs_f64() * 1e6 / SYNS as f64,
        );
    }
}

/// The walk of the rules: a listener whose filter holds `rules` IPv4 rules, the one
/// covering the connecting source last, each a /24 (the longest IPv4 entry).
fn measure_rule_walk(rules: u32) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _entered = runtime.enter();
    let filter = SourceFilter::default();
    let mut blocked: Vec<Prefix> = (1..rules)
        .map(|i| Prefix {
            addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i * 256)),
            len: 24,
        })
        .collect();
    blocked.push(Prefix {
        addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
        len: 24,
    });
    filter.set(FilterRules {
        allowed: vec![],
        blocked,
    });
    let transport = TcpTransport::default().with_source_filter(filter);
    let (mut listener, bound) = transport
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    // The listener attaches the program when first polled.
    let first = runtime.block_on(async { futures::poll!(futures::StreamExt::next(&mut listener)) });
    assert!(first.is_pending(), "nothing connects before the loop");
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, bound.port()));
    for run in 1..=3 {
        let (per_syn, wall) = syn_loop(addr);
        println!(
            "SYN dropped by the last of {rules} rules, run {run}: {SYNS} SYNs in {:.2} s; \
             both ends {:.2} µs per SYN",
            wall.as_secs_f64(),
            per_syn.as_secs_f64() * 1e6,
        );
    }
}

fn main() {
    let (addr, tid) = start_bare_acceptor();
    measure(
        "floor: accept and reset, blocking, no runtime",
        addr,
        tid,
        &[],
    );

    // Every socket refused at accept: a stranger's IP may have no handshake pending.
    let refuse_all = AdmissionConfig {
        max_pending_per_ip: 0,
        ..AdmissionConfig::default()
    };
    let (addr, tid, _) = start_node(refuse_all, false, false);
    std::thread::sleep(Duration::from_millis(200));
    measure("node: socket refused by admission", addr, tid, &[]);

    // Every socket admitted, every handshake refused at its clear prologue: it names a
    // peer the node does not trust (mutual authentication, nobody trusted).
    let admit_all = AdmissionConfig {
        max_pending_per_ip: 1 << 20,
        max_pending_per_subnet: 1 << 20,
        rate_per_ip: Rate {
            per_second: 1 << 30,
            burst: 1 << 30,
        },
        rate_per_subnet: Rate {
            per_second: 1 << 30,
            burst: 1 << 30,
        },
        ..AdmissionConfig::default()
    };
    let (addr, tid, key) = start_node(admit_all, true, false);
    std::thread::sleep(Duration::from_millis(200));
    let mut prologue = [7u8; 64];
    prologue[32..].copy_from_slice(&key);
    measure(
        "node: handshake refused at the prologue",
        addr,
        tid,
        &prologue,
    );

    measure_dropped_syns();
    measure_rule_walk(1);
    measure_rule_walk(256);

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
