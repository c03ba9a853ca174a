//! Directory delegation: creates and removals in directories this mount created, answered
//! before Redis has them.
//!
//! A directory a mount creates is leased to its session by the script that creates it
//! (`P:lease`, directory → session). Until another mount looks into it, only this mount knows
//! its names, so creating a file, a special file or a directory in it, unlinking a file this
//! mount does not have open, or removing a leased directory it knows to be empty, can be
//! answered from memory and appended to one ordered log. Every script this mount runs sends
//! the log first, and every other read the part touching what it reads
//! ([`Meta::send_deferred`]), so
//! what this mount does reaches Redis in the order it did it; a background task sends it at
//! most [`MAX_DELAY`] after the first change, or at once when [`BATCH`] changes wait.
//!
//! Every script that reads or changes a directory checks its lease first and, finding it
//! leased to another session, fails with `LEASED <dir> <holder>` before changing anything. The
//! asking mount then publishes a recall, and the holder sends its log as it stood and deletes
//! the lease with the batch that ends it ([`Delegation::recall`]: later changes are in other
//! directories, and a busy mount may append them as fast as it sends); the asking mount's retry then goes
//! through. A recalled directory stays shared for the rest of the session. A holder that died
//! loses its lease with its session (what it had not sent is lost, as a crashed disk loses
//! what it had not written). Tools and read-only mounts (session 0) cannot recall and read
//! what Redis has.
//!
//! A batch, once built, is one request (see [`crate::store::Request`]): while Redis is away it
//! is sent again, unchanged and under the same identity, until Redis answers, so a batch that
//! ran but whose reply was lost is never run a second time (its creates would find their own
//! files). Only a batch Redis refuses outright (this mount's leases were taken away because its
//! session expired while it was cut off) is dropped; the mount then says so and defers nothing
//! more. Batches are applied even when Redis is over its `maxmemory` (they carry changes already
//! answered), but a batch that finds it so stops new creates from being deferred until one
//! through Redis succeeds: they then meet `ENOSPC` honestly.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{RedisError, Script, Value};

use super::calls::Call;
use super::{checked, redis_failure, AttrChange, Meta};
use crate::attr::{Attr, FileKind, Timestamp};
use crate::error::FsError;
use crate::scripts::Scripts;
use crate::store::{Counter, Request, ScriptArgs};

/// Changes sent per script call.
pub const BATCH: usize = 256;
/// The longest a change waits in the log when nothing asks for it.
pub const MAX_DELAY: Duration = Duration::from_millis(20);
/// Changes the log holds before new ones take the synchronous path (which sends it).
const LOG_LIMIT: usize = 8 * BATCH;
/// Inode numbers reserved per round trip.
const INO_RANGE: u64 = 1024;

/// One deferred change, as the batch script takes it.
struct Deferred {
    /// A kind letter (create), `u`, `h` (unlink), `r` (rmdir) or `a` (attributes of a
    /// directory): see `deferred.lua`.
    op: u8,
    parent: u64,
    name: Vec<u8>,
    ino: u64,
    /// The new inode's record (create), or the change of attributes.
    record: Vec<u8>,
    time: [u8; 10],
}

impl Deferred {
    /// Whether the change creates its inode.
    fn is_creation(&self) -> bool {
        !matches!(self.op, b'u' | b'h' | b'r' | b'a')
    }
}

/// Changes sent in one script call, with the directories handed back after them: once built,
/// sent unchanged under one request identity until Redis answers.
struct Batch {
    changes: Vec<Deferred>,
    recalled: Vec<u64>,
    request: Request,
}

