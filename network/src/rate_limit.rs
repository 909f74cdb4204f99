//! Inbound rate limits per peer: token buckets for bytes and for messages, applied by
//! reading less (backpressure), never by dropping what a peer sent.
//!
//! - Bytes: [`RateLimitedRead`] wraps a connection's decrypted stream below the
//!   multiplexer. When the bucket is empty it returns `Pending` until it refills, so the
//!   multiplexer reads nothing, the kernel's receive buffer fills, and TCP flow control
//!   stalls the sender.
//! - Messages: [`MessageLimiter`] is shared by a peer's inbound DirectSend and RPC
//!   readers; each waits for a token before handing a message to the application.
//!
//! **Trusted validators are exempt by default** ([`RateLimitConfig::limit_trusted`] is
//! `false`). A validator network's peers are all in the trusted set, and the traffic they
//! send is consensus traffic whose bursts (a leader's block to every peer, a catch-up)
//! must not be slowed by a fixed cap; what one validator can do to another is already
//! bounded without rates: inbound queues are per (peer, protocol) and served
//! round-robin, so a flooding validator delays only itself, and multiplexer windows and
//! queue sizes bound the memory it can make us hold. Peers outside the trusted set (open
//! mode: full nodes, clients) are limited by default.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::IntCounter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Default bytes per second from one untrusted peer: 8 MiB/s, ample for a full node
/// syncing, a fraction of a validator's link.
pub const DEFAULT_BYTES_PER_SECOND: u64 = 8 * 1024 * 1024;
/// Default byte burst: one maximum-size message (8 MiB) passes at full speed.
pub const DEFAULT_BURST_BYTES: u64 = 8 * 1024 * 1024;
/// Default messages per second from one untrusted peer: well above what a full node's
/// requests and gossip need.
pub const DEFAULT_MESSAGES_PER_SECOND: u64 = 1_000;
/// Default message burst.
pub const DEFAULT_BURST_MESSAGES: u64 = 1_000;

/// A rate: tokens per second and the most that can accumulate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: u64,
    /// The bucket's capacity (at least 1 is used).
    pub burst: u64,
}

/// The inbound limits of one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerRateLimit {
    /// Bytes read from the connection (after decryption), or `None` for no limit.
    pub bytes: Option<Rate>,
    /// Messages and requests handed to the application, or `None` for no limit.
    pub messages: Option<Rate>,
}

/// Which peers are rate limited and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateLimitConfig {
    /// The limits of each peer, or `None` for no limits at all.
    pub limit: Option<PeerRateLimit>,
    /// Whether the limits apply to peers in the trusted set too (default `false`; see
    /// the module docs for why).
    pub limit_trusted: bool,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            limit: Some(PeerRateLimit {
                bytes: Some(Rate {
                    per_second: DEFAULT_BYTES_PER_SECOND,
                    burst: DEFAULT_BURST_BYTES,
                }),
                messages: Some(Rate {
                    per_second: DEFAULT_MESSAGES_PER_SECOND,
                    burst: DEFAULT_BURST_MESSAGES,
                }),
            }),
            limit_trusted: false,
        }
    }
}

impl RateLimitConfig {
    /// The limits of a peer, given whether it is trusted.
    pub fn for_peer(&self, trusted: bool) -> Option<PeerRateLimit> {
        if trusted && !self.limit_trusted {
            return None;
        }
        self.limit
    }
}

