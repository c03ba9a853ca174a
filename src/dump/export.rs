//! Reading a filesystem out of Redis as dump records, directory by directory.
//!
//! Memory stays bounded by the largest directory and the deepest path, whatever the size of
//! the filesystem: blocks stream through in small pipelined batches, and only inodes with
//! several links are remembered (to write them once).

use std::collections::HashSet;

use tokio::sync::mpsc;

use super::records::{time, Bytes, ContentHash, Data, EntryRecord, FileEnd, Inode, Record};
use crate::attr::{Attr, FileKind};
use crate::codec;
use crate::error::Error;
use crate::meta::parse_entry;
use crate::store::Store;
use crate::tool::Progress;

/// Blocks fetched per round trip.
const BLOCK_BATCH: usize = 16;
/// Entries whose inodes are fetched per round trip.
const ENTRY_BATCH: usize = 256;

/// Hash fields and values as Redis returns them.
type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// What an export read.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ExportStats {
    /// Inodes written (each once, however many links it has).
    pub inodes: u64,
    /// Directory entries written.
    pub entries: u64,
    /// Bytes of file data written (holes not counted).
    pub data_bytes: u64,
}

/// Streams the filesystem of `store` into `sink`, root first.
pub async fn export(
    store: &Store,
    block_size: u32,
    sink: &mpsc::Sender<Record>,
    progress: &Progress,
) -> Result<ExportStats, Error> {
    // Data is what takes the time; its size is at most the blocks stored times the block size
    // (less for partial blocks and holes: the total then grows no further than the bytes met).
    let blocks = crate::tool::counter(store, "blocks").await;
    progress.set_total_bytes(blocks * u64::from(block_size));
    let mut export = Exporter {
        store,
        block_size,
        sink,
        progress,
        multiply_linked: HashSet::new(),
        stats: ExportStats::default(),
    };
    let root = export
        .records(&[1])
        .await?
        .pop()
        .flatten()
        .ok_or_else(|| Error::CorruptKey {
            key: store.keys.inode(1).0,
            reason: "the root directory (inode 1) is missing; run redisfs-fsck --repair".into(),
        })?;
    export.inode(&root).await?;
    let mut directories = vec![1u64];
    while let Some(dir) = directories.pop() {
        export.directory(dir, &mut directories).await?;
    }
    Ok(export.stats)
}

struct Exporter<'a> {
    store: &'a Store,
    block_size: u32,
    sink: &'a mpsc::Sender<Record>,
    progress: &'a Progress,
    multiply_linked: HashSet<u64>,
    stats: ExportStats,
}

