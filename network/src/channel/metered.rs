//! [`metered`]: a tokio bounded channel whose depth is a prometheus gauge, its
//! [`MeteredSender`] and its [`MeteredReceiver`].

use prometheus::IntGauge;
use tokio::sync::mpsc;

use super::QueueError;

/// A bounded channel whose depth is tracked by a prometheus gauge.
pub fn metered<T>(capacity: usize, depth: IntGauge) -> (MeteredSender<T>, MeteredReceiver<T>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (
        MeteredSender {
            inner: tx,
            depth: depth.clone(),
        },
        MeteredReceiver { inner: rx, depth },
    )
}

/// The sending side of [`metered`].
#[derive(Debug)]
pub struct MeteredSender<T> {
    inner: mpsc::Sender<T>,
    depth: IntGauge,
}

impl<T> Clone for MeteredSender<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            depth: self.depth.clone(),
        }
    }
}

impl<T> MeteredSender<T> {
    /// Sends, waiting for room. Fails with the item when the receiver is gone.
    pub async fn send(&self, item: T) -> Result<(), T> {
        self.inner.send(item).await.map_err(|e| e.0)?;
        self.depth.inc();
        Ok(())
    }

    /// Sends if there is room.
    pub fn try_send(&self, item: T) -> Result<(), QueueError<T>> {
        match self.inner.try_send(item) {
            Ok(()) => {
                self.depth.inc();
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(t)) => Err(QueueError::Full(t)),
            Err(mpsc::error::TrySendError::Closed(t)) => Err(QueueError::Closed(t)),
        }
    }
}

/// The receiving side of [`metered`].
#[derive(Debug)]
pub struct MeteredReceiver<T> {
    inner: mpsc::Receiver<T>,
    depth: IntGauge,
}

impl<T> MeteredReceiver<T> {
    /// Receives the next item; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<T> {
        let item = self.inner.recv().await;
        if item.is_some() {
            self.depth.dec();
        }
        item
    }

    /// Receives an item if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let item = self.inner.try_recv().ok();
        if item.is_some() {
            self.depth.dec();
        }
        item
    }
}

impl<T> Drop for MeteredReceiver<T> {
    fn drop(&mut self) {
        self.inner.close();
        while self.inner.try_recv().is_ok() {
            self.depth.dec();
        }
    }
}
