//! The read path: a read is planned block by block (what the buffers hold, what must come
//! from Redis), the stored blocks are fetched (or found in the block cache) and the buffers
//! laid over them. A sequential reader is read ahead of, block map first, so that it is
//! answered on the FUSE thread from memory.

use std::collections::HashMap;
use std::sync::Arc;

use crate::blocks::Block;
use crate::error::FsError;

use super::buffers::{BlockBuffer, Ranges};
use super::file::FileState;
use super::write::ATTEMPTS;
use super::{Core, OpenFile};

/// Blocks read ahead of a reader that just began reading sequentially.
const READ_AHEAD: u64 = 64;

/// Most blocks read ahead of a sequential reader: the window grows with the length of the
/// run the reader has read in order, as the kernel's does, up to this many (and a quarter of
/// the block cache). 4 MiB hides a round trip on loopback; 1 ms away, by hand, it held a cold
/// `dd` to about 590 MiB/s, which 16 MiB raises to about 740.
const READ_AHEAD_MAX: u64 = 256;

/// Blocks per read-ahead fetch: a reader waiting for one block of a fetch waits for all of it.
const READ_AHEAD_STEP: usize = 16;

/// A read: the blocks it spans, where it ends, and whether it follows the previous one.
struct ReadPlan {
    end: u64,
    blocks: Vec<BlockPlan>,
    sequential: bool,
}

impl ReadPlan {
    /// Indexes of the blocks whose stored image the read needs.
    fn bases_needed(&self) -> impl Iterator<Item = u64> + '_ {
        self.blocks.iter().filter(|b| b.need_base).map(|b| b.idx)
    }
}

/// One block of a read: what the buffers hold and what must come from Redis.
struct BlockPlan {
    idx: u64,
    layers: Vec<Arc<BlockBuffer>>,
    need_base: bool,
}

