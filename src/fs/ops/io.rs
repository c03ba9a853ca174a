//! Open files: open, read, write, flush and release, fallocate, SEEK_DATA/SEEK_HOLE and
//! copy_file_range. The data paths themselves are in `write.rs` and `read.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::{AttrChange, BlockSwap, Closed, NewBlocks};

use super::Caller;
use crate::fs::open_files::Orphaned;
use crate::fs::{Backlog, Core, OpenFile, MAX_FILE_SIZE};

/// How a write is answered, decided on the FUSE thread (see [`Core::write_now`]).
pub enum WriteAnswer {
    /// Buffered: answered now.
    Now,
    /// Buffered, but the file's stores must catch up first (`only_full`: its full blocks).
    AfterStore(Arc<OpenFile>, bool),
    /// Not taken on the FUSE thread: the write waits in a task ([`Core::write`]) for a freeze
    /// to end, for an append to learn what another mount changed, or to take set-ID bits
    /// away after.
    InTask,
}

/// Copy granularity of copy_file_range.
const COPY_CHUNK: u64 = 1 << 20;

/// The mode a change of a regular file's data (a write, `fallocate`, a truncate) by `caller`
/// leaves, as on a local filesystem: set-user-ID goes, and set-group-ID if group-execute is set
/// or the caller is outside the file's group; the superuser (CAP_FSETID) keeps both. (The
/// kernel's FUSE side drops set-group-ID only with group-execute: the rest is done here.)
fn mode_after_data_change(attr: &Attr, caller: &Caller) -> u32 {
    let set_id = libc::S_ISUID | libc::S_ISGID;
    if caller.uid == 0 || attr.kind() != FileKind::File || attr.mode & set_id == 0 {
        return attr.mode;
    }
    let mut mode = attr.mode & !libc::S_ISUID;
    if mode & libc::S_ISGID != 0 && (mode & libc::S_IXGRP != 0 || !caller.in_group(attr.gid)) {
        mode &= !libc::S_ISGID;
    }
    mode
}

/// Granularity of the holes SEEK_HOLE reports: the page size programs copy sparse files in.
const HOLE_GRAIN: u64 = 4096;

/// Where SEEK_DATA or SEEK_HOLE (`whence`) from `offset` (below `size`) lands in a file whose
/// block `idx` (of `block_size` bytes) is `stored(idx)`. Holes are reported from the first
/// [`HOLE_GRAIN`] multiple inside them to the last, so a hole may look smaller than it is,
/// never larger; the end of the file is a hole.
fn seek(
    offset: u64,
    size: u64,
    block_size: u64,
    whence: i32,
    stored: impl Fn(u64) -> bool,
) -> Option<u64> {
    let want_data = whence == libc::SEEK_DATA;
    let mut idx = offset / block_size;
    loop {
        let start = idx * block_size;
        if start >= size {
            // No hole from `offset` on but the end of the file.
            return Some(if want_data { offset } else { size });
        }
        if stored(idx) {
            idx += 1;
            continue;
        }
        // A run of holes [start, end), reported as [hole_start, hole_end).
        let mut next = idx + 1;
        while next * block_size < size && !stored(next) {
            next += 1;
        }
        let end = (next * block_size).min(size);
        let hole_start = start.next_multiple_of(HOLE_GRAIN);
        let hole_end = if end == size {
            size
        } else {
            end / HOLE_GRAIN * HOLE_GRAIN
        };
        if hole_start < hole_end && offset < hole_end {
            let in_hole = offset >= hole_start;
            return Some(match (want_data, in_hole) {
                (true, false) => offset,
                (true, true) if hole_end == size => return None,
                (true, true) => hole_end,
                (false, true) => offset,
                (false, false) => hole_start,
            });
        }
        idx = next;
    }
}

impl Core {
    /// The file behind a handle.
    pub fn file(&self, fh: u64) -> Result<Arc<OpenFile>, FsError> {
        self.open.handle(fh)
    }

