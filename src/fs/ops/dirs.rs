//! Directory handles: a listing taken from the first read of a handle on, served page by page.
//!
//! Offsets are positions in that listing, so a directory changing during a scan never makes
//! readdir skip or repeat an entry that existed throughout. The listing is not taken at
//! opendir, because many opens of a directory never read it (`rm -rf` opens each one again
//! only to remove its entries through the descriptor). A big directory's listing comes in
//! pieces, and the first pages are answered as soon as the first piece is in, while the rest
//! is read: each piece's entries take the next positions, so a position once given never
//! changes. Its entries' attributes (readdirplus) are read a chunk at a time, a few chunks
//! ahead of the page the kernel asks for, so that the kernel takes in one chunk's pages while
//! Redis answers for the next ones.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::meta::{DirEntry, Listing, Stored, UNREADABLE_ENTRY};

use crate::fs::{lock, Core};

/// Entries whose attributes are read in one round trip: a chunk of the listing.
const RECORDS_PER_CALL: usize = 2048;
/// Chunks read ahead of the one the kernel is in, so that Redis answers for them while the
/// kernel takes in a chunk's pages (8 lists 100,000 files ~4% faster than 3 at a 1 ms round
/// trip; 1.6 MB of attributes at most per handle).
const CHUNKS_AHEAD: usize = 8;
/// Entries of a listing up to which it makes its directory known whole (see
/// `MetaCache::listed_whole`): past that, the names would be remembered twice over, once
/// here and again as readdirplus reads their records, for directories rarely created in.
const KNOWN_LISTING_LIMIT: usize = 10_000;
/// Entries looked at for one readdirplus reply (the kernel's buffer holds up to ~200).
const PAGE_WINDOW: usize = 256;

/// The attributes of one chunk of a listing.
#[derive(Debug)]
enum Chunk {
    /// Not read, or let go once the reader went past it.
    Unread,
    /// A task is reading it.
    Reading,
    /// Read in cache epoch `epoch`.
    Read { attrs: Vec<Stored>, epoch: u64 },
    /// Its read failed: the readdirplus that needs it gets the error, and the next reads again.
    Failed(FsError),
}

/// How far a handle's listing is.
#[derive(Debug)]
enum Progress {
    /// Not begun: the handle was never read, or the beginning failed (the next read begins
    /// again).
    NotBegun,
    /// Being taken: its beginning (one round trip), then a big directory's pieces.
    Taking,
    /// Every entry is in.
    Whole,
    /// A piece's read failed: the read that finds this gets the error, and the next one
    /// resumes, reading the pieces again from the first (the names listed already are kept
    /// once, where they are).
    Failed(FsError),
}

/// What a reader waiting for a listing does next.
enum Next {
    Wait,
    Begin,
    /// Resumes the listing, and reports the failure that stopped it.
    Resume(FsError),
}

/// Tells whether a name is among a listing's entries already (HSCAN may return an entry
/// twice), in less memory than a set of the names: their hashes, each with the position of
/// the first entry that has it.
#[derive(Default)]
struct ListedNames {
    positions: HashMap<u64, usize>,
    hasher: foldhash::fast::RandomState,
}

impl ListedNames {
    /// Whether `name` is among `entries` already; if not, it is noted as the entry about to
    /// be appended (at position `entries.len()`).
    fn listed_before(&mut self, entries: &[DirEntry], name: &[u8]) -> bool {
        match self.positions.entry(self.hasher.hash_one(name)) {
            Entry::Vacant(slot) => {
                slot.insert(entries.len());
                false
            }
            // Two names with one hash (about 2^-64 a pair) are told apart by a look through
            // the entries.
            Entry::Occupied(first) => {
                entries[*first.get()].name == name || entries.iter().any(|e| e.name == name)
            }
        }
    }
}

/// An open directory.
pub struct DirHandle {
    /// The directory.
    pub ino: u64,
    /// `.`, `..` and the entries listed so far, in a fixed order: a position, once given,
    /// names the same entry for as long as the handle is open.
    pub entries: Vec<DirEntry>,
    /// How far the listing is.
    progress: Progress,
    /// The names among `entries` while a big directory's pieces come in.
    listed: ListedNames,
    /// The cache epoch the listing began in.
    began_in: u64,
    /// Attributes of the entries, by chunk (see [`Chunk`]); none until the first readdirplus.
    chunks: Vec<Chunk>,
    /// Woken when a chunk's read ends, and when the listing grows, ends or fails.
    changed: Arc<Notify>,
    /// The directory's own attributes when it was opened: what `fstat` answers (with no link)
    /// once a removal or a rename over it deleted it.
    opened_as: Attr,
    /// The failovers known to have lost changes this mount had answered (see
    /// `Store::changes_lost`) when `fsyncdir` on this handle last said so, or when it was
    /// opened.
    losses_told: u64,
}

