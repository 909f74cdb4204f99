//! The `[socket]` section: TCP options of every connection.

use netcore::transport::TcpConfig;
use serde::{Deserialize, Serialize};

/// TCP socket options of every connection, inbound and outbound (`[socket]`). Each
/// defaults to `netcore`'s [`TcpConfig`] default; a 0 leaves the option to the kernel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Socket {
    /// `TCP_NOTSENT_LOWAT` in bytes: the most a connection lets wait unsent in the
    /// kernel, in front of every message written after it whatever its priority. 0
    /// leaves the kernel's default (no limit beyond the send buffer).
    pub notsent_lowat: u32,
    /// `SO_SNDBUF` in bytes; 0 keeps the kernel's auto-tuning.
    pub send_buffer: usize,
    /// `SO_RCVBUF` in bytes; 0 keeps the kernel's auto-tuning (which, on a path of
    /// 1 Gbit/s and 200 ms, needs `net.ipv4.tcp_rmem`'s maximum raised to the
    /// bandwidth-delay product, 25 MB, to fill the link).
    pub recv_buffer: usize,
}

impl Default for Socket {
    fn default() -> Self {
        let tcp = TcpConfig::default();
        Self {
            notsent_lowat: tcp.notsent_lowat.unwrap_or(0),
            send_buffer: tcp.send_buffer_size.unwrap_or(0),
            recv_buffer: tcp.recv_buffer_size.unwrap_or(0),
        }
    }
}

impl Socket {
    /// The transport's options.
    pub(crate) fn tcp_config(&self) -> TcpConfig {
        let set = |n: usize| (n > 0).then_some(n);
        TcpConfig {
            notsent_lowat: (self.notsent_lowat > 0).then_some(self.notsent_lowat),
            send_buffer_size: set(self.send_buffer),
            recv_buffer_size: set(self.recv_buffer),
            ..TcpConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_transports_and_zero_leaves_an_option_to_the_kernel() {
        assert_eq!(Socket::default().tcp_config(), TcpConfig::default());
        let kernel = Socket {
            notsent_lowat: 0,
            send_buffer: 0,
            recv_buffer: 4 << 20,
        }
        .tcp_config();
        assert_eq!(kernel.notsent_lowat, None);
        assert_eq!(kernel.send_buffer_size, None);
        assert_eq!(kernel.recv_buffer_size, Some(4 << 20));
    }
}