    /// The node requests go to now (see `Node::generation`).
    pub(in crate::fs) fn node_in_use(&self) -> u64 {
        self.meta.store.link.node().generation
    }

    /// Registers a new handle on `attr`'s inode (read in `epoch`, from the node of
    /// `generation` or a later one: see [`OpenFile::known_on`]).
    pub(in crate::fs) fn attach(
        &self,
        attr: Attr,
        created: bool,
        epoch: u64,
        generation: u64,
    ) -> (u64, Arc<OpenFile>) {
        self.open.attach(attr, created, generation, || {
            self.cache.unchanged_since(attr.ino, epoch)
        })
    }

    /// Takes a file without handles whose data is now stored out of the table, as its last
    /// close would have (see [`OpenFiles::detach`](crate::fs::open_files::OpenFiles::detach)).
    pub(in crate::fs) fn retire(&self, file: &OpenFile) {
        if !self.open.retire(file) {
            return;
        }
        let st = file.state();
        self.let_go(file, st.orphaned);
        if !st.orphaned {
            self.open.closed(&st.attr);
        }
    }

    /// Hands a file whose last handle here closed (`orphaned`: its last link gone) to the
    /// reclaimer: its registered open ends, and Redis deletes it if it has no link left and no
    /// mount has it open.
    fn let_go(&self, file: &OpenFile, orphaned: bool) {
        let registered = file.registered.swap(false, Ordering::AcqRel);
        let done = match (registered, orphaned) {
            (true, _) => Closed::Open(file.ino),
            (false, true) => Closed::Held(file.ino),
            (false, false) => return,
        };
        self.reclaimer.hand_over(done);
    }

    /// Deals with an inode whose last link a removal took: it is deleted once not open here.
    /// Opens already past their look-up in Redis are waited for (they will register a
    /// handle); later ones find no link and fail (see [`Core::open`]).
    pub(in crate::fs) async fn orphaned(&self, ino: u64) {
        self.open.no_open_under_way(ino).await;
        match self.open.orphan(ino, |file| self.let_go(file, true)) {
            Orphaned::NotOpen => self.reclaimer.hand_over(Closed::Held(ino)),
            Orphaned::StillOpen | Orphaned::Retired => {}
        }
    }
}

impl Core {
    /// Opens a file; also says whether the kernel may keep its cached pages.
    pub async fn open(&self, ino: u64, write: bool) -> Result<(u64, bool), FsError> {
        if write {
            self.writable()?;
        }
        let _opening = self.open.opening(ino).await;
        if let Some(file) = self.open.get(ino) {
            // Its last handle may be closing, its store (which a close need not wait for, see
            // `Core::flush_at_once`) under way: what Redis says must include it, since the
            // handle registered below may be the first one again.
            self.flush_file(&file, false).await?;
        }
        let epoch = self.cache.epoch();
        let generation = self.node_in_use();
        // The first open here is registered, so that a removal elsewhere keeps the data.
        let register = !self.settings.read_only && self.open.get(ino).is_none();
        let attr = self.meta.open(ino, register).await?;
        if attr.nlink == 0 && self.open.get(ino).is_none() {
            // The kernel resolved the name before a removal took the last link: the removal
            // came first. (A file open here stays reachable, through /proc/self/fd.)
            if register {
                self.reclaimer.hand_over(Closed::Open(ino));
            }
            return Err(FsError::NotFound);
        }
        self.cache.remember(epoch, None, attr);
        let keep = self.open.keeps_pages(&attr);
        if !keep {
            // Another mount may have changed the file: the kernel must not go on with the size
            // it cached (close-to-open).
            if let Some(k) = self.kernel.get() {
                k.attributes_now(ino);
            }
        }
        let (fh, file) = self.attach(attr, false, epoch, generation);
        if register && file.registered.swap(true, Ordering::AcqRel) {
            // Registered twice (an open raced with a create here): one is enough.
            self.reclaimer.hand_over(Closed::Open(ino));
        }
        Ok((fh, keep))
    }
}