impl DirHandle {
    /// Appends the entries of a piece of the listing that are not in it already.
    fn add_piece(&mut self, piece: Vec<DirEntry>) {
        for entry in piece {
            if !self.listed.listed_before(&self.entries, &entry.name) {
                self.entries.push(entry);
            }
        }
    }

    /// Wakes whoever waits for this handle's listing or chunks.
    fn tell_changed(&self) {
        self.changed.notify_waiters();
    }
}

/// A page of a readdirplus reply: each entry with its position and attributes.
pub type DirPage = Vec<(usize, DirEntry, Stored)>;

/// Where the page a reader asks for stands.
enum PageRead {
    /// Ready: the page, and the epoch its attributes were read in.
    Page(DirPage, u64),
    /// Past the end of the listing.
    End,
    /// Its entries are not all listed, or their attributes not read, yet.
    NotYet,
    /// Reading its chunk's attributes failed (the next read tries again).
    Failed(FsError),
}

/// What beginning a listing took in: `.`, `..` and, unless the directory is big, the entries,
/// with the first chunk's attributes if they came along (and the epoch they were read in).
struct Begun {
    entries: Vec<DirEntry>,
    first_chunk: Option<(Vec<Stored>, u64)>,
    /// The cache epoch the listing began in.
    epoch: u64,
    /// Whether the entries follow in pieces (a big directory).
    in_pieces: bool,
}

/// A leased directory's last listing: the directory, the cache epoch it was taken in, the
/// entries.
type LastListing = (u64, u64, Vec<DirEntry>);

/// The open directories of a mount.
#[derive(Default)]
pub struct DirHandles {
    handles: Mutex<HashMap<u64, Arc<Mutex<DirHandle>>>>,
    next_handle: AtomicU64,
    /// The last listing taken of a leased directory (see [`Core::recent_listing`]).
    last_listing: Mutex<Option<LastListing>>,
}

impl DirHandles {
    /// A handle on directory `ino`, whose attributes are `attr`.
    fn open(&self, ino: u64, attr: Attr, losses: u64) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed) + 1;
        let handle = DirHandle {
            ino,
            entries: Vec::new(),
            progress: Progress::NotBegun,
            listed: ListedNames::default(),
            began_in: 0,
            chunks: Vec::new(),
            changed: Arc::default(),
            opened_as: attr,
            losses_told: losses,
        };
        lock(&self.handles).insert(fh, Arc::new(Mutex::new(handle)));
        fh
    }

    /// The handle `fh`.
    fn get(&self, fh: u64) -> Result<Arc<Mutex<DirHandle>>, FsError> {
        lock(&self.handles)
            .get(&fh)
            .cloned()
            .ok_or(FsError::BadHandle)
    }

    /// Attributes of a directory open here that is no longer in Redis (removed, or replaced by
    /// a rename): as it was when opened, with no link left, as a local filesystem answers.
    pub fn removed(&self, ino: u64) -> Option<Attr> {
        lock(&self.handles)
            .values()
            .find_map(|h| {
                let h = lock(h);
                (h.ino == ino).then_some(h.opened_as)
            })
            .map(|attr| Attr { nlink: 0, ..attr })
    }
}

impl Core {
    /// Opens directory `ino`, whose attributes are `attr` (its listing is taken when first
    /// read).
    pub fn opendir(&self, ino: u64, attr: Attr) -> u64 {
        self.dirs.open(ino, attr, self.meta.store.losses())
    }

    /// Whether `fsyncdir` on handle `fh` is to report losses up to `losses`: each handle is
    /// told once of changes a failover lost since it was opened or last told (a directory's
    /// lost entries are not told apart from the rest of the mount's lost changes).
    pub(in crate::fs) fn losses_untold(&self, fh: u64, losses: u64) -> Result<bool, FsError> {
        let handle = self.dirs.get(fh)?;
        let mut handle = lock(&handle);
        let untold = losses > handle.losses_told;
        handle.losses_told = losses;
        Ok(untold)
    }

