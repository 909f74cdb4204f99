//! Reads a handshake's pieces out of as few socket reads as the remote's writes allow.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::constants::INITIAL_READ_BUFFER_LEN;
use crate::error::NoiseError;

/// Reads the fixed-size pieces of a handshake (the prologue, each message's length,
/// then its body) from reads of up to [`INITIAL_READ_BUFFER_LEN`] bytes, so that one
/// read takes what the remote wrote at once: the prologue and message 1, or message 2
/// and the transport frames the listener sent right behind it. What the last read
/// brought past the last message is the session's ([`into_rest`](Self::into_rest)):
/// nothing read is lost, and nothing is read exactly, piece by piece, in small reads.
#[derive(Default)]
pub(crate) struct HandshakeReader {
    /// Read and not yet taken.
    buf: BytesMut,
}

impl HandshakeReader {
    /// Fills `out`, reading as needed; the stream ending first is
    /// [`NoiseError::Truncated`].
    pub(crate) async fn read_exact<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
        out: &mut [u8],
    ) -> Result<(), NoiseError> {
        let mut filled = 0;
        while filled < out.len() {
            if self.buf.is_empty() {
                // The room is never zeroed: the socket writes it first.
                self.buf.reserve(INITIAL_READ_BUFFER_LEN);
                let read = io
                    .read_buf(&mut (&mut self.buf).limit(INITIAL_READ_BUFFER_LEN))
                    .await?;
                if read == 0 {
                    return Err(NoiseError::Truncated);
                }
            }
            let n = (out.len() - filled).min(self.buf.len());
            out[filled..filled + n].copy_from_slice(&self.buf[..n]);
            self.buf.advance(n);
            filled += n;
        }
        Ok(())
    }

    /// Reads one handshake message: a u16 BE length, then that many bytes (so at most
    /// 65535, allocated only once the length is known).
    pub(crate) async fn read_message<IO: AsyncRead + Unpin>(
        &mut self,
        io: &mut IO,
    ) -> Result<Vec<u8>, NoiseError> {
        let mut prefix = [0u8; 2];
        self.read_exact(io, &mut prefix).await?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(prefix))];
        self.read_exact(io, &mut message).await?;
        Ok(message)
    }

    /// What was read past the pieces taken: the first bytes of the session.
    pub(crate) fn into_rest(self) -> BytesMut {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use memsocket::MemorySocket;
    use tokio::io::AsyncWriteExt;

    /// A socket that records the size of every read it is asked for.
    struct Reads<'a> {
        io: MemorySocket,
        sizes: &'a mut Vec<usize>,
    }

    impl AsyncRead for Reads<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let this = &mut *self;
            this.sizes.push(buf.remaining());
            std::pin::Pin::new(&mut this.io).poll_read(cx, buf)
        }
    }

    #[tokio::test]
    async fn one_read_takes_a_whole_flight_and_keeps_what_follows() {
        let (mut remote, io) = MemorySocket::new_pair();
        // A prologue, a message of 3 bytes, and 4 bytes of what comes next.
        remote.write_all(b"PROLOGUE\x00\x03abcnext").await.unwrap();
        let mut sizes = Vec::new();
        let mut io = Reads {
            io,
            sizes: &mut sizes,
        };
        let mut reader = HandshakeReader::default();
        let mut prologue = [0u8; 8];
        reader.read_exact(&mut io, &mut prologue).await.unwrap();
        let message = reader.read_message(&mut io).await.unwrap();
        assert_eq!(
            (&prologue[..], &message[..]),
            (&b"PROLOGUE"[..], &b"abc"[..])
        );
        assert_eq!(&reader.into_rest()[..], b"next");
        assert_eq!(sizes, [INITIAL_READ_BUFFER_LEN]);
    }

    #[tokio::test]
    async fn a_message_larger_than_a_read_is_read_whole() {
        let (mut remote, mut io) = MemorySocket::new_pair();
        let body: Vec<u8> = (0..20_000u32).map(|i| i as u8).collect();
        let mut wire = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
        wire.extend_from_slice(&body);
        let send = tokio::spawn(async move {
            remote.write_all(&wire).await.unwrap();
            remote
        });
        let mut reader = HandshakeReader::default();
        assert_eq!(reader.read_message(&mut io).await.unwrap(), body);
        assert!(reader.into_rest().is_empty());
        drop(send.await.unwrap());
    }

    #[tokio::test]
    async fn the_stream_ending_inside_a_piece_is_truncated() {
        let (mut remote, mut io) = MemorySocket::new_pair();
        remote.write_all(&[0, 9, 1, 2]).await.unwrap();
        drop(remote);
        let mut reader = HandshakeReader::default();
        assert!(matches!(
            reader.read_message(&mut io).await,
            Err(NoiseError::Truncated)
        ));
    }
}
