//! The write path: a write lands in the file's [`Buffers`](super::buffers::Buffers) and is
//! answered; full blocks are stored in the background, the rest at close, fsync, a freeze or
//! after [`WRITE_BACK_AFTER`].
//!
//! A store takes a batch of blocks in three steps, as layers of their own:
//!
//! 1. **merge**: partial blocks are merged onto the block each replaces, as Redis holds it now;
//! 2. **encode and place**: the images are compressed, given new block ids, and either put in
//!    Redis first (a large batch) or carried by the commit (a small one);
//! 3. **commit and settle**: one script swaps the block-map entries, checking that each still
//!    names the block the merge started from (compare-and-swap), and the file's state learns
//!    the outcome. A writer that lost a race merges again, so two mounts writing different
//!    bytes of one block lose nothing.
//!
//! Up to `BATCHES_IN_FLIGHT` batches of a file are stored at once, so that encoding one
//! overlaps the network time of another.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::attr::Timestamp;
use crate::blocks::{Block, Image};
use crate::codec::Encoded;
use crate::error::FsError;
use crate::fs::notify::Invalidation;
use crate::meta::{redis_failure, BlockSwap, NewBlocks};
use crate::store::Replicated;

use super::buffers::{BlockBuffer, SentToReplaced};
use super::file::FileState;
use super::{Core, OpenFile, MAX_FILE_SIZE};

/// Full buffered blocks of one file that start storing them in the background.
const FLUSH_FULL_BLOCKS: usize = 16;
/// Full buffered blocks of one file after which its writer waits for them to be stored: a
/// full block gains nothing by waiting, so a writer faster than Redis is held to its pace.
const MAX_FULL_BLOCKS: usize = 256;
/// How long written bytes may wait in a buffer. Partial blocks are kept so that further
/// writes into them cost no second store, but not for longer than this.
pub const WRITE_BACK_AFTER: Duration = Duration::from_secs(5);
/// Blocks stored per commit.
const FLUSH_BATCH: usize = 64;
/// Batches of one file stored at once.
const BATCHES_IN_FLIGHT: usize = 3;
/// Stored bytes a batch may carry inside its commit call rather than in SETs before it.
const INLINE_BYTES: usize = 256 << 10;
/// How often committed blocks waiting to reach a replica are looked at.
const REPLICATION_CHECK: Duration = Duration::from_millis(50);
/// Attempts before a lost compare-and-swap becomes an error.
pub(super) const ATTEMPTS: usize = 16;

/// What a buffered write asks of its writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backlog {
    /// Nothing to do yet.
    Fine,
    /// Enough full blocks: start storing them, without waiting.
    StoreSoon,
    /// Too many full blocks: store them before accepting more.
    StoreFull,
    /// The mount's write buffers are over budget: store all of this file's before accepting
    /// more.
    StoreAll,
}

impl Backlog {
    /// What the writer must store before its write is answered: `Some(only_full)`, or `None`.
    pub fn wait_for(self) -> Option<bool> {
        match self {
            Backlog::Fine | Backlog::StoreSoon => None,
            Backlog::StoreFull => Some(true),
            Backlog::StoreAll => Some(false),
        }
    }
}

/// A batch's blocks, with what each replaces in the map and its new image.
struct Merged {
    /// Block ids the map named when the merge began.
    old_ids: Vec<u64>,
    /// The blocks as they are to be stored.
    images: Vec<Image>,
}

/// A batch's new blocks, placed: ids (0: the block is all zeros, a hole), and the encoded
/// bytes the commit carries (`inline`) or that are stored already (`stored`).
struct Placed {
    new_ids: Vec<u64>,
    /// What each new block takes in Redis (0 for a hole).
    new_lens: Vec<u64>,
    /// The node (its generation) the `stored` blocks went to.
    stored_on: Option<u64>,
    inline: Vec<(u64, Encoded)>,
    stored: Vec<(u64, Encoded)>,
}