/// `deferred.lua`: the recalled directories, then each change; whether Redis is over its
/// maxmemory (the mount then stops deferring creates).
impl Call for Batch {
    type Reply = bool;
    const NAME: &'static str = "deferred changes";
    fn script(scripts: &Scripts) -> &Script {
        &scripts.deferred
    }
    fn args(&self) -> ScriptArgs {
        let dirs: Vec<String> = self.recalled.iter().map(u64::to_string).collect();
        let mut args = ScriptArgs::default().bytes(dirs.join(" "));
        for c in &self.changes {
            args = args
                .bytes([c.op])
                .num(c.parent)
                .bytes(&c.name)
                .num(c.ino)
                .bytes(&c.record)
                .bytes(c.time);
        }
        args
    }
    fn parse(&self, reply: Vec<Value>) -> Result<bool, FsError> {
        Ok(matches!(reply.get(1), Some(Value::Int(1))))
    }
}

#[derive(Default)]
struct Log {
    /// Directories leased to this session, each with the leased directory this mount made it
    /// in, while it has been nowhere else: no other mount has seen such a directory, nor
    /// can see it before its parent is recalled (see [`Delegation::change_dir`]).
    leased: HashMap<u64, Option<u64>>,
    /// How many entries leased directories hold, where this mount knows it (every change
    /// there was its own deferred one): a directory known empty can be removed deferred too.
    entries: HashMap<u64, u64>,
    /// Changes not yet sent, oldest first.
    changes: VecDeque<Deferred>,
    /// The batch sent last, until Redis answers it.
    unanswered: Option<Arc<Batch>>,
    /// Directories other mounts recalled, each with the count of changes appended before
    /// the recall: it is released with the batch that sends the last of those.
    recalled: Vec<(u64, u64)>,
    /// Changes appended, and changes sent (or given up), since the mount started.
    appended: u64,
    settled: u64,
    /// Unsettled changes per inode they touch (the directory and the inode named).
    touching: HashMap<u64, u32>,
    /// Inode numbers reserved for this mount and not yet used.
    inos: std::ops::Range<u64>,
}

impl Log {
    /// Forgets `dir` as leased here (removed: its lease goes with it).
    fn drop_lease(&mut self, dir: u64) {
        self.leased.remove(&dir);
        self.entries.remove(&dir);
    }

    /// Hands back every directory leased here, after the changes appended so far.
    fn release_leases(&mut self) {
        let upto = self.appended;
        let leased: Vec<(u64, u64)> = self.leased.drain().map(|(dir, _)| (dir, upto)).collect();
        self.recalled.extend(leased);
    }
}

/// What a deferred removal takes away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The last link of a file not open here: the file goes with it.
    File,
    /// The last link of a file open here: this session holds it until its last close.
    HeldFile,
    /// An empty directory leased here.
    Dir,
}

/// A mount's leased directories and the log of changes made in them.
pub struct Delegation {
    /// Whether directories are leased and changes deferred; off for good once Redis refused a
    /// batch.
    enabled: AtomicBool,
    /// Redis was over its memory limit when it last applied a batch: creates go through Redis
    /// (and meet `ENOSPC`) until one succeeds there.
    full: AtomicBool,
    /// How long a request waits for another mount to hand back a directory: a live holder
    /// does it at once, a dead one loses its leases when its session expires.
    recall_wait: Duration,
    log: Mutex<Log>,
    /// How many changes were appended so far (the log's `appended`, readable without its lock
    /// on the write path: see [`Delegation::position`]).
    position: AtomicU64,
    /// One batch at a time, so that batches land in order.
    sending: tokio::sync::Mutex<()>,
    /// Sends that failed without an answer (Redis away): one that fails while others wait for
    /// their turn fails them too, or each would wait out a timeout of its own in turn.
    failed_sends: AtomicU64,
    /// Wakes the background sender: the first change, a full batch, or a recall.
    wake: tokio::sync::Notify,
}

fn lock(log: &Mutex<Log>) -> std::sync::MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

