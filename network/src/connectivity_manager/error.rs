//! The ConnectivityManager's errors.

/// Why a request to the ConnectivityManager failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectivityError {
    /// The manager's task has ended.
    #[error("the connectivity manager has stopped")]
    Stopped,
}
