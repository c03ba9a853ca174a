//! The checks, in dependency order, each repairing what it finds when asked to.
//!
//! Sessions come first (expiring a dead one deletes what it held); then the tree (root,
//! entries, reachability, link counts, parents); then data (maps, blocks, leaks, counters).
//! Each repair updates the picture too, so that later checks see the repaired filesystem.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use super::model::{self, Picture};
use super::{command, Findings, FsckArgs};
use crate::attr::{Attr, FileKind, Timestamp};
use crate::codec;
use crate::error::Error;
use crate::format;
use crate::meta::counters::Counters;
use crate::meta::DirEntry;
use crate::meta::Meta;
use crate::scripts::Scripts;
use crate::session::now_ms;
use crate::store::{Counter, Store};
use crate::tool::Progress;

/// The directory unreachable inodes are linked into.
const LOST_FOUND: &[u8] = b"lost+found";
/// Blocks read per round trip when verifying data.
const VERIFY_BATCH: usize = 32;
/// Examples named in an aggregated problem.
const EXAMPLES: usize = 5;

/// The state shared by the checks.
struct Checker<'a> {
    store: &'a Store,
    meta: Meta,
    findings: &'a mut Findings,
    pic: Picture,
    block_size: u64,
    /// Inodes held open (after their last link went) by live mounts.
    held_live: HashSet<u64>,
    /// Entries naming each non-directory inode.
    refs: HashMap<u64, u32>,
    /// The directory whose entry names each directory.
    parent_of: HashMap<u64, u64>,
    /// For a directory named more than once, the entry to keep: the one in the directory its
    /// record names as parent.
    preferred_parent: HashMap<u64, u64>,
    lost_found: Option<u64>,
}

/// Runs every check; returns the inodes and blocks seen.
pub async fn check(
    store: &Store,
    args: &FsckArgs,
    findings: &mut Findings,
    progress: &Progress,
) -> Result<(u64, u64), Error> {
    let meta_key = store.keys.meta();
    let config = match format::open(store, &Scripts::new(), None).await {
        Ok(config) => config,
        Err(Error::Incomplete { state, .. }) => {
            findings
                .problem(
                    "incomplete",
                    &meta_key,
                    &format!("state '{state}': a restore or snapshot into this prefix did not finish; delete the prefix and run it again"),
                )
                .leave();
            return Ok((0, 0));
        }
        Err(Error::CorruptKey { key, reason }) => {
            findings.problem("corrupt_meta", &key, &reason).leave();
            return Ok((0, 0));
        }
        Err(e) => return Err(e),
    };
    let mut pic = model::read(store, findings, progress).await?;
    let meta = Meta::new(store.clone(), Arc::new(Scripts::new()), 0);
    let (held_live, expired) = sessions(store, args, findings, &meta, &pic).await?;
    if expired {
        // Expiring deleted what the dead mounts held: read again.
        pic = model::read(store, findings, &Progress::hidden()).await?;
    }
    let mut c = Checker {
        store,
        meta,
        findings,
        pic,
        block_size: u64::from(config.block_size),
        held_live,
        refs: HashMap::new(),
        parent_of: HashMap::new(),
        preferred_parent: HashMap::new(),
        lost_found: None,
    };
    c.symlinks().await?;
    c.missing_inodes().await?;
    c.root().await?;
    c.entries().await?;
    c.unreachable().await?;
    c.links().await?;
    if c.findings.repairing() {
        c.drain_garbage().await?;
    }
    let referenced = c.maps().await?;
    let referenced = if args.verify_data {
        c.verify_data(referenced).await?
    } else {
        referenced
    };
    c.block_counts().await?;
    c.leaks(&referenced).await?;
    c.stray_keys().await?;
    c.counters().await?;
    Ok((c.pic.inodes.len() as u64, c.pic.blocks.len() as u64))
}

/// Writes a repaired record; a directory's counts as a change (see `src/attr.rs`), so that a
/// mount holding the old one takes the repaired one when it reads it.
async fn write_record(store: &Store, attr: &Attr) -> Result<(), Error> {
    let (bucket, field) = store.keys.inode(attr.ino);
    let mut repaired = *attr;
    if repaired.version != 0 {
        repaired.version = repaired.version % u32::MAX + 1;
    }
    command(
        store,
        redis::cmd("HSET")
            .arg(bucket)
            .arg(field)
            .arg(repaired.encode()),
    )
    .await
}

