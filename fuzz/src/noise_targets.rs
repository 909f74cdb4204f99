//! The Noise targets: the handshake as responder and as initiator, and the encrypted
//! stream's reader fed a mix of genuine frames and tampered bytes.

use std::cell::RefCell;

use futures::FutureExt;
use netcore::PeerId;
use noise::{FixedInputs, Identity, NoiseConfig, NoiseUpgrader};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::runtime::Runtime;

use crate::pipe::pipe;

/// The secret key of the fuzzed node (the responder): fixed, so seeds can carry a
/// genuine first handshake message addressed to it.
pub const RESPONDER_SECRET: [u8; 32] = [0x11; 32];

/// The secret key of the dialer the fuzzed initiator plays.
pub const INITIATOR_SECRET: [u8; 32] = [0x22; 32];

/// The clock every fuzzed handshake reads (2026-01-01T00:00:00Z): fixed, so a seed's
/// first message, stamped with it, is accepted by the fuzzed responder at any time, and
/// a run's inputs give the same handshakes.
pub const FUZZ_CLOCK_MS: u64 = 1_767_225_600_000;

/// An upgrader for `secret` in open mode, with the fixed clock and ephemeral keys
/// seeded from the secret itself.
pub fn fuzz_upgrader(secret: &[u8; 32]) -> NoiseUpgrader {
    NoiseUpgrader::with_fixed_inputs(
        Identity::from_secret_bytes(secret),
        NoiseConfig::open(),
        FixedInputs {
            clock_ms: FUZZ_CLOCK_MS,
            ephemeral_seed: *secret,
        },
    )
}

/// Bytes read from a stream per read: small, so frames are read in several pieces.
const READ_PIECE: usize = 700;

thread_local! {
    static RUNTIME: RefCell<Option<Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's current-thread runtime (with timers: handshakes have a
/// timeout), built on first use.
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|cell| {
        let mut slot = cell.borrow_mut();
        let runtime = slot.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot build the fuzzing runtime: {e}"))
        });
        runtime.block_on(f)
    })
}

/// The responder's peer id, which a seed for the responder must address.
pub fn responder_peer_id() -> PeerId {
    Identity::from_secret_bytes(&RESPONDER_SECRET).peer_id()
}

/// Reads `stream` until EOF or an error; the input is finite, so this ends.
async fn drain<S: AsyncRead + Unpin>(stream: &mut S) {
    let mut buf = [0u8; READ_PIECE];
    while let Ok(n) = stream.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

/// The handshake as responder (open mode): `data` is everything the dialer sends, then
/// the connection ends. A handshake that succeeds reads the rest as the session.
pub fn noise_responder(data: &[u8]) {
    let _ = respond(data);
}

/// [`noise_responder`], telling whether the handshake succeeded.
pub(crate) fn respond(data: &[u8]) -> bool {
    block_on(async {
        let (ours, theirs) = pipe();
        theirs.tx.inject(data);
        theirs.tx.close();
        let upgrader = fuzz_upgrader(&RESPONDER_SECRET);
        match upgrader.upgrade_inbound(ours).await {
            Ok((mut stream, _)) => {
                drain(&mut stream).await;
                true
            }
            Err(_) => false,
        }
    })
}

/// The handshake as initiator, dialing the responder: `data` is everything the
/// listener answers, then the connection ends.
pub fn noise_initiator(data: &[u8]) {
    block_on(async {
        let (ours, theirs) = pipe();
        theirs.tx.inject(data);
        theirs.tx.close();
        let upgrader = fuzz_upgrader(&INITIATOR_SECRET);
        if let Ok((mut stream, _)) = upgrader.upgrade_outbound(ours, responder_peer_id()).await {
            drain(&mut stream).await;
        }
    });
}

/// The encrypted stream's reader, after a genuine handshake: `data` is a sequence of
/// operations on the wire from writer to reader: genuine writes (sealed by the writer),
/// raw injected bytes, corrupted or dropped bytes in flight, and reads.
pub fn noise_stream(data: &[u8]) {
    block_on(async {
        let (a, b) = pipe();
        let wire = b.rx.clone();
        let initiator = fuzz_upgrader(&INITIATOR_SECRET);
        let responder = fuzz_upgrader(&RESPONDER_SECRET);
        let (dialed, accepted) = futures::join!(
            initiator.upgrade_outbound(a, responder_peer_id()),
            responder.upgrade_inbound(b)
        );
        let (Ok((mut writer, _)), Ok((mut reader, _))) = (dialed, accepted) else {
            panic!("a handshake over a clean pipe failed");
        };
        let mut rest = data;
        let mut payload = vec![0u8; 0];
        let mut buf = [0u8; READ_PIECE];
        while let Some((&op, tail)) = rest.split_first() {
            let (&arg, tail) = tail.split_first().unwrap_or((&0, &[]));
            rest = tail;
            let n = usize::from(arg);
            match op % 5 {
                0 => {
                    // A genuine write of n * 257 bytes: up to ~64 KiB, so frames fill.
                    payload.resize(n * 257, op);
                    if writer.write_all(&payload).now_or_never().is_some() {
                        let _ = writer.flush().now_or_never();
                    }
                }
                1 => {
                    let (raw, tail) = rest.split_at(n.min(rest.len()));
                    rest = tail;
                    wire.inject(raw);
                }
                2 => {
                    let mask = rest.first().copied().unwrap_or(0x80);
                    wire.corrupt(n, mask);
                }
                3 => wire.drop_bytes(n),
                _ => {
                    while let Some(Ok(read)) = reader.read(&mut buf).now_or_never() {
                        if read == 0 {
                            break;
                        }
                    }
                }
            }
        }
        wire.close();
        drain(&mut reader).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_first_message_completes_a_responder_handshake() {
        let seed = std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("corpus/noise_responder/first-message"),
        )
        .unwrap_or_default();
        assert!(respond(&seed));
        assert!(!respond(&seed[..seed.len() - 1]));
    }
}
