//! Compiles [`FilterRules`] into a classic BPF socket filter for one address family.
//!
//! On a TCP socket the kernel runs the filter with the packet's data starting at the
//! TCP header, and the IP header reachable at `SKF_NET_OFF`. A load at `SKF_NET_OFF`
//! is a call into the kernel, so the source address is loaded once, into the X
//! register (IPv4) or the scratch memory (IPv6, four words), and every entry compares
//! against that copy:
//!
//! ```text
//!     ldb [13]             TCP flags
//!     and #0x12            SYN | ACK
//!     jeq #0x02, 1, 0      a SYN without ACK goes on to the rules,
//!     ret #-1              anything else passes
//!     <load the source>    IPv4: ld [net+12]; tax. IPv6: ld [net+8+4i]; st M[i], i < 4
//!     <allowed entries>    each: match the source → ret #-1
//!     <blocked entries>    each: match the prefix → ret #0 (drop)
//!     ret #-1
//! ```
//!
//! An IPv4 entry is `jeq #addr, 0, 1; ret` (with `txa; and #mask` in front for a
//! prefix shorter than 32 bits, entries of whole addresses first so that the
//! accumulator still holds the source for them); an IPv6 entry compares the words its
//! prefix covers, from scratch memory. A mismatch jumps past the entry's own `ret`, a
//! few instructions, so no entry count overflows the 8-bit jump offsets. Rules are
//! checked in order, so a SYN costs a walk of the list; the caller bounds the list, and
//! the program is cut to the length it is given.

use std::net::IpAddr;

use super::{FilterRules, Prefix};

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Insn {
    pub(crate) code: u16,
    pub(crate) jt: u8,
    pub(crate) jf: u8,
    pub(crate) k: u32,
}

/// `BPF_LD | BPF_W | BPF_ABS`: the accumulator takes the 32-bit word at `k`.
pub(crate) const LD_W_ABS: u16 = 0x20;
/// `BPF_LD | BPF_B | BPF_ABS`: the accumulator takes the byte at `k`.
pub(crate) const LD_B_ABS: u16 = 0x30;
/// `BPF_LD | BPF_MEM`: the accumulator takes scratch word `k`.
pub(crate) const LD_MEM: u16 = 0x60;
/// `BPF_ST`: scratch word `k` takes the accumulator.
pub(crate) const ST: u16 = 0x02;
/// `BPF_MISC | BPF_TAX`: X takes the accumulator.
pub(crate) const TAX: u16 = 0x07;
/// `BPF_MISC | BPF_TXA`: the accumulator takes X.
pub(crate) const TXA: u16 = 0x87;
/// `BPF_ALU | BPF_AND | BPF_K`.
pub(crate) const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
pub(crate) const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: the packet's verdict, bytes to keep (0 drops it).
pub(crate) const RET_K: u16 = 0x06;
/// `SKF_NET_OFF`: loads at this offset and beyond read the network (IP) header.
pub(crate) const NET_OFF: i32 = -0x10_0000;

/// Keep the whole packet.
pub(crate) const ACCEPT: u32 = u32::MAX;
/// Drop it.
pub(crate) const DROP: u32 = 0;

/// Offset of the flags byte in the TCP header.
const TCP_FLAGS: u32 = 13;
const SYN: u32 = 0x02;
const ACK: u32 = 0x10;
/// Offset of the source address in the IPv4 and IPv6 headers.
const V4_SOURCE: i32 = 12;
const V6_SOURCE: i32 = 8;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> Insn {
    Insn { code, jt, jf, k }
}

