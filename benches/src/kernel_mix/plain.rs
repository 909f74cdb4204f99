//! The kernel mix over one plain TCP connection: `TCP_NODELAY`, `TCP_NOTSENT_LOWAT` on
//! both ends, and a framing of our own. The server writes a bulk response as 16 KiB
//! chunks and, before each chunk, the responses to every small request that arrived
//! meanwhile: a small response waits for at most the chunk being written and what the
//! kernel holds.
//!
//! A frame is a 9-byte header (kind, `u8`; id, `u32` little-endian; payload length,
//! `u32` little-endian) and the payload.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use socket2::SockRef;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::time::MissedTickBehavior;

use super::{BULK_SIZE, ClientOptions, Figures, GRACE, Recorder, SMALL_INTERVAL, SMALL_SIZE};

/// A small request: the payload carries the client's send time.
const SMALL_REQUEST: u8 = 1;
/// A bulk request: no payload.
const BULK_REQUEST: u8 = 2;
/// A small response: the request's payload.
const SMALL_RESPONSE: u8 = 3;
/// A chunk of the bulk response with the frame's id.
const BULK_CHUNK: u8 = 4;
/// Bytes of a frame header.
const HEADER: usize = 9;
/// Bulk bytes per chunk: the multiplexer's frame size.
const CHUNK: usize = 16 * 1024;
/// Requests queued between a connection's reader and its writer, on either end.
const QUEUE: usize = 1024;
/// How long the client keeps connecting to a server that is not listening yet.
const CONNECT_PATIENCE: Duration = Duration::from_secs(10);

/// A frame's header.
#[derive(Clone, Copy, Debug)]
struct Header {
    kind: u8,
    id: u32,
    len: usize,
}

/// Writes one frame.
async fn write_frame<W: AsyncWrite + Unpin>(
    out: &mut W,
    buffer: &mut Vec<u8>,
    (kind, id): (u8, u32),
    payload: &[u8],
) -> io::Result<()> {
    buffer.clear();
    buffer.push(kind);
    buffer.extend_from_slice(&id.to_le_bytes());
    buffer.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    buffer.extend_from_slice(payload);
    out.write_all(buffer).await
}

/// Reads one frame into `payload`; `None` at a clean end of the stream.
async fn read_frame<R: AsyncRead + Unpin>(
    input: &mut R,
    payload: &mut Vec<u8>,
) -> io::Result<Option<Header>> {
    let mut header = [0u8; HEADER];
    match input.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let (id, len) = (word(1), word(5) as usize);
    if len > CHUNK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    payload.resize(len, 0);
    input.read_exact(payload).await?;
    Ok(Some(Header {
        kind: header[0],
        id,
        len,
    }))
}

/// `TCP_NODELAY` and `TCP_NOTSENT_LOWAT` (`None`: the kernel's default).
fn configure(stream: &TcpStream, lowat: Option<u32>) -> io::Result<()> {
    let sock = SockRef::from(stream);
    sock.set_tcp_nodelay(true)?;
    if let Some(lowat) = lowat {
        sock.set_tcp_notsent_lowat(lowat)?;
    }
    Ok(())
}

/// A request as the server's reader hands it to its writer.
enum Request {
    /// A small request and its payload.
    Small(u32, Vec<u8>),
    /// A bulk request.
    Bulk(u32),
}

/// Serves on `listen` until killed, one task per connection.
pub async fn serve(listen: SocketAddr, lowat: Option<u32>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        configure(&stream, lowat)?;
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            let (tx, rx) = mpsc::channel(QUEUE);
            tokio::spawn(read_requests(BufReader::new(read), tx));
            let _ = write_responses(write, rx).await;
        });
    }
}

/// Hands every request the client sends to the writer.
async fn read_requests<R: AsyncRead + Unpin>(mut input: R, requests: mpsc::Sender<Request>) {
    let mut payload = Vec::new();
    while let Ok(Some(header)) = read_frame(&mut input, &mut payload).await {
        let request = match header.kind {
            SMALL_REQUEST => Request::Small(header.id, payload[..header.len].to_vec()),
            BULK_REQUEST => Request::Bulk(header.id),
            _ => return,
        };
        if requests.send(request).await.is_err() {
            return;
        }
    }
}