impl Exporter<'_> {
    async fn emit(&mut self, record: Record) -> Result<(), Error> {
        self.sink
            .send(record)
            .await
            .map_err(|_| Error::WriterStopped)
    }

    /// The records of `inos`, in order; `None` for a missing one.
    async fn records(&self, inos: &[u64]) -> Result<Vec<Option<Attr>>, Error> {
        let mut pipe = redis::pipe();
        for &ino in inos {
            let (key, field) = self.store.keys.inode(ino);
            pipe.cmd("HGET").arg(key).arg(field);
        }
        let raw: Vec<Option<Vec<u8>>> = self
            .store
            .pipe(&pipe)
            .await
            .map_err(self.store.failed("reading inodes"))?;
        inos.iter()
            .zip(raw)
            .map(|(&ino, raw)| match raw {
                None => Ok(None),
                Some(raw) => Attr::decode(ino, &raw)
                    .map(Some)
                    .ok_or_else(|| Error::CorruptKey {
                        key: self.store.keys.inode(ino).0,
                        reason: format!("the record of inode {ino} does not decode"),
                    }),
            })
            .collect()
    }

    /// Writes one directory's entries and, the first time each is met, their inodes; queues
    /// subdirectories.
    async fn directory(&mut self, dir: u64, queue: &mut Vec<u64>) -> Result<(), Error> {
        let key = self.store.keys.dir(dir);
        let mut raw: Pairs = self
            .store
            .cmd(redis::cmd("HGETALL").arg(&key))
            .await
            .map_err(self.store.failed("reading a directory"))?;
        raw.sort();
        for chunk in raw.chunks(ENTRY_BATCH) {
            let mut children = Vec::with_capacity(chunk.len());
            for (name, value) in chunk {
                let (_, ino) = parse_entry(value).ok_or_else(|| Error::CorruptKey {
                    key: key.clone(),
                    reason: format!("entry '{}' does not decode", String::from_utf8_lossy(name)),
                })?;
                children.push(ino);
            }
            let attrs = self.records(&children).await?;
            for ((name, _), (ino, attr)) in chunk.iter().zip(children.into_iter().zip(attrs)) {
                let attr = attr.ok_or_else(|| Error::CorruptKey {
                    key: key.clone(),
                    reason: format!(
                        "entry '{}' names inode {ino}, which is missing; run redisfs-fsck --repair",
                        String::from_utf8_lossy(name)
                    ),
                })?;
                self.emit(Record::Entry(EntryRecord {
                    parent: dir,
                    name: Bytes(name.clone()),
                    ino,
                    kind: attr.kind().letter(),
                }))
                .await?;
                self.stats.entries += 1;
                if attr.kind() != FileKind::Dir
                    && attr.nlink > 1
                    && !self.multiply_linked.insert(ino)
                {
                    continue;
                }
                self.inode(&attr).await?;
                match attr.kind() {
                    FileKind::Dir => queue.push(ino),
                    FileKind::File => self.file_data(&attr).await?,
                    _ => {}
                }
            }
        }
        Ok(())
    }

    async fn inode(&mut self, attr: &Attr) -> Result<(), Error> {
        let keys = &self.store.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(keys.xattrs(attr.ino));
        pipe.cmd("GET").arg(keys.symlink(attr.ino));
        let (mut xattrs, target): (Pairs, Option<Vec<u8>>) = self
            .store
            .pipe(&pipe)
            .await
            .map_err(self.store.failed("reading attributes"))?;
        xattrs.sort();
        if attr.kind() == FileKind::Symlink && target.is_none() {
            return Err(Error::CorruptKey {
                key: keys.symlink(attr.ino),
                reason: format!(
                    "symlink inode {} has no target; run redisfs-fsck --repair",
                    attr.ino
                ),
            });
        }
        self.stats.inodes += 1;
        self.emit(Record::Inode(Inode {
            ino: attr.ino,
            mode: attr.mode,
            nlink: attr.nlink,
            uid: attr.uid,
            gid: attr.gid,
            size: attr.size,
            atime: time(attr.atime),
            mtime: time(attr.mtime),
            ctime: time(attr.ctime),
            rdev: attr.rdev,
            target: target.map(Bytes),
            xattrs: xattrs
                .into_iter()
                .map(|(n, v)| (Bytes(n), Bytes(v)))
                .collect(),
        }))
        .await
    }

    /// Writes a file's blocks (within its size) and its content checksum.
    async fn file_data(&mut self, attr: &Attr) -> Result<(), Error> {
        let map_key = self.store.keys.map(attr.ino);
        let map: Vec<(u64, u64)> = self
            .store
            .cmd(redis::cmd("HGETALL").arg(&map_key))
            .await
            .map_err(self.store.failed("reading a block map"))?;
        let bs = u64::from(self.block_size);
        let blocks_in_size = attr.size.div_ceil(bs);
        let mut map: Vec<(u64, u64)> = map
            .into_iter()
            .filter(|(i, _)| *i < blocks_in_size)
            .collect();
        map.sort_unstable();
        let mut hash = ContentHash::default();
        for batch in map.chunks(BLOCK_BATCH) {
            let mut pipe = redis::pipe();
            for (_, id) in batch {
                pipe.cmd("GET").arg(self.store.keys.block(*id));
            }
            let values: Vec<Option<Vec<u8>>> = self
                .store
                .pipe(&pipe)
                .await
                .map_err(self.store.failed("reading blocks"))?;
            for (&(index, id), value) in batch.iter().zip(values) {
                let block_key = self.store.keys.block(id);
                let stored = value.ok_or_else(|| Error::CorruptKey {
                    key: map_key.clone(),
                    reason: format!(
                        "block {index} is {block_key}, which is missing; run redisfs-fsck --repair"
                    ),
                })?;
                let mut bytes = codec::decode(stored, self.block_size as usize).map_err(|e| {
                    Error::CorruptKey {
                        key: block_key,
                        reason: format!("{e}; run redisfs-fsck --verify-data --repair"),
                    }
                })?;
                // The last block ends at the file's size; any block's trailing zeros need no room.
                let end = (attr.size - index * bs).min(bs) as usize;
                bytes.truncate(end);
                let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                bytes.truncate(used);
                hash.add(index, &bytes);
                self.stats.data_bytes += bytes.len() as u64;
                self.progress.advance(bytes.len() as u64);
                self.emit(Record::Data(Data {
                    ino: attr.ino,
                    index,
                    bytes: Bytes(bytes.into()),
                }))
                .await?;
            }
        }
        self.emit(Record::FileEnd(FileEnd {
            ino: attr.ino,
            sha256: Bytes(hash.finish()),
        }))
        .await
    }
}