impl Placed {
    fn new_blocks(&self) -> NewBlocks<'_> {
        NewBlocks {
            inline: &self.inline,
            stored: &self.stored,
            stored_on: self.stored_on,
        }
    }
}

impl Core {
    /// Buffers a write at `offset`, or with `append` at the end of the file as this mount
    /// knows it; says whether the caller should store what is buffered.
    pub fn buffer_write(
        &self,
        file: &OpenFile,
        offset: u64,
        data: &[u8],
        append: bool,
    ) -> Result<Backlog, FsError> {
        let mut st = file.state();
        let offset = if append && offset != st.attr.size {
            // Without its writeback cache the kernel places an O_APPEND write at the end of
            // file it knows, and does not ask first: another mount's appends, which this open
            // learned of, may have moved the end. The pages it filled there are not the file's.
            self.invalidate(Invalidation::Data(
                file.ino,
                offset as i64,
                data.len() as i64,
            ));
            st.attr.size
        } else {
            offset
        };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let bs = self.block_size as u64;
        let mut pos = 0usize;
        while pos < data.len() {
            let abs = offset + pos as u64;
            let (idx, off) = (abs / bs, (abs % bs) as usize);
            let n = (bs as usize - off).min(data.len() - pos);
            st.buffers.write(
                idx,
                off,
                &data[pos..pos + n],
                bs as usize,
                &self.write_budget,
            );
            pos += n;
        }
        st.attr.size = st.attr.size.max(end);
        st.log_position = self.meta.delegation.position();
        // With the writeback cache the kernel owns the times of regular files and sends them
        // with SETATTR; stamping them here as well would make the two disagree.
        if st.stamps_times {
            let now = Timestamp::now();
            st.attr.mtime = now;
            st.attr.ctime = now;
        }
        let full = st.buffers.full_dirty();
        Ok(if self.write_budget.exceeded() {
            Backlog::StoreAll
        } else if full >= MAX_FULL_BLOCKS {
            Backlog::StoreFull
        } else if full >= FLUSH_FULL_BLOCKS {
            Backlog::StoreSoon
        } else {
            Backlog::Fine
        })
    }

    /// Stores buffered blocks: all of them, or with `only_full` just the complete ones.
    pub async fn flush_file(&self, file: &OpenFile, only_full: bool) -> Result<(), FsError> {
        let _one_flush_at_a_time = file.flush_lock.lock().await;
        let mut running = FuturesUnordered::new();
        let mut failure = None;
        loop {
            while failure.is_none() && running.len() < BATCHES_IN_FLIGHT {
                let (batch, size) = {
                    let mut st = file.state();
                    (st.buffers.start_store(only_full, FLUSH_BATCH), st.attr.size)
                };
                if batch.is_empty() {
                    break;
                }
                running.push(async move {
                    let stored = self.store_batch(file, &batch, size).await;
                    (batch, stored)
                });
            }
            let Some((batch, stored)) = running.next().await else {
                if failure.is_none() {
                    // A file kept after a close that could not store it leaves the table now.
                    self.retire(file);
                }
                if file.state().lost {
                    failure.get_or_insert(FsError::Io);
                }
                return failure.map_or(Ok(()), Err);
            };
            if let Err(e) = stored {
                // Keep the data buffered (under anything written since) and report the error.
                let mut st = file.state();
                for (idx, older) in batch {
                    st.buffers.put_back(idx, older);
                }
                failure.get_or_insert(e);
            }
        }
    }

