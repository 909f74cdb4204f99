//! The connection handshake: right after Noise, each side sends its chain id, network
//! id, supported protocols and client version, and checks the other's.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use netcore::framing::{FramingError, MessageCodec};
use proto::Message;
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::codec::Encoder;

use crate::config::MAX_HANDSHAKE_MESSAGE_SIZE;

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The remote serves another chain.
    #[error("chain id mismatch: ours {ours}, theirs {theirs}")]
    ChainMismatch {
        /// Our chain id.
        ours: u32,
        /// The remote's chain id.
        theirs: u32,
    },
    /// The remote is on another network of the chain.
    #[error("network id mismatch: ours {ours:?}, theirs {theirs:?}")]
    NetworkMismatch {
        /// Our network id.
        ours: String,
        /// The remote's network id.
        theirs: String,
    },
    /// The remote's message is not a handshake message.
    #[error("undecodable handshake message: {0}")]
    Decode(#[from] proto::DecodeError),
    /// The remote closed the connection before sending its message.
    #[error("connection closed during the handshake")]
    Closed,
    /// Framing or I/O failed (including an oversized message).
    #[error(transparent)]
    Framing(#[from] FramingError),
}

impl HandshakeError {
    /// A short label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            HandshakeError::ChainMismatch { .. } => "chain_mismatch",
            HandshakeError::NetworkMismatch { .. } => "network_mismatch",
            HandshakeError::Decode(_) => "handshake_decode",
            HandshakeError::Closed => "handshake_closed",
            HandshakeError::Framing(_) => "handshake_io",
        }
    }
}

/// Sends `ours`, reads the remote's message and checks its chain and network ids.
/// Both sides run the same check, so both see (and can log) a mismatch.
///
/// Ours is flushed before the read waits for the remote's, so neither side waits for
/// the other. When the remote's message is here already (a listener sends its own
/// behind Noise message 2), ours stays in `io`'s buffer and leaves with what is written
/// next (the dialer's multiplexer proposal and first frames), one socket write for
/// all. A caller whose next step reads must flush first. A failure to read or accept
/// the remote's message flushes ours, so that the remote sees a mismatch too.
///
/// The remote's message is read exactly (length prefix, then body), never past its end:
/// the multiplexer frames a remote sends right behind its handshake stay in `io`.
pub async fn exchange<IO>(
    mut io: IO,
    ours: &HandshakeMsg,
) -> Result<(IO, HandshakeMsg), HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&framed(ours)?)
        .await
        .map_err(FramingError::Io)?;
    let mut reading = FlushBeforeWait {
        io: &mut io,
        unflushed: true,
    };
    let theirs = read_theirs(&mut reading).await;
    let unflushed = reading.unflushed;
    let theirs = match theirs.and_then(|theirs| check(ours, theirs)) {
        Ok(theirs) => theirs,
        Err(e) => {
            if unflushed {
                // Best effort: the connection is dropped either way.
                let _ = io.flush().await;
            }
            return Err(e);
        }
    };
    Ok((io, theirs))
}

/// `msg` as it travels: its length, then its bytes.
fn framed(msg: &HandshakeMsg) -> Result<BytesMut, FramingError> {
    let mut out = BytesMut::new();
    MessageCodec::new(MAX_HANDSHAKE_MESSAGE_SIZE)
        .encode(Bytes::from(msg.encode_to_vec()), &mut out)?;
    Ok(out)
}

/// Reads the remote's handshake message, exactly.
async fn read_theirs<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<HandshakeMsg, HandshakeError> {
    let len = match io.read_u32().await {
        Ok(len) => len as usize,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(HandshakeError::Closed),
        Err(e) => return Err(FramingError::Io(e).into()),
    };
    if len > MAX_HANDSHAKE_MESSAGE_SIZE {
        return Err(FramingError::TooLarge {
            len,
            max: MAX_HANDSHAKE_MESSAGE_SIZE,
        }
        .into());
    }
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await.map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => HandshakeError::Closed,
        _ => FramingError::Io(e).into(),
    })?;
    Ok(HandshakeMsg::decode(&body[..])?)
}

/// The remote's message, if it is of our chain and network.
fn check(ours: &HandshakeMsg, theirs: HandshakeMsg) -> Result<HandshakeMsg, HandshakeError> {
    if theirs.chain_id != ours.chain_id {
        return Err(HandshakeError::ChainMismatch {
            ours: ours.chain_id,
            theirs: theirs.chain_id,
        });
    }
    if theirs.network_id != ours.network_id {
        return Err(HandshakeError::NetworkMismatch {
            ours: ours.network_id.clone(),
            theirs: theirs.network_id,
        });
    }
    Ok(theirs)
}