    /// The handle of an open directory.
    pub fn dir_handle(&self, fh: u64) -> Result<Arc<Mutex<DirHandle>>, FsError> {
        self.dirs.get(fh)
    }

    /// The handle `fh`, once its listing has an entry at position `from` or is whole (it is
    /// begun, or resumed, as needed): for readdir.
    pub async fn dir_listed_to(
        self: &Arc<Self>,
        fh: u64,
        from: usize,
    ) -> Result<Arc<Mutex<DirHandle>>, FsError> {
        let handle = self.dir_handle(fh)?;
        self.listed_to(&handle, from + 1, false).await?;
        Ok(handle)
    }

    /// Waits until the listing of `handle` has `upto` entries or is whole; begins it if it is
    /// not (for readdirplus, `plus`, a small directory's comes with its entries' attributes);
    /// resumes it after a failure, which it reports.
    async fn listed_to(
        self: &Arc<Self>,
        handle: &Arc<Mutex<DirHandle>>,
        upto: usize,
        plus: bool,
    ) -> Result<(), FsError> {
        let changed = lock(handle).changed.clone();
        loop {
            let grew = changed.notified();
            tokio::pin!(grew);
            grew.as_mut().enable();
            let next = {
                let mut h = lock(handle);
                match h.progress {
                    Progress::Whole => return Ok(()),
                    // (A failure after them is told to a read that needs more.)
                    Progress::Taking | Progress::Failed(_) if h.entries.len() >= upto => {
                        return Ok(())
                    }
                    Progress::Taking => Next::Wait,
                    Progress::NotBegun => {
                        h.progress = Progress::Taking;
                        Next::Begin
                    }
                    Progress::Failed(e) => {
                        h.progress = Progress::Taking;
                        Next::Resume(e)
                    }
                }
            };
            match next {
                Next::Wait => grew.await,
                Next::Begin => self.begin_listing(handle, plus).await?,
                Next::Resume(failure) => {
                    self.read_pieces(handle);
                    return Err(failure);
                }
            }
        }
    }

    /// Takes the beginning of the listing of `handle` (see [`Begun`]); a big directory's
    /// pieces follow in a task. If it fails, the next read begins again.
    async fn begin_listing(
        self: &Arc<Self>,
        handle: &Arc<Mutex<DirHandle>>,
        plus: bool,
    ) -> Result<(), FsError> {
        let ino = lock(handle).ino;
        let begun = match self.recent_listing(ino) {
            Some((entries, epoch)) => Ok(Begun {
                entries,
                first_chunk: None,
                epoch,
                in_pieces: false,
            }),
            None => self.take_listing(ino, plus).await,
        };
        let mut h = lock(handle);
        let begun = match begun {
            Ok(begun) => begun,
            Err(e) => {
                h.progress = Progress::NotBegun;
                h.tell_changed();
                return Err(e);
            }
        };
        if let Some((attrs, epoch)) = begun.first_chunk {
            h.chunks = unread_chunks(begun.entries.len());
            h.chunks[0] = Chunk::Read { attrs, epoch };
        }
        h.entries = begun.entries;
        h.began_in = begun.epoch;
        if begun.in_pieces {
            self.read_pieces(handle);
        } else {
            h.progress = Progress::Whole;
        }
        h.tell_changed();
        Ok(())
    }

    /// The last listing of `ino`, if it is a leased directory and nothing this mount knows
    /// of changed since it was taken but files' data: every change there is this mount's own,
    /// and every change it makes or learns of moves the cache's epoch. (`rm -rf` reads each
    /// directory through two handles, one right after the other, while the stores of files
    /// just copied still land.)
    fn recent_listing(&self, ino: u64) -> Option<(Vec<DirEntry>, u64)> {
        let last = lock(&self.dirs.last_listing);
        let (dir, epoch, entries) = last.as_ref()?;
        (*dir == ino
            && self.cache.only_data_changed_since(*epoch)
            && self.meta.delegation.holds(ino))
        .then(|| (entries.clone(), *epoch))
    }