    /// Stores the file's buffers and, where the primary has replicas, waits until one has
    /// every change answered so far: what `fsync` and `close` promise. Blocks committed to a
    /// primary that failed before that, and that the new one lacks, are stored again there.
    /// (Writes made meanwhile by other threads are not waited for.)
    pub async fn make_durable(self: &Arc<Self>, file: &OpenFile) -> Result<(), FsError> {
        let store = &self.meta.store;
        let started = std::time::Instant::now();
        self.recount_replicas().await;
        // A file made in a leased directory, and what was done to it there, may still be in the
        // deferred log, with nothing to store to send it.
        self.meta.send_deferred_through(&[file.ino]).await?;
        loop {
            self.flush_file(file, false).await?;
            self.still_there(file, store.link.node().generation).await?;
            let through = store.answered_so_far();
            if store.replicated_node().is_none() && !file.state().buffers.has_unreplicated() {
                return Ok(());
            }
            let confirmed = (store.reach_replicas().await)
                .map_err(|e| redis_failure("waiting for a replica", &e))?;
            let stored_again = self.replicated(confirmed).await?;
            self.still_there(file, confirmed.generation).await?;
            if !stored_again.contains(&file.ino)
                && !file.state().buffers.unreplicated_through(through)
            {
                return Ok(());
            }
            if started.elapsed() >= store.io_timeout() {
                tracing::error!("inode {}: its writes reached no replica", file.ino);
                return Err(FsError::Io);
            }
        }
    }

    /// Under Sentinel, counts the primary's replicas again before a wait for one: a new
    /// primary may have gained its replicas since it was counted.
    async fn recount_replicas(&self) {
        let link = &self.meta.store.link;
        if link.follows_sentinels() {
            let _ = link.node().count_replicas().await;
        }
    }

    /// After a failover, whether the new primary has the inode of `file` and its last change
    /// of attributes made here: the primary that failed may have had its creation, or a
    /// truncation, alone (`EIO` then; a file without its inode is lost).
    async fn still_there(&self, file: &OpenFile, generation: u64) -> Result<(), FsError> {
        // An open not registered in Redis (a read-only mount's) does not keep the inode: a
        // removal elsewhere may have taken it.
        if file.known_on.load(Ordering::Acquire) >= generation
            || !file.registered.load(Ordering::Acquire) && file.born_in.load(Ordering::Acquire) == 0
        {
            return Ok(());
        }
        let store = &self.meta.store;
        (store.changes_lost(generation).await)
            .map_err(|e| redis_failure("asking the new primary what it lacks", &e))?;
        match self.meta.getattr(file.ino).await {
            Ok(_) => {
                file.known_on.fetch_max(generation, Ordering::AcqRel);
                // Said once, as a lost write-back is.
                let change = file.state().last_attr_change.take();
                if change.is_some_and(|r| store.was_lost(&r)) {
                    tracing::error!(
                        "inode {}: a change of its attributes was lost in a failover",
                        file.ino
                    );
                    return Err(FsError::Io);
                }
                Ok(())
            }
            Err(FsError::NotFound) => {
                file_lost(file.ino, &mut file.state());
                Err(FsError::Io)
            }
            Err(e) => Err(e),
        }
    }

    /// Sends the changes deferred in leased directories (all others are in Redis already) and
    /// sees every change answered so far reach a replica, where the primary has replicas
    /// (`fsyncdir` on handle `fh`); `EIO` when a failover lost changes this mount had
    /// answered, once per handle.
    pub async fn sync_entries(self: &Arc<Self>, fh: u64) -> Result<(), FsError> {
        self.meta.send_deferred().await?;
        self.recount_replicas().await;
        let store = &self.meta.store;
        let mut generation = store.link.node().generation;
        if store.replicated_node().is_some() {
            let confirmed = (store.reach_replicas().await)
                .map_err(|e| redis_failure("waiting for a replica", &e))?;
            self.replicated(confirmed).await?;
            generation = confirmed.generation;
        }
        let losses = (store.changes_lost(generation).await)
            .map_err(|e| redis_failure("asking whether changes reached the new primary", &e))?;
        if self.losses_untold(fh, losses)? {
            return Err(FsError::Io);
        }
        Ok(())
    }