impl Core {
    /// Reads through a handle.
    pub async fn read(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, FsError> {
        let file = self.file(fh)?;
        self.read_file(&file, offset, size).await
    }

    /// How a write is answered (see [`WriteAnswer`]): buffered on the FUSE thread unless it
    /// must wait in a task.
    #[allow(clippy::too_many_arguments)]
    pub fn write_now(
        self: &Arc<Self>,
        fh: u64,
        ino: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        caller: &Caller,
        runtime: &tokio::runtime::Handle,
    ) -> Result<WriteAnswer, FsError> {
        if self.write_drops_set_id(ino, caller) || append && self.append_waits(fh) {
            return Ok(WriteAnswer::InTask);
        }
        let Some(_open) = self.freeze.try_pass() else {
            return Ok(WriteAnswer::InTask);
        };
        Ok(
            match self.write_buffered(fh, offset, data, append, runtime)? {
                None => WriteAnswer::Now,
                Some((file, only_full)) => WriteAnswer::AfterStore(file, only_full),
            },
        )
    }

    /// Writes through a handle (with `append`, at the end of the file) for `caller`, in a
    /// task: an append first learns what another mount changed, and a write that takes
    /// set-ID bits away does so after.
    pub async fn write(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        caller: Caller,
    ) -> Result<u32, FsError> {
        let file = self.file(fh)?;
        let drops_set_id = self.write_drops_set_id(file.ino, &caller);
        if append {
            self.learn_changes_elsewhere(&file).await?;
        }
        let spawner = tokio::runtime::Handle::current();
        if let Some((file, only_full)) = self.write_buffered(fh, offset, data, append, &spawner)? {
            self.flush_file(&file, only_full).await?;
        }
        if drops_set_id {
            self.drop_set_id_bits(self.getattr(file.ino).await?, caller)
                .await?;
        }
        Ok(data.len() as u32)
    }

    /// Whether an append through `fh` must first learn what another mount changed (see
    /// [`Core::write`]), which the FUSE thread cannot wait for.
    fn append_waits(&self, fh: u64) -> bool {
        self.file(fh).is_ok_and(|f| f.state().changed_elsewhere)
    }

    /// Buffers a write, starting a background store of full blocks on `spawner` when it is
    /// time; returns the file, and whether only its full blocks need storing, when the writer
    /// must wait for a store (see [`Backlog`]).
    fn write_buffered(
        self: &Arc<Self>,
        fh: u64,
        offset: u64,
        data: &[u8],
        append: bool,
        spawner: &tokio::runtime::Handle,
    ) -> Result<Option<(Arc<OpenFile>, bool)>, FsError> {
        self.writable()?;
        let file = self.file(fh)?;
        let backlog = self.buffer_write(&file, offset, data, append)?;
        if let Some(only_full) = backlog.wait_for() {
            return Ok(Some((file, only_full)));
        }
        // Store full blocks while the writer goes on filling the buffer. A failure leaves them
        // buffered: the next flush retries and reports it.
        if backlog == Backlog::StoreSoon
            && !file.storing.swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            let core = self.clone();
            self.spawn(spawner, async move {
                if let Err(e) = core.flush_file(&file, true).await {
                    tracing::warn!(
                        "inode {}: storing in the background failed ({e}); kept buffered",
                        file.ino
                    );
                }
                file.storing
                    .store(false, std::sync::atomic::Ordering::Release);
            });
        }
        Ok(None)
    }
}

impl Core {
    /// A flush with nothing to store or unlock: done. So is one of a file no other mount can
    /// open yet (created in a directory leased here, with one link, or none left): its
    /// buffers are stored at its release, which close(2) does not wait for (or dropped there,
    /// if it has no link), or before another mount recalls the directory, or at a freeze,
    /// `fsync`, an open or unmount.
    pub fn flush_at_once(&self, fh: u64, ino: u64, owner: u64) -> Option<Result<(), FsError>> {
        let private = |f: &OpenFile| self.born_leased(f) && f.state().attr.nlink <= 1;
        self.closes_quietly(fh, ino, Some(owner), false, private)
            .then_some(Ok(()))
    }

