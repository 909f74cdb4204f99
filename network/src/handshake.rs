//! The connection handshake: right after Noise, each side sends its chain id, network
//! id, supported protocols and client version, and checks the other's.

use std::io;

use bytes::{Bytes, BytesMut};
use netcore::framing::{FramingError, MessageCodec};
use proto::Message;
use proto::handshake::HandshakeMsg;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
/// The remote's message is read exactly (length prefix, then body), never past its end:
/// the multiplexer frames a remote sends right behind its handshake stay in `io`.
pub async fn exchange<IO>(
    mut io: IO,
    ours: &HandshakeMsg,
) -> Result<(IO, HandshakeMsg), HandshakeError>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut out = BytesMut::new();
    MessageCodec::new(MAX_HANDSHAKE_MESSAGE_SIZE)
        .encode(Bytes::from(ours.encode_to_vec()), &mut out)?;
    io.write_all(&out).await.map_err(FramingError::Io)?;
    io.flush().await.map_err(FramingError::Io)?;

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
    let theirs = HandshakeMsg::decode(&body[..])?;
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
    Ok((io, theirs))
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