    /// Lets go, in every open file, of the blocks `confirmed` says a replica has, and of those
    /// sent to a primary replaced since that the new one ran (its ring of replies says so);
    /// the rest of those are buffered again and stored now, in the background, and the
    /// blocks their lost commits had stored are deleted. Answers the inodes stored again.
    async fn replicated(self: &Arc<Self>, confirmed: Replicated) -> Result<Vec<u64>, FsError> {
        let files = self.open.all();
        let mut reached = HashSet::new();
        // On a cluster a commit's blocks lie on other primaries than its record: one the new
        // primary ran may name blocks a failed one lost, so every block is stored again.
        let on_cluster = self.meta.store.link.node().is_cluster();
        for file in &files {
            let sent: Vec<SentToReplaced> =
                (file.state().buffers.sent_to_replaced(confirmed)).collect();
            if !on_cluster {
                for answered in sent.iter().map(|s| s.answered) {
                    if !reached.contains(&answered.serial)
                        && (self.meta.store.ran(&answered.request).await).map_err(|e| {
                            redis_failure("asking whether a commit reached the new primary", &e)
                        })?
                    {
                        reached.insert(answered.serial);
                    }
                }
            }
            // The blocks of a commit the new primary lacks are named by nothing there, yet
            // may have outlived the old one (blocks stored first, passed on; or on another
            // primary of a cluster): they go.
            let stored: Vec<(u64, u64)> = (sent.iter())
                .filter(|s| s.id != 0 && !reached.contains(&s.answered.serial))
                .map(|s| (s.idx, s.id))
                .collect();
            let unnamed = self.meta.unnamed_blocks(file.ino, &stored).await?;
            if !unnamed.is_empty() {
                (crate::blocks::delete(&self.meta.store, &unnamed).await)
                    .map_err(|e| redis_failure("deleting the blocks of lost commits", &e))?;
            }
        }
        let mut stored_again = Vec::new();
        for file in files {
            let again = (file.state().buffers)
                .replicated(confirmed, |answered| reached.contains(&answered.serial));
            if !again {
                self.retire(&file);
                continue;
            }
            stored_again.push(file.ino);
            let core = self.clone();
            self.spawn(&tokio::runtime::Handle::current(), async move {
                if let Err(e) = core.freeze.pass(core.flush_file(&file, false)).await {
                    tracing::warn!(
                        "inode {}: storing again after a failover failed ({e}); kept buffered",
                        file.ino
                    );
                }
            });
        }
        Ok(stored_again)
    }

    /// Lets go of committed blocks once a replica has them, for as long as the mount runs:
    /// their buffers count against the write budget meanwhile. After a failover, asks the new
    /// primary at once which changes answered by the old one it lacks (see
    /// `Store::changes_lost`): later requests would take their slots of the ring of replies.
    pub(super) async fn replicate_in_background(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REPLICATION_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut looked_from = self.node_in_use();
        loop {
            tick.tick().await;
            let generation = self.node_in_use();
            if generation != looked_from {
                match self.meta.store.changes_lost(generation).await {
                    Ok(_) => looked_from = generation,
                    Err(e) => tracing::warn!("asking the new primary what it lacks: {e}"),
                }
            }
            let waiting = (self.open.all().iter()).any(|f| f.state().buffers.has_unreplicated());
            if !waiting {
                continue;
            }
            let confirmed = match self.meta.store.reach_replicas().await {
                Ok(confirmed) => confirmed,
                Err(e) => {
                    tracing::warn!("waiting for a replica: {e}");
                    continue;
                }
            };
            if let Err(e) = self.replicated(confirmed).await {
                tracing::warn!("after a replica answered: {e}");
            }
        }
    }

