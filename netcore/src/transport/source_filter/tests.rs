//! The compiled programs, run by a small interpreter of the instructions they use, and
//! the handle's change notification. The kernel's side is tested over loopback in
//! `netcore/tests/transport.rs`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Wake, Waker};

use proptest::prelude::*;

use super::bpf::{
    ACCEPT, AND_K, DROP, JEQ_K, LD_B_ABS, LD_MEM, LD_W_ABS, NET_OFF, RET_K, ST, TAX, TXA,
};
use super::{FilterRules, Insn, MAX_PROGRAM_LEN, Prefix, SourceFilter, compile, max_program_len};

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const SYN_ACK: u8 = SYN | ACK;

/// Runs `program` on a TCP segment with `flags` from `source`, as the kernel would on
/// a TCP socket: data starts at the TCP header, the IP header is at `SKF_NET_OFF`.
/// Panics on an instruction or a load the compiler is not meant to emit.
fn run(program: &[Insn], flags: u8, source: IpAddr) -> u32 {
    let mut tcp = [0u8; 20];
    tcp[13] = flags;
    let mut net = [0u8; 40];
    match source {
        IpAddr::V4(ip) => net[12..16].copy_from_slice(&ip.octets()),
        IpAddr::V6(ip) => net[8..24].copy_from_slice(&ip.octets()),
    }
    let load = |k: u32, width: usize| -> u32 {
        let k = k as i32;
        let bytes: &[u8] = if k >= 0 {
            &tcp[k as usize..k as usize + width]
        } else {
            let at = (k - NET_OFF) as usize;
            &net[at..at + width]
        };
        bytes.iter().fold(0, |acc, b| (acc << 8) | u32::from(*b))
    };
    let (mut pc, mut acc, mut x, mut mem) = (0usize, 0u32, 0u32, [0u32; 16]);
    loop {
        let i = program[pc];
        pc += 1;
        match i.code {
            LD_B_ABS => acc = load(i.k, 1),
            LD_W_ABS => acc = load(i.k, 4),
            LD_MEM => acc = mem[i.k as usize],
            ST => mem[i.k as usize] = acc,
            TAX => x = acc,
            TXA => acc = x,
            AND_K => acc &= i.k,
            JEQ_K => pc += usize::from(if acc == i.k { i.jt } else { i.jf }),
            RET_K => return i.k,
            other => panic!("unexpected instruction {other:#x}"),
        }
    }
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn subnet(ip: IpAddr, len: u8) -> Prefix {
    Prefix { addr: ip, len }
}

fn program(rules: &FilterRules, v6: bool) -> Vec<Insn> {
    compile(rules, v6, MAX_PROGRAM_LEN).expect("a program").0
}

#[test]
fn a_syn_from_a_blocked_source_is_dropped_and_others_pass() {
    let rules = FilterRules {
        allowed: vec![v4(10, 0, 0, 7)],
        blocked: vec![
            subnet(v4(10, 0, 0, 0), 24),
            Prefix::host(v4(192, 168, 1, 1)),
        ],
    };
    let p = program(&rules, false);
    assert_eq!(run(&p, SYN, v4(10, 0, 0, 9)), DROP);
    assert_eq!(run(&p, SYN, v4(192, 168, 1, 1)), DROP);
    // Outside every prefix, or allowed within one.
    assert_eq!(run(&p, SYN, v4(10, 0, 1, 9)), ACCEPT);
    assert_eq!(run(&p, SYN, v4(192, 168, 1, 2)), ACCEPT);
    assert_eq!(run(&p, SYN, v4(10, 0, 0, 7)), ACCEPT);
    // Anything but a SYN passes: the handshake's last ACK, data, a SYN-ACK.
    for flags in [ACK, 0x18, SYN_ACK, 0x11] {
        assert_eq!(run(&p, flags, v4(10, 0, 0, 9)), ACCEPT, "{flags:#x}");
    }
}

#[test]
fn ipv6_prefixes_compare_every_word_they_cover() {
    let net: Ipv6Addr = "2001:db8:1:2::".parse().unwrap();
    let host: Ipv6Addr = "2001:db8:9::5".parse().unwrap();
    let rules = FilterRules {
        allowed: vec![],
        blocked: vec![subnet(net.into(), 64), Prefix::host(host.into())],
    };
    let p = program(&rules, true);
    let inside: Ipv6Addr = "2001:db8:1:2:aa::1".parse().unwrap();
    let next_subnet: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
    let next_host: Ipv6Addr = "2001:db8:9::6".parse().unwrap();
    assert_eq!(run(&p, SYN, inside.into()), DROP);
    assert_eq!(run(&p, SYN, host.into()), DROP);
    assert_eq!(run(&p, SYN, next_subnet.into()), ACCEPT);
    assert_eq!(run(&p, SYN, next_host.into()), ACCEPT);
}

#[test]
fn a_listener_gets_no_program_without_a_rule_of_its_family() {
    let rules = FilterRules {
        allowed: vec![v4(10, 0, 0, 1)],
        blocked: vec![subnet(v4(10, 0, 0, 0), 8)],
    };
    assert!(compile(&rules, true, MAX_PROGRAM_LEN).is_none());
    assert!(compile(&FilterRules::default(), false, MAX_PROGRAM_LEN).is_none());
}

#[test]
fn rules_beyond_the_kernels_limit_are_left_out() {
    let blocked: Vec<Prefix> = (0..3000u32)
        .map(|i| Prefix::host(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i))))
        .collect();
    let rules = FilterRules {
        allowed: vec![],
        blocked,
    };
    let (p, held) = compile(&rules, false, MAX_PROGRAM_LEN).unwrap();
    assert!(p.len() <= MAX_PROGRAM_LEN, "{}", p.len());
    assert!(held > 1000 && held < 3000, "{held}");
    // A kernel that allows 20 KiB of option memory per socket takes a shorter one.
    let (short, fewer) = compile(&rules, false, max_program_len(20480)).unwrap();
    assert!(
        short.len() <= 1200 && fewer < held && fewer > 500,
        "{fewer}"
    );
    let first_left_out = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + held as u32));
    assert_eq!(run(&p, SYN, v4(10, 0, 0, 0)), DROP);
    assert_eq!(run(&p, SYN, first_left_out), ACCEPT);
}

