//! The wire task: sleeps until the core's next event, handles it, and sleeps again. It
//! holds no timer while nothing is in flight, and ends with the network.

use std::sync::{Arc, Weak};

use tokio::sync::Notify;

use crate::shared::Shared;

/// Drives the network until every handle to it is gone.
pub(crate) async fn run(shared: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let Some(network) = shared.upgrade() else {
            return;
        };
        let next = network.drive();
        // Hold no reference while asleep, so that dropping the last handle ends the
        // network (and wakes this task to end).
        drop(network);
        match next {
            Some(at) => {
                tokio::select! {
                    biased;
                    () = notify.notified() => {}
                    () = tokio::time::sleep_until(at) => {}
                }
            }
            None => notify.notified().await,
        }
    }
}
