//! Open files: the write buffer, the read path and flushing.
//!
//! Writes land in per-block buffers that remember which byte ranges they hold, so a write
//! never has to read first. A flush merges partial blocks onto their stored version, writes
//! new blocks, then swaps the block-map entries in one script that checks each entry still
//! names the block the merge started from (compare-and-swap). A writer that loses the race
//! re-reads and merges again, so two mounts writing different bytes of one block lose nothing.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};

use crate::attr::{Attr, Timestamp};
use crate::blocks::{Block, Image};
use crate::codec::Encoded;
use crate::error::FsError;

use super::Core;

/// Largest file size: sizes travel through Lua, whose numbers are exact up to 2^53.
pub const MAX_FILE_SIZE: u64 = 1 << 52;
/// Full buffered blocks of one file that start storing them in the background.
const FLUSH_FULL_BLOCKS: usize = 16;
/// Full buffered blocks of one file after which its writer waits for them to be stored: a
/// full block gains nothing by waiting, so a writer faster than Redis is held to its pace.
const MAX_FULL_BLOCKS: usize = 256;
/// How long written bytes may wait in a buffer. Partial blocks are kept so that further
/// writes into them cost no second store, but not for longer than this.
pub const WRITE_BACK_AFTER: Duration = Duration::from_secs(5);

/// What a buffered write asks of its caller.
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

/// One block buffer's share of the mount's write-buffer budget, given back when the buffer
/// is dropped: the count stays right however buffers move between the buffered, in-flight
/// and failed-and-requeued states.
#[derive(Debug)]
struct Charge {
    total: Arc<AtomicUsize>,
    bytes: usize,
}

impl Charge {
    fn new(total: &Arc<AtomicUsize>, bytes: usize) -> Charge {
        total.fetch_add(bytes, Ordering::Relaxed);
        Charge {
            total: total.clone(),
            bytes,
        }
    }
}

impl Clone for Charge {
    fn clone(&self) -> Charge {
        Charge::new(&self.total, self.bytes)
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.total.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}
/// Blocks stored per commit.
const FLUSH_BATCH: usize = 64;
/// Batches of one file stored at once.
const BATCHES_IN_FLIGHT: usize = 3;
/// Block-map entries fetched at once when reading a file whose map is not known.
const MAP_WINDOW: u64 = 64;
/// Blocks read ahead of a sequential reader.
const READ_AHEAD: u64 = 64;
/// Blocks per read-ahead fetch: a reader waiting for one block of a fetch waits for all of it.
const READ_AHEAD_STEP: usize = 16;
/// Stored bytes a batch may carry inside its commit call rather than in SETs before it.
const INLINE_BYTES: usize = 256 << 10;
/// Attempts before a lost compare-and-swap becomes an error.
const ATTEMPTS: usize = 16;

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
pub struct Pending {
    /// Shared, so that a full block is stored and cached without copying it.
    data: Image,
    ranges: Ranges,
    _charge: Charge,
}

impl Pending {
    fn new(block_size: usize, buffered: &Arc<AtomicUsize>) -> Pending {
        Pending {
            data: Arc::new(vec![0; block_size]),
            ranges: Ranges::default(),
            _charge: Charge::new(buffered, block_size),
        }
    }

    /// A buffer of a whole block written at once (no zeros written first, only to be copied
    /// over: a sequential writer fills every block this way).
    fn whole(bytes: &[u8], buffered: &Arc<AtomicUsize>) -> Pending {
        let mut ranges = Ranges::default();
        ranges.add(0, bytes.len());
        Pending {
            data: Arc::new(bytes.to_vec()),
            ranges,
            _charge: Charge::new(buffered, bytes.len()),
        }
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        Arc::make_mut(&mut self.data)[offset..offset + bytes.len()].copy_from_slice(bytes);
        self.ranges.add(offset, offset + bytes.len());
    }