/// The program for a listener of the given family (`v6`: an IPv6-only socket), at most
/// `max_len` instructions, and how many of the rules' blocked prefixes it holds (those
/// that do not fit are left out). Rules of the other family are ignored. `None` when no
/// blocked prefix applies (the listener then needs no filter), or when the allowed
/// sources alone do not fit: dropping an allowed source would be worse than filtering
/// nobody.
pub(crate) fn compile(rules: &FilterRules, v6: bool, max_len: usize) -> Option<(Vec<Insn>, usize)> {
    let same_family = |ip: &IpAddr| ip.is_ipv6() == v6;
    let mut blocked: Vec<Prefix> = rules
        .blocked
        .iter()
        .filter(|p| same_family(&p.addr))
        .copied()
        .collect();
    if blocked.is_empty() {
        return None;
    }
    // IPv4 entries of whole addresses compare the accumulator as loaded; the masked
    // ones reload it from X. (A stable sort: the order is otherwise the caller's.)
    blocked.sort_by_key(|p| !is_host(p));
    let mut program = vec![
        insn(LD_B_ABS, 0, 0, TCP_FLAGS),
        insn(AND_K, 0, 0, SYN | ACK),
        insn(JEQ_K, 1, 0, SYN),
        insn(RET_K, 0, 0, ACCEPT),
    ];
    program.extend(load_source(v6));
    // Room for the final `ret`.
    let room = max_len.saturating_sub(1);
    for ip in rules.allowed.iter().filter(|ip| same_family(ip)) {
        let entry = entry(Prefix::host(*ip), ACCEPT);
        if program.len() + entry.len() > room {
            return None;
        }
        program.extend(entry);
    }
    let mut held = 0;
    for prefix in blocked {
        let entry = entry(prefix, DROP);
        if program.len() + entry.len() > room {
            break;
        }
        program.extend(entry);
        held += 1;
    }
    program.push(insn(RET_K, 0, 0, ACCEPT));
    Some((program, held))
}

/// Whether `prefix` covers a whole address.
fn is_host(prefix: &Prefix) -> bool {
    let width = if prefix.addr.is_ipv4() { 32 } else { 128 };
    prefix.len >= width
}

/// Copies the source address where the entries read it.
fn load_source(v6: bool) -> Vec<Insn> {
    let net = |offset: i32| (NET_OFF + offset) as u32;
    if !v6 {
        return vec![insn(LD_W_ABS, 0, 0, net(V4_SOURCE)), insn(TAX, 0, 0, 0)];
    }
    (0..4)
        .flat_map(|i| {
            [
                insn(LD_W_ABS, 0, 0, net(V6_SOURCE + 4 * i as i32)),
                insn(ST, 0, 0, i),
            ]
        })
        .collect()
}

/// Instructions that return `verdict` when the source lies within `prefix`, and fall
/// through to the next entry otherwise.
fn entry(prefix: Prefix, verdict: u32) -> Vec<Insn> {
    let words: Vec<u32> = match prefix.addr {
        IpAddr::V4(ip) => vec![u32::from(ip)],
        IpAddr::V6(ip) => ip
            .octets()
            .chunks_exact(4)
            .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
            .collect(),
    };
    let v4 = words.len() == 1;
    let mut bits = u32::from(prefix.len).min(32 * words.len() as u32);
    let mut out = Vec::new();
    // Per compared word: the instructions before its `jeq`, and the `jeq`'s value.
    for (i, word) in words.iter().enumerate() {
        if bits == 0 {
            break;
        }
        let mask = if bits >= 32 {
            u32::MAX
        } else {
            !(u32::MAX >> bits)
        };
        bits = bits.saturating_sub(32);
        if !v4 {
            out.push(insn(LD_MEM, 0, 0, i as u32));
        } else if mask != u32::MAX {
            out.push(insn(TXA, 0, 0, 0));
        }
        if mask != u32::MAX {
            out.push(insn(AND_K, 0, 0, mask));
        }
        // The mismatch offset is filled in below, once the entry's length is known.
        out.push(insn(JEQ_K, 0, 0, word & mask));
    }
    out.push(insn(RET_K, 0, 0, verdict));
    // On a mismatch, skip the rest of the entry including its `ret`; on a match, the
    // next word (or the `ret`) follows.
    let len = out.len();
    for (at, i) in out.iter_mut().enumerate() {
        if i.code == JEQ_K {
            i.jf = (len - at - 1) as u8;
        }
    }
    out
}