impl Delegation {
    /// A mount's delegation state; with `enabled` false nothing is ever leased or deferred.
    /// Mounts whose sessions expire after `session_timeout` hold leases.
    pub fn new(enabled: bool, session_timeout: Duration) -> Delegation {
        Delegation {
            enabled: AtomicBool::new(enabled),
            full: AtomicBool::new(false),
            // Expiry runs up to a sixth of the timeout (at most 5 s) after it is due.
            recall_wait: session_timeout * 2 + Duration::from_secs(10),
            log: Mutex::default(),
            position: AtomicU64::new(0),
            sending: tokio::sync::Mutex::new(()),
            failed_sends: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Whether directories this mount creates are leased to it.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Acquire)
    }

    /// A create went through Redis: there is room again for deferred ones.
    pub fn room_again(&self) {
        self.full.store(false, Ordering::Release);
    }

    /// Records that the directory `dir` was created leased to this session.
    pub fn leased(&self, dir: u64) {
        let mut log = lock(&self.log);
        log.leased.insert(dir, None);
        log.entries.insert(dir, 0);
    }

    /// Forgets how many entries `dir` holds: a change was made there synchronously.
    pub fn changed_directly(&self, dir: u64) {
        lock(&self.log).entries.remove(&dir);
    }

    /// Whether `dir` is leased to this session.
    pub fn holds(&self, dir: u64) -> bool {
        lock(&self.log).leased.contains_key(&dir)
    }

    /// Defers the creation of `attr` as `parent/name`, giving it an inode number, if `parent`
    /// is leased here (and the log has room and inode numbers are at hand).
    pub fn create(&self, parent: u64, name: &[u8], attr: &mut Attr) -> bool {
        if self.full.load(Ordering::Acquire) {
            return false;
        }
        let mut log = lock(&self.log);
        if !log.leased.contains_key(&parent) || log.changes.len() >= LOG_LIMIT {
            return false;
        }
        let Some(ino) = self.next_ino(&mut log) else {
            return false;
        };
        attr.ino = ino;
        if attr.kind() == FileKind::Dir {
            log.leased.insert(ino, Some(parent));
            log.entries.insert(ino, 0);
        }
        if let Some(n) = log.entries.get_mut(&parent) {
            *n += 1;
        }
        self.append(
            log,
            Deferred {
                op: attr.kind().letter() as u8,
                parent,
                name: name.to_vec(),
                ino,
                record: attr.encode(),
                time: attr.ctime.encode(),
            },
        );
        true
    }

    /// Defers the removal of `parent/name` (`ino`, see [`Removal`]), if `parent` is leased
    /// here; a directory must be leased here too and known to be empty.
    pub fn remove(
        &self,
        parent: u64,
        name: &[u8],
        ino: u64,
        removal: Removal,
        time: Timestamp,
    ) -> bool {
        let mut log = lock(&self.log);
        if !log.leased.contains_key(&parent) || log.changes.len() >= LOG_LIMIT {
            return false;
        }
        if removal == Removal::Dir {
            if !log.leased.contains_key(&ino) || log.entries.get(&ino) != Some(&0) {
                return false;
            }
            log.drop_lease(ino);
        }
        if let Some(n) = log.entries.get_mut(&parent) {
            *n = n.saturating_sub(1);
        }
        self.append(
            log,
            Deferred {
                op: match removal {
                    Removal::File => b'u',
                    Removal::HeldFile => b'h',
                    Removal::Dir => b'r',
                },
                parent,
                name: name.to_vec(),
                ino,
                record: Vec::new(),
                time: time.encode(),
            },
        );
        true
    }

    fn append(&self, mut log: std::sync::MutexGuard<'_, Log>, change: Deferred) {
        for ino in [change.parent, change.ino] {
            *log.touching.entry(ino).or_default() += 1;
        }
        log.changes.push_back(change);
        log.appended += 1;
        self.position.store(log.appended, Ordering::Release);
        let waiting = log.changes.len();
        drop(log);
        if waiting == 1 || waiting == BATCH {
            self.wake.notify_one();
        }
    }