    fn is_full(&self) -> bool {
        self.ranges.covers(0, self.data.len())
    }

    /// Copies the written bytes over `image`.
    fn overlay(&self, image: &mut [u8]) {
        for (s, e) in self.ranges.iter() {
            image[s..e].copy_from_slice(&self.data[s..e]);
        }
    }

    /// Folds a newer buffer over this one.
    fn absorb(&mut self, newer: &Pending) {
        newer.overlay(Arc::make_mut(&mut self.data).as_mut_slice());
        for (s, e) in newer.ranges.iter() {
            self.ranges.add(s, e);
        }
    }
}

/// What this mount knows of one open inode.
pub struct FileState {
    /// Attributes, with the size and times of buffered writes.
    pub attr: Attr,
    /// Known block-map entries (0: hole).
    map: HashMap<u64, u64>,
    /// Whether `map` holds every entry (true for files this mount created).
    map_complete: bool,
    /// Bumped whenever this mount changes the map, so a slower map read cannot undo it.
    map_version: u64,
    dirty: BTreeMap<u64, Arc<Pending>>,
    /// How many of the `dirty` blocks are full.
    full_dirty: usize,
    /// When the oldest bytes in `dirty` were written.
    dirty_since: Option<Instant>,
    inflight: BTreeMap<u64, Arc<Pending>>,
    /// The last link is gone; reclaim the inode at the last close.
    pub orphaned: bool,
    /// An `O_TMPFILE` file that no link has named yet (`linkat` may).
    pub unnamed: bool,
    /// Another mount changed the file since this mount last read its record: an `O_APPEND`
    /// write reads it again first, so that it lands at the end that mount left.
    pub changed_elsewhere: bool,
    /// Where the last sequential read ended.
    read_end: u64,
    /// The block index up to which read-ahead has been started.
    ahead_to: u64,
    /// Whether this mount sets mtime/ctime on writes (the kernel does with its writeback cache).
    stamps_times: bool,
}

impl FileState {
    /// Drops what is buffered and not being stored (see [`Core::release`]).
    pub fn drop_buffers(&mut self) {
        self.dirty.clear();
        self.full_dirty = 0;
        self.dirty_since = None;
    }

    /// Whether writes are buffered or being stored.
    pub fn has_pending(&self) -> bool {
        !self.dirty.is_empty() || !self.inflight.is_empty()
    }

    /// Takes attributes read from Redis, keeping the size and times of buffered writes.
    pub fn refresh(&mut self, remote: Attr) {
        let local = self.attr;
        self.attr = remote;
        if self.has_pending() {
            self.attr.size = local.size.max(remote.size);
            if self.stamps_times {
                self.attr.mtime = local.mtime.max(remote.mtime);
                self.attr.ctime = local.ctime.max(remote.ctime);
            }
        }
    }

    /// Forgets the block map (after a truncate or a change by another mount).
    pub fn forget_map(&mut self, now_empty: bool) {
        self.map.clear();
        self.map_complete = now_empty;
        self.map_version += 1;
    }

    /// Takes one block's buffer out of `dirty`.
    fn take_dirty(&mut self, idx: u64) -> Option<Arc<Pending>> {
        let taken = self.dirty.remove(&idx)?;
        if taken.is_full() {
            self.full_dirty -= 1;
        }
        if self.dirty.is_empty() {
            self.dirty_since = None;
        }
        Some(taken)
    }