    /// Stores a handle's buffered writes, and sees them reach a replica (close, fsync).
    pub async fn flush(self: &Arc<Self>, fh: u64) -> Result<(), FsError> {
        let file = self.file(fh)?;
        self.make_durable(&file).await
    }
}

impl Core {
    /// Whether closing `fh` (for lock owner `owner`; at its `last` close, also what was locked
    /// through it) has nothing to unlock, and nothing to store unless `store_later` lets the
    /// file's store wait.
    fn closes_quietly(
        &self,
        fh: u64,
        ino: u64,
        owner: Option<u64>,
        last: bool,
        store_later: impl FnOnce(&OpenFile) -> bool,
    ) -> bool {
        !self.locks.may_hold(ino, last.then_some(fh), owner)
            && self.file(fh).is_ok_and(|f| {
                let st = f.state();
                // A lost file's close says so (`EIO`), however little it has to store.
                !st.lost
                    && (!st.has_pending() || {
                        drop(st);
                        store_later(&f)
                    })
            })
    }

    /// A release with nothing to store or unlock, done here.
    pub fn release_at_once(
        &self,
        fh: u64,
        ino: u64,
        owner: Option<u64>,
    ) -> Option<Result<(), FsError>> {
        if !self.closes_quietly(fh, ino, owner, true, |_| false) {
            return None;
        }
        Some(self.detached(fh, Ok(())))
    }

    /// Closes a handle; the last close of an unlinked file deletes it. The last close of a
    /// file no one can reach any more (unlinked, and created in a directory leased here, so
    /// that no other mount can have it open) drops its buffers instead of storing them:
    /// `rm -rf` right after a copy removes files whose closes are still on their way.
    pub async fn release(&self, fh: u64) -> Result<(), FsError> {
        let file = self.file(fh)?;
        let flushed = if self.dropped_unreachable(&file).await {
            Ok(())
        } else {
            self.flush_file(&file, false).await
        };
        self.detached(fh, flushed)
    }

    /// Drops the buffers of an unreachable file at its last handle's release, once stores
    /// under way have ended (their blocks are then the inode's, and go with it); says whether
    /// it did.
    async fn dropped_unreachable(&self, file: &OpenFile) -> bool {
        if !self.unreachable(file) {
            return false;
        }
        let _stores_ended = file.flush_lock.lock().await;
        // Under the table's lock, where opens register their handles.
        self.open.while_last_handle(file, || {
            if !self.unreachable(file) {
                return false;
            }
            file.state().drop_buffers();
            true
        })
    }

    /// Whether `file` is unlinked and was created in a directory still leased here.
    fn unreachable(&self, file: &OpenFile) -> bool {
        self.born_leased(file) && file.state().orphaned
    }

    /// Whether `file` was created in a directory still leased here, so that no other mount
    /// can have opened it.
    pub(super) fn born_leased(&self, file: &OpenFile) -> bool {
        let dir = file.born_in.load(std::sync::atomic::Ordering::Acquire);
        dir != 0 && self.meta.delegation.holds(dir)
    }

    /// Drops a handle whose data was stored (or not: `flushed`); the last close of an
    /// unlinked file queues it for deletion.
    pub(super) fn detached(&self, fh: u64, flushed: Result<(), FsError>) -> Result<(), FsError> {
        if let Some(last) = self.open.detach(fh) {
            let st = last.state();
            self.let_go(&last, st.orphaned);
            if !st.orphaned && flushed.is_ok() {
                self.open.closed(&st.attr);
            }
        }
        flushed
    }
}