/// Writes the responses: before each bulk chunk, every small response due.
async fn write_responses<W: AsyncWrite + Unpin>(
    mut out: W,
    mut requests: mpsc::Receiver<Request>,
) -> io::Result<()> {
    let chunk = vec![0x42u8; CHUNK];
    let mut buffer = Vec::with_capacity(HEADER + CHUNK);
    // Bulk responses in order: id and bytes still to send.
    let mut bulk: VecDeque<(u32, usize)> = VecDeque::new();
    loop {
        let request = match requests.try_recv() {
            Ok(request) => Some(request),
            Err(TryRecvError::Disconnected) => return Ok(()),
            Err(TryRecvError::Empty) if bulk.is_empty() => match requests.recv().await {
                Some(request) => Some(request),
                None => return Ok(()),
            },
            Err(TryRecvError::Empty) => None,
        };
        match request {
            Some(Request::Small(id, payload)) => {
                write_frame(&mut out, &mut buffer, (SMALL_RESPONSE, id), &payload).await?;
            }
            Some(Request::Bulk(id)) => bulk.push_back((id, BULK_SIZE)),
            None => {
                let Some((id, left)) = bulk.front_mut() else {
                    continue;
                };
                let len = CHUNK.min(*left);
                write_frame(&mut out, &mut buffer, (BULK_CHUNK, *id), &chunk[..len]).await?;
                *left -= len;
                if *left == 0 {
                    bulk.pop_front();
                }
            }
        }
    }
}

/// Connects to `server`, retrying until it listens or [`CONNECT_PATIENCE`] runs out.
async fn connect(server: SocketAddr) -> anyhow::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect(server).await {
            Ok(stream) => return Ok(stream),
            Err(e) if start.elapsed() > CONNECT_PATIENCE => bail!("connecting to {server}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Runs the client's workload; returns the figures of the measured window.
pub async fn client(options: &ClientOptions) -> anyhow::Result<Figures> {
    let stream = connect(options.server).await?;
    configure(&stream, options.lowat).context("socket options")?;
    let (read, write) = stream.into_split();
    let (frames, queued) = mpsc::channel::<(u8, u32, Vec<u8>)>(QUEUE);
    tokio::spawn(write_requests(write, queued));
    let recorder = Arc::new(Recorder::default());
    let start = Instant::now();
    let (from, to) = options.window(start);
    // A bulk request's id is its lane: each lane has one outstanding at a time.
    for lane in 0..options.in_flight as u32 {
        frames.send((BULK_REQUEST, lane, Vec::new())).await?;
    }
    let reader = read_responses(
        BufReader::new(read),
        frames.clone(),
        Arc::clone(&recorder),
        start,
    );
    tokio::spawn(reader);
    if options.small {
        tokio::spawn(small_requests(frames, Arc::clone(&recorder), start, to));
    }
    tokio::time::sleep_until((to + GRACE).into()).await;
    Ok(recorder.summary(from, to, options.in_flight))
}

/// Writes the client's requests as they are queued.
async fn write_requests<W: AsyncWrite + Unpin>(
    mut out: W,
    mut frames: mpsc::Receiver<(u8, u32, Vec<u8>)>,
) -> io::Result<()> {
    let mut buffer = Vec::new();
    while let Some((kind, id, payload)) = frames.recv().await {
        write_frame(&mut out, &mut buffer, (kind, id), &payload).await?;
    }
    Ok(())
}

/// Sends a small request every [`SMALL_INTERVAL`] until `until`, its send time (ns
/// after `start`) in its first 8 bytes.
async fn small_requests(
    frames: mpsc::Sender<(u8, u32, Vec<u8>)>,
    recorder: Arc<Recorder>,
    start: Instant,
    until: Instant,
) {
    let mut ticks = tokio::time::interval(SMALL_INTERVAL);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut id = 0u32;
    while Instant::now() < until {
        ticks.tick().await;
        let sent = Instant::now();
        let mut payload = vec![0x5a; SMALL_SIZE];
        payload[..8].copy_from_slice(&(sent - start).as_nanos().to_le_bytes()[..8]);
        recorder.small_sent(sent);
        if frames.send((SMALL_REQUEST, id, payload)).await.is_err() {
            return;
        }
        id = id.wrapping_add(1);
    }
}

/// Reads the responses: records small ones, counts bulk bytes per response and asks
/// again in the same lane when one is complete.
async fn read_responses<R: AsyncRead + Unpin>(
    mut input: R,
    frames: mpsc::Sender<(u8, u32, Vec<u8>)>,
    recorder: Arc<Recorder>,
    start: Instant,
) -> io::Result<()> {
    let mut payload = Vec::new();
    let mut received: HashMap<u32, usize> = HashMap::new();
    while let Some(header) = read_frame(&mut input, &mut payload).await? {
        match header.kind {
            SMALL_RESPONSE if header.len == SMALL_SIZE => {
                let mut nanos = [0u8; 8];
                nanos.copy_from_slice(&payload[..8]);
                let sent = start + Duration::from_nanos(u64::from_le_bytes(nanos));
                recorder.small_answered(sent, sent.elapsed());
            }
            BULK_CHUNK => {
                let total = received.entry(header.id).or_default();
                *total += header.len;
                if *total >= BULK_SIZE {
                    received.remove(&header.id);
                    recorder.bulk_completed(header.id as usize);
                    if frames
                        .send((BULK_REQUEST, header.id, Vec::new()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unexpected frame",
                ));
            }
        }
    }
    Ok(())
}