    /// Puts a block's buffer (back) into `dirty`, where there is none.
    fn put_dirty(&mut self, idx: u64, pending: Arc<Pending>) {
        if pending.is_full() {
            self.full_dirty += 1;
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        self.dirty.insert(idx, pending);
    }

    fn known_id(&self, idx: u64) -> Option<u64> {
        self.map
            .get(&idx)
            .copied()
            .or(if self.map_complete { Some(0) } else { None })
    }
}

/// An inode open on this mount, shared by all its handles.
pub struct OpenFile {
    /// Its inode number.
    pub ino: u64,
    state: Mutex<FileState>,
    pub(super) flush_lock: tokio::sync::Mutex<()>,
    /// Orders the commits of batches stored at once.
    commit_lock: tokio::sync::Mutex<()>,
    /// A background store of full blocks is under way.
    pub storing: std::sync::atomic::AtomicBool,
    /// The leased directory whose deferred create made this file (0: none). While the
    /// directory stays leased and the file has one link, no other mount can open it, so its
    /// close need not wait for the store (see [`Core::flush_at_once`]).
    pub born_in: std::sync::atomic::AtomicU64,
    /// This mount's open of the file is registered in Redis (see `src/lua/prelude.lua`), so
    /// that a removal by another mount keeps its data; its last close here ends it.
    pub registered: std::sync::atomic::AtomicBool,
}

impl OpenFile {
    /// A newly opened inode; `created` means this mount just made it (its map is empty).
    pub fn new(attr: Attr, created: bool, stamps_times: bool) -> OpenFile {
        OpenFile {
            ino: attr.ino,
            state: Mutex::new(FileState {
                attr,
                map: HashMap::new(),
                map_complete: created,
                map_version: 0,
                dirty: BTreeMap::new(),
                full_dirty: 0,
                dirty_since: None,
                inflight: BTreeMap::new(),
                orphaned: false,
                unnamed: false,
                changed_elsewhere: false,
                read_end: 0,
                ahead_to: 0,
                stamps_times,
            }),
            flush_lock: tokio::sync::Mutex::new(()),
            commit_lock: tokio::sync::Mutex::new(()),
            storing: std::sync::atomic::AtomicBool::new(false),
            born_in: std::sync::atomic::AtomicU64::new(0),
            registered: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Locks the state (a poisoned lock still holds consistent data: no code panics under it).
    pub fn state(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Blocks moved in flight for one store, with the file size.
type PickedBatch = (Vec<(u64, Arc<Pending>)>, u64);

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
    layers: Vec<Arc<Pending>>,
    need_base: bool,
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
        let mut guard = file.state();
        let st = &mut *guard;
        let offset = if append && offset != st.attr.size {
            // Without its writeback cache the kernel places an O_APPEND write at the end of
            // file it knows, and does not ask first: another mount's appends, which this open
            // learned of, may have moved the end. The pages it filled there are not the file's.
            self.invalidate(super::notify::Invalidation::Data(
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
            let bytes = &data[pos..pos + n];
            pos += n;
            let entry = st.dirty.entry(idx);
            if n == bs as usize && matches!(entry, Entry::Vacant(_)) {
                entry.or_insert_with(|| Arc::new(Pending::whole(bytes, &self.buffered)));
                st.full_dirty += 1;
                continue;
            }
            let pending = Arc::make_mut(
                entry.or_insert_with(|| Arc::new(Pending::new(bs as usize, &self.buffered))),
            );
            let was_full = pending.is_full();
            pending.write(off, bytes);
            if !was_full && pending.is_full() {
                st.full_dirty += 1;
            }
        }
        st.dirty_since.get_or_insert_with(Instant::now);
        st.attr.size = st.attr.size.max(end);
        // With the writeback cache the kernel owns the times of regular files and sends them
        // with SETATTR; stamping them here as well would make the two disagree.
        if st.stamps_times {
            let now = Timestamp::now();
            st.attr.mtime = now;
            st.attr.ctime = now;
        }
        Ok(
            if self.buffered.load(Ordering::Relaxed) as u64 > self.settings.write_buffer {
                Backlog::StoreAll
            } else if st.full_dirty >= MAX_FULL_BLOCKS {
                Backlog::StoreFull
            } else if st.full_dirty >= FLUSH_FULL_BLOCKS {
                Backlog::StoreSoon
            } else {
                Backlog::Fine
            },
        )
    }

    /// Stores buffered blocks: all of them, or with `only_full` just the complete ones.
    ///
    /// Up to `BATCHES_IN_FLIGHT` batches are stored at once, so that encoding one overlaps the
    /// network time of another. A block already being stored is not picked again until its
    /// store ends: two commits of one block in flight could land out of order.
    pub async fn flush_file(&self, file: &OpenFile, only_full: bool) -> Result<(), FsError> {
        let _one_flush_at_a_time = file.flush_lock.lock().await;
        let mut running = FuturesUnordered::new();
        let mut failure = None;
        loop {
            while failure.is_none() && running.len() < BATCHES_IN_FLIGHT {
                let Some((batch, size)) = self.pick_batch(file, only_full) else {
                    break;
                };
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
                return failure.map_or(Ok(()), Err);
            };
            if let Err(e) = stored {
                // Keep the data buffered (under anything written since) and report the error.
                let mut st = file.state();
                for (idx, older) in batch {
                    // A block this batch committed before failing has left the in-flight set,
                    // and a later batch may be storing newer bytes of it now: leave it alone.
                    if !st
                        .inflight
                        .get(&idx)
                        .is_some_and(|p| Arc::ptr_eq(p, &older))
                    {
                        continue;
                    }
                    st.inflight.remove(&idx);
                    let merged = match st.take_dirty(idx) {
                        Some(newer) => {
                            let mut m = (*older).clone();
                            m.absorb(&newer);
                            Arc::new(m)
                        }
                        None => older,
                    };
                    st.put_dirty(idx, merged);
                }
                failure.get_or_insert(e);
            }
        }
    }

    /// Stores the buffers of files written to more than `WRITE_BACK_AFTER` ago, for as long as
    /// the mount runs.
    pub(super) async fn write_back(self: Arc<Self>) {
        let mut tick = tokio::time::interval(WRITE_BACK_AFTER / 5);
        loop {
            tick.tick().await;
            let due: Vec<Arc<OpenFile>> = super::lock(&self.files)
                .values()
                .map(|(f, _)| f.clone())
                .filter(|f| {
                    f.state()
                        .dirty_since
                        .is_some_and(|t| t.elapsed() >= WRITE_BACK_AFTER)
                })
                .collect();
            for file in due {
                if let Err(e) = self.change(self.flush_file(&file, false)).await {
                    tracing::warn!("inode {}: write-back failed ({e}); kept buffered", file.ino);
                }
            }
        }
    }

    /// Moves the next batch of buffered blocks to the in-flight set, with the file's size.
    fn pick_batch(&self, file: &OpenFile, only_full: bool) -> Option<PickedBatch> {
        let mut st = file.state();
        if only_full && st.full_dirty == 0 {
            return None;
        }
        let picked: Vec<u64> = st
            .dirty
            .iter()
            .filter(|(i, p)| (!only_full || p.is_full()) && !st.inflight.contains_key(i))
            .map(|(&i, _)| i)
            .take(FLUSH_BATCH)
            .collect();
        if picked.is_empty() {
            return None;
        }
        let mut batch = Vec::with_capacity(picked.len());
        for idx in picked {
            if let Some(p) = st.take_dirty(idx) {
                st.inflight.insert(idx, p.clone());
                batch.push((idx, p));
            }
        }
        Some((batch, st.attr.size))
    }

    /// Writes one batch of blocks and commits it, merging again where another writer won.
    async fn store_batch(
        &self,
        file: &OpenFile,
        batch: &[(u64, Arc<Pending>)],
        size: u64,
    ) -> Result<(), FsError> {
        let bs = self.block_size as u64;
        let mut todo: Vec<&(u64, Arc<Pending>)> = batch.iter().collect();
        for _ in 0..ATTEMPTS {
            let idxs: Vec<u64> = todo.iter().map(|(i, _)| *i).collect();
            let old_ids = self.map_ids(file, &idxs).await?;
            // Partial blocks are merged onto what Redis holds now.
            let base_ids: Vec<u64> = todo
                .iter()
                .zip(&old_ids)
                .filter(|((_, p), &id)| !p.is_full() && id != 0)
                .map(|(_, &id)| id)
                .collect();
            let bases: HashMap<u64, Option<Block>> = base_ids
                .iter()
                .copied()
                .zip(self.blocks.get(&base_ids).await?)
                .collect();
            if bases.values().any(Option::is_none) {
                file.state().forget_map(false);
                continue;
            }
            let mut images: Vec<Image> = Vec::with_capacity(todo.len());
            for ((_, pending), old) in todo.iter().zip(&old_ids) {
                let image = match bases.get(old) {
                    Some(Some(base)) if !pending.is_full() => {
                        let mut image = base.to_vec();
                        pending.overlay(&mut image);
                        Arc::new(image)
                    }
                    _ => pending.data.clone(),
                };
                images.push(image);
            }
            let encoded = self.blocks.encode_all(&images).await;
            let ids = self
                .blocks
                .allocate(encoded.iter().flatten().count())
                .await?;
            let mut id_iter = ids.into_iter();
            let new_ids: Vec<u64> = encoded
                .iter()
                .map(|e| {
                    if e.is_some() {
                        id_iter.next().unwrap_or(0)
                    } else {
                        0
                    }
                })
                .collect();
            let puts: Vec<(u64, Encoded)> = new_ids
                .iter()
                .zip(encoded)
                .filter_map(|(&id, e)| e.map(|e| (id, e)))
                .collect();
            // A small batch travels with the commit (one round trip); a large one first, in
            // pipelined SETs, so that no script carries megabytes.
            let small = puts.iter().map(|(_, b)| b.stored_len()).sum::<usize>() <= INLINE_BYTES;
            let (inline, put_first) = if small {
                (puts, Vec::new())
            } else {
                let ids: Vec<u64> = puts.iter().map(|(id, _)| *id).collect();
                if let Err(e) = self.blocks.put(&puts).await {
                    // Some of them may have been stored, and no map will ever name them.
                    self.blocks.discard(ids);
                    return Err(e);
                }
                (Vec::new(), ids)
            };
            let last = idxs.iter().max().copied().unwrap_or(0);
            let end = size.min((last + 1) * bs);
            let swaps: Vec<(u64, u64, u64)> = idxs
                .iter()
                .zip(&old_ids)
                .zip(&new_ids)
                .map(|((&i, &o), &n)| (i, o, n))
                .collect();
            // Commits of one file go one at a time, each with the file's mtime as it is then:
            // batches finishing out of order never store an older mtime over a newer one.
            let _in_order = file.commit_lock.lock().await;
            let mtime = {
                let st = file.state();
                st.stamps_times.then_some(st.attr.mtime)
            };
            let epoch = self.cache.epoch();
            let committed = self
                .meta
                .commit(file.ino, mtime, end, &swaps, &inline, &put_first)
                .await;
            let (stored, lost) = match committed {
                Ok((attr, lost)) => (Some(attr), lost),
                Err(FsError::NotFound) => {
                    // The inode was deleted under us (the script dropped the new blocks).
                    let mut st = file.state();
                    for idx in &idxs {
                        st.inflight.remove(idx);
                    }
                    return Ok(());
                }
                // Whatever became of the blocks stored for it, `Meta::commit` sees to them.
                Err(e) => return Err(e),
            };
            match stored {
                // What the commit left is the truth, unless something changed since it began.
                Some(attr) => self.cache.replace(epoch, attr),
                None => self.cache.forget_attr(file.ino),
            }
            {
                let mut st = file.state();
                if let Some(attr) = stored {
                    st.refresh(attr);
                }
                st.map_version += 1;
                for (((idx, _), image), &new_id) in todo.iter().zip(images).zip(&new_ids) {
                    if lost.contains(idx) {
                        // Not known any more: a file this mount created must not read the
                        // missing entry as a hole (its own earlier commit, whose reply was
                        // lost, may be what the race was lost to).
                        st.map.remove(idx);
                        st.map_complete = false;
                        continue;
                    }
                    st.inflight.remove(idx);
                    st.map.insert(*idx, new_id);
                    if new_id != 0 {
                        self.blocks.remember(new_id, image);
                    }
                }
            }
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

    /// Current block ids for `idxs`, from the cached map or Redis.
    async fn map_ids(&self, file: &OpenFile, idxs: &[u64]) -> Result<Vec<u64>, FsError> {
        let (known, version): (Vec<Option<u64>>, u64) = {
            let st = file.state();
            (
                idxs.iter().map(|&i| st.known_id(i)).collect(),
                st.map_version,
            )
        };
        if known.iter().all(Option::is_some) {
            return Ok(known.into_iter().flatten().collect());
        }
        let lo = idxs.iter().min().copied().unwrap_or(0);
        let hi = idxs.iter().max().copied().unwrap_or(0);
        let count = (hi - lo + 1).max(MAP_WINDOW);
        let fetched = self.meta.map_range(file.ino, lo, count).await?;
        let mut st = file.state();
        if st.map_version == version {
            for (k, &id) in fetched.iter().enumerate() {
                st.map.entry(lo + k as u64).or_insert(id);
            }
        }
        Ok(idxs
            .iter()
            .zip(known)
            .map(|(&i, k)| k.unwrap_or(fetched[(i - lo) as usize]))
            .collect())
    }

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
                st.read_end = plan.end;
                plan
            };
            let needed: Vec<u64> = plan.bases_needed().collect();
            let ids = if needed.is_empty() {
                Vec::new()
            } else {
                self.map_ids(file, &needed).await?
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
            st.read_end = plan.end;
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
            let end = (from + READ_AHEAD).min(last);
            if start >= end {
                return;
            }
            st.ahead_to = end;
            (start..end).collect()
        };
        let core = self.clone();
        let file = file.clone();
        runtime.spawn(async move {
            let Ok(ids) = core.map_ids(&file, &idxs).await else {
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
    /// Plans a read of up to `size` bytes at `offset`; `None` at or past the end of the file.
    fn plan_read(&self, offset: u64, size: u32, bs: u64) -> Option<ReadPlan> {
        let end = (offset + u64::from(size)).min(self.attr.size);
        if offset >= end {
            return None;
        }
        let blocks = (offset / bs..=(end - 1) / bs)
            .map(|idx| {
                let layers: Vec<Arc<Pending>> = [self.inflight.get(&idx), self.dirty.get(&idx)]
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                let lo = offset.max(idx * bs) - idx * bs;
                let hi = end.min((idx + 1) * bs) - idx * bs;
                let mut covered = Ranges::default();
                for l in &layers {
                    for (s, e) in l.ranges.iter() {
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
        let buffered = Arc::default();
        let mut old = Pending::new(8, &buffered);
        old.write(0, b"aaaa");
        let mut new = Pending::new(8, &buffered);
        new.write(2, b"bbbb");
        old.absorb(&new);
        assert_eq!(old.data.as_slice(), b"aabbbb\0\0");
        assert_eq!(old.ranges.0, vec![(0, 6)]);
    }

    #[test]
    fn buffers_count_against_the_budget_while_they_live() {
        let buffered = Arc::new(AtomicUsize::new(0));
        let first = Arc::new(Pending::new(8, &buffered));
        let mut shared = first.clone();
        assert_eq!(buffered.load(Ordering::Relaxed), 8);
        // Writing to a buffer a reader still holds copies it: two buffers now.
        Arc::make_mut(&mut shared).write(0, b"x");
        assert_eq!(buffered.load(Ordering::Relaxed), 16);
        drop(first);
        drop(shared);
        assert_eq!(buffered.load(Ordering::Relaxed), 0);
    }
}