    /// Stores the buffers of files written to more than `WRITE_BACK_AFTER` ago, for as long as
    /// the mount runs.
    pub(super) async fn write_back(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WRITE_BACK_AFTER / 5);
        loop {
            tick.tick().await;
            let due = self
                .open
                .all()
                .into_iter()
                .filter(|f| f.state().buffers.dirty_for(WRITE_BACK_AFTER));
            for file in due {
                if let Err(e) = self.freeze.pass(self.flush_file(&file, false)).await {
                    tracing::warn!("inode {}: write-back failed ({e}); kept buffered", file.ino);
                }
            }
        }
    }

    /// Stores one batch of blocks (of a file `size` bytes long when it was taken), merging
    /// again where another writer won.
    async fn store_batch(
        &self,
        file: &OpenFile,
        batch: &[(u64, Arc<BlockBuffer>)],
        size: u64,
    ) -> Result<(), FsError> {
        let mut todo: Vec<&(u64, Arc<BlockBuffer>)> = batch.iter().collect();
        for _ in 0..ATTEMPTS {
            let Some(merged) = self.merge(file, &todo).await? else {
                // A block the map named is gone: another writer replaced it; read the map again.
                file.state().forget_map(false);
                continue;
            };
            let placed = self.encode_and_place(&merged.images).await?;
            let lost = match self
                .commit_and_settle(file, &todo, merged, placed, size)
                .await
            {
                Err(FsError::NotFound) => {
                    // The inode is gone from Redis, though this mount's open kept it (the
                    // script dropped the new blocks): nowhere to store them.
                    let mut st = file.state();
                    for (idx, _) in &todo {
                        st.buffers.committed(*idx);
                    }
                    file_lost(file.ino, &mut st);
                    return Ok(());
                }
                // The primary changed since the blocks were stored, and the new one may lack
                // them: store them again there (`Meta::commit` sees to the old ones).
                Err(FsError::Again) => {
                    file.state().forget_map(false);
                    continue;
                }
                // Whatever became of the blocks stored for it, `Meta::commit` sees to them.
                other => other?,
            };
            todo.retain(|(i, _)| lost.contains(i));
            if todo.is_empty() {
                return Ok(());
            }
        }
        tracing::error!(
            "inode {}: gave up after {ATTEMPTS} lost block-map races",
            file.ino
        );
        Err(FsError::Io)
    }

    /// Step 1: the blocks as they are to be stored, each partial one merged onto the block
    /// the map names now; `None` if one of those is gone.
    async fn merge(
        &self,
        file: &OpenFile,
        todo: &[&(u64, Arc<BlockBuffer>)],
    ) -> Result<Option<Merged>, FsError> {
        let idxs: Vec<u64> = todo.iter().map(|(i, _)| *i).collect();
        let old_ids = self.block_ids(file, &idxs).await?;
        let base_ids: Vec<u64> = todo
            .iter()
            .zip(&old_ids)
            .filter(|((_, b), &id)| !b.is_full() && id != 0)
            .map(|(_, &id)| id)
            .collect();
        let bases: HashMap<u64, Option<Block>> = base_ids
            .iter()
            .copied()
            .zip(self.blocks.get(&base_ids).await?)
            .collect();
        if bases.values().any(Option::is_none) {
            return Ok(None);
        }
        let images = todo
            .iter()
            .zip(&old_ids)
            .map(|((_, buffer), old)| match bases.get(old) {
                Some(Some(base)) if !buffer.is_full() => {
                    let mut image = base.to_vec();
                    buffer.overlay(&mut image);
                    Arc::new(image)
                }
                _ => buffer.image(),
            })
            .collect();
        Ok(Some(Merged { old_ids, images }))
    }

    /// Step 2: encodes `images` and gives each that is not all zeros a new block id; a small
    /// batch travels with the commit (one round trip), a large one is stored first, in
    /// pipelined SETs, so that no script carries megabytes.
    async fn encode_and_place(&self, images: &[Image]) -> Result<Placed, FsError> {
        let encoded = self.blocks.encode_all(images).await;
        let ids = self
            .blocks
            .allocate(encoded.iter().flatten().count())
            .await?;
        let mut fresh = ids.into_iter();
        let new_ids: Vec<u64> = encoded
            .iter()
            .map(|e| {
                if e.is_some() {
                    fresh.next().unwrap_or(0)
                } else {
                    0
                }
            })
            .collect();
        let new_lens: Vec<u64> = (encoded.iter())
            .map(|e| e.as_ref().map_or(0, |e| e.stored_len() as u64))
            .collect();
        let puts: Vec<(u64, Encoded)> = new_ids
            .iter()
            .zip(encoded)
            .filter_map(|(&id, e)| e.map(|e| (id, e)))
            .collect();
        let small = puts.iter().map(|(_, b)| b.stored_len()).sum::<usize>() <= INLINE_BYTES;
        // (A cluster's transaction stays in one slot: blocks live in others. A batch of holes
        // alone has nothing to store.)
        if puts.is_empty() || small && !self.meta.store.link.node().is_cluster() {
            return Ok(Placed {
                new_ids,
                new_lens,
                stored_on: None,
                inline: puts,
                stored: Vec::new(),
            });
        }
        let stored_on = match self.blocks.put(&puts).await {
            Ok(node) => node,
            Err(e) => {
                // Some of them may have been stored, and no map will ever name them.
                self.blocks
                    .discard(puts.iter().map(|(id, _)| *id).collect());
                return Err(e);
            }
        };
        Ok(Placed {
            new_ids,
            new_lens,
            stored_on: Some(stored_on),
            inline: Vec::new(),
            stored: puts,
        })
    }

    /// Step 3: swaps the map entries of the batch in one script and records the outcome in
    /// the file's state and the caches; returns the indexes whose swap lost a race.
    async fn commit_and_settle(
        &self,
        file: &OpenFile,
        todo: &[&(u64, Arc<BlockBuffer>)],
        merged: Merged,
        placed: Placed,
        size: u64,
    ) -> Result<Vec<u64>, FsError> {
        let bs = self.block_size as u64;
        let last = todo.iter().map(|(i, _)| *i).max().unwrap_or(0);
        let end = size.min((last + 1) * bs);
        let swaps: Vec<BlockSwap> = todo
            .iter()
            .zip(&merged.old_ids)
            .zip(placed.new_ids.iter().zip(&placed.new_lens))
            .map(|((&&(idx, _), &old), (&new, &new_len))| BlockSwap {
                idx,
                old,
                new,
                new_len,
            })
            .collect();
        // Commits of one file go one at a time, each with the file's mtime as it is then:
        // batches finishing out of order never store an older mtime over a newer one.
        let _in_order = file.commit_lock.lock().await;
        let (mtime, written_at) = {
            let st = file.state();
            (st.stamps_times.then_some(st.attr.mtime), st.log_position)
        };
        let epoch = self.cache.epoch();
        let replicated_node = self.meta.store.replicated_node();
        let (attr, lost, request) = self
            .meta
            .commit(
                file.ino,
                mtime,
                end,
                &swaps,
                placed.new_blocks(),
                Some(written_at),
            )
            .await?;
        let answered = replicated_node.map(|node| self.meta.store.answered(node, request));
        // What the commit left is the truth, unless something changed since it began.
        self.cache.replace(epoch, attr);
        let mut st = file.state();
        st.refresh(attr);
        st.map_changed();
        for ((&&(idx, _), image), &new_id) in todo.iter().zip(merged.images).zip(&placed.new_ids) {
            if lost.contains(&idx) {
                st.committed(idx, None);
                continue;
            }
            match answered {
                Some(answered) => st.buffers.committed_unreplicated(idx, new_id, answered),
                None => st.buffers.committed(idx),
            }
            st.committed(idx, Some(new_id));
            if new_id != 0 {
                self.blocks.remember(new_id, image);
            }
        }
        Ok(lost)
    }
}

/// Marks an open file whose inode is gone from Redis as lost (see [`FileState::lost`]).
fn file_lost(ino: u64, st: &mut FileState) {
    if !st.lost {
        tracing::error!(
            "inode {ino} is gone from Redis while open here: what was written to it is lost"
        );
    }
    st.lost = true;
}
