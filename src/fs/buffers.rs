//! Write buffers: the bytes written to an open file and not yet stored, by block.
//!
//! A block's buffered bytes pass through two states before Redis has them: **dirty**
//! (buffered, not being stored) and **in flight** (in a store under way). A store moves blocks
//! from dirty to in flight ([`Buffers::start_store`]); one that commits ends their flight
//! ([`Buffers::committed`]); one that fails puts them back under whatever was written to those
//! blocks meanwhile ([`Buffers::put_back`]). A read sees both layers over the stored block.
//!
//! Where the primary has replicas, a committed block is **unreplicated** until a replica is
//! known to have it ([`Buffers::committed_unreplicated`], [`Buffers::replicated`]): should the
//! primary fail before that, its replica, promoted, may lack the block, so the bytes are
//! buffered again and stored on the new primary.
//!
//! Every buffer holds a [`Charge`] on the mount's [`WriteBudget`], given back when the buffer
//! is dropped, so the count stays right however buffers move between the states.

use std::collections::btree_map::Entry as Slot;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::blocks::Image;
use crate::store::{Answered, Replicated};

/// Bytes of unstored writes a mount may hold before writers must wait for stores.
pub struct WriteBudget {
    used: Arc<AtomicUsize>,
    limit: u64,
}

impl WriteBudget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> WriteBudget {
        WriteBudget {
            used: Arc::default(),
            limit,
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn charge(&self, bytes: usize) -> Charge {
        Charge::new(&self.used, bytes)
    }

    /// Whether the buffers hold more than the budget.
    pub fn exceeded(&self) -> bool {
        self.used.load(Ordering::Relaxed) as u64 > self.limit
    }
}

/// One block buffer's share of the [`WriteBudget`], given back when the buffer is dropped.
#[derive(Debug)]
struct Charge {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Charge {
    fn new(used: &Arc<AtomicUsize>, bytes: usize) -> Charge {
        used.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            used: used.clone(),
            bytes,
        }
    }
}

impl Clone for Charge {
    fn clone(&self) -> Charge {
        Charge::new(&self.used, self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// Sorted, disjoint byte ranges of a block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(usize, usize)>);

impl Ranges {
    /// Adds `[start, end)`, merging neighbours.
    pub fn add(&mut self, start: usize, end: usize) {
        let (mut s, mut e) = (start, end);
        self.0.retain(|&(a, b)| {
            if b < s || a > e {
                true
            } else {
                s = s.min(a);
                e = e.max(b);
                false
            }
        });
        let at = self.0.partition_point(|&(a, _)| a < s);
        self.0.insert(at, (s, e));
    }

    /// Whether `[start, end)` is wholly inside the ranges.
    pub fn covers(&self, start: usize, end: usize) -> bool {
        start >= end || self.0.iter().any(|&(a, b)| a <= start && end <= b)
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.0.iter().copied()
    }
}

/// Bytes written into one block and not yet stored.
#[derive(Clone, Debug)]
pub struct BlockBuffer {
    /// Shared, so that a full block is stored and cached without copying it.
    data: Image,
    ranges: Ranges,
    _charge: Charge,
}

impl BlockBuffer {
    fn new(block_size: usize, budget: &WriteBudget) -> BlockBuffer {
        BlockBuffer {
            data: Arc::new(vec![0; block_size]),
            ranges: Ranges::default(),
            _charge: budget.charge(block_size),
        }
    }

    /// A buffer of a whole block written at once (no zeros written first, only to be copied
    /// over: a sequential writer fills every block this way).
    fn whole(bytes: &[u8], budget: &WriteBudget) -> BlockBuffer {
        let mut ranges = Ranges::default();
        ranges.add(0, bytes.len());
        BlockBuffer {
            data: Arc::new(bytes.to_vec()),
            ranges,
            _charge: budget.charge(bytes.len()),
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        Arc::make_mut(&mut self.data)[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.ranges.add(offset, offset + bytes.len());
    }

    /// Whether every byte of the block was written.
    pub fn is_full(&self) -> bool {
        self.ranges.covers(0, self.data.len())
    }

    /// The block's bytes (zeros where nothing was written).
    pub fn image(&self) -> Image {
        self.data.clone()
    }

    /// The byte ranges written.
    pub fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    /// Copies the written bytes over `image`.
    pub fn overlay(&self, image: &mut [u8]) {
        for (s, e) in self.ranges.iter() {
            image[s..e].copy_from_slice(&self.data[s..e]);
        }
    }

    /// Folds a newer buffer over this one.
    fn absorb(&mut self, newer: &BlockBuffer) {
        newer.overlay(Arc::make_mut(&mut self.data).as_mut_slice());
        for (s, e) in newer.ranges.iter() {
            self.ranges.add(s, e);
        }
    }
}

/// A file's unstored writes, dirty and in flight (see the module's notes).
#[derive(Default)]
pub struct Buffers {
    dirty: BTreeMap<u64, Arc<BlockBuffer>>,
    /// How many of the `dirty` blocks are full.
    full_dirty: usize,
    /// When the oldest bytes in `dirty` were written.
    dirty_since: Option<Instant>,
    in_flight: BTreeMap<u64, Arc<BlockBuffer>>,
    /// Committed blocks no replica is known to have, in the order of their commits (which
    /// are one at a time per file).
    unreplicated: Vec<Unreplicated>,
}

/// A block committed to a primary that no replica is known to have.
struct Unreplicated {
    /// The commit.
    answered: Answered,
    /// The block's index in its file.
    idx: u64,
    /// The id it was stored under (0: a hole).
    id: u64,
    /// Its bytes, to store again should the commit be lost.
    buffer: Arc<BlockBuffer>,
}

/// A block whose commit went to a primary replaced since (see [`Buffers::sent_to_replaced`]).
#[derive(Clone, Copy, Debug)]
pub struct SentToReplaced {
    pub answered: Answered,
    /// The block's index in its file.
    pub idx: u64,
    /// The id it was stored under (0: a hole).
    pub id: u64,
}

impl Buffers {
    /// Whether nothing is buffered, being stored, or waiting to reach a replica.
    pub fn is_empty(&self) -> bool {
        self.dirty.is_empty() && self.in_flight.is_empty() && self.unreplicated.is_empty()
    }

    /// Whether blocks are buffered or being stored.
    pub fn has_unstored(&self) -> bool {
        !self.dirty.is_empty() || !self.in_flight.is_empty()
    }

    /// Whether committed blocks wait to reach a replica.
    pub fn has_unreplicated(&self) -> bool {
        !self.unreplicated.is_empty()
    }

    /// How many dirty blocks are full.
    pub fn full_dirty(&self) -> usize {
        self.full_dirty
    }

    /// Whether dirty bytes have waited for at least `age`.
    pub fn dirty_for(&self, age: Duration) -> bool {
        self.dirty_since.is_some_and(|t| t.elapsed() >= age)
    }

    /// Drops what is dirty (not what is in flight: its store ends as it ends).
    pub fn drop_dirty(&mut self) {
        self.dirty.clear();
        self.full_dirty = 0;
        self.dirty_since = None;
    }

    /// Buffers `bytes` at `offset` of block `idx` (of `block_size` bytes).
    pub fn write(
        &mut self,
        idx: u64,
        offset: usize,
        bytes: &[u8],
        block_size: usize,
        budget: &WriteBudget,
    ) {
        self.dirty_since.get_or_insert_with(Instant::now);
        let slot = self.dirty.entry(idx);
        if bytes.len() == block_size && matches!(slot, Slot::Vacant(_)) {
            slot.or_insert_with(|| Arc::new(BlockBuffer::whole(bytes, budget)));
            self.full_dirty += 1;
            return;
        }
        let buffer =
            Arc::make_mut(slot.or_insert_with(|| Arc::new(BlockBuffer::new(block_size, budget))));
        let was_full = buffer.is_full();
        buffer.write(offset, bytes);
        if !was_full && buffer.is_full() {
            self.full_dirty += 1;
        }
    }

    /// The buffers over block `idx`, oldest first: in flight, then dirty. (Unreplicated
    /// blocks are in Redis, where a read finds them; after a failover that lost them they are
    /// dirty again.)
    pub fn layers(&self, idx: u64) -> Vec<Arc<BlockBuffer>> {
        [self.in_flight.get(&idx), self.dirty.get(&idx)]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Moves up to `most` dirty blocks (with `only_full`, full ones) that are not in flight
    /// already to the in-flight state, and returns them: two stores of one block in flight at
    /// once could commit out of order.
    pub fn start_store(&mut self, only_full: bool, most: usize) -> Vec<(u64, Arc<BlockBuffer>)> {
        if only_full && self.full_dirty == 0 {
            return Vec::new();
        }
        let picked: Vec<u64> = self
            .dirty
            .iter()
            .filter(|(i, b)| (!only_full || b.is_full()) && !self.in_flight.contains_key(i))
            .map(|(&i, _)| i)
            .take(most)
            .collect();
        let mut started = Vec::with_capacity(picked.len());
        for idx in picked {
            if let Some(b) = self.take_dirty(idx) {
                self.in_flight.insert(idx, b.clone());
                started.push((idx, b));
            }
        }
        started
    }

    /// Block `idx`'s store committed (or its inode is gone): its flight ends.
    pub fn committed(&mut self, idx: u64) {
        self.in_flight.remove(&idx);
    }

    /// Block `idx`'s store committed, `answered` by a primary with replicas, under block
    /// `id`: kept until a replica has it.
    pub fn committed_unreplicated(&mut self, idx: u64, id: u64, answered: Answered) {
        if let Some(buffer) = self.in_flight.remove(&idx) {
            self.unreplicated.push(Unreplicated {
                answered,
                idx,
                id,
                buffer,
            });
        }
    }

    /// The blocks kept here whose commits went to a primary replaced since `confirmed`:
    /// whether each reached the new one is for its ring of replies (and its map) to say.
    pub fn sent_to_replaced(
        &self,
        confirmed: Replicated,
    ) -> impl Iterator<Item = SentToReplaced> + '_ {
        (self.unreplicated.iter())
            .filter(move |u| confirmed.lost(u.answered))
            .map(|u| SentToReplaced {
                answered: u.answered,
                idx: u.idx,
                id: u.id,
            })
    }

    /// A replica has what `confirmed` covers, and the new primary has the commits `reached`
    /// names: those blocks are let go. The others committed to a primary replaced since are
    /// buffered again, each under every later write to its block (committed, flying or
    /// dirty), to be stored anew; says whether there were any.
    pub fn replicated(
        &mut self,
        confirmed: Replicated,
        reached: impl Fn(Answered) -> bool,
    ) -> bool {
        let lost = |answered: Answered| confirmed.lost(answered) && !reached(answered);
        let mut again: Vec<u64> = (self.unreplicated.iter())
            .filter(|u| lost(u.answered))
            .map(|u| u.idx)
            .collect();
        again.sort_unstable();
        again.dedup();
        for &idx in &again {
            // From the block's first lost layer on, oldest first, then what flies.
            let mut layers = (self.unreplicated.iter())
                .filter(|u| u.idx == idx)
                .skip_while(|u| !lost(u.answered))
                .map(|u| u.buffer.clone());
            let Some(oldest) = layers.next() else {
                continue;
            };
            let merged = layers.chain(self.in_flight.get(&idx).cloned()).fold(
                (*oldest).clone(),
                |mut merged, newer| {
                    merged.absorb(&newer);
                    merged
                },
            );
            self.buffer_again(idx, Arc::new(merged));
        }
        // Kept: what neither a replica nor the new primary is known to have, and that is not
        // buffered again.
        self.unreplicated.retain(|u| {
            !confirmed.covers(u.answered) && !confirmed.lost(u.answered) && !again.contains(&u.idx)
        });
        !again.is_empty()
    }

    /// Whether a commit answered up to `through` still waits to reach a replica.
    pub fn unreplicated_through(&self, through: u64) -> bool {
        (self.unreplicated.iter()).any(|u| u.answered.serial <= through)
    }

    /// Block `idx`'s store of `older` failed: its bytes go back to dirty, under anything
    /// written since. A block that has left flight meanwhile (committed by this store before
    /// it failed, and perhaps being stored again with newer bytes) is left alone.
    pub fn put_back(&mut self, idx: u64, older: Arc<BlockBuffer>) {
        if !self
            .in_flight
            .get(&idx)
            .is_some_and(|b| Arc::ptr_eq(b, &older))
        {
            return;
        }
        self.in_flight.remove(&idx);
        self.buffer_again(idx, older);
    }

    /// Buffers `older` bytes of block `idx` as dirty, under the dirty ones.
    fn buffer_again(&mut self, idx: u64, older: Arc<BlockBuffer>) {
        let merged = match self.take_dirty(idx) {
            Some(newer) => {
                let mut m = (*older).clone();
                m.absorb(&newer);
                Arc::new(m)
            }
            None => older,
        };
        if merged.is_full() {
            self.full_dirty += 1;
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        self.dirty.insert(idx, merged);
    }

    fn take_dirty(&mut self, idx: u64) -> Option<Arc<BlockBuffer>> {
        let taken = self.dirty.remove(&idx)?;
        if taken.is_full() {
            self.full_dirty -= 1;
        }
        if self.dirty.is_empty() {
            self.dirty_since = None;
        }
        Some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_merge_and_cover() {
        let mut r = Ranges::default();
        r.add(10, 20);
        r.add(30, 40);
        assert!(r.covers(12, 18) && !r.covers(15, 35));
        r.add(20, 30);
        assert_eq!(r.0, vec![(10, 40)]);
        r.add(0, 5);
        r.add(50, 60);
        r.add(4, 55);
        assert_eq!(r.0, vec![(0, 60)]);
        assert!(r.covers(5, 5));
    }

    #[test]
    fn newer_writes_win_when_buffers_merge() {
        let budget = WriteBudget::new(u64::MAX);
        let mut old = BlockBuffer::new(8, &budget);
        old.write(0, b"aaaa");
        let mut new = BlockBuffer::new(8, &budget);
        new.write(2, b"bbbb");
        old.absorb(&new);
        assert_eq!(old.data.as_slice(), b"aabbbb\0\0");
        assert_eq!(old.ranges.0, vec![(0, 6)]);
    }

    #[test]
    fn buffers_count_against_the_budget_while_they_live() {
        let budget = WriteBudget::new(8);
        let first = Arc::new(BlockBuffer::new(8, &budget));
        let mut shared = first.clone();
        assert!(!budget.exceeded());
        // Writing to a buffer a reader still holds copies it: two buffers now.
        Arc::make_mut(&mut shared).write(0, b"x");
        assert!(budget.exceeded());
        drop(first);
        drop(shared);
        assert_eq!(budget.used.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_failed_store_puts_its_bytes_back_under_newer_writes() {
        let budget = WriteBudget::new(u64::MAX);
        let mut buffers = Buffers::default();
        buffers.write(0, 0, b"aaaa", 8, &budget);
        let started = buffers.start_store(false, 64);
        assert_eq!(started.len(), 1);
        // Written while the store is in flight: a second layer.
        buffers.write(0, 2, b"bb", 8, &budget);
        assert_eq!(buffers.layers(0).len(), 2);
        // Not picked again while in flight.
        assert!(buffers.start_store(false, 64).is_empty());
        let (idx, older) = started.into_iter().next().unwrap();
        buffers.put_back(idx, older);
        let layers = buffers.layers(0);
        assert_eq!(layers.len(), 1);
        assert_eq!(layers[0].data.as_slice(), b"aabb\0\0\0\0");
        buffers.committed(0);
        assert!(!buffers.is_empty());
    }

    #[test]
    fn blocks_wait_for_a_replica_and_are_buffered_again_after_a_failover() {
        let budget = WriteBudget::new(u64::MAX);
        let mut buffers = Buffers::default();
        let on = |generation, serial| Answered {
            generation,
            serial,
            request: crate::store::Request::sent(1, serial),
        };
        let commit = |buffers: &mut Buffers, idx, at, bytes: &[u8], answered| {
            buffers.write(idx, at, bytes, 4, &budget);
            buffers.start_store(false, 64);
            buffers.committed_unreplicated(idx, 100 + idx, answered);
        };
        let none_reached = |_: Answered| false;
        commit(&mut buffers, 0, 0, b"aaaa", on(1, 1));
        commit(&mut buffers, 1, 0, b"bbbb", on(1, 2));
        commit(&mut buffers, 2, 0, b"zzzz", on(1, 3));
        // Kept, not dirty: reads find them in Redis.
        assert!(buffers.layers(0).is_empty() && buffers.has_unreplicated());
        assert!(!buffers.is_empty() && buffers.start_store(false, 64).is_empty());
        // A replica has the first.
        let confirmed = Replicated {
            generation: 1,
            through: 1,
        };
        assert!(!buffers.replicated(confirmed, none_reached));
        assert!(buffers.unreplicated_through(2) && !buffers.unreplicated_through(1));
        // Node 1 is replaced. Block 1 is written again and committed on node 2 (which a
        // replica confirms), then once more, and that store is in flight.
        commit(&mut buffers, 1, 2, b"cc", on(2, 4));
        buffers.write(1, 3, b"d", 4, &budget);
        let flying = buffers.start_store(false, 64);
        let confirmed = Replicated {
            generation: 2,
            through: 4,
        };
        let sent_before: Vec<(u64, u64)> = (buffers.sent_to_replaced(confirmed))
            .map(|sent| (sent.answered.serial, sent.id))
            .collect();
        assert_eq!(sent_before, [(2, 101), (3, 102)]);
        // Node 2's ring of replies has commit 3 (block 2), not commit 2 (block 1).
        assert!(buffers.replicated(confirmed, |a| a.serial == 3));
        assert!(!buffers.has_unreplicated());
        // Block 1's lost bytes go under everything written to it later, the confirmed commit
        // and the flying store included; block 2 is not stored again.
        let layers = buffers.layers(1);
        assert_eq!(layers.len(), 2, "in flight, and dirty again");
        assert_eq!(layers[1].data.as_slice(), b"bbcd");
        assert!(buffers.layers(2).is_empty());
        // The flight ends (say it failed): its bytes go under the dirty ones, which win.
        let (idx, older) = flying.into_iter().next().unwrap();
        buffers.put_back(idx, older);
        assert_eq!(buffers.layers(1).len(), 1);
        assert_eq!(buffers.layers(1)[0].data.as_slice(), b"bbcd");
        assert_eq!(buffers.start_store(false, 64).len(), 1);
    }
}
