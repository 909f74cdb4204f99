//! Cuts between nodes: while two nodes are cut apart nothing passes between them; bytes
//! on the wire are lost and sent again once the cut heals, as TCP would retransmit them.

use std::collections::BTreeSet;

use super::Core;
use super::events::{ConnId, Dir, FlowId};
use crate::config::NodeId;

/// A node pair in one order.
fn pair(a: NodeId, b: NodeId) -> (NodeId, NodeId) {
    (a.min(b), a.max(b))
}

impl Core {
    /// Whether `a` and `b` are cut apart (a node is never cut from itself).
    pub(crate) fn is_cut(&self, a: NodeId, b: NodeId) -> bool {
        a != b && self.cuts.contains(&pair(a, b))
    }

    /// Cuts apart (`cut`) or heals every pair of `pairs`.
    pub(crate) fn set_cut(&mut self, pairs: impl IntoIterator<Item = (NodeId, NodeId)>, cut: bool) {
        let mut changed = BTreeSet::new();
        for (a, b) in pairs {
            if a == b {
                continue;
            }
            let p = pair(a, b);
            let did = if cut {
                self.cuts.insert(p)
            } else {
                self.cuts.remove(&p)
            };
            if did {
                changed.insert(p);
            }
        }
        if changed.is_empty() {
            return;
        }
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                let (a, b) = c.nodes();
                changed.contains(&pair(a, b))
            })
            .map(|(id, _)| *id)
            .collect();
        let now = self.clock;
        for conn in conns {
            for dir in [Dir::Forward, Dir::Backward] {
                let id = FlowId { conn, dir };
                if let Some(flow) = self.flow_mut(id) {
                    if cut {
                        flow.cut(now);
                    } else {
                        flow.heal(now);
                    }
                    self.refresh(id);
                }
            }
        }
        if !cut {
            // Sent again; still parked if another cut holds them.
            for (conn, packet) in std::mem::take(&mut self.parked) {
                self.send(conn, packet);
            }
        }
    }

    /// Heals every cut.
    pub(crate) fn heal_all(&mut self) {
        let all: Vec<_> = self.cuts.iter().copied().collect();
        self.set_cut(all, false);
    }
}
