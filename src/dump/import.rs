//! Writing dump records into an empty prefix.
//!
//! The prefix is claimed first with a meta key whose state is `restoring`, which every mount
//! refuses; it becomes `ready` only in [`Importer::finish`], after the last record was checked.
//! Records are checked as they come (kinds, names, parents, block ranges, content checksums)
//! and written in bounded pipelines, so memory stays small whatever the dump's size.

use std::collections::{HashMap, HashSet};

use super::records::{
    bad_dump, timestamp, valid_name, ContentHash, Data, EntryRecord, FileEnd, Header, Inode, Record,
};
use crate::attr::{Attr, FileKind};
use crate::codec::Codec;
use crate::error::Error;
use crate::format::{self, FsConfig};
use crate::meta::counters::Counters;
use crate::store::Store;

/// Commands per pipeline before it is sent.
const PIPE_COMMANDS: usize = 512;
/// Bytes per pipeline before it is sent.
const PIPE_BYTES: usize = 4 << 20;

/// What a restore wrote.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ImportStats {
    /// Inodes restored.
    pub inodes: u64,
    /// Directory entries restored.
    pub entries: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Bytes of file data (holes not counted).
    pub data_bytes: u64,
}

/// Writes records into an empty filesystem prefix.
pub struct Importer<'a> {
    store: &'a Store,
    codec: Codec,
    block_size: u32,
    acl: bool,
    pipe: redis::Pipeline,
    pipe_commands: usize,
    pipe_bytes: usize,
    next_block: u64,
    max_ino: u64,
    /// The file whose blocks are arriving: its record (counting the blocks stored so far),
    /// and the checksum so far.
    file: Option<(Attr, ContentHash)>,
    /// The entry just read, whose inode may follow: (parent, inode).
    last_entry: Option<(u64, u64)>,
    directories: HashSet<u64>,
    /// Every inode written, so that an entry names one that exists (8 bytes per inode).
    inodes: HashSet<u64>,
    /// Directories that have their entry already.
    named_directories: HashSet<u64>,
    /// Inodes with several links: (links declared, entries seen).
    links: HashMap<u64, (u32, u32)>,
    stats: ImportStats,
    /// What the blocks written take in Redis.
    stored_bytes: u64,
    /// The regular files' sizes, summed.
    file_bytes: u64,
}

