//! The committed chain a node keeps and serves: appended by whoever commits (consensus
//! on a validator, state sync on a full node), read by the state-sync server.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;
use validator_network::proto::consensus::block_retrieval_response::Status;
use validator_network::proto::consensus::{Block, BlockRetrievalRequest, BlockRetrievalResponse};

/// The most blocks one answer carries, whatever the request asks.
pub const MAX_BLOCKS_PER_ANSWER: u32 = 100;

/// The recent committed blocks of a node, at most a configured number, oldest first.
/// Cheap to clone: clones share the chain.
#[derive(Clone, Debug)]
pub struct BlockStore {
    inner: Arc<RwLock<Chain>>,
}

#[derive(Debug)]
struct Chain {
    blocks: VecDeque<Block>,
    max_kept: usize,
    height: u64,
    head_id: Bytes,
}

impl BlockStore {
    /// An empty chain keeping at most `max_kept` blocks.
    pub fn new(max_kept: usize) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Chain {
                blocks: VecDeque::new(),
                max_kept: max_kept.max(1),
                height: 0,
                head_id: Bytes::new(),
            })),
        }
    }

    /// Appends `block` if it extends the chain (the next height, the head as parent);
    /// whether it did. The oldest block goes once more than `max_kept` are kept.
    pub fn append(&self, block: Block) -> bool {
        let mut chain = self.inner.write();
        if block.height != chain.height + 1 || block.parent_id != chain.head_id {
            return false;
        }
        chain.height = block.height;
        chain.head_id = block.id.clone();
        chain.blocks.push_back(block);
        while chain.blocks.len() > chain.max_kept {
            chain.blocks.pop_front();
        }
        true
    }

    /// The height of the last block.
    pub fn height(&self) -> u64 {
        self.inner.read().height
    }

    /// The id of the last block (empty before the first).
    pub fn head_id(&self) -> Bytes {
        self.inner.read().head_id.clone()
    }

    /// The answer to `request`: up to [`MAX_BLOCKS_PER_ANSWER`] blocks from its height,
    /// `NotFound` past the head, `Pruned` below the oldest block kept.
    pub fn serve(&self, request: &BlockRetrievalRequest) -> BlockRetrievalResponse {
        let chain = self.inner.read();
        let oldest = chain.blocks.front().map_or(1, |b| b.height);
        let status = if request.from_height == 0 || request.from_height > chain.height {
            Status::NotFound
        } else if request.from_height < oldest {
            Status::Pruned
        } else {
            Status::Ok
        };
        let blocks = if status == Status::Ok {
            let skip = (request.from_height - oldest) as usize;
            let max = request.max_blocks.min(MAX_BLOCKS_PER_ANSWER) as usize;
            chain.blocks.iter().skip(skip).take(max).cloned().collect()
        } else {
            Vec::new()
        };
        BlockRetrievalResponse {
            status: status.into(),
            blocks,
        }
    }
}
