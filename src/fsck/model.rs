//! Reading every key of a filesystem into one picture that the checks walk.
//!
//! Keys are found with SCAN and their types checked in the same pass; wrong-typed and unknown
//! keys are reported as they are met (and deleted on repair), so the picture holds only keys
//! of the right type.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Findings;
use crate::attr::Attr;
use crate::error::Error;
use crate::keys::{KeyKind, INODES_PER_BUCKET};
use crate::meta::parse_entry;
use crate::meta::DirEntry;
use crate::scan::Scan;
use crate::store::Store;
use crate::tool::Progress;

/// Keys read per pipelined round trip.
const BATCH: usize = 128;

/// Everything a filesystem holds, as read.
#[derive(Default)]
pub struct Picture {
    /// Inode records that decode.
    pub inodes: BTreeMap<u64, Attr>,
    /// Directory keys and their valid entries.
    pub dirs: BTreeMap<u64, Vec<DirEntry>>,
    /// Block maps: index → block id, for each `m:` key.
    pub maps: BTreeMap<u64, BTreeMap<u64, u64>>,
    /// Block ids held in `free:` maps, waiting to be freed.
    pub freeing_blocks: HashSet<u64>,
    /// Entries in `free:` maps.
    pub freeing_entries: u64,
    /// Block ids queued in `garbage`, waiting to be deleted (not orphans).
    pub garbage_blocks: HashSet<u64>,
    /// Those of them still counted in `stored_bytes` (state `c`).
    pub counted_garbage: HashSet<u64>,
    /// Block ids that exist, with the bytes each takes.
    pub blocks: HashMap<u64, u64>,
    /// Inodes with an `x:` key.
    pub xattr_keys: HashSet<u64>,
    /// Inodes with an `l:` key.
    pub symlink_keys: HashSet<u64>,
    /// Inodes with a `lk:` key.
    pub lock_keys: HashSet<u64>,
    /// Session ids that own keys.
    pub session_keys: HashMap<u64, Vec<Vec<u8>>>,
}

/// Reads every key under the prefix.
pub async fn read(
    store: &Store,
    findings: &mut Findings,
    progress: &Progress,
) -> Result<Picture, Error> {
    let mut picture = Picture::default();
    let mut scan = Scan::all(store);
    let mut seen = HashSet::new();
    let mut progress_done = 0;
    progress.total_from_counters(store, 1, 1).await;
    while let Some(batch) = scan.next_batch().await? {
        let fresh: Vec<Vec<u8>> = batch
            .into_iter()
            .filter(|k| seen.insert(k.clone()))
            .collect();
        let mut pipe = redis::pipe();
        for key in &fresh {
            pipe.cmd("TYPE").arg(key);
        }
        let types: Vec<String> = store.pipe(&pipe).await.map_err(store.failed("TYPE"))?;
        let mut hashes = Vec::new();
        let mut blocks = Vec::new();
        for (key, kind_of) in fresh.into_iter().zip(types) {
            let name = String::from_utf8_lossy(&key).into_owned();
            let Some(kind) = store.keys.classify(&key) else {
                findings
                    .problem("unknown_key", &name, "a key that is not part of the format")
                    .delete_key(store, &key)
                    .await?;
                continue;
            };
            let expected = kind.redis_type();
            if kind_of == "none" || (!expected.is_empty() && expected != kind_of) {
                if kind_of != "none" {
                    findings
                        .problem(
                            "wrong_type",
                            &name,
                            &format!("a {kind_of}, expected a {expected}"),
                        )
                        .delete_key(store, &key)
                        .await?;
                }
                continue;
            }
            match kind {
                KeyKind::Block(id) => blocks.push((id, key)),
                KeyKind::Symlink(ino) => {
                    picture.symlink_keys.insert(ino);
                }
                KeyKind::Xattrs(ino) => {
                    picture.xattr_keys.insert(ino);
                }
                KeyKind::Locks(ino) => {
                    picture.lock_keys.insert(ino);
                }
                KeyKind::Session(sid) => picture.session_keys.entry(sid).or_default().push(key),
                KeyKind::Inodes(_)
                | KeyKind::Dir(_)
                | KeyKind::Map(_)
                | KeyKind::FreedMap(_)
                | KeyKind::Garbage => hashes.push((kind, key)),
                _ => {}
            }
        }
        for chunk in blocks.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (_, key) in chunk {
                pipe.cmd("STRLEN").arg(key);
            }
            let lengths: Vec<u64> = store.pipe(&pipe).await.map_err(store.failed("STRLEN"))?;
            picture
                .blocks
                .extend(chunk.iter().map(|(id, _)| *id).zip(lengths));
        }
        for chunk in hashes.chunks(BATCH) {
            let mut pipe = redis::pipe();
            for (_, key) in chunk {
                pipe.cmd("HGETALL").arg(key);
            }
            let contents: Vec<Vec<(Vec<u8>, Vec<u8>)>> =
                store.pipe(&pipe).await.map_err(store.failed("HGETALL"))?;
            for ((kind, key), fields) in chunk.iter().zip(contents) {
                picture
                    .add_hash(store, *kind, key, fields, findings)
                    .await?;
            }
        }
        progress.advance(seen.len() as u64 - progress_done);
        progress_done = seen.len() as u64;
    }
    Ok(picture)
}

fn number(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl Picture {
    async fn add_hash(
        &mut self,
        store: &Store,
        kind: KeyKind,
        key: &[u8],
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        findings: &mut Findings,
    ) -> Result<(), Error> {
        let name = String::from_utf8_lossy(key).into_owned();
        for (field, value) in fields {
            let shown = String::from_utf8_lossy(&field).into_owned();
            let valid = match kind {
                KeyKind::Inodes(bucket) => number(&field)
                    .filter(|f| *f < INODES_PER_BUCKET)
                    .map(|f| bucket * INODES_PER_BUCKET + f)
                    .and_then(|ino| Attr::decode(ino, &value))
                    .filter(|a| a.ino != 0)
                    .map(|a| {
                        self.inodes.insert(a.ino, a);
                    }),
                KeyKind::Dir(ino) => parse_entry(&value).map(|(kind, child)| {
                    self.dirs.entry(ino).or_default().push(DirEntry {
                        name: field.clone(),
                        kind,
                        ino: child,
                    });
                }),
                KeyKind::Map(ino) => number(&field).zip(number(&value)).map(|(index, id)| {
                    self.maps.entry(ino).or_default().insert(index, id);
                }),
                KeyKind::FreedMap(_) => number(&value).map(|id| {
                    self.freeing_blocks.insert(id);
                    self.freeing_entries += 1;
                }),
                KeyKind::Garbage => number(&field)
                    .filter(|_| matches!(value.as_slice(), b"c" | b"u" | b"w"))
                    .map(|id| {
                        self.garbage_blocks.insert(id);
                        if value == b"c" {
                            self.counted_garbage.insert(id);
                        }
                    }),
                _ => Some(()),
            };
            if valid.is_none() {
                findings
                    .problem(
                        "corrupt_field",
                        &name,
                        &format!("field '{shown}' does not decode"),
                    )
                    .delete_field(store, key, &field)
                    .await?;
            }
        }
        if let KeyKind::Dir(ino) = kind {
            self.dirs.entry(ino).or_default();
        }
        Ok(())
    }
}