impl Core {
    /// Preallocates, punches holes or zeroes ranges, for `caller`.
    pub async fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
        caller: Caller,
    ) -> Result<(), FsError> {
        self.writable()?;
        let file = self.file(fh)?;
        let end = offset.checked_add(length).ok_or(FsError::FileTooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(FsError::FileTooBig);
        }
        let keep_size = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let supported =
            libc::FALLOC_FL_KEEP_SIZE | libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE;
        if mode & !supported != 0 {
            return Err(FsError::NotSupported);
        }
        // Preallocation stores nothing (unwritten bytes are holes), but it promises room: a
        // range larger than what Redis has left is refused, as a full disk refuses it. (The
        // whole range counts, bytes stored there already too.)
        if mode & !libc::FALLOC_FL_KEEP_SIZE == 0 && length > self.usage().await?.available {
            return Err(FsError::NoSpace);
        }
        if mode & (libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_ZERO_RANGE) != 0 {
            let size = self.getattr(file.ino).await?.size;
            let zero_end = if keep_size { end.min(size) } else { end };
            if offset < zero_end {
                self.zero_range(&file, offset, zero_end).await?;
            }
        }
        if !keep_size {
            let size = self.getattr(file.ino).await?.size;
            if end > size {
                self.setattr(
                    file.ino,
                    AttrChange {
                        size: Some(end),
                        ..Default::default()
                    },
                )
                .await?;
            }
        }
        let attr = self.getattr(file.ino).await?;
        self.drop_set_id_bits(attr, caller).await.map(drop)
    }

    /// Whether a write to open file `ino` by `caller` takes set-ID bits away (judged on what
    /// this mount knows: the bits are rare, the check is on every write).
    fn write_drops_set_id(&self, ino: u64, caller: &Caller) -> bool {
        self.open.get(ino).is_some_and(|f| {
            let attr = f.state().attr;
            mode_after_data_change(&attr, caller) != attr.mode
        })
    }

    /// Takes away the set-ID bits a change of the data of a file (now `attr`) by `caller`
    /// drops; returns the attributes after.
    pub async fn drop_set_id_bits(&self, attr: Attr, caller: Caller) -> Result<Attr, FsError> {
        let ino = attr.ino;
        let mode = mode_after_data_change(&attr, &caller);
        if mode == attr.mode {
            return Ok(attr);
        }
        let change = AttrChange {
            mode: Some(mode & 0o7777),
            ..Default::default()
        };
        // Only set-ID bits go: an ACL stays as it is.
        let attr = self.change_attrs(ino, change).await?;
        // The kernel answered the write with what it cached.
        self.invalidate(crate::fs::notify::Invalidation::Attr(ino));
        Ok(attr)
    }

    /// Makes `[start, end)` read as zeros: whole blocks become holes, edges are rewritten.
    async fn zero_range(&self, file: &Arc<OpenFile>, start: u64, end: u64) -> Result<(), FsError> {
        let bs = u64::from(self.block_size);
        let first_full = start.div_ceil(bs);
        let last_full = end / bs;
        let edges = [
            (start, end.min(first_full * bs)),
            ((last_full * bs).max(start), end),
        ];
        for (s, e) in edges {
            if s < e {
                self.buffer_write(file, s, &vec![0; (e - s) as usize], false)?;
            }
        }
        self.flush_file(file, false).await?;
        if first_full < last_full {
            for _ in 0..16 {
                let map = self.meta.map_all(file.ino).await?;
                let swaps: Vec<BlockSwap> = map
                    .iter()
                    .filter(|(&i, _)| (first_full..last_full).contains(&i))
                    .map(|(&idx, &old)| BlockSwap {
                        idx,
                        old,
                        new: 0,
                        new_len: 0,
                    })
                    .collect();
                file.state().forget_map(false);
                if swaps.is_empty() {
                    break;
                }
                let (_, lost, _) = self
                    .meta
                    .commit(
                        file.ino,
                        Some(Timestamp::now()),
                        0,
                        &swaps,
                        NewBlocks::default(),
                        None,
                    )
                    .await?;
                self.cache.forget_attr(file.ino);
                if lost.is_empty() {
                    break;
                }
            }
        }
        Ok(())
    }

    /// SEEK_DATA and SEEK_HOLE.
    pub async fn lseek(&self, fh: u64, offset: i64, whence: i32) -> Result<i64, FsError> {
        let file = self.file(fh)?;
        if whence != libc::SEEK_DATA && whence != libc::SEEK_HOLE {
            return Err(FsError::Invalid);
        }
        self.flush_file(&file, false).await?;
        let size = self.getattr(file.ino).await?.size;
        let offset = u64::try_from(offset).map_err(|_| FsError::NoSuchOffset)?;
        if offset >= size {
            return Err(FsError::NoSuchOffset);
        }
        let map = self.meta.map_all(file.ino).await?;
        let stored = |idx: u64| map.get(&idx).is_some_and(|&id| id != 0);
        let found = seek(offset, size, u64::from(self.block_size), whence, stored);
        found.map(|o| o as i64).ok_or(FsError::NoSuchOffset)
    }

    /// Copies bytes between two open files inside redisfs.
    pub async fn copy_range(
        self: &Arc<Self>,
        fh_in: u64,
        offset_in: u64,
        fh_out: u64,
        offset_out: u64,
        len: u64,
    ) -> Result<u32, FsError> {
        self.writable()?;
        let (src, dst) = (self.file(fh_in)?, self.file(fh_out)?);
        // The reply carries a 32-bit count; the kernel asks again for the rest.
        let len = len.min(u64::from(u32::MAX) & !(COPY_CHUNK - 1));
        let mut done = 0u64;
        while done < len {
            let want = (len - done).min(COPY_CHUNK) as u32;
            let data = self.read_file(&src, offset_in + done, want).await?;
            if data.is_empty() {
                break;
            }
            // No background stores here: the copy waits for what it buffered.
            match self.buffer_write(&dst, offset_out + done, &data, false)? {
                Backlog::Fine => {}
                Backlog::StoreAll => self.flush_file(&dst, false).await?,
                Backlog::StoreSoon | Backlog::StoreFull => self.flush_file(&dst, true).await?,
            }
            done += data.len() as u64;
        }
        Ok(done as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BS: u64 = 65_472;

    fn seek_in(map: &[bool], size: u64, offset: u64, whence: i32) -> Option<u64> {
        seek(offset, size, BS, whence, |i| {
            map.get(i as usize) == Some(&true)
        })
    }

    #[test]
    fn holes_are_reported_between_page_multiples_inside_them() {
        // Data, hole, hole, data: the hole is [65,472, 196,416), reported [65,536, 196,608).
        let map = [true, false, false, true];
        let size = 4 * BS;
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_HOLE), Some(65_536));
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_DATA), Some(0));
        assert_eq!(seek_in(&map, size, 65_500, libc::SEEK_DATA), Some(65_500));
        assert_eq!(seek_in(&map, size, 65_536, libc::SEEK_DATA), Some(192_512));
        assert_eq!(seek_in(&map, size, 100_000, libc::SEEK_HOLE), Some(100_000));
        assert_eq!(seek_in(&map, size, 193_000, libc::SEEK_HOLE), Some(size));
        assert_eq!(seek_in(&map, size, 193_000, libc::SEEK_DATA), Some(193_000));
    }

    #[test]
    fn the_end_of_the_file_is_a_hole_and_has_no_data_after_it() {
        let map = [true, false];
        let size = 2 * BS;
        assert_eq!(seek_in(&map, size, 0, libc::SEEK_HOLE), Some(65_536));
        assert_eq!(seek_in(&map, size, 70_000, libc::SEEK_DATA), None);
        assert_eq!(seek_in(&[true], BS, 10, libc::SEEK_HOLE), Some(BS));
        assert_eq!(seek_in(&[true], BS, 10, libc::SEEK_DATA), Some(10));
        assert_eq!(seek_in(&[], 10_000, 0, libc::SEEK_DATA), None);
        assert_eq!(seek_in(&[], 10_000, 5, libc::SEEK_HOLE), Some(5));
    }
}