impl Core {
    /// Reads up to `size` bytes at `offset`, seeing buffered writes.
    pub async fn read_file(
        self: &Arc<Self>,
        file: &Arc<OpenFile>,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, FsError> {
        for _ in 0..ATTEMPTS {
            let plan = {
                let mut st = file.state();
                let Some(plan) = st.plan_read(offset, size, self.block_size as u64) else {
                    return Ok(Vec::new());
                };
                st.note_read(offset, &plan);
                plan
            };
            let needed: Vec<u64> = plan.bases_needed().collect();
            let ids = if needed.is_empty() {
                Vec::new()
            } else {
                self.block_ids(file, &needed).await?
            };
            let fetch: Vec<u64> = ids.iter().copied().filter(|&id| id != 0).collect();
            let blocks = self.blocks.get(&fetch).await?;
            if blocks.iter().any(Option::is_none) {
                file.state().forget_map(false);
                continue;
            }
            let by_id: HashMap<u64, Block> = fetch
                .into_iter()
                .zip(blocks.into_iter().flatten())
                .collect();
            let bases: HashMap<u64, Block> = needed
                .into_iter()
                .zip(ids)
                .filter_map(|(idx, id)| Some((idx, by_id.get(&id)?.clone())))
                .collect();
            let out = self.assemble(offset, &plan, &bases);
            if plan.sequential {
                self.read_ahead(file, plan.end, &tokio::runtime::Handle::current());
            }
            return Ok(out);
        }
        tracing::error!("inode {}: block map kept changing during a read", file.ino);
        Err(FsError::Io)
    }

    /// A read answered on the calling FUSE thread from the known block map and blocks that
    /// are cached or already being fetched (read-ahead), or `None` when Redis must be asked.
    /// Waiting here for a fetch in flight keeps the copying off the runtime's one worker,
    /// which is busy receiving the blocks. Read-ahead keeps a sequential reader on this path.
    pub fn read_cached(
        self: &Arc<Self>,
        file: &Arc<OpenFile>,
        offset: u64,
        size: u32,
        runtime: &tokio::runtime::Handle,
    ) -> Option<Vec<u8>> {
        let (plan, ids) = {
            let mut st = file.state();
            let Some(plan) = st.plan_read(offset, size, self.block_size as u64) else {
                return Some(Vec::new());
            };
            let mut ids = Vec::new();
            for idx in plan.bases_needed() {
                let id = st.known_id(idx)?;
                if id != 0 {
                    ids.push((idx, id));
                }
            }
            st.note_read(offset, &plan);
            (plan, ids)
        };
        let mut fetches = Vec::new();
        let mut bases = HashMap::new();
        for &(idx, id) in &ids {
            match self.blocks.cached(id) {
                Some(block) => {
                    bases.insert(idx, block);
                }
                None => fetches.push((idx, id, self.blocks.fetching(id)?)),
            }
        }
        if !fetches.is_empty() {
            runtime.block_on(async {
                for (_, _, done) in &mut fetches {
                    // The fetcher drops its sender when it ends, however it ends.
                    let _ = done.changed().await;
                }
            });
            for (idx, id, _) in fetches {
                bases.insert(idx, self.blocks.cached(id)?);
            }
        }
        let out = self.assemble(offset, &plan, &bases);
        if plan.sequential {
            self.read_ahead(file, plan.end, runtime);
        }
        Some(out)
    }

    /// The bytes of a planned read: each block's stored image (`bases`, by block index; zeros
    /// where absent) under what the buffers hold.
    fn assemble(&self, offset: u64, plan: &ReadPlan, bases: &HashMap<u64, Block>) -> Vec<u8> {
        let bs = self.block_size as u64;
        let mut out = Vec::with_capacity((plan.end - offset) as usize);
        for block in &plan.blocks {
            let lo = (offset.max(block.idx * bs) - block.idx * bs) as usize;
            let hi = (plan.end.min((block.idx + 1) * bs) - block.idx * bs) as usize;
            let base = bases.get(&block.idx);
            if block.layers.is_empty() {
                match base {
                    Some(image) => out.extend_from_slice(&image[lo..hi]),
                    None => out.resize(out.len() + hi - lo, 0),
                }
                continue;
            }
            let mut image = base.map_or_else(|| vec![0; bs as usize], |b| b.to_vec());
            for layer in &block.layers {
                layer.overlay(&mut image);
            }
            out.extend_from_slice(&image[lo..hi]);
        }
        out
    }

    /// The widest read-ahead, in blocks: [`READ_AHEAD_MAX`], or a quarter of the block cache
    /// if that is less (a window its own fetches would evict is no help).
    fn read_ahead_max(&self) -> u64 {
        let quarter = self.blocks.cache_bytes() / 4 / self.block_size as u64;
        quarter.clamp(READ_AHEAD_STEP as u64, READ_AHEAD_MAX)
    }

    /// Starts fetching the blocks from the one holding byte `from` into the cache, each block
    /// once, with the block map ahead of them: a reader that finds both in memory is answered
    /// on the FUSE thread, leaving the runtime's worker to Redis.
    fn read_ahead(
        self: &Arc<Self>,
        file: &Arc<OpenFile>,
        from: u64,
        runtime: &tokio::runtime::Handle,
    ) {
        let from = from.div_ceil(self.block_size as u64);
        let idxs: Vec<u64> = {
            let mut st = file.state();
            let last = st.attr.size.div_ceil(self.block_size as u64);
            let start = from.max(st.ahead_to);
            let run = from.saturating_sub(st.run_start / self.block_size as u64);
            let end = (from + run.max(READ_AHEAD).min(self.read_ahead_max())).min(last);
            if start >= end {
                return;
            }
            st.ahead_to = end;
            (start..end).collect()
        };
        let core = self.clone();
        let file = file.clone();
        self.spawn(runtime, async move {
            let Ok(ids) = core.block_ids(&file, &idxs).await else {
                return;
            };
            let ids: Vec<u64> = ids.into_iter().filter(|&id| id != 0).collect();
            // Separate fetches, so that a reader waiting for one block waits only for its own.
            let fetches = ids
                .chunks(READ_AHEAD_STEP)
                .map(|step| core.blocks.get(step));
            futures_util::future::join_all(fetches).await;
        });
    }
}

impl FileState {
    /// Notes that a read at `offset` was planned as `plan`: where the next sequential read
    /// starts, and where the run of sequential reads it belongs to began.
    fn note_read(&mut self, offset: u64, plan: &ReadPlan) {
        if !plan.sequential {
            self.run_start = offset;
        }
        self.read_end = plan.end;
    }

    /// Plans a read of up to `size` bytes at `offset`; `None` at or past the end of the file.
    fn plan_read(&self, offset: u64, size: u32, bs: u64) -> Option<ReadPlan> {
        let end = (offset + u64::from(size)).min(self.attr.size);
        if offset >= end {
            return None;
        }
        let blocks = (offset / bs..=(end - 1) / bs)
            .map(|idx| {
                let layers = self.buffers.layers(idx);
                let lo = offset.max(idx * bs) - idx * bs;
                let hi = end.min((idx + 1) * bs) - idx * bs;
                let mut covered = Ranges::default();
                for l in &layers {
                    for (s, e) in l.ranges().iter() {
                        covered.add(s, e);
                    }
                }
                BlockPlan {
                    idx,
                    need_base: !covered.covers(lo as usize, hi as usize),
                    layers,
                }
            })
            .collect();
        Some(ReadPlan {
            end,
            blocks,
            sequential: self.read_end == offset,
        })
    }
}