    /// Keeps the listing of `ino` taken whole in `epoch`, if it is a leased directory (see
    /// [`Core::recent_listing`]).
    fn keep_listing(&self, ino: u64, epoch: u64, entries: &[DirEntry]) {
        if self.meta.delegation.holds(ino) {
            *lock(&self.dirs.last_listing) = Some((ino, epoch, entries.to_vec()));
        }
    }

    /// Begins the listing of `ino` from Redis (see [`Begun`]).
    async fn take_listing(&self, ino: u64, plus: bool) -> Result<Begun, FsError> {
        let epoch = self.cache.epoch();
        let names_epoch = self.cache.names_epoch();
        let records_up_to = if plus { RECORDS_PER_CALL - 2 } else { 0 };
        let Listing {
            attr,
            entries: list,
            records,
        } = self
            .meta
            .read_dir(ino, records_up_to, self.settings.acl)
            .await?;
        let mut entries = vec![
            DirEntry {
                name: b".".to_vec(),
                kind: FileKind::Dir,
                ino,
            },
            DirEntry {
                name: b"..".to_vec(),
                kind: FileKind::Dir,
                ino: attr.parent,
            },
        ];
        let Some(mut list) = list else {
            return Ok(Begun {
                entries,
                first_chunk: None,
                epoch,
                in_pieces: true,
            });
        };
        // Every name is known now: a create here that looks up a new name needs no trip.
        if list.len() <= KNOWN_LISTING_LIMIT {
            let named: Vec<(&[u8], u64)> =
                list.iter().map(|e| (e.name.as_slice(), e.ino)).collect();
            self.cache.listed_whole(names_epoch, ino, &named);
        }
        // In inode order: records are read a bucket of neighbouring inodes at a time.
        list.sort_unstable_by_key(|e| e.ino);
        entries.extend(list);
        self.keep_listing(ino, epoch, &entries);
        let first_chunk = records.map(|(named, has_xattrs)| {
            let inos: Vec<u64> = entries[2..].iter().map(|e| e.ino).collect();
            self.note_without_xattrs(&inos, has_xattrs, epoch);
            (self.chunk_attrs(ino, &entries, 2, named, epoch), epoch)
        });
        Ok(Begun {
            entries,
            first_chunk,
            epoch,
            in_pieces: false,
        })
    }

    /// Reads the pieces of the big directory of `handle` in a task, from the first, adding
    /// each to the listing as it comes, until the last, a failure, or the handle's closing.
    fn read_pieces(self: &Arc<Self>, handle: &Arc<Mutex<DirHandle>>) {
        let (core, handle) = (self.clone(), handle.clone());
        // (Tracked: the mount waits for it before it stops.)
        self.tasks.started.spawn(async move {
            let ino = lock(&handle).ino;
            let mut cursor = 0;
            // (Closed: the task holds the last reference.)
            while Arc::strong_count(&handle) > 1 {
                // The first piece is small, so that the first page waits for little more than
                // a chunk (HSCAN's count is of buckets visited, not entries: a table about
                // half full returns about half as many).
                let size = if cursor == 0 {
                    2 * RECORDS_PER_CALL
                } else {
                    usize::MAX
                };
                let piece = core.meta.scan_dir(ino, cursor, size).await;
                let mut h = lock(&handle);
                match piece {
                    Err(e) => h.progress = Progress::Failed(e),
                    Ok((next, mut piece)) => {
                        // In inode order within the piece: records are read a bucket of
                        // neighbouring inodes at a time.
                        piece.sort_unstable_by_key(|e| e.ino);
                        h.add_piece(piece);
                        cursor = next;
                        if cursor == 0 {
                            h.progress = Progress::Whole;
                            h.listed = ListedNames::default();
                            core.keep_listing(ino, h.began_in, &h.entries);
                        }
                    }
                }
                h.tell_changed();
                if !matches!(h.progress, Progress::Taking) {
                    return;
                }
            }
        });
    }