    /// Changes the record of `ino` in its creation, if that is still in the log and not yet
    /// in a batch: no other mount can see an inode before its creation is sent, so the
    /// creation carries the change, and a `touch` or `chmod` of a file just made costs no
    /// round trip. Returns the record as changed; `None`: the change must go through Redis.
    /// Only while the creation is the one change of the inode waiting: later ones (a child
    /// made in a new directory, a removal) would be applied over the change in Redis.
    pub fn amend_creation(&self, ino: u64, change: impl FnOnce(&mut Attr)) -> Option<Attr> {
        if !self.enabled() {
            return None;
        }
        let mut log = lock(&self.log);
        if log.touching.get(&ino) != Some(&1) {
            return None;
        }
        let creation = (log.changes.iter_mut().rev()).find(|c| c.ino == ino && c.is_creation())?;
        let mut attr = Attr::decode(ino, &creation.record)?;
        change(&mut attr);
        creation.record = attr.encode();
        Some(attr)
    }

    /// Defers a change of attributes (no size) of `dir`, a directory this mount made in a
    /// directory leased here, if both are still leased here and `dir` has been nowhere else:
    /// no other mount can have seen it (a look into its parent would have recalled that, a
    /// read of it it), so the change is this mount's alone until the log is sent, as a change
    /// in it is. `tar` sets a directory's times and mode after its contents. `now`: the change
    /// time, unless given.
    pub fn change_dir(&self, dir: u64, change: &AttrChange, now: Timestamp) -> bool {
        let log = lock(&self.log);
        let unseen = match log.leased.get(&dir) {
            Some(&Some(parent)) => log.leased.contains_key(&parent),
            _ => false,
        };
        if !unseen || !self.enabled() || log.changes.len() >= LOG_LIMIT {
            return false;
        }
        self.append(
            log,
            Deferred {
                op: b'a',
                parent: dir,
                name: Vec::new(),
                ino: dir,
                record: change.packed(),
                time: now.encode(),
            },
        );
        true
    }

    /// A rename moved `ino`: if it is a directory leased here, other mounts may have seen it
    /// where it was or may see it where it is now.
    pub fn moved(&self, ino: u64) {
        if let Some(made_in) = lock(&self.log).leased.get_mut(&ino) {
            *made_in = None;
        }
    }

    /// `dir` was removed through Redis: its lease went with it.
    pub fn removed_dir(&self, dir: u64) {
        lock(&self.log).drop_lease(dir);
    }

    /// Another mount asks for `dir`: it is no longer deferred here, and its lease goes with
    /// the batch that sends the last change appended before now. Every mount hears every
    /// recall; one that does not hold `dir` has nothing to do.
    pub fn recall(&self, dir: u64) {
        let mut log = lock(&self.log);
        if log.leased.remove(&dir).is_some() {
            let upto = log.appended;
            log.recalled.push((dir, upto));
            drop(log);
            self.wake.notify_one();
        }
    }

    /// Hands back every directory leased here with the next batch (a clean unmount).
    pub fn release_all(&self) {
        lock(&self.log).release_leases();
    }

    /// Whether the log holds changes or releases not yet sent.
    fn unsent(&self) -> bool {
        let log = lock(&self.log);
        log.appended != log.settled || !log.recalled.is_empty() || log.unanswered.is_some()
    }

    /// Changes answered and not yet settled in Redis.
    pub fn waiting(&self) -> u64 {
        let log = lock(&self.log);
        log.appended - log.settled
    }

    /// Whether a batch should go without waiting for more changes.
    fn urgent(&self) -> bool {
        let log = lock(&self.log);
        log.changes.len() >= BATCH || !log.recalled.is_empty()
    }

    /// How many changes were appended so far, without taking the log's lock: a write notes it,
    /// and the store of what it wrote sends the log up to there first (program order).
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// How many changes Redis has settled.
    fn settled_count(&self) -> u64 {
        lock(&self.log).settled
    }

