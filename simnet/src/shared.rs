//! What every handle of one simulated network shares: the core behind a lock, the bytes
//! of each flow, the tasks waiting on them, and the instant of the network's start.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::config::LatencyModel;
use crate::core::{ConnId, Core, FlowId, Wake};

/// The mutable state of a network.
pub(crate) struct State {
    pub(crate) core: Core,
    /// The bytes of each flow not yet read, oldest first.
    pub(crate) data: HashMap<FlowId, VecDeque<u8>>,
    pub(crate) readers: HashMap<FlowId, Waker>,
    pub(crate) writers: HashMap<FlowId, Waker>,
    pub(crate) dialers: HashMap<ConnId, Waker>,
    pub(crate) acceptors: HashMap<u16, Waker>,
    /// Each node's region, by node index.
    pub(crate) regions: Vec<String>,
    pub(crate) latency: Box<dyn LatencyModel>,
    /// The instant the wire task sleeps until; `None` when it waits for news.
    driver_deadline: Option<Duration>,
}

/// One simulated network's state and the means to drive it.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Wakes the wire task when something is due before the instant it sleeps until.
    pub(crate) notify: Arc<Notify>,
    /// Instant zero of the core's clock.
    epoch: Instant,
}

impl Shared {
    pub(crate) fn new(core: Core, latency: Box<dyn LatencyModel>) -> Self {
        Self {
            state: Mutex::new(State {
                core,
                data: HashMap::new(),
                readers: HashMap::new(),
                writers: HashMap::new(),
                dialers: HashMap::new(),
                acceptors: HashMap::new(),
                regions: Vec::new(),
                latency,
                driver_deadline: None,
            }),
            notify: Arc::new(Notify::new()),
            epoch: Instant::now(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held leaves counts that may disagree by the bytes
        // of one call; the simulation goes on with them rather than poisoning every
        // socket of the network.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The core's clock for the tokio instant now.
    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.epoch)
    }

    /// Runs `f` on the state brought up to now, then wakes whom the core says to (after
    /// releasing the lock) and the wire task if something may now be due sooner than it
    /// expected. Changes are left for the wire task to settle, once for all the calls of
    /// one instant.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let now = self.now();
        let mut state = self.lock();
        state.core.advance(now);
        let result = f(&mut state);
        let wakers = state.wakers();
        let notify = if state.core.unsettled() {
            // The wire task settles them: it is due now.
            let due = state.driver_deadline != Some(now);
            state.driver_deadline = Some(now);
            due
        } else {
            let next = state.core.next_wake();
            let sooner = next.is_some_and(|n| state.driver_deadline.is_none_or(|d| n < d));
            if sooner {
                state.driver_deadline = next;
            }
            sooner
        };
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        if notify {
            self.notify.notify_one();
        }
        result
    }

    /// Handles what is due, wakes whom it concerns, and returns the instant to look
    /// again (`None`: nothing in flight).
    pub(crate) fn drive(&self) -> Option<Instant> {
        let now = self.now();
        let mut state = self.lock();
        state.core.advance(now);
        let wakers = state.wakers();
        let next = state.core.next_wake();
        state.driver_deadline = next;
        drop(state);
        wakers.into_iter().for_each(Waker::wake);
        next.map(|at| self.epoch + at)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The wire task holds no reference; this tells it the network is gone.
        self.notify.notify_one();
    }
}

impl State {
    /// The wakers of what the core reports ready; drops the bytes nobody will read.
    fn wakers(&mut self) -> Vec<Waker> {
        let mut wakers = Vec::new();
        for wake in self.core.take_wakes() {
            let waker = match wake {
                Wake::Read(flow) => self.readers.remove(&flow),
                Wake::Write(flow) => self.writers.remove(&flow),
                Wake::Connect(conn) => self.dialers.remove(&conn),
                Wake::Accept(port) => self.acceptors.remove(&port),
                Wake::Discard(flow) => {
                    self.data.remove(&flow);
                    self.readers.remove(&flow);
                    None
                }
            };
            wakers.extend(waker);
        }
        wakers
    }
}