/// A token bucket: an I/O-free core fed with instants.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    updated: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(rate: Rate, now: Instant) -> Self {
        let capacity = rate.burst.max(1) as f64;
        Self {
            per_second: rate.per_second as f64,
            capacity,
            tokens: capacity,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        self.updated = self.updated.max(now);
    }

    /// Whole tokens available at `now`.
    pub fn available(&mut self, now: Instant) -> u64 {
        self.refill(now);
        self.tokens.max(0.0) as u64
    }

    /// Takes `n` tokens, or says how long until they are there (`n` is capped at the
    /// capacity, so a wait always ends).
    pub fn try_take(&mut self, n: u64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        let n = (n as f64).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        if self.per_second <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((n - self.tokens) / self.per_second))
    }

    /// Takes `n` tokens unconditionally (the count may go negative: a debt repaid by
    /// later refills).
    pub fn take(&mut self, n: u64, now: Instant) {
        self.refill(now);
        self.tokens -= n as f64;
    }

    /// Time until at least `n` tokens (capped at the capacity) are available at `now`.
    pub fn wait_for(&mut self, n: u64, now: Instant) -> Duration {
        self.refill(now);
        let n = (n.max(1) as f64).min(self.capacity);
        if self.tokens >= n {
            return Duration::ZERO;
        }
        if self.per_second <= 0.0 {
            return Duration::MAX;
        }
        Duration::from_secs_f64((n - self.tokens) / self.per_second)
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Bytes a limited reader waits for before reading again (unless the caller's buffer
/// or the bucket is smaller): 16 KiB makes a wake-up per 16 KiB, a few hundred per
/// second at the default rate, instead of one per few bytes.
const MIN_READ_CHUNK: usize = 16 * 1024;

/// A cap on waits, so a zero rate does not overflow a timer: the reader re-checks.
const MAX_WAIT: Duration = Duration::from_secs(3600);

/// Limits the messages one peer hands to the application; shared by its readers.
#[derive(Debug)]
pub struct MessageLimiter {
    bucket: Mutex<TokenBucket>,
    waits: IntCounter,
}

impl MessageLimiter {
    /// A limiter at `rate`; `waits` counts the times a reader had to wait.
    pub fn new(rate: Rate, waits: IntCounter) -> Self {
        Self {
            bucket: Mutex::new(TokenBucket::new(rate, now())),
            waits,
        }
    }

    /// Lets one message pass if the bucket allows it now.
    pub fn try_acquire(&self) -> bool {
        self.bucket.lock().try_take(1, now()).is_ok()
    }

    /// Waits until one message may pass. Cancel safe: a cancelled wait takes nothing.
    pub async fn acquire(&self) {
        let mut counted = false;
        loop {
            let wait = match self.bucket.lock().try_take(1, now()) {
                Ok(()) => return,
                Err(wait) => wait.min(MAX_WAIT),
            };
            if !counted {
                self.waits.inc();
                counted = true;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// Reads from `inner` no faster than a byte rate; writes pass through. See the module
/// docs.
pub struct RateLimitedRead<IO> {
    inner: IO,
    bucket: Option<TokenBucket>,
    sleep: Option<Pin<Box<Sleep>>>,
    waits: Option<IntCounter>,
}

impl<IO> RateLimitedRead<IO> {
    /// Limits reads from `inner` to `rate` (`None`: no limit); `waits` counts the times
    /// the reader was held back.
    pub fn new(inner: IO, rate: Option<Rate>, waits: Option<IntCounter>) -> Self {
        Self {
            inner,
            bucket: rate.map(|r| TokenBucket::new(r, now())),
            sleep: None,
            waits,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &IO {
        &self.inner
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for RateLimitedRead<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let Some(bucket) = this.bucket.as_mut() else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        // One clock read per attempt serves the bucket's checks and the take: the
        // read between them takes no time the bucket would count.
        let now = loop {
            if let Some(sleep) = this.sleep.as_mut() {
                ready!(sleep.as_mut().poll(cx));
                this.sleep = None;
            }
            let now = tokio::time::Instant::now();
            // Wait for a chunk's worth of tokens, not one: reading a few bytes per
            // wake-up would spin the connection task at the rate's pace.
            let wait = bucket.wait_for(buf.remaining().min(MIN_READ_CHUNK) as u64, now.into_std());
            if wait.is_zero() {
                break now.into_std();
            }
            if let Some(waits) = &this.waits {
                waits.inc();
            }
            this.sleep = Some(Box::pin(tokio::time::sleep_until(now + wait.min(MAX_WAIT))));
        };
        // Read at most what the bucket holds, so the rate holds without debt.
        let allowed = usize::try_from(bucket.available(now))
            .unwrap_or(usize::MAX)
            .clamp(1, buf.remaining());
        let dst = buf.initialize_unfilled_to(allowed);
        let mut limited = ReadBuf::new(dst);
        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        buf.advance(n);
        bucket.take(n as u64, now);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for RateLimitedRead<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 100,
        burst: 10,
    };

    #[test]
    fn a_full_bucket_passes_its_burst_then_waits_for_refill() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        for _ in 0..10 {
            assert_eq!(b.try_take(1, t0), Ok(()));
        }
        assert_eq!(b.try_take(1, t0), Err(Duration::from_millis(10)));
        assert_eq!(b.try_take(1, t0 + Duration::from_millis(10)), Ok(()));
    }

    #[test]
    fn refills_never_exceed_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        b.take(10, t0);
        assert_eq!(b.available(t0 + Duration::from_secs(60)), 10);
    }

    #[test]
    fn a_debt_is_repaid_before_the_next_token() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(RATE, t0);
        b.take(30, t0); // 10 available, 20 owed
        assert_eq!(b.wait_for(1, t0), Duration::from_millis(210));
        assert_eq!(b.wait_for(11, t0), Duration::from_millis(300));
        assert_eq!(
            b.wait_for(1000, t0),
            Duration::from_millis(300),
            "capped at the burst"
        );
    }

    #[test]
    fn trusted_peers_are_exempt_by_default() {
        let config = RateLimitConfig::default();
        assert_eq!(config.for_peer(true), None);
        assert!(config.for_peer(false).is_some());
        let all = RateLimitConfig {
            limit_trusted: true,
            ..config
        };
        assert!(all.for_peer(true).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_limited_reader_reads_no_faster_than_its_rate() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut tx, rx) = tokio::io::duplex(1 << 20);
        tx.write_all(&[7u8; 50_000]).await.unwrap();
        drop(tx);
        let rate = Rate {
            per_second: 10_000,
            burst: 10_000,
        };
        let mut reader = RateLimitedRead::new(rx, Some(rate), None);
        let start = tokio::time::Instant::now();
        let mut all = Vec::new();
        reader.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 50_000);
        // 10 000 of burst, then 40 000 at 10 000/s; the last read, which finds the
        // end of the stream, waits for one more chunk of tokens first.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(5010), "{elapsed:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_message_limiter_paces_messages() {
        let limiter = MessageLimiter::new(RATE, IntCounter::new("w", "w").unwrap());
        let start = tokio::time::Instant::now();
        for _ in 0..30 {
            limiter.acquire().await;
        }
        // 10 at once, 20 more at 100/s.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(199), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(230), "{elapsed:?}");
        assert_eq!(limiter.waits.get(), 20);
    }
}