    /// The next batch to send: the one Redis has not answered yet, or up to [`BATCH`] new
    /// changes and the recalled directories whose earlier changes it completes; `None` when
    /// nothing waits, or when every change of the first `upto` appended is settled and
    /// later ones wait (a sender does not wait for changes appended after it started, which
    /// a busy mount could append as fast as it sends them).
    fn next_batch(&self, upto: u64, request: impl FnOnce() -> Request) -> Option<Arc<Batch>> {
        let mut log = lock(&self.log);
        if let Some(batch) = &log.unanswered {
            return Some(batch.clone());
        }
        if log.settled >= upto && !log.changes.is_empty() {
            return None;
        }
        let needed = upto.saturating_sub(log.settled) as usize;
        let n = log.changes.len().min(BATCH).min(needed);
        let changes: Vec<Deferred> = log.changes.drain(..n).collect();
        let sent = log.settled + n as u64;
        let mut recalled = Vec::new();
        log.recalled.retain(|&(dir, upto)| {
            let due = upto <= sent;
            if due {
                recalled.push(dir);
            }
            !due
        });
        if changes.is_empty() && recalled.is_empty() {
            return None;
        }
        let batch = Arc::new(Batch {
            changes,
            recalled,
            request: request(),
        });
        log.unanswered = Some(batch.clone());
        Some(batch)
    }

    /// Redis answered `batch`: its changes are no longer waiting.
    fn settled(&self, batch: &Batch) {
        let mut log = lock(&self.log);
        log.unanswered = None;
        log.settled += batch.changes.len() as u64;
        for change in &batch.changes {
            for ino in [change.parent, change.ino] {
                if let Some(n) = log.touching.get_mut(&ino) {
                    *n -= 1;
                    if *n == 0 {
                        log.touching.remove(&ino);
                    }
                }
            }
        }
    }

    /// Whether changes not yet in Redis touch `ino` (as the directory changed, or the inode
    /// created or unlinked).
    pub fn touches(&self, ino: u64) -> bool {
        lock(&self.log).touching.contains_key(&ino)
    }

    /// How many changes must be settled for every change touching one of `inos` to be (see
    /// [`Meta::send_deferred_through`]); `None` when none waits.
    fn through(&self, inos: &[u64]) -> Option<u64> {
        let log = lock(&self.log);
        let wanted: HashSet<u64> = (inos.iter().copied())
            .filter(|ino| log.touching.contains_key(ino))
            .collect();
        if wanted.is_empty() {
            return None;
        }
        let in_flight = log
            .unanswered
            .as_ref()
            .map_or(0, |b| b.changes.len() as u64);
        let touching = |c: &Deferred| wanted.contains(&c.parent) || wanted.contains(&c.ino);
        let last_unsent = log.changes.iter().rposition(touching);
        Some(log.settled + in_flight + last_unsent.map_or(0, |at| at as u64 + 1))
    }

    /// A batch Redis refused: this mount's leases are not what it thought (its session was
    /// expired while it was cut off). Nothing more is deferred, and whatever Redis still
    /// records as leased here is handed back with the next batch.
    fn give_up(&self, batch: &Batch) {
        self.settled(batch);
        // Released with the next batch: whatever preceded them is settled (or refused).
        let mut log = self.stop_deferring();
        let settled = log.settled;
        log.recalled
            .extend(batch.recalled.iter().map(|&dir| (dir, settled)));
    }

    /// Other mounts expired this mount's session while it was cut off: its leases are gone,
    /// and what it had not sent of its log will be refused. It defers nothing more.
    pub fn session_lost(&self) {
        let log = self.stop_deferring();
        tracing::error!(
            "this mount was cut off from Redis for longer than the session timeout and other \
             mounts expired its session: {} changes it had answered and not yet sent are lost, \
             and nothing more is deferred",
            log.appended - log.settled
        );
    }

