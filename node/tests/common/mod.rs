//! What the process tests share.

#![allow(dead_code)] // Each test file uses part of it.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

/// The `node` binary under test.
pub(crate) const NODE: &str = env!("CARGO_BIN_EXE_node");

/// A child process killed when dropped, so a failed assertion leaves nothing running.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `node keygen --out path` and returns the peer id it prints.
pub(crate) fn keygen(path: &Path) -> String {
    let out = Command::new(NODE)
        .args(["keygen", "--out", path.to_str().expect("utf-8 path")])
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8 output")
        .trim()
        .to_owned()
}

/// A scratch folder under the target directory, emptied first.
pub(crate) fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// The text of `addr`'s `/metrics`, or `None` while it does not answer.
pub(crate) async fn metrics(addr: SocketAddr) -> Option<String> {
    let stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(conn);
    let request = hyper::Request::get("/metrics")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .ok()?;
    let response = sender.send_request(request).await.ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    String::from_utf8(body.to_vec()).ok()
}

/// The sum of the samples of `name` whose labels contain `label` (`""`: all).
pub(crate) fn value(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .filter(|l| l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Ports handed out start here and stay below Linux's ephemeral range (32768 and up),
/// which `bind(0)` and every outbound connection draw from: a port chosen there can be
/// taken by another test's socket between the check and the node's own bind. Below it,
/// only tests that name ports explicitly compete, and each checks its pick.
const FIRST_PORT: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;

/// A free port on 127.0.0.1 below the ephemeral range, for a child process to bind.
pub(crate) fn free_port() -> u16 {
    // A start that differs between test processes, then a walk from it.
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().wrapping_mul(2_654_435_761);
    for _ in 0..PORT_SPAN {
        let step = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST_PORT + ((seed as u16).wrapping_add(step.wrapping_mul(7919)) % PORT_SPAN);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!(
        "no free port between {FIRST_PORT} and {}",
        FIRST_PORT + PORT_SPAN
    );
}
