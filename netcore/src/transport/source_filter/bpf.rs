//! Compiles [`FilterRules`] into a classic BPF socket filter for one address family.
//!
//! On a TCP socket the kernel runs the filter with the packet's data starting at the
//! TCP header, and the IP header reachable at `SKF_NET_OFF`. The program:
//!
//! ```text
//!     ldb [13]             TCP flags
//!     and #0x12            SYN | ACK
//!     jeq #0x02, 1, 0      a SYN without ACK goes on to the rules,
//!     ret #-1              anything else passes
//!     <allowed entries>    each: match the source → ret #-1
//!     <blocked entries>    each: match the prefix → ret #0 (drop)
//!     ret #-1
//! ```
//!
//! An entry loads the source address a word at a time (masking the last word of a
//! prefix), and on the first word that differs jumps past its own `ret`: every jump is a
//! few instructions long, so no entry count overflows the 8-bit jump offsets. Rules are
//! checked in order, so a SYN costs a walk of the list; the list is short by
//! construction (the caller bounds it, and [`MAX_PROGRAM_LEN`] caps it).

use std::net::IpAddr;

use super::{FilterRules, MAX_PROGRAM_LEN, Prefix};

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

/// The program for a listener of the given family (`v6`: an IPv6-only socket), and
/// how many of the rules' blocked prefixes it holds. Rules of the other family are
/// left out. `None` when no blocked prefix applies: the listener then needs no filter.
///
/// Allowed sources come first; if they do not all fit, the program blocks nothing
/// (dropping an allowed source would be worse than filtering nobody).
pub(crate) fn compile(rules: &FilterRules, v6: bool) -> Option<(Vec<Insn>, usize)> {
    let same_family = |ip: &IpAddr| ip.is_ipv6() == v6;
    if !rules.blocked.iter().any(|p| same_family(&p.addr)) {
        return None;
    }
    let mut program = vec![
        insn(LD_B_ABS, 0, 0, TCP_FLAGS),
        insn(AND_K, 0, 0, SYN | ACK),
        insn(JEQ_K, 1, 0, SYN),
        insn(RET_K, 0, 0, ACCEPT),
    ];
    // Room for the final `ret`.
    let room = MAX_PROGRAM_LEN - 1;
    for ip in rules.allowed.iter().filter(|ip| same_family(ip)) {
        let entry = entry(Prefix::host(*ip), ACCEPT);
        if program.len() + entry.len() > room {
            return None;
        }
        program.extend(entry);
    }
    let mut held = 0;
    for prefix in rules.blocked.iter().filter(|p| same_family(&p.addr)) {
        let entry = entry(*prefix, DROP);
        if program.len() + entry.len() > room {
            break;
        }
        program.extend(entry);
        held += 1;
    }
    program.push(insn(RET_K, 0, 0, ACCEPT));
    Some((program, held))
}

/// Instructions that return `verdict` when the source lies within `prefix`, and fall
/// through to the next entry otherwise.
fn entry(prefix: Prefix, verdict: u32) -> Vec<Insn> {
    let (words, base): (Vec<u32>, i32) = match prefix.addr {
        IpAddr::V4(ip) => (vec![u32::from(ip)], V4_SOURCE),
        IpAddr::V6(ip) => (
            ip.octets()
                .chunks_exact(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .collect(),
            V6_SOURCE,
        ),
    };
    let mut bits = u32::from(prefix.len).min(32 * words.len() as u32);
    // Per compared word: (offset, mask).
    let mut compared = Vec::new();
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
        compared.push((base + 4 * i as i32, mask, word & mask));
    }
    let len = compared
        .iter()
        .map(|&(_, mask, _)| if mask == u32::MAX { 2 } else { 3 })
        .sum::<usize>()
        + 1;
    let mut out = Vec::with_capacity(len);
    for &(offset, mask, value) in &compared {
        out.push(insn(LD_W_ABS, 0, 0, (NET_OFF + offset) as u32));
        if mask != u32::MAX {
            out.push(insn(AND_K, 0, 0, mask));
        }
        // On a mismatch, skip the rest of the entry including its `ret`; on a match,
        // the next word (or the `ret`) follows.
        let skip = len - out.len() - 1;
        out.push(insn(JEQ_K, 0, skip as u8, value));
    }
    out.push(insn(RET_K, 0, 0, verdict));
    out
}