impl<'a> Importer<'a> {
    /// Claims the empty prefix of `store` for a restore of a dump with `header`, storing new
    /// blocks with `codec` (the dump's own when `None`).
    pub async fn start(
        store: &'a Store,
        header: &Header,
        codec: Option<Codec>,
    ) -> Result<Importer<'a>, Error> {
        if let Some(example) = crate::scan::any_key(store).await? {
            return Err(Error::Busy(format!(
                "prefix '{}' is not empty (it holds '{example}'); restore into an empty prefix",
                store.keys.prefix()
            )));
        }
        let codec = match codec {
            Some(c) => c,
            None => header
                .codec
                .parse()
                .map_err(|reason: String| bad_dump(&header.source, 1, 0, &reason))?,
        };
        format::mark_unfinished(store, "restoring").await?;
        // Block ids start where the clock puts them, past every id an earlier filesystem under
        // the prefix can have handed out, as a new filesystem's do (see `src/lua/format.lua`):
        // the first reservation on a prefix without a record of its issuers moves the counter.
        let first_block = (store.reserve(crate::store::Counter::Block, 1))
            .await
            .map_err(store.failed("reserving block ids"))?;
        Ok(Importer {
            store,
            codec,
            block_size: header.block_size,
            acl: header.acl,
            pipe: redis::pipe(),
            pipe_commands: 0,
            pipe_bytes: 0,
            next_block: first_block - 1,
            max_ino: 1,
            file: None,
            last_entry: None,
            directories: HashSet::new(),
            inodes: HashSet::new(),
            named_directories: HashSet::new(),
            links: HashMap::new(),
            stats: ImportStats::default(),
            stored_bytes: 0,
            file_bytes: 0,
        })
    }

    /// Checks and writes one record; `what` names its place in the input for errors.
    pub async fn add(&mut self, record: Record, what: &dyn Fn(&str) -> Error) -> Result<(), Error> {
        if self.file.is_some() && !matches!(record, Record::Data(_) | Record::FileEnd(_)) {
            return Err(what("a file's blocks are not followed by its end record"));
        }
        // An entry naming an inode not written yet must be followed by that inode.
        if let Some((_, ino)) = self.last_entry {
            let follows = matches!(&record, Record::Inode(i) if i.ino == ino);
            if !follows && !self.inodes.contains(&ino) {
                return Err(what(&format!(
                    "an entry names inode {ino}, which is not in the dump"
                )));
            }
        }
        match record {
            Record::Inode(inode) => self.inode(inode, what)?,
            Record::Entry(entry) => self.entry(entry, what)?,
            Record::Data(data) => self.data(data, what)?,
            Record::FileEnd(end) => self.file_end(end, what)?,
            Record::Header(_) | Record::Trailer(_) => return Err(what("unexpected record")),
        }
        if self.pipe_commands >= PIPE_COMMANDS || self.pipe_bytes >= PIPE_BYTES {
            self.send().await?;
        }
        Ok(())
    }

    fn queue(&mut self, cmd: &str, args: &[&[u8]]) {
        let c = self.pipe.cmd(cmd);
        for a in args {
            c.arg(*a);
        }
        c.ignore();
        self.pipe_commands += 1;
        self.pipe_bytes += args.iter().map(|a| a.len()).sum::<usize>();
    }

    async fn send(&mut self) -> Result<(), Error> {
        if self.pipe_commands > 0 {
            self.store
                .pipe::<()>(&self.pipe)
                .await
                .map_err(self.store.failed("writing the restored filesystem"))?;
        }
        self.pipe = redis::pipe();
        self.pipe_commands = 0;
        self.pipe_bytes = 0;
        Ok(())
    }

    fn inode(&mut self, inode: Inode, what: &dyn Fn(&str) -> Error) -> Result<(), Error> {
        let kind = FileKind::from_mode(inode.mode).ok_or_else(|| {
            what(&format!(
                "inode {} has an invalid mode {:o}",
                inode.ino, inode.mode
            ))
        })?;
        let first = self.stats.inodes == 0;
        if first != (inode.ino == 1) || (first && kind != FileKind::Dir) {
            return Err(what(
                "the root directory (inode 1) must come first, and only once",
            ));
        }
        let parent = match self.last_entry.take() {
            Some((parent, ino)) if ino == inode.ino => parent,
            _ if first => 1,
            _ => {
                return Err(what(&format!(
                    "inode {} does not follow an entry naming it",
                    inode.ino
                )))
            }
        };
        let times = (
            timestamp(inode.atime),
            timestamp(inode.mtime),
            timestamp(inode.ctime),
        );
        let (Some(atime), Some(mtime), Some(ctime)) = times else {
            return Err(what(&format!(
                "inode {} has a time with nanoseconds out of range",
                inode.ino
            )));
        };
        if (kind == FileKind::Symlink) != inode.target.is_some() {
            return Err(what(&format!(
                "inode {}: only symlinks have a target",
                inode.ino
            )));
        }
        let attr = Attr {
            ino: inode.ino,
            mode: inode.mode,
            nlink: inode.nlink,
            uid: inode.uid,
            gid: inode.gid,
            size: inode.size,
            atime,
            mtime,
            ctime,
            parent: if kind == FileKind::Dir { parent } else { 0 },
            rdev: inode.rdev,
            stored_blocks: (kind == FileKind::File).then_some(0),
            version: 0,
        };
        self.queue_record(&attr);
        let keys = &self.store.keys;
        if let Some(target) = &inode.target {
            self.queue("SET", &[keys.symlink(inode.ino).as_bytes(), &target.0]);
        }
        let xattr_key = keys.xattrs(inode.ino);
        for (name, value) in &inode.xattrs {
            self.queue("HSET", &[xattr_key.as_bytes(), &name.0, &value.0]);
        }
        match kind {
            FileKind::Dir => {
                self.directories.insert(inode.ino);
            }
            FileKind::File => {
                self.file_bytes += attr.size;
                self.file = Some((attr, ContentHash::default()));
            }
            _ => {}
        }
        if !self.inodes.insert(inode.ino) {
            return Err(what(&format!("inode {} appears twice", inode.ino)));
        }
        if kind != FileKind::Dir && inode.nlink != 1 {
            // The entry just read is its first link.
            self.links.insert(inode.ino, (inode.nlink, 1));
        }
        self.max_ino = self.max_ino.max(inode.ino);
        self.stats.inodes += 1;
        Ok(())
    }

    fn entry(&mut self, entry: EntryRecord, what: &dyn Fn(&str) -> Error) -> Result<(), Error> {
        let name = &entry.name.0;
        if !valid_name(name) {
            return Err(what(&format!(
                "invalid name {:?}",
                String::from_utf8_lossy(name)
            )));
        }
        if !self.directories.contains(&entry.parent) {
            return Err(what(&format!(
                "entry's parent {} is not a directory met before",
                entry.parent
            )));
        }
        if entry.ino < 2 || FileKind::from_letter(entry.kind as u8).is_none() {
            return Err(what(&format!(
                "entry names inode {} of kind '{}'",
                entry.ino, entry.kind
            )));
        }
        if entry.kind == 'd' && !self.named_directories.insert(entry.ino) {
            return Err(what(&format!("a second entry for directory {}", entry.ino)));
        }
        if let Some((_, seen)) = self.links.get_mut(&entry.ino) {
            *seen += 1;
        }
        let value = format!("{}{}", entry.kind, entry.ino);
        let dir = self.store.keys.dir(entry.parent);
        self.queue("HSET", &[dir.as_bytes(), name, value.as_bytes()]);
        self.last_entry = Some((entry.parent, entry.ino));
        self.stats.entries += 1;
        Ok(())
    }

    fn data(&mut self, data: Data, what: &dyn Fn(&str) -> Error) -> Result<(), Error> {
        let bs = u64::from(self.block_size);
        let Some((attr, hash)) = self.file.as_mut() else {
            return Err(what("a block outside of a file"));
        };
        let (ino, size) = (&attr.ino, &attr.size);
        if data.ino != *ino {
            return Err(what(&format!(
                "a block of inode {} inside inode {ino}",
                data.ino
            )));
        }
        if data.bytes.0.len() > self.block_size as usize || data.index >= size.div_ceil(bs) {
            return Err(what(&format!(
                "block {} of inode {ino} lies outside its size {size}",
                data.index
            )));
        }
        hash.add(data.index, &data.bytes.0);
        let ino = *ino;
        attr.stored_blocks = attr.stored_blocks.map(|n| n + 1);
        self.next_block += 1;
        let id = self.next_block;
        let stored = self.codec.encode(&data.bytes.0);
        let keys = &self.store.keys;
        let (block, map) = (keys.block(id), keys.map(ino));
        self.queue("SET", &[block.as_bytes(), &stored]);
        self.queue(
            "HSET",
            &[
                map.as_bytes(),
                data.index.to_string().as_bytes(),
                id.to_string().as_bytes(),
            ],
        );
        self.stats.blocks += 1;
        self.stats.data_bytes += data.bytes.0.len() as u64;
        self.stored_bytes += stored.len() as u64;
        Ok(())
    }

    fn file_end(&mut self, end: FileEnd, what: &dyn Fn(&str) -> Error) -> Result<(), Error> {
        let Some((attr, hash)) = self.file.take() else {
            return Err(what("a file end outside of a file"));
        };
        let ino = attr.ino;
        if end.ino != ino {
            return Err(what(&format!(
                "the end of inode {} inside inode {ino}",
                end.ino
            )));
        }
        if hash.finish() != end.sha256.0 {
            return Err(what(&format!(
                "the content of inode {ino} does not match its checksum"
            )));
        }
        if attr.stored_blocks != Some(0) {
            // Written again, with the blocks it has now.
            self.queue_record(&attr);
        }
        Ok(())
    }

    fn queue_record(&mut self, attr: &Attr) {
        let (bucket, field) = self.store.keys.inode(attr.ino);
        self.queue(
            "HSET",
            &[
                bucket.as_bytes(),
                field.to_string().as_bytes(),
                &attr.encode(),
            ],
        );
    }

    /// Writes the counters, corrects link counts that the input could not know, and marks
    /// the filesystem ready.
    pub async fn finish(mut self, what: &dyn Fn(&str) -> Error) -> Result<ImportStats, Error> {
        if self.file.is_some() || self.stats.inodes == 0 {
            return Err(what(
                "the input ended inside a file, or held no root directory",
            ));
        }
        if let Some((_, ino)) = self
            .last_entry
            .filter(|(_, ino)| !self.inodes.contains(ino))
        {
            return Err(what(&format!(
                "an entry names inode {ino}, which is not in the dump"
            )));
        }
        self.send().await?;
        let keys = &self.store.keys;
        for (&ino, &(declared, seen)) in &self.links {
            if declared == seen {
                continue;
            }
            let (bucket, field) = keys.inode(ino);
            let raw: Option<Vec<u8>> = self
                .store
                .cmd(redis::cmd("HGET").arg(&bucket).arg(field))
                .await
                .map_err(self.store.failed("reading a restored inode"))?;
            if let Some(mut attr) = raw.and_then(|r| Attr::decode(ino, &r)) {
                attr.nlink = seen;
                self.pipe
                    .cmd("HSET")
                    .arg(&bucket)
                    .arg(field)
                    .arg(attr.encode())
                    .ignore();
                self.pipe_commands += 1;
            }
        }
        self.pipe
            .cmd("SET")
            .arg(keys.next_inode())
            .arg(self.max_ino)
            .ignore()
            .cmd("SET")
            .arg(keys.next_block())
            .arg(self.next_block)
            .ignore()
            .add_command(
                Counters {
                    inodes: self.stats.inodes,
                    blocks: self.stats.blocks,
                    stored_bytes: Some(self.stored_bytes),
                    file_bytes: Some(self.file_bytes),
                }
                .write(keys),
            )
            .ignore();
        self.pipe_commands += 3;
        self.send().await?;
        let config = FsConfig {
            block_size: self.block_size,
            codec: self.codec,
            uuid: format::new_uuid(),
            acl: self.acl,
        };
        format::finish_copy(self.store, &config).await?;
        Ok(self.stats)
    }
}