    /// Reads the attributes of chunk `chunk` of the listing of handle `handle`, remembering
    /// them for the look-ups and stats that follow a listing (`ls -l` stats every entry).
    async fn read_chunk(
        &self,
        handle: &Mutex<DirHandle>,
        chunk: usize,
    ) -> Result<(Vec<Stored>, u64), FsError> {
        let first = chunk * RECORDS_PER_CALL;
        let (dir, inos): (u64, Vec<u64>) = {
            let h = lock(handle);
            let end = h.entries.len().min(first + RECORDS_PER_CALL);
            (h.ino, h.entries[first..end].iter().map(|e| e.ino).collect())
        };
        let epoch = self.cache.epoch();
        // `.` and `..` need no trip (see `chunk_attrs`): `..` is often the directory whose
        // unlinks are waiting to be sent, which reading its record would send.
        let dots = 2usize.saturating_sub(first).min(inos.len());
        let named = &inos[dots..];
        // Entries this mount knows already (it created them, or stat'ed them) cost no trip.
        let known: Option<Vec<Stored>> = named
            .iter()
            .map(|&ino| self.getattr_cached(ino).map(Stored::Attr))
            .collect();
        let named = match known {
            Some(known) => known,
            None => self.read_records(named, epoch).await?,
        };
        let h = lock(handle);
        Ok((
            self.chunk_attrs(dir, &h.entries[first..], dots, named, epoch),
            epoch,
        ))
    }

    /// The attributes of a chunk of directory `dir`'s listing beginning at `entries[0]`:
    /// those of the `.` and `..` it begins with (`dots` of them), then `named`, read in `epoch`
    /// for the entries after, which are remembered under their names (`ls -l` stats every
    /// entry next).
    fn chunk_attrs(
        &self,
        dir: u64,
        entries: &[DirEntry],
        dots: usize,
        named: Vec<Stored>,
        epoch: u64,
    ) -> Vec<Stored> {
        // The kernel takes only the inode number and type of `.` and `..` from a readdirplus
        // reply (it does not link them), so theirs need no trip.
        let mut attrs: Vec<Stored> = entries[..dots]
            .iter()
            .map(|e| {
                Stored::Attr(
                    self.getattr_cached(e.ino)
                        .unwrap_or_else(|| stand_in(e.ino, FileKind::Dir)),
                )
            })
            .collect();
        for (entry, stored) in entries[dots..].iter().zip(named) {
            // Redis's record of an entry the deferred log still changes (a new directory's
            // count of links and times, as its first children are made) is older than what
            // this mount knows of it.
            let stored = match stored {
                Stored::Attr(_) if self.meta.delegation.touches(entry.ino) => {
                    self.getattr_cached(entry.ino).map_or(stored, Stored::Attr)
                }
                Stored::Attr(attr) => {
                    self.cache.remember(epoch, Some((dir, &entry.name)), attr);
                    stored
                }
                other => other,
            };
            attrs.push(stored);
        }
        attrs
    }

    /// Starts reading chunk `chunk` of handle `handle` in a task.
    fn start_chunk_read(self: &Arc<Self>, handle: &Arc<Mutex<DirHandle>>, chunk: usize) {
        let (core, handle) = (self.clone(), handle.clone());
        // (Tracked: the mount waits for it before it stops.)
        self.tasks.started.spawn(async move {
            let read = core.read_chunk(&handle, chunk).await;
            let mut h = lock(&handle);
            h.chunks[chunk] = match read {
                Ok((attrs, epoch)) => Chunk::Read { attrs, epoch },
                Err(e) => Chunk::Failed(e),
            };
            h.tell_changed();
        });
    }

    /// Up to [`PAGE_WINDOW`] entries of handle `handle` from `from` on, within one chunk, with
    /// their attributes and the epoch they were read in; `None` past the end. Waits for the
    /// chunk's entries to be listed and its attributes read.
    async fn chunk_page(
        self: &Arc<Self>,
        handle: &Arc<Mutex<DirHandle>>,
        from: usize,
    ) -> Result<Option<(DirPage, u64)>, FsError> {
        let chunk = from / RECORDS_PER_CALL;
        // A chunk's attributes are read once all its entries are listed.
        self.listed_to(handle, (chunk + 1) * RECORDS_PER_CALL, true)
            .await?;
        let changed = lock(handle).changed.clone();
        loop {
            let chunk_read = changed.notified();
            tokio::pin!(chunk_read);
            chunk_read.as_mut().enable();
            match self.page_if_read(handle, from) {
                PageRead::Page(page, epoch) => return Ok(Some((page, epoch))),
                PageRead::End => return Ok(None),
                PageRead::Failed(e) => return Err(e),
                PageRead::NotYet => chunk_read.await,
            }
        }
    }