    /// Defers nothing more, and hands back with the next batch every lease Redis may still
    /// record for this mount (the batch script releases only its own).
    fn stop_deferring(&self) -> std::sync::MutexGuard<'_, Log> {
        self.enabled.store(false, Ordering::Release);
        let mut log = lock(&self.log);
        log.release_leases();
        log
    }

    /// An inode number reserved for this mount, if one is at hand (the background sender is
    /// asked for more when a quarter is left).
    pub fn take_ino(&self) -> Option<u64> {
        self.next_ino(&mut lock(&self.log))
    }

    fn next_ino(&self, log: &mut Log) -> Option<u64> {
        let ino = log.inos.next()?;
        if log.inos.end - log.inos.start == INO_RANGE / 4 {
            self.wake.notify_one();
        }
        Some(ino)
    }

    /// Whether deferred creates lack inode numbers.
    pub fn out_of_inos(&self) -> bool {
        lock(&self.log).inos.is_empty()
    }

    fn needs_inos(&self) -> bool {
        let log = lock(&self.log);
        self.enabled() && log.inos.end - log.inos.start <= INO_RANGE / 4
    }
}

/// The directory a script found leased to another session (`LEASED <dir> <holder>`).
pub fn leased_dir(err: &RedisError) -> Option<u64> {
    if err.code() != Some("LEASED") {
        return None;
    }
    err.detail()?.split_whitespace().next()?.parse().ok()
}

impl Meta {
    /// Sends every deferred change appended so far, in order (not those appended while it
    /// sends); waits for a batch already under way.
    pub async fn send_deferred(&self) -> Result<(), FsError> {
        self.send_deferred_upto(self.delegation.position()).await
    }

    /// Sends the deferred changes up to the last one touching any of `inos`, in order: all a
    /// read of them needs. The log is sent as a prefix, so nothing lands out of program order.
    pub async fn send_deferred_through(&self, inos: &[u64]) -> Result<(), FsError> {
        self.send_deferred_unsettled(self.delegation.through(inos).unwrap_or(0))
            .await
    }

    /// Sends what must reach Redis before a change of `ino` alone whose data was written when
    /// the log held `written_at` changes: those, and every change touching `ino`.
    pub async fn send_deferred_for(&self, ino: u64, written_at: u64) -> Result<(), FsError> {
        let touching = self.delegation.through(&[ino]).unwrap_or(0);
        self.send_deferred_unsettled(touching.max(written_at)).await
    }

    /// Sends the first `upto` changes, unless Redis settled them already (without waiting for
    /// a batch of later ones under way).
    async fn send_deferred_unsettled(&self, upto: u64) -> Result<(), FsError> {
        if self.delegation.settled_count() >= upto {
            return Ok(());
        }
        self.send_deferred_upto(upto).await
    }

    /// Sends deferred changes until the first `upto` appended are settled.
    async fn send_deferred_upto(&self, upto: u64) -> Result<(), FsError> {
        let d = &self.delegation;
        // Session 0 is a tool's view of this mount's connection (a clean unmount expires its
        // session as a tool would): the log is the session's to send, never a tool's.
        if self.session == 0 || !d.unsent() {
            return Ok(());
        }
        let failed_before = d.failed_sends.load(Ordering::Acquire);
        let _turn = d.sending.lock().await;
        if d.failed_sends.load(Ordering::Acquire) != failed_before {
            // (Unless what this caller needs was settled before the failure.)
            return match d.settled_count() >= upto {
                true => Ok(()),
                false => Err(FsError::Io),
            };
        }
        while let Some(batch) = d.next_batch(upto, || self.store.request(self.session)) {
            let script = Batch::script(&self.scripts);
            let reply = self
                .store
                .script_as(script, &batch.request, &batch.args())
                .await;
            let refusal = match reply {
                Ok((reply, generation)) => match checked(reply).and_then(|r| batch.parse(r)) {
                    Ok(full) => {
                        self.store.changed(generation, batch.request);
                        d.full.store(full, Ordering::Release);
                        d.settled(&batch);
                        continue;
                    }
                    Err(errno) => errno.to_string(),
                },
                // Only the script's own answer refuses a batch: Redis away, busy, failing over
                // or unable to persist (MISCONF) ran nothing, and the batch is sent again as
                // it is.
                Err(e) => {
                    d.failed_sends.fetch_add(1, Ordering::AcqRel);
                    return Err(redis_failure("sending deferred changes", &e));
                }
            };
            tracing::error!(
                "Redis refused {} changes this mount had already answered ({refusal}), as it \
                 does when the mount's leases were taken from it (cut off longer than the \
                 session timeout, its session expired); they are lost, and nothing more is \
                 deferred",
                batch.changes.len()
            );
            d.give_up(&batch);
            return Err(FsError::Io);
        }
        Ok(())
    }