/// Reads from `io`, flushing what was written to it first whenever a read would wait:
/// a side never waits for the remote with its own message still in a buffer.
struct FlushBeforeWait<'a, IO> {
    io: &'a mut IO,
    unflushed: bool,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for FlushBeforeWait<'_, IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let read = Pin::new(&mut *this.io).poll_read(cx, buf);
        if read.is_pending() && this.unflushed {
            // The read registered the waker; a flush that waits registers it too.
            if let Poll::Ready(flushed) = Pin::new(&mut *this.io).poll_flush(cx) {
                flushed?;
                this.unflushed = false;
            }
        }
        read
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memsocket::MemorySocket;

    fn msg(chain_id: u32, network_id: &str) -> HandshakeMsg {
        HandshakeMsg {
            chain_id,
            network_id: network_id.to_owned(),
            supported_protocols: vec!["/a/rpc/1".to_owned()],
            client_version: "test".to_owned(),
        }
    }

    #[tokio::test]
    async fn matching_sides_learn_each_other_and_keep_trailing_bytes() {
        let (a, b) = MemorySocket::new_pair();
        let ours = msg(1, "v");
        let (ra, rb) = tokio::join!(exchange(a, &ours), async {
            let (mut b, theirs) = exchange(b, &ours).await?;
            // Bytes sent right behind the handshake are not swallowed by it.
            b.write_all(b"next").await.map_err(FramingError::Io)?;
            Ok::<_, HandshakeError>((b, theirs))
        });
        let (mut a, theirs_a) = ra.unwrap();
        let (_b, theirs_b) = rb.unwrap();
        assert_eq!(theirs_a, msg(1, "v"));
        assert_eq!(theirs_b, msg(1, "v"));
        let mut buf = [0u8; 4];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"next");
    }

    #[tokio::test]
    async fn chain_mismatch_is_seen_by_both_sides() {
        let (a, b) = MemorySocket::new_pair();
        let (one, two) = (msg(1, "v"), msg(2, "v"));
        let (ra, rb) = tokio::join!(exchange(a, &one), exchange(b, &two));
        assert!(matches!(
            ra,
            Err(HandshakeError::ChainMismatch { ours: 1, theirs: 2 })
        ));
        assert!(matches!(
            rb,
            Err(HandshakeError::ChainMismatch { ours: 2, theirs: 1 })
        ));
    }

    #[tokio::test]
    async fn network_mismatch_is_refused() {
        let (a, b) = MemorySocket::new_pair();
        let (validator, public) = (msg(1, "validator"), msg(1, "public"));
        let (ra, _) = tokio::join!(exchange(a, &validator), exchange(b, &public));
        assert_eq!(ra.unwrap_err().reason(), "network_mismatch");
    }

    /// A side whose writes wait in a buffer until flushed, as under Noise.
    fn buffered(io: MemorySocket) -> tokio::io::BufWriter<MemorySocket> {
        tokio::io::BufWriter::new(io)
    }

    /// Whether `io` has bytes to read now.
    fn has_input(io: &mut MemorySocket) -> bool {
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let waker = futures::task::noop_waker();
        let read = Pin::new(io).poll_read(&mut Context::from_waker(&waker), &mut buf);
        matches!(read, Poll::Ready(Ok(()))) && !buf.filled().is_empty()
    }

    #[tokio::test]
    async fn buffered_sides_flush_before_they_wait_for_each_other() {
        let (a, b) = MemorySocket::new_pair();
        let ours = msg(1, "v");
        // Each side flushes after its exchange, as the next layer's first write does:
        // the side that found the other's message waiting sent its own only then.
        let side = |io| async {
            let (mut io, theirs) = exchange(buffered(io), &ours).await?;
            io.flush().await.map_err(FramingError::Io)?;
            Ok::<_, HandshakeError>(theirs)
        };
        let (ra, rb) = tokio::join!(side(a), side(b));
        assert_eq!(ra.unwrap(), ours);
        assert_eq!(rb.unwrap(), ours);
    }

    #[tokio::test]
    async fn ours_waits_for_the_next_flush_when_theirs_is_here_already() {
        let (a, mut b) = MemorySocket::new_pair();
        let ours = msg(1, "v");
        let theirs = framed(&ours).unwrap();
        b.write_all(&theirs).await.unwrap();
        let (mut a, got) = exchange(buffered(a), &ours).await.unwrap();
        assert_eq!(got, ours);
        assert!(!has_input(&mut b), "our message waits for what follows it");
        a.write_all(b"next").await.unwrap();
        a.flush().await.unwrap();
        let mut read = vec![0u8; theirs.len() + 4];
        b.read_exact(&mut read).await.unwrap();
        assert_eq!(
            &read[..theirs.len()],
            &theirs[..],
            "the same bytes as theirs"
        );
        assert_eq!(&read[theirs.len()..], b"next");
    }

    #[tokio::test]
    async fn a_failure_found_without_waiting_still_sends_ours() {
        let other_chain = framed(&msg(2, "v")).unwrap();
        let cases: [(&[u8], &str); 4] = [
            (&other_chain, "chain_mismatch"),
            (&[0, 0, 0, 3, 0xff, 0xff, 0xff], "handshake_decode"),
            (&[0xff, 0xff, 0xff, 0xff], "handshake_io"),
            (&[0, 0, 0, 9, 1], "handshake_closed"),
        ];
        for (theirs, reason) in cases {
            let (a, mut b) = MemorySocket::new_pair();
            b.write_all(theirs).await.unwrap();
            b.shutdown().await.unwrap();
            let err = exchange(buffered(a), &msg(1, "v")).await.unwrap_err();
            assert_eq!(err.reason(), reason);
            let len = b.read_u32().await.unwrap() as usize;
            let mut body = vec![0u8; len];
            b.read_exact(&mut body).await.unwrap();
            assert_eq!(
                HandshakeMsg::decode(&body[..]).unwrap(),
                msg(1, "v"),
                "{reason}"
            );
        }
    }

    #[tokio::test]
    async fn oversized_and_garbage_messages_are_typed_errors() {
        let (a, mut b) = MemorySocket::new_pair();
        b.write_all(&[0xff, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            exchange(a, &msg(1, "v")).await,
            Err(HandshakeError::Framing(FramingError::TooLarge { .. }))
        ));

        let (a, mut b) = MemorySocket::new_pair();
        b.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(matches!(
            exchange(a, &msg(1, "v")).await,
            Err(HandshakeError::Decode(_))
        ));

        let (a, b) = MemorySocket::new_pair();
        drop(b);
        assert!(exchange(a, &msg(1, "v")).await.is_err());
    }
}