    /// The page of handle `handle` from `from` on (see [`Core::chunk_page`]) if its chunk is
    /// listed and read. Starts reading that chunk and the next ones if they are not read or
    /// being read, and lets go of those the reader left behind.
    fn page_if_read(self: &Arc<Self>, handle: &Arc<Mutex<DirHandle>>, from: usize) -> PageRead {
        let chunk = from / RECORDS_PER_CALL;
        let mut h = lock(handle);
        let listed = h.entries.len();
        let whole = matches!(h.progress, Progress::Whole);
        if from >= listed {
            return if whole {
                PageRead::End
            } else {
                PageRead::NotYet
            };
        }
        h.chunks
            .resize_with(listed.div_ceil(RECORDS_PER_CALL), || Chunk::Unread);
        // Chunks whose entries are all listed.
        let complete = if whole {
            h.chunks.len()
        } else {
            listed / RECORDS_PER_CALL
        };
        if chunk >= complete {
            return PageRead::NotYet;
        }
        for c in chunk..(chunk + 1 + CHUNKS_AHEAD).min(complete) {
            if matches!(h.chunks[c], Chunk::Unread) {
                h.chunks[c] = Chunk::Reading;
                self.start_chunk_read(handle, c);
            }
        }
        // Memory stays bounded however big the directory: a reader going back (seekdir,
        // rewinddir) has those read again.
        for passed in h.chunks.iter_mut().take(chunk.saturating_sub(1)) {
            if matches!(passed, Chunk::Read { .. }) {
                *passed = Chunk::Unread;
            }
        }
        match &h.chunks[chunk] {
            Chunk::Read { attrs, epoch } => {
                let first = chunk * RECORDS_PER_CALL;
                let page = (from..listed.min(from + PAGE_WINDOW))
                    .take_while(|&i| i - first < attrs.len())
                    .map(|i| (i, h.entries[i].clone(), attrs[i - first]))
                    .collect();
                PageRead::Page(page, *epoch)
            }
            Chunk::Failed(e) => {
                let e = *e;
                h.chunks[chunk] = Chunk::Unread;
                PageRead::Failed(e)
            }
            Chunk::Unread | Chunk::Reading => PageRead::NotYet,
        }
    }

    /// Records of `inos`; the stand-ins for undecodable entries are unreadable as they are.
    /// Where the filesystem keeps ACLs, those without extended attributes are remembered as
    /// such (`ls -l` asks every entry for its ACL), unless they changed since `epoch`.
    async fn read_records(&self, inos: &[u64], epoch: u64) -> Result<Vec<Stored>, FsError> {
        let real: Vec<u64> = inos
            .iter()
            .copied()
            .filter(|&ino| ino < UNREADABLE_ENTRY)
            .collect();
        // Only where the filesystem keeps ACLs does `ls -l` ask every entry for an attribute.
        let (records, has_xattrs) = self.meta.listed(&real, self.settings.acl).await?;
        self.note_without_xattrs(&real, has_xattrs, epoch);
        let mut found = records.into_iter();
        Ok(inos
            .iter()
            .map(|&ino| {
                if ino < UNREADABLE_ENTRY {
                    found.next().unwrap_or(Stored::Missing)
                } else {
                    Stored::Corrupt
                }
            })
            .collect())
    }

    /// Remembers which of `inos`, read in `epoch`, have no extended attributes.
    fn note_without_xattrs(&self, inos: &[u64], has_xattrs: Vec<bool>, epoch: u64) {
        for (&ino, _) in inos.iter().zip(has_xattrs).filter(|(_, has)| !has) {
            self.cache.listed_without_xattrs(epoch, ino);
        }
    }