    /// Asks the holder of `dir` to hand it back and waits a little before the caller tries
    /// again; fails once the holder had time to hand it back or lose it with its session.
    pub async fn recall(
        &self,
        dir: u64,
        started: Instant,
        delay: &mut Duration,
    ) -> Result<(), FsError> {
        if started.elapsed() > self.delegation.recall_wait {
            tracing::error!("directory {dir}: the mount holding it never handed it back");
            return Err(FsError::Io);
        }
        if *delay >= Duration::from_millis(500) {
            tracing::warn!("directory {dir}: waiting for the mount holding it to hand it back");
        }
        let message = format!("{}\0r{dir}", self.session);
        self.store
            .cmd::<i64>(
                redis::cmd("PUBLISH")
                    .arg(self.store.keys.events())
                    .arg(message),
            )
            .await
            .map_err(|e| redis_failure("recalling a directory", &e))?;
        tokio::time::sleep(*delay).await;
        *delay = (*delay * 2).min(Duration::from_secs(1));
        Ok(())
    }

    /// A number for a new inode: every create takes one from the range reserved for this
    /// mount, so that only one create in [`INO_RANGE`] has Redis count (and check which server
    /// counts, see `src/lua/reserve.lua`).
    pub async fn new_ino(&self) -> Result<u64, FsError> {
        loop {
            if let Some(ino) = self.delegation.take_ino() {
                return Ok(ino);
            }
            self.reserve_inos().await?;
        }
    }

    /// Reserves inode numbers for this mount's creates.
    pub async fn reserve_inos(&self) -> Result<(), FsError> {
        let end = (self.store.reserve(Counter::Inode, INO_RANGE))
            .await
            .map_err(|e| redis_failure("reserving inode numbers", &e))?;
        lock(&self.delegation.log).inos = end + 1 - INO_RANGE..end + 1;
        Ok(())
    }