/// Expires dead sessions and clears keys of forgotten ones; returns the inodes live mounts
/// have open or hold, and whether anything was expired.
async fn sessions(
    store: &Store,
    args: &FsckArgs,
    findings: &mut Findings,
    meta: &Meta,
    pic: &Picture,
) -> Result<(HashSet<u64>, bool), Error> {
    let keys = &store.keys;
    let listed: Vec<(u64, u64)> = store
        .cmd(
            redis::cmd("ZRANGE")
                .arg(keys.sessions())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await
        .map_err(store.failed("reading sessions"))?;
    let cutoff = now_ms().saturating_sub(args.session_timeout.as_millis() as u64);
    let mut held_live = HashSet::new();
    let mut expired = false;
    for &(sid, beat) in &listed {
        if beat >= cutoff {
            let held: Vec<u64> = store
                .cmd(redis::cmd("SMEMBERS").arg(keys.session_held(sid)))
                .await
                .map_err(store.failed("reading held inodes"))?;
            let open: Vec<u64> = store
                .cmd(redis::cmd("HKEYS").arg(keys.session_open(sid)))
                .await
                .map_err(store.failed("reading open inodes"))?;
            held_live.extend(held.into_iter().chain(open));
            continue;
        }
        let silent = now_ms().saturating_sub(beat) / 1000;
        findings
            .problem(
                "stale_session",
                &keys.session_info(sid),
                &format!("mount silent for {silent} s"),
            )
            .fix(
                "expired: its deleted-but-open files deleted, its locks released",
                async {
                    meta.expire_session(sid, cutoff, std::time::Duration::ZERO)
                        .await
                        .map(|_| ())
                        .map_err(|source| Error::Operation {
                            what: format!("expiring session {sid}"),
                            source,
                        })
                },
            )
            .await?;
        expired |= findings.repairing();
    }
    for (sid, session_keys) in &pic.session_keys {
        if listed.iter().any(|(s, _)| s == sid) {
            continue;
        }
        // A mount that expired a silent one keeps its ring of replies for a while, with a
        // time to live (see `src/lua/expire_session.lua`): that goes by itself.
        let mut pipe = redis::pipe();
        for key in session_keys {
            pipe.cmd("PTTL").arg(key);
        }
        let ttls: Vec<i64> = store
            .pipe(&pipe)
            .await
            .map_err(store.failed("reading the time to live of session keys"))?;
        if ttls.iter().all(|&ttl| ttl > 0) {
            continue;
        }
        let names: Vec<String> = session_keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        findings
            .problem(
                "forgotten_session",
                &names.join(", "),
                "keys of a session that is not registered",
            )
            .fix(
                "deleted",
                command(store, redis::cmd("DEL").arg(session_keys)),
            )
            .await?;
    }
    let leases: Vec<(u64, u64)> = store
        .cmd(redis::cmd("HGETALL").arg(keys.lease()))
        .await
        .map_err(store.failed("reading directory leases"))?;
    for (dir, holder) in leases {
        if listed.iter().any(|&(s, _)| s == holder) {
            continue;
        }
        findings
            .problem(
                "stale_lease",
                &format!("{} {dir}", keys.lease()),
                &format!("directory leased to session {holder}, which is not registered"),
            )
            .fix(
                "lease deleted",
                command(store, redis::cmd("HDEL").arg(keys.lease()).arg(dir)),
            )
            .await?;
    }
    Ok((held_live, expired))
}

impl Checker<'_> {
    fn inode_key(&self, ino: u64) -> String {
        let (bucket, field) = self.store.keys.inode(ino);
        format!("{bucket} field {field} (inode {ino})")
    }

    /// Forgets an inode that a repair deleted, with what hung off it.
    fn forget(&mut self, ino: u64) {
        self.pic.inodes.remove(&ino);
        if let Some(map) = self.pic.maps.remove(&ino) {
            for id in map.values() {
                self.pic.blocks.remove(id);
            }
        }
        self.pic.dirs.remove(&ino);
        self.pic.xattr_keys.remove(&ino);
        self.pic.symlink_keys.remove(&ino);
    }

    /// A symlink without its target cannot be read: drop the inode (its entries go next).
    async fn symlinks(&mut self) -> Result<(), Error> {
        let broken: Vec<u64> = self
            .pic
            .inodes
            .values()
            .filter(|a| a.kind() == FileKind::Symlink && !self.pic.symlink_keys.contains(&a.ino))
            .map(|a| a.ino)
            .collect();
        for ino in broken {
            let (bucket, field) = self.store.keys.inode(ino);
            self.findings
                .problem(
                    "symlink_without_target",
                    &self.inode_key(ino),
                    "the target key is missing",
                )
                .fix(
                    "inode removed",
                    command(self.store, redis::cmd("HDEL").arg(bucket).arg(field)),
                )
                .await?;
            if self.findings.repairing() {
                self.pic.inodes.remove(&ino);
            }
        }
        Ok(())
    }

    /// Inodes whose record is gone but whose directory, map or target survives are rebuilt
    /// with default attributes, so that what they hold is not lost.
    async fn missing_inodes(&mut self) -> Result<(), Error> {
        let now = Timestamp::now();
        let mut rebuilt = Vec::new();
        for &ino in self.pic.dirs.keys() {
            rebuilt.push((ino, FileKind::Dir, 0o755));
        }
        for (&ino, map) in &self.pic.maps {
            let size = map
                .keys()
                .next_back()
                .map_or(0, |last| (last + 1) * self.block_size);
            rebuilt.push((ino, FileKind::File, size));
        }
        for &ino in &self.pic.symlink_keys {
            rebuilt.push((ino, FileKind::Symlink, 0));
        }
        for (ino, kind, size) in rebuilt {
            if ino == 0 || self.pic.inodes.contains_key(&ino) {
                continue;
            }
            let mut attr = Attr::new(
                kind,
                if kind == FileKind::Dir { 0o755 } else { 0o644 },
                0,
                0,
                now,
            );
            attr.ino = ino;
            attr.parent = 1;
            if kind == FileKind::File {
                attr.size = size;
            }
            if kind == FileKind::Symlink {
                attr.mode = FileKind::Symlink.mode_bits() | 0o777;
                attr.size = self
                    .store
                    .cmd(redis::cmd("STRLEN").arg(self.store.keys.symlink(ino)))
                    .await
                    .map_err(self.store.failed("STRLEN"))?;
            }
            self.findings
                .problem(
                    "missing_inode",
                    &self.inode_key(ino),
                    &format!("the record is gone but its {} keys remain", kind.letter()),
                )
                .fix(
                    "rebuilt with default owner, mode and times",
                    write_record(self.store, &attr),
                )
                .await?;
            if self.findings.repairing() {
                self.pic.inodes.insert(ino, attr);
            }
        }
        Ok(())
    }

    async fn root(&mut self) -> Result<(), Error> {
        match self.pic.inodes.get(&1) {
            Some(a) if a.kind() == FileKind::Dir => return Ok(()),
            Some(_) => {}
            None => {}
        }
        let mut root = Attr::new(FileKind::Dir, 0o755, 0, 0, Timestamp::now());
        root.ino = 1;
        root.parent = 1;
        self.findings
            .problem(
                "missing_root",
                &self.inode_key(1),
                "the root directory is missing or not a directory",
            )
            .fix("recreated", write_record(self.store, &root))
            .await?;
        if self.findings.repairing() {
            self.pic.inodes.insert(1, root);
            self.pic.dirs.entry(1).or_default();
        }
        Ok(())
    }

    /// Entries must name existing inodes of the kind they claim; a directory has one entry.
    async fn entries(&mut self) -> Result<(), Error> {
        for (&dir, entries) in &self.pic.dirs {
            for e in entries.iter().filter(|e| e.kind == FileKind::Dir) {
                if self.pic.inodes.get(&e.ino).is_some_and(|a| a.parent == dir) {
                    self.preferred_parent.insert(e.ino, dir);
                }
            }
        }
        let dirs: Vec<u64> = self.pic.dirs.keys().copied().collect();
        for dir in dirs {
            let dir_key = self.store.keys.dir(dir);
            if self
                .pic
                .inodes
                .get(&dir)
                .is_none_or(|a| a.kind() != FileKind::Dir)
            {
                self.findings
                    .problem(
                        "stray_directory",
                        &dir_key,
                        "entries of an inode that is not a directory",
                    )
                    .delete_key(self.store, dir_key.as_bytes())
                    .await?;
                if self.findings.repairing() {
                    self.pic.dirs.remove(&dir);
                }
                continue;
            }
            let entries = self.pic.dirs.get(&dir).cloned().unwrap_or_default();
            let mut kept = Vec::with_capacity(entries.len());
            for e in entries {
                if let Some(fixed) = self.entry(dir, &dir_key, e).await? {
                    kept.push(fixed);
                }
            }
            self.pic.dirs.insert(dir, kept);
        }
        Ok(())
    }

    /// Checks one entry; returns it as it stands after any repair (`None`: removed).
    async fn entry(
        &mut self,
        dir: u64,
        dir_key: &str,
        e: DirEntry,
    ) -> Result<Option<DirEntry>, Error> {
        let at = format!("{dir_key} entry '{}'", String::from_utf8_lossy(&e.name));
        let kind = self.pic.inodes.get(&e.ino).map(Attr::kind);
        let wrong = match kind {
            None => Some((
                "dangling_entry",
                format!("names inode {}, which does not exist", e.ino),
            )),
            Some(_) if e.ino == 1 => Some(("entry_names_root", "names the root directory".into())),
            Some(FileKind::Dir)
                if self.parent_of.contains_key(&e.ino)
                    || self.preferred_parent.get(&e.ino).is_some_and(|&p| p != dir) =>
            {
                Some((
                    "extra_directory_link",
                    format!("a second entry for directory {}", e.ino),
                ))
            }
            Some(_) => None,
        };
        let (Some(kind), None) = (kind, &wrong) else {
            let (problem, detail) = wrong.unwrap_or_default();
            self.findings
                .problem(problem, &at, &detail)
                .delete_field(self.store, dir_key.as_bytes(), &e.name)
                .await?;
            return Ok((!self.findings.repairing()).then_some(e));
        };
        let mut e = e;
        if kind != e.kind {
            let value = format!("{}{}", kind.letter(), e.ino);
            let detail = format!(
                "claims kind '{}', the inode is '{}'",
                e.kind.letter(),
                kind.letter()
            );
            self.findings
                .problem("wrong_entry_kind", &at, &detail)
                .fix(
                    "corrected",
                    command(
                        self.store,
                        redis::cmd("HSET").arg(dir_key).arg(&e.name).arg(value),
                    ),
                )
                .await?;
            e.kind = kind;
        }
        if kind == FileKind::Dir {
            self.parent_of.insert(e.ino, dir);
        } else {
            *self.refs.entry(e.ino).or_default() += 1;
        }
        Ok(Some(e))
    }

    /// Inodes reachable from the root or from `extra` starting points.
    fn reachable(&self, extra: &[u64]) -> HashSet<u64> {
        let mut seen: HashSet<u64> = extra.iter().copied().chain([1]).collect();
        let mut queue: Vec<u64> = seen.iter().copied().collect();
        while let Some(dir) = queue.pop() {
            for e in self.pic.dirs.get(&dir).into_iter().flatten() {
                if seen.insert(e.ino) && e.kind == FileKind::Dir {
                    queue.push(e.ino);
                }
            }
        }
        seen
    }

    fn named(&self, ino: u64) -> bool {
        self.refs.contains_key(&ino) || self.parent_of.contains_key(&ino)
    }

    /// Deletes the blocks queued for deletion, those the repairs above queued among them, so
    /// that the checks of blocks and counters below see them gone.
    async fn drain_garbage(&mut self) -> Result<(), Error> {
        let deleted = (self.meta.delete_garbage().await).map_err(|source| Error::Operation {
            what: "deleting the blocks queued for deletion".into(),
            source,
        })?;
        for id in deleted {
            self.pic.blocks.remove(&id);
            self.pic.garbage_blocks.remove(&id);
            self.pic.counted_garbage.remove(&id);
        }
        Ok(())
    }

    /// Deleted inodes nobody holds are deleted; inodes with links but no path go to
    /// /lost+found: the top of each unreachable subtree (the rest comes with it), and one
    /// directory of each loop of directories that only name each other.
    async fn unreachable(&mut self) -> Result<(), Error> {
        let reachable = self.reachable(&[]);
        let deleted: Vec<u64> = self
            .pic
            .inodes
            .values()
            .filter(|a| !reachable.contains(&a.ino) && a.nlink == 0 && !self.named(a.ino))
            .map(|a| a.ino)
            .collect();
        for ino in deleted {
            if self.held_live.contains(&ino) {
                continue;
            }
            let meta = self.meta.clone();
            self.findings
                .problem(
                    "unreclaimed_inode",
                    &self.inode_key(ino),
                    "deleted, and no mount holds it open",
                )
                .fix("deleted with its data", async move {
                    meta.reclaim_for(0, &[ino])
                        .await
                        .map(|_| ())
                        .map_err(|source| Error::Operation {
                            what: format!("deleting inode {ino}"),
                            source,
                        })
                })
                .await?;
            if self.findings.repairing() {
                self.forget(ino);
            }
        }
        // Tops found so far: linked into /lost+found on repair, else only reported; either way
        // they count as reachable for the next round.
        let mut tops: Vec<u64> = Vec::new();
        loop {
            let reachable = self.reachable(&tops);
            let lost: Vec<Attr> = self
                .pic
                .inodes
                .values()
                .filter(|a| !reachable.contains(&a.ino))
                .filter(|a| a.nlink != 0 || self.named(a.ino))
                .copied()
                .collect();
            let mut round: Vec<Attr> = lost
                .iter()
                .filter(|a| !self.named(a.ino))
                .copied()
                .collect();
            if round.is_empty() {
                // What is left names itself in a loop: break it at one directory, preferably
                // the one whose record names a parent outside the loop (where the loop was
                // closed), since inode numbers say nothing of which directory came first.
                let dirs = || lost.iter().filter(|a| a.kind() == FileKind::Dir);
                let dir = dirs()
                    .find(|a| reachable.contains(&a.parent))
                    .or_else(|| dirs().next());
                round.extend(dir.or(lost.first()).copied());
            }
            if round.is_empty() {
                return Ok(());
            }
            for attr in round {
                tops.push(attr.ino);
                self.adopt(attr).await?;
            }
        }
    }

    /// Reports an unreachable inode and, on repair, links it into /lost+found (taking a
    /// directory out of the loop that named it).
    async fn adopt(&mut self, attr: Attr) -> Result<(), Error> {
        let ino = attr.ino;
        let name = format!("#{ino}");
        self.findings
            .problem(
                "unreachable_inode",
                &self.inode_key(ino),
                "no path from the root leads to it",
            )
            .fix(
                &format!("linked as /lost+found/{name}"),
                std::future::ready(Ok(())),
            )
            .await?;
        if !self.findings.repairing() {
            return Ok(());
        }
        let lf = self.lost_found().await?;
        if attr.kind() == FileKind::Dir {
            if let Some(old) = self.parent_of.insert(ino, lf) {
                let old_key = self.store.keys.dir(old);
                let names: Vec<Vec<u8>> = self
                    .pic
                    .dirs
                    .get(&old)
                    .into_iter()
                    .flatten()
                    .filter(|e| e.ino == ino)
                    .map(|e| e.name.clone())
                    .collect();
                for n in &names {
                    command(self.store, redis::cmd("HDEL").arg(&old_key).arg(n)).await?;
                }
                if let Some(es) = self.pic.dirs.get_mut(&old) {
                    es.retain(|e| e.ino != ino);
                }
            }
        } else {
            *self.refs.entry(ino).or_default() += 1;
        }
        let value = format!("{}{ino}", attr.kind().letter());
        command(
            self.store,
            redis::cmd("HSET")
                .arg(self.store.keys.dir(lf))
                .arg(&name)
                .arg(value),
        )
        .await?;
        self.pic.dirs.entry(lf).or_default().push(DirEntry {
            name: name.into_bytes(),
            kind: attr.kind(),
            ino,
        });
        Ok(())
    }

    /// The /lost+found directory, created when first needed.
    async fn lost_found(&mut self) -> Result<u64, Error> {
        if let Some(lf) = self.lost_found {
            return Ok(lf);
        }
        let existing = self
            .pic
            .dirs
            .get(&1)
            .into_iter()
            .flatten()
            .find(|e| e.name == LOST_FOUND && e.kind == FileKind::Dir)
            .map(|e| e.ino);
        let lf = match existing {
            Some(lf) => lf,
            None => {
                let keys = &self.store.keys;
                let ino = (self.store.reserve(Counter::Inode, 1))
                    .await
                    .map_err(self.store.failed("reserving an inode number"))?;
                let mut attr = Attr::new(FileKind::Dir, 0o700, 0, 0, Timestamp::now());
                attr.ino = ino;
                attr.parent = 1;
                write_record(self.store, &attr).await?;
                command(
                    self.store,
                    redis::cmd("HSET")
                        .arg(keys.dir(1))
                        .arg(LOST_FOUND)
                        .arg(format!("d{ino}")),
                )
                .await?;
                self.pic.inodes.insert(ino, attr);
                self.pic.dirs.entry(ino).or_default();
                self.pic.dirs.entry(1).or_default().push(DirEntry {
                    name: LOST_FOUND.to_vec(),
                    kind: FileKind::Dir,
                    ino,
                });
                self.parent_of.insert(ino, 1);
                ino
            }
        };
        self.lost_found = Some(lf);
        Ok(lf)
    }

    /// Link counts and directories' parent links.
    async fn links(&mut self) -> Result<(), Error> {
        let inodes: Vec<Attr> = self.pic.inodes.values().copied().collect();
        for attr in inodes {
            let ino = attr.ino;
            let mut fixed = attr;
            if attr.kind() == FileKind::Dir {
                let subdirs = self.pic.dirs.get(&ino).map_or(0, |es| {
                    es.iter().filter(|e| e.kind == FileKind::Dir).count()
                });
                fixed.nlink = 2 + subdirs as u32;
                fixed.parent = if ino == 1 {
                    1
                } else {
                    self.parent_of.get(&ino).copied().unwrap_or(attr.parent)
                };
            } else if !(attr.nlink == 0 && self.held_live.contains(&ino)) {
                fixed.nlink = self.refs.get(&ino).copied().unwrap_or(0);
            }
            if fixed.nlink == 0 && attr.nlink != 0 {
                // No entry and not deleted: already reported as unreachable.
                continue;
            }
            let mut wrong = Vec::new();
            if fixed.nlink != attr.nlink {
                wrong.push(format!(
                    "link count {} should be {}",
                    attr.nlink, fixed.nlink
                ));
            }
            if fixed.parent != attr.parent {
                wrong.push(format!("parent {} should be {}", attr.parent, fixed.parent));
            }
            if wrong.is_empty() {
                continue;
            }
            let kind = if fixed.nlink != attr.nlink {
                "wrong_link_count"
            } else {
                "wrong_parent"
            };
            self.findings
                .problem(kind, &self.inode_key(ino), &wrong.join(", "))
                .fix("corrected", write_record(self.store, &fixed))
                .await?;
            if self.findings.repairing() {
                self.pic.inodes.insert(ino, fixed);
            }
        }
        Ok(())
    }

    /// Block maps: of regular files only, naming existing blocks within the size, no block
    /// twice. Returns every block referenced.
    async fn maps(&mut self) -> Result<HashSet<u64>, Error> {
        let mut referenced: HashSet<u64> = (self.pic.freeing_blocks.iter())
            .chain(&self.pic.garbage_blocks)
            .copied()
            .collect();
        let maps: Vec<(u64, BTreeMap<u64, u64>)> =
            self.pic.maps.iter().map(|(k, v)| (*k, v.clone())).collect();
        for (ino, map) in maps {
            let map_key = self.store.keys.map(ino);
            let Some(attr) = self
                .pic
                .inodes
                .get(&ino)
                .filter(|a| a.kind() == FileKind::File)
                .copied()
            else {
                self.findings
                    .problem(
                        "stray_map",
                        &map_key,
                        "a block map of an inode that is not a regular file",
                    )
                    .delete_key(self.store, map_key.as_bytes())
                    .await?;
                if self.findings.repairing() {
                    self.pic.maps.remove(&ino);
                }
                continue;
            };
            let blocks_in_size = attr.size.div_ceil(self.block_size);
            for (index, id) in map {
                let at = format!("{map_key} block {index}");
                let unseen = !self.pic.blocks.contains_key(&id);
                let problem = if unseen && !self.found_after_all(id).await? {
                    Some(("missing_block", format!("names {}, which is missing (those bytes are lost: they read as zeros after repair)", self.store.keys.block(id))))
                } else if index >= blocks_in_size {
                    Some((
                        "block_past_end",
                        format!("lies past the file's size {}", attr.size),
                    ))
                } else if referenced.contains(&id) {
                    self.shared_block(&at, &map_key, index, id, &mut referenced)
                        .await?;
                    None
                } else {
                    referenced.insert(id);
                    None
                };
                if let Some((kind, detail)) = problem {
                    self.findings
                        .problem(kind, &at, &detail)
                        .delete_field(self.store, map_key.as_bytes(), index.to_string().as_bytes())
                        .await?;
                    if self.findings.repairing() {
                        if let Some(m) = self.pic.maps.get_mut(&ino) {
                            m.remove(&index);
                        }
                    }
                }
            }
        }
        Ok(referenced)
    }

    /// Each regular file's record counts the blocks its map names (what `st_blocks` reports).
    async fn block_counts(&mut self) -> Result<(), Error> {
        let files: Vec<Attr> = self
            .pic
            .inodes
            .values()
            .filter(|a| a.kind() == FileKind::File)
            .copied()
            .collect();
        for attr in files {
            let stored = self.pic.maps.get(&attr.ino).map_or(0, |m| m.len() as u64);
            if attr.stored_blocks == Some(stored) {
                continue;
            }
            let fixed = Attr {
                stored_blocks: Some(stored),
                ..attr
            };
            let detail = match attr.stored_blocks {
                Some(n) => format!("counts {n} stored blocks, its map names {stored}"),
                None => {
                    format!("counts no stored blocks (an older record), its map names {stored}")
                }
            };
            self.findings
                .problem("wrong_block_count", &self.inode_key(attr.ino), &detail)
                .fix("corrected", write_record(self.store, &fixed))
                .await?;
            if self.findings.repairing() {
                self.pic.inodes.insert(attr.ino, fixed);
            }
        }
        Ok(())
    }

    /// Whether block `id`, which the walk did not see, exists after all, asked by its name (on
    /// a cluster a block may move to a node already walked while slots are resharded); notes
    /// it if so.
    async fn found_after_all(&mut self, id: u64) -> Result<bool, Error> {
        let key = self.store.keys.block(id);
        let length: u64 = (self.store.cmd(redis::cmd("STRLEN").arg(&key)).await)
            .map_err(self.store.failed("STRLEN"))?;
        if length > 0 {
            self.pic.blocks.insert(id, length);
        }
        Ok(length > 0)
    }

    /// A block named twice would be deleted under one file by a write to the other: give the
    /// second its own copy.
    async fn shared_block(
        &mut self,
        at: &str,
        map_key: &str,
        index: u64,
        id: u64,
        referenced: &mut HashSet<u64>,
    ) -> Result<(), Error> {
        let keys = &self.store.keys;
        let store = self.store;
        let copy: u64 = if self.findings.repairing() {
            (store.reserve(Counter::Block, 1))
                .await
                .map_err(store.failed("reserving a block id"))?
        } else {
            0
        };
        let fix = async {
            (crate::blocks::copy(store, id, copy).await).map_err(store.failed("repairing"))?;
            command(store, redis::cmd("HSET").arg(map_key).arg(index).arg(copy)).await
        };
        self.findings
            .problem(
                "shared_block",
                at,
                &format!("{} is also named by another map entry", keys.block(id)),
            )
            .fix("given its own copy", fix)
            .await?;
        if self.findings.repairing() {
            referenced.insert(copy);
            let bytes = self.pic.blocks.get(&id).copied().unwrap_or(0);
            self.pic.blocks.insert(copy, bytes);
        }
        Ok(())
    }

    /// Reads and decodes every referenced block of a file; a corrupt one becomes a hole.
    async fn verify_data(&mut self, mut referenced: HashSet<u64>) -> Result<HashSet<u64>, Error> {
        let all: Vec<(u64, u64, u64)> = self
            .pic
            .maps
            .iter()
            .flat_map(|(&ino, m)| m.iter().map(move |(&index, &id)| (ino, index, id)))
            .filter(|(_, _, id)| referenced.contains(id))
            .collect();
        for batch in all.chunks(VERIFY_BATCH) {
            let mut pipe = redis::pipe();
            for (_, _, id) in batch {
                pipe.cmd("GET").arg(self.store.keys.block(*id));
            }
            let values: Vec<Option<Vec<u8>>> = self
                .store
                .pipe(&pipe)
                .await
                .map_err(self.store.failed("GET"))?;
            for (&(ino, index, id), value) in batch.iter().zip(values) {
                let Some(Err(err)) = value.map(|v| codec::decode(v, self.block_size as usize))
                else {
                    continue;
                };
                let block_key = self.store.keys.block(id);
                let map_key = self.store.keys.map(ino);
                let store = self.store;
                let fix = async {
                    command(store, redis::cmd("HDEL").arg(&map_key).arg(index)).await?;
                    command(store, redis::cmd("DEL").arg(&block_key)).await
                };
                self.findings
                    .problem(
                        "corrupt_block",
                        &block_key,
                        &format!("block {index} of inode {ino} does not decode ({err}); its bytes are lost"),
                    )
                    .fix("removed: the range reads as zeros", fix)
                    .await?;
                if self.findings.repairing() {
                    referenced.remove(&id);
                    self.pic.blocks.remove(&id);
                    if let Some(m) = self.pic.maps.get_mut(&ino) {
                        m.remove(&index);
                    }
                }
            }
        }
        Ok(referenced)
    }

    /// Blocks no map names: a crash between storing a block and committing it leaves them.
    async fn leaks(&mut self, referenced: &HashSet<u64>) -> Result<(), Error> {
        let mut leaked: Vec<u64> = (self.pic.blocks.keys())
            .filter(|id| !referenced.contains(id))
            .copied()
            .collect();
        if leaked.is_empty() {
            return Ok(());
        }
        leaked.sort_unstable();
        let examples: Vec<String> = leaked
            .iter()
            .take(EXAMPLES)
            .map(|id| self.store.keys.block(*id))
            .collect();
        let store = self.store;
        let keys: Vec<String> = leaked.iter().map(|id| store.keys.block(*id)).collect();
        let fix = async {
            for chunk in keys.chunks(500) {
                command(store, redis::cmd("UNLINK").arg(chunk)).await?;
            }
            Ok(())
        };
        self.findings
            .problem(
                "leaked_blocks",
                &examples.join(", "),
                &format!("{} blocks that no file names", leaked.len()),
            )
            .fix("deleted", fix)
            .await?;
        if self.findings.repairing() {
            for id in leaked {
                self.pic.blocks.remove(&id);
            }
        }
        Ok(())
    }

    /// Extended attributes, symlink targets and locks of inodes that do not exist.
    async fn stray_keys(&mut self) -> Result<(), Error> {
        let keys = self.store.keys.clone();
        let mut stray: Vec<String> = Vec::new();
        for &ino in &self.pic.xattr_keys {
            if !self.pic.inodes.contains_key(&ino) {
                stray.push(keys.xattrs(ino));
            }
        }
        for &ino in &self.pic.symlink_keys {
            if self
                .pic
                .inodes
                .get(&ino)
                .is_none_or(|a| a.kind() != FileKind::Symlink)
            {
                stray.push(keys.symlink(ino));
            }
        }
        for &ino in &self.pic.lock_keys {
            if !self.pic.inodes.contains_key(&ino) {
                stray.push(keys.locks(ino));
            }
        }
        for key in stray {
            self.findings
                .problem("stray_key", &key, "belongs to an inode that does not exist")
                .delete_key(self.store, key.as_bytes())
                .await?;
        }
        Ok(())
    }

    /// The counters as the picture (repaired, when repairing) gives them.
    fn count(&self) -> Counters {
        let pic = &self.pic;
        let bytes_of = |id: &u64| pic.blocks.get(id).copied().unwrap_or(0);
        let named = pic.maps.values().flat_map(|m| m.values());
        Counters {
            inodes: pic.inodes.len() as u64,
            blocks: pic.maps.values().map(|m| m.len() as u64).sum::<u64>() + pic.freeing_entries,
            stored_bytes: Some(
                (named.chain(&pic.freeing_blocks).chain(&pic.counted_garbage))
                    .map(bytes_of)
                    .sum(),
            ),
            file_bytes: Some(
                (pic.inodes.values())
                    .filter(|a| a.kind() == FileKind::File)
                    .map(|a| a.size)
                    .sum(),
            ),
        }
    }

    /// Inode and block counters, the byte counters, and the statfs figures.
    async fn counters(&mut self) -> Result<(), Error> {
        let keys = self.store.keys.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg(keys.next_inode());
        pipe.cmd("GET").arg(keys.next_block());
        Counters::ask(&mut pipe, &keys);
        let (next_ino, next_blk, stat): (Option<u64>, Option<u64>, Vec<Option<u64>>) = self
            .store
            .pipe(&pipe)
            .await
            .map_err(self.store.failed("reading counters"))?;
        let max_ino = self.pic.inodes.keys().next_back().copied().unwrap_or(1);
        if next_ino.unwrap_or(0) < max_ino {
            self.findings
                .problem(
                    "inode_counter_behind",
                    &keys.next_inode(),
                    &format!("{next_ino:?}, but inode {max_ino} exists"),
                )
                .fix(
                    "raised",
                    command(
                        self.store,
                        redis::cmd("SET").arg(keys.next_inode()).arg(max_ino),
                    ),
                )
                .await?;
        }
        let max_block = self.pic.blocks.keys().max().copied().unwrap_or(0);
        if next_blk.unwrap_or(0) < max_block {
            self.findings
                .problem(
                    "block_counter_behind",
                    &keys.next_block(),
                    &format!("{next_blk:?}, but block {max_block} exists"),
                )
                .fix(
                    "raised",
                    command(
                        self.store,
                        redis::cmd("SET").arg(keys.next_block()).arg(max_block),
                    ),
                )
                .await?;
        }
        let recorded = Counters::parse(stat);
        let counted = self.count();
        if recorded != counted {
            self.findings
                .problem(
                    "wrong_counters",
                    &keys.stat(),
                    &format!("{recorded}; counted {counted}"),
                )
                .fix("corrected", command(self.store, &counted.write(&keys)))
                .await?;
        }
        Ok(())
    }
}