    /// The entries of a readdirplus reply from `offset` on (a window of them) whose inodes
    /// still exist, with their attributes: those the listing read, unless this mount changed
    /// or learned of a change to the inode since; then what it knows now (its own view of a
    /// file open here), or a fresh read. A later page must never take an older size to the
    /// kernel than it has: a file written and closed while `ls -l` ran once read back as
    /// empty. Empty only at the end of the listing (the kernel takes an empty reply as the
    /// end), however many entries vanished since it was read.
    pub async fn dir_page(self: &Arc<Self>, fh: u64, offset: usize) -> Result<DirPage, FsError> {
        let handle = self.dir_handle(fh)?;
        let mut from = offset;
        loop {
            let Some((mut page, epoch)) = self.chunk_page(&handle, from).await? else {
                return Ok(Vec::new());
            };
            let Some(&(last, _, _)) = page.last() else {
                return Ok(page);
            };
            let reread = self.bring_up_to_date_here(&mut page, epoch);
            if !reread.is_empty() {
                let inos: Vec<u64> = reread.iter().map(|&at| page[at].1.ino).collect();
                for (at, fresh) in reread.into_iter().zip(self.meta.records(&inos).await?) {
                    page[at].2 = fresh;
                }
            }
            page.retain(|(_, _, stored)| !matches!(stored, Stored::Missing));
            if !page.is_empty() {
                return Ok(page);
            }
            from = last + 1;
        }
    }

    /// [`Core::dir_page`] if it needs nothing from Redis: its chunk read, nothing in it to
    /// read again, and something left in it. (Most pages of a big listing are, and are
    /// answered without a task.)
    pub fn dir_page_now(
        self: &Arc<Self>,
        fh: u64,
        offset: usize,
    ) -> Option<Result<DirPage, FsError>> {
        let handle = self.dirs.get(fh).ok()?;
        let (mut page, epoch) = match self.page_if_read(&handle, offset) {
            PageRead::Page(page, epoch) => (page, epoch),
            // The read that needs a chunk whose read failed gets the error.
            PageRead::Failed(e) => return Some(Err(e)),
            PageRead::End | PageRead::NotYet => return None,
        };
        if !self.bring_up_to_date_here(&mut page, epoch).is_empty() {
            return None;
        }
        page.retain(|(_, _, stored)| !matches!(stored, Stored::Missing));
        (!page.is_empty()).then_some(Ok(page))
    }

    /// Replaces the attributes of `page` (read in `epoch`) that may be older than what this
    /// mount knows (see [`Core::dir_page`]) with what it knows now; returns the positions in
    /// the page of those to read again.
    fn bring_up_to_date_here(
        &self,
        page: &mut [(usize, DirEntry, Stored)],
        epoch: u64,
    ) -> Vec<usize> {
        let mut reread = Vec::new();
        for (at, (i, _, stored)) in page.iter_mut().enumerate() {
            let Stored::Attr(attr) = *stored else {
                continue;
            };
            if *i < 2 {
                continue;
            }
            if self.open.get(attr.ino).is_some() {
                *stored = Stored::Attr(self.current(attr, epoch));
            } else if !self.cache.unchanged_since(attr.ino, epoch) {
                match self.cache.attr(attr.ino) {
                    Some(now) => *stored = Stored::Attr(now),
                    None => reread.push(at),
                }
            }
        }
        reread
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        lock(&self.dirs.handles).remove(&fh);
    }
}

/// The chunks of a listing of `listed` entries, none read yet.
fn unread_chunks(listed: usize) -> Vec<Chunk> {
    (0..listed.div_ceil(RECORDS_PER_CALL))
        .map(|_| Chunk::Unread)
        .collect()
}

/// Attributes standing in for ones not read: for `.` or `..` in a readdirplus reply (of these
/// the kernel reads only the inode number and the type), or for an entry whose record does
/// not decode (sent with a zero timeout, so that the kernel asks again and gets EIO).
pub fn stand_in(ino: u64, kind: FileKind) -> Attr {
    Attr {
        ino,
        ..Attr::new(kind, 0o755, 0, 0, Timestamp::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str) -> DirEntry {
        DirEntry {
            name: name.as_bytes().to_vec(),
            kind: FileKind::File,
            ino: 7,
        }
    }

    /// A piece read twice over (HSCAN after its table grew) adds nothing new, and the
    /// positions of what was listed stay where they were.
    #[test]
    fn a_piece_read_again_adds_only_the_names_not_listed() {
        let mut names = ListedNames::default();
        let mut entries = vec![entry("."), entry("..")];
        for piece in [vec!["a", "b"], vec!["b", "c", "a"], vec!["d", "c"]] {
            for name in piece {
                if !names.listed_before(&entries, name.as_bytes()) {
                    entries.push(entry(name));
                }
            }
        }
        let listed: Vec<&[u8]> = entries.iter().map(|e| e.name.as_slice()).collect();
        assert_eq!(listed, [&b"."[..], b"..", b"a", b"b", b"c", b"d"]);
    }
}