    /// Sends the log in the background for as long as the mount runs: [`MAX_DELAY`] after
    /// its first change, at once when a batch is full or a directory was recalled.
    pub async fn send_in_background(self) {
        let d = self.delegation.clone();
        if !d.enabled() {
            return;
        }
        loop {
            if d.needs_inos() {
                if let Err(e) = self.reserve_inos().await {
                    tracing::warn!("reserving inode numbers: {e}");
                }
            }
            if !d.unsent() {
                d.wake.notified().await;
                continue;
            }
            // Only a full batch, a recall or a want of inode numbers cuts the wait short: not
            // the wake-up a change gave while the last batch was under way, or batches would
            // go back to back and take creations before what a program does to the file it
            // just made (a `touch`, a `tar x`) can ride with them.
            let deadline = tokio::time::Instant::now() + MAX_DELAY;
            while !d.urgent() && !d.needs_inos() {
                if tokio::time::timeout_at(deadline, d.wake.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            if let Err(e) = self.send_deferred().await {
                if self.store.is_gone() {
                    return;
                }
                tracing::warn!("sending deferred changes: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A mount's log with directory 1 leased and inode numbers 100… at hand.
    fn leased_log() -> Delegation {
        let d = Delegation::new(true, Duration::from_secs(30));
        d.leased(1);
        lock(&d.log).inos = 100..200;
        d
    }

    fn create(d: &Delegation, name: &str) -> u64 {
        make(d, 1, name, FileKind::File)
    }

    fn make(d: &Delegation, parent: u64, name: &str, kind: FileKind) -> u64 {
        let mut attr = Attr::new(kind, 0o755, 0, 0, Timestamp::now());
        assert!(d.create(parent, name.as_bytes(), &mut attr));
        attr.ino
    }

    #[test]
    fn only_a_directory_no_other_mount_can_have_seen_changes_in_the_log() {
        let d = leased_log();
        let chmod = AttrChange {
            mode: Some(0o700),
            ..AttrChange::default()
        };
        let now = Timestamp::now();
        let (made, moving) = (
            make(&d, 1, "a", FileKind::Dir),
            make(&d, 1, "b", FileKind::Dir),
        );
        let inner = make(&d, made, "c", FileKind::Dir);
        assert!(d.change_dir(made, &chmod, now));
        assert!(d.change_dir(inner, &chmod, now));
        assert!(!d.change_dir(1, &chmod, now), "made through Redis: seen");
        d.moved(moving);
        assert!(
            !d.change_dir(moving, &chmod, now),
            "moved: seen where it went"
        );
        d.recall(made);
        assert!(!d.change_dir(made, &chmod, now), "recalled");
        assert!(!d.change_dir(inner, &chmod, now), "its parent recalled");
        let log = lock(&d.log);
        let change = log.changes.iter().find(|c| c.op == b'a').unwrap();
        assert_eq!((change.parent, change.ino), (made, made));
        assert_eq!(change.record, chmod.packed());
        assert_eq!(
            log.touching[&made], 4,
            "made, its child, and the change (as dir and inode)"
        );
    }

    #[test]
    fn what_is_sent_for_one_inode_ends_at_its_last_change() {
        let d = leased_log();
        let (a, b, c) = (create(&d, "a"), create(&d, "b"), create(&d, "c"));
        assert_eq!(d.through(&[a]), Some(1));
        assert_eq!(d.through(&[b, a]), Some(2));
        assert_eq!(
            d.through(&[1]),
            Some(3),
            "the directory: every change in it"
        );
        assert_eq!(d.through(&[999]), None);
        let batch = d.next_batch(1, || Request::sent(1, 1)).unwrap();
        assert_eq!(batch.changes.len(), 1, "a prefix, not the whole log");
        assert_eq!(batch.changes[0].ino, a);
        // In flight, the change still counts until Redis answers.
        assert_eq!(d.through(&[a]), Some(1));
        assert_eq!(d.through(&[c]), Some(3));
        d.settled(&batch);
        assert_eq!(d.through(&[a]), None);
        assert_eq!(d.through(&[c]), Some(3));
    }

    #[test]
    fn a_change_rides_with_a_creation_only_while_it_waits_in_the_log() {
        let d = leased_log();
        let (a, b) = (create(&d, "a"), create(&d, "b"));
        let batch = d.next_batch(1, || Request::sent(1, 1)).unwrap();
        assert_eq!(
            d.amend_creation(a, |attr| attr.uid = 7),
            None,
            "a is in flight"
        );
        let amended = d.amend_creation(b, |attr| attr.uid = 7).unwrap();
        assert_eq!((amended.ino, amended.uid), (b, 7));
        d.settled(&batch);
        let rest = d.next_batch(2, || Request::sent(1, 2)).unwrap();
        let sent = Attr::decode(b, &rest.changes[0].record).unwrap();
        assert_eq!(sent.uid, 7, "the creation sent carries the change");
        d.remove(1, b"b", b, Removal::File, Timestamp::now());
        assert_eq!(d.amend_creation(b, |attr| attr.uid = 8), None);
    }
}