#[test]
fn too_many_allowed_sources_filter_nobody() {
    let allowed = (0..3000u32)
        .map(|i| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)))
        .collect();
    let rules = FilterRules {
        allowed,
        blocked: vec![subnet(v4(10, 0, 0, 0), 8)],
    };
    assert!(compile(&rules, false, MAX_PROGRAM_LEN).is_none());
}

#[test]
fn prefixes_contain_what_they_cover() {
    let p = subnet(v4(10, 1, 2, 0), 23);
    assert!(p.contains(v4(10, 1, 3, 255)));
    assert!(!p.contains(v4(10, 1, 4, 0)));
    assert!(subnet(v4(1, 2, 3, 4), 0).contains(v4(9, 9, 9, 9)));
    assert!(!p.contains(IpAddr::V6(Ipv6Addr::LOCALHOST)));
}

fn any_ip() -> impl Strategy<Value = IpAddr> {
    // Few distinct values per byte, so that sources often fall in the rules' prefixes.
    prop_oneof![
        prop::array::uniform4(0u8..3).prop_map(|o| IpAddr::V4(o.into())),
        prop::array::uniform16(0u8..3).prop_map(|o| IpAddr::V6(o.into())),
    ]
}

proptest! {
    /// The program's verdict is the rules' meaning: a SYN without ACK from a blocked
    /// prefix and not allowed is dropped, everything else passes.
    #[test]
    fn the_program_decides_as_the_rules_say(
        allowed in prop::collection::vec(any_ip(), 0..4),
        blocked in prop::collection::vec((any_ip(), 0u8..=130), 0..8),
        source in any_ip(),
        flags in any::<u8>(),
    ) {
        let rules = FilterRules {
            allowed,
            blocked: blocked.into_iter().map(|(addr, len)| Prefix { addr, len }).collect(),
        };
        let v6 = source.is_ipv6();
        let expected = if flags & SYN_ACK == SYN
            && !rules.allowed.contains(&source)
            && rules.blocked.iter().any(|p| p.contains(source))
        {
            DROP
        } else {
            ACCEPT
        };
        let verdict = match compile(&rules, v6, MAX_PROGRAM_LEN) {
            Some((p, held)) => {
                prop_assert_eq!(held, rules.blocked.iter().filter(|p| p.addr.is_ipv6() == v6).count());
                run(&p, flags, source)
            }
            None => ACCEPT,
        };
        prop_assert_eq!(verdict, expected);
    }
}

struct CountWakes(AtomicUsize);

impl Wake for CountWakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_listener_is_woken_and_sees_each_change_once() {
    let filter = SourceFilter::default();
    let mut listener = filter.subscribe();
    let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
    let waker = Waker::from(Arc::clone(&wakes));
    assert!(listener.poll_changed(&waker).is_none());
    let rules = FilterRules {
        allowed: vec![],
        blocked: vec![Prefix::host(v4(10, 0, 0, 1))],
    };
    filter.set(rules.clone());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
    assert_eq!(listener.poll_changed(&waker).as_deref(), Some(&rules));
    assert!(listener.poll_changed(&waker).is_none());
    // A listener gone is forgotten at the next change.
    drop(listener);
    filter.set(FilterRules::default());
    assert_eq!(filter.0.lock().listeners.len(), 0);
}
