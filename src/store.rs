//! The connection to Redis (see [`crate::link`]) and the retry policy.
//!
//! A lost connection is treated like a hard NFS mount: a request waits and retries with
//! back-off until the I/O timeout passes, and only then fails. A connection that broke is
//! replaced before the next attempt (by the primary the sentinels name now, where they do).

use std::future::Future;
use std::time::{Duration, Instant};

use std::sync::Arc;

use redis::{ErrorKind, RedisError, RedisResult, Script, ServerErrorKind, Value};

use crate::codec::Encoded;
use crate::error::Error;
use crate::keys::Keys;
use crate::link::{Conn, Link, Node, NodeAddress};
use crate::options::RedisTarget;

/// Arguments of one script call, after the prefix.
#[derive(Default, Debug, Clone)]
pub struct ScriptArgs(Vec<Vec<u8>>);

impl ScriptArgs {
    /// Appends a number.
    pub fn num(mut self, n: impl ToString) -> Self {
        self.0.push(n.to_string().into_bytes());
        self
    }

    /// Appends bytes (names, records, timestamps).
    pub fn bytes(mut self, b: impl AsRef<[u8]>) -> Self {
        self.0.push(b.as_ref().to_vec());
        self
    }

    /// Appends bytes already in a buffer of their own (block values), without copying.
    pub fn owned(mut self, b: Vec<u8>) -> Self {
        self.0.push(b);
        self
    }
}

/// A counter handing out numbers that are never handed out twice (see `src/lua/reserve.lua`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Inode,
    Block,
    Session,
}

impl Counter {
    /// The counter's name in `reserve.lua`'s arguments.
    fn name(self) -> &'static str {
        match self {
            Counter::Inode => "inode",
            Counter::Block => "block",
            Counter::Session => "session",
        }
    }
}

/// The identity of one changing script call, the same for every attempt to send it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Request {
    session: u64,
    id: u64,
    /// Whether the call refuses to run once the caller gave up on it (see
    /// [`Store::script_as`]).
    bounded: bool,
}

impl Request {
    /// A request of `session` numbered `id`, sent before: for asking its ring of replies.
    pub fn sent(session: u64, id: u64) -> Request {
        Request {
            session,
            id,
            bounded: false,
        }
    }

    /// A request outside every session's ring of replies, for a script whose second run
    /// changes nothing.
    pub fn unrecorded() -> Request {
        Request::sent(0, 0)
    }

    /// The same request, refusing to run once its caller gave up on it: an attempt queued on
    /// a connection to a stalled Redis must not take effect after the caller was told it
    /// failed.
    pub fn bounded(self) -> Request {
        Request {
            bounded: true,
            ..self
        }
    }
}

/// A change answered by a primary that has replicas, numbered in the order of the answers:
/// kept by its writer until a [`Replicated`] covers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The node it was sent to (see [`Node::generation`]); it may have been answered by a
    /// later one.
    pub generation: u64,
    pub serial: u64,
    /// The request, whose reply the ring of any primary that ran it holds.
    pub request: Request,
}

/// A replica of node `generation` has every change that node answered up to `through`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicated {
    pub generation: u64,
    pub through: u64,
}

impl Replicated {
    /// Whether `answered` is known to be on a replica.
    pub fn covers(&self, answered: Answered) -> bool {
        answered.generation == self.generation && answered.serial <= self.through
    }

    /// Whether `answered` went to a primary replaced since, which may not have passed it on
    /// (unless the new primary's ring of replies has it, it must be written again).
    pub fn lost(&self, answered: Answered) -> bool {
        answered.generation < self.generation
    }
}

/// Changes answered on one node and kept until a replica confirmed them, at most the number
/// of slots in a session's ring of replies (older ones could not be looked up there).
const CHANGES_KEPT: usize = 4096;

/// What a mount knows of whether a failover lost changes it had answered (see
/// [`Store::changes_lost`]).
#[derive(Default)]
struct Losses {
    /// The changes answered on each node, numbered in the order their answers were taken,
    /// not yet confirmed by a replica nor looked up from a later node.
    answered_on: std::sync::Mutex<
        std::collections::BTreeMap<u64, std::collections::VecDeque<(u64, Request)>>,
    >,
    /// Numbers the entries of `answered_on`.
    noted: std::sync::atomic::AtomicU64,
    /// The changes found missing on a new primary.
    lost: std::sync::Mutex<std::collections::HashSet<Request>>,
    /// One look at a new primary at a time.
    looking: tokio::sync::Mutex<()>,
    /// Failovers found to have lost changes this mount had answered.
    count: std::sync::atomic::AtomicU64,
}

/// The waits for a replica of one store: one `WAIT` at a time, whose outcome serves every
/// caller that arrived before it began (concurrent `fsync`s share one round trip to the
/// replica instead of queueing one each behind the connection's last; in an outage they share
/// one `--io-timeout` instead of waiting it out one after another).
#[derive(Default)]
struct Waits {
    /// `WAIT`s begun so far.
    begun: std::sync::atomic::AtomicU64,
    /// The last one that ended: its number and what it confirmed, or why it failed.
    last: tokio::sync::Mutex<Option<(u64, RedisResult<Replicated>)>>,
}

/// How long one `WAIT` for a replica lasts before the replicas are counted again.
const REPLICA_WAIT: Duration = Duration::from_secs(1);

/// A connected Redis, the filesystem's key names, and the retry policy.
#[derive(Clone)]
pub struct Store {
    /// The connected server, replaced when it is lost.
    pub link: Arc<Link>,
    /// Key names of the filesystem.
    pub keys: Keys,
    /// Where the server is, safe to print (the sentinels, for a Sentinel-managed one).
    pub address: String,
    /// The database number selected.
    pub db: i64,
    io_timeout: Duration,
    requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// How far Redis's clock is ahead of this machine's, in ms, as last measured.
    clock_offset: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// Changes answered that a writer keeps until a replica has them (see [`Answered`]).
    answered: std::sync::Arc<std::sync::atomic::AtomicU64>,
    losses: Arc<Losses>,
    waits: Arc<Waits>,
    /// Clean-ups after failed requests (blocks to delete), run beside them and waited for
    /// before a mount ends its session (see [`Store::clean_up_later`]).
    cleanups: tokio_util::task::TaskTracker,
    /// The identity (`uuid`) of the filesystem a mount serves, once it checked it: every
    /// script, and every read of a file's blocks, then makes sure the filesystem in Redis is
    /// still that one (see [`Store::serve`]).
    serving: Arc<std::sync::OnceLock<String>>,
    /// Whether the filesystem served was found gone from Redis (see [`Store::lost_filesystem`]).
    gone: Arc<std::sync::atomic::AtomicBool>,
}

/// What a request answers once the filesystem a mount serves is no longer in Redis: the
/// error the scripts answer too (`GONE`, see `src/lua/prelude.lua`).
fn filesystem_gone() -> RedisError {
    redis::make_extension_error(
        "GONE".into(),
        Some("the filesystem served is no longer here".into()),
    )
}

/// What a mount logs once its filesystem is gone from Redis (see [`Store::serve`]).
pub const FILESYSTEM_GONE: &str = "the filesystem this mount serves is no longer in Redis \
    (Redis lost its data, or the filesystem was removed or replaced): unmount, and mount again";

/// Whether `err` says the filesystem a mount serves is no longer in Redis (see
/// [`Store::serve`]): alone, or as the error of a script in a pipeline or transaction.
pub fn is_filesystem_gone(err: &RedisError) -> bool {
    (err.clone().into_server_errors())
        .is_some_and(|all| all.iter().any(|(_, e)| e.code() == "GONE"))
}

/// Whether a slot of a session's ring of replies holds the reply to `request`.
fn holds_reply(slot: Option<&[u8]>, request: &Request) -> bool {
    slot.is_some_and(|d| d.starts_with(format!("{}:", request.id).as_bytes()))
}

/// Whether an error means "Redis is away for now" rather than "the request is wrong".
/// On a cluster in transition: `MOVED`/`ASK` that its client stopped following (a replica
/// points at its dead primary until the cluster promotes it; a slot moves), and `NOSCRIPT`
/// after the client loaded the script (the load can reach the nodes of a slot map one step
/// behind the command's). A command refused so did not run.
pub fn is_transient(err: &RedisError) -> bool {
    (err.is_io_error() && !is_tls_refusal(err))
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::NoScript
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            )
        )
}

/// Whether `err` is a TLS handshake that failed on a certificate (or another TLS rule) either
/// side does not accept: no retry makes it pass.
fn is_tls_refusal(err: &RedisError) -> bool {
    let mut cause = std::error::Error::source(err);
    while let Some(e) = cause {
        let tls = e.is::<rustls::Error>()
            || e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| inner.is::<rustls::Error>());
        if tls {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Runs `op`, retrying with back-off while Redis at `address` is unreachable, up to
/// `io_timeout`.
pub async fn retry_while_away<T, F, Fut>(
    address: &str,
    io_timeout: Duration,
    mut op: F,
) -> RedisResult<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = RedisResult<T>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    loop {
        match op().await {
            Err(e) if is_transient(&e) && start.elapsed() < io_timeout => {
                tracing::warn!("Redis at {address} unavailable ({e}); retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            other => return other,
        }
    }
}

impl Store {
    /// Connects to `target` for the filesystem under `prefix`.
    pub async fn connect(
        target: &RedisTarget,
        prefix: &str,
        io_timeout: Duration,
    ) -> Result<Store, Error> {
        // TLS (rediss://) needs a process-wide crypto provider; installing twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let redis_err = |context: &str, source| Error::Redis {
            address: target.display.clone(),
            context: context.to_string(),
            source,
        };
        let link = Link::open(target, io_timeout)
            .await
            .map_err(|e| redis_err("cannot connect", e))?;
        Ok(Store {
            link: Arc::new(link),
            keys: Keys::new(prefix),
            address: target.display.clone(),
            db: target.db(),
            io_timeout,
            requests: std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1)),
            clock_offset: std::sync::Arc::default(),
            answered: std::sync::Arc::default(),
            losses: Arc::default(),
            waits: Arc::default(),
            cleanups: tokio_util::task::TaskTracker::new(),
            serving: Arc::default(),
            gone: Arc::default(),
        })
    }

    /// Runs `work`, a clean-up after a failed request, in the background; an unmount waits for
    /// it (see [`Store::cleanups_done`]), so that what it deletes is not left behind.
    pub fn clean_up_later<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.cleanups.spawn(work);
    }

    /// Waits for the clean-ups under way, at most `patience`; answers whether they all ended.
    pub async fn cleanups_done(&self, patience: Duration) -> bool {
        self.cleanups.close();
        tokio::time::timeout(patience, self.cleanups.wait())
            .await
            .is_ok()
    }

    /// Measures how far Redis's clock is from this machine's, for the deadlines of bounded
    /// requests: a mount measures at start and again now and then, as clocks drift.
    pub async fn measure_clock(&self) -> RedisResult<()> {
        // The sample with the shortest round trip, and none that took a second: a `TIME`
        // queued in a stalled Redis would put its clock far from where it is.
        let mut best: Option<(u64, i64)> = None;
        for _ in 0..3 {
            let mut conn = self.link.node().conn.clone();
            let before = crate::session::now_ms();
            let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut conn).await?;
            let after = crate::session::now_ms();
            let server = secs * 1000 + micros / 1000;
            let sample = (
                after - before,
                server as i64 - before.midpoint(after) as i64,
            );
            if best.is_none_or(|(trip, _)| sample.0 < trip) {
                best = Some(sample);
            }
        }
        if let Some((_, offset)) = best.filter(|&(trip, _)| trip < 1000) {
            self.clock_offset
                .store(offset, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(())
    }

    /// The moment, on Redis's clock in ms, after which a bounded request sent now refuses to
    /// run: a little before this mount gives up on it, so that no attempt still queued in a
    /// stalled Redis can run after the caller was told it failed.
    fn deadline(&self) -> u64 {
        let margin = (self.io_timeout / 4).min(Duration::from_millis(250));
        let offset = self.clock_offset.load(std::sync::atomic::Ordering::Relaxed);
        let now = crate::session::now_ms().saturating_add_signed(offset);
        now + (self.io_timeout - margin).as_millis() as u64
    }

    /// How long requests are retried while Redis is unreachable.
    pub fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// The node a change is about to be sent to, if it has replicas: its writer keeps the
    /// change until a replica has it (see [`Store::answered`]).
    pub fn replicated_node(&self) -> Option<u64> {
        let node = self.link.node();
        (node.replicas.load(std::sync::atomic::Ordering::Relaxed) > 0).then_some(node.generation)
    }

    /// Numbers `request`, sent to the node of `generation` ([`Store::replicated_node`], read
    /// before it was sent), now that it is answered.
    pub fn answered(&self, generation: u64, request: Request) -> Answered {
        let serial = self
            .answered
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        Answered {
            generation,
            serial,
            request,
        }
    }

    /// Notes that `request`, a change, was answered by the node of `generation`.
    pub fn changed(&self, generation: u64, request: Request) {
        if request.session == 0 {
            return;
        }
        let number = self
            .losses
            .noted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            + 1;
        let mut answered = (self.losses.answered_on.lock()).unwrap_or_else(|p| p.into_inner());
        let on_node = answered.entry(generation).or_default();
        on_node.push_back((number, request));
        if on_node.len() > CHANGES_KEPT {
            on_node.pop_front();
        }
    }

    /// A replica of the node of `generation` has every change answered before the change
    /// numbered `through` was noted: they are no longer looked for after a failover.
    fn changes_replicated(&self, generation: u64, through: u64) {
        let mut answered = (self.losses.answered_on.lock()).unwrap_or_else(|p| p.into_inner());
        if let Some(on_node) = answered.get_mut(&generation) {
            on_node.retain(|(number, _)| *number > through);
        }
    }

    /// How many failovers lost changes this mount had answered, as far as is known with the
    /// node of `generation` in use: the new primary's ring of replies is asked, in one
    /// pipeline, for every change answered by a node replaced since that no replica had
    /// confirmed. Asked soon after the move (see `Core::replicate_in_background`), before
    /// later requests take their slots of the ring.
    pub async fn changes_lost(&self, generation: u64) -> RedisResult<u64> {
        let losses = &self.losses;
        let _one_look = losses.looking.lock().await;
        let replaced: Vec<Request> = {
            let answered = losses.answered_on.lock().unwrap_or_else(|p| p.into_inner());
            (answered.range(..generation))
                .flat_map(|(_, on_node)| on_node.iter().map(|(_, request)| *request))
                .collect()
        };
        if !replaced.is_empty() {
            let mut pipe = redis::pipe();
            for request in &replaced {
                pipe.cmd("HGET")
                    .arg(self.keys.session_replies(request.session))
                    .arg(request.id % 4096);
            }
            let slots: Vec<Option<Vec<u8>>> = self.pipe(&pipe).await?;
            let missing: Vec<Request> = (replaced.iter().zip(&slots))
                .filter(|(request, slot)| !holds_reply(slot.as_deref(), request))
                .map(|(request, _)| *request)
                .collect();
            let missing = {
                let mut lost = losses.lost.lock().unwrap_or_else(|p| p.into_inner());
                lost.extend(&missing);
                missing.len()
            };
            if missing > 0 {
                tracing::error!(
                    "the primary that was replaced (now node {generation}) did not pass on \
                     {missing} of the {} changes this mount had answered there",
                    replaced.len()
                );
                losses
                    .count
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            let mut answered = losses.answered_on.lock().unwrap_or_else(|p| p.into_inner());
            answered.retain(|on, _| *on >= generation);
        }
        Ok(losses.count.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Whether `request` was answered by a primary that failed before its successor had it
    /// (as far as [`Store::changes_lost`] has looked).
    pub fn was_lost(&self, request: &Request) -> bool {
        (self.losses.lost.lock().unwrap_or_else(|p| p.into_inner())).contains(request)
    }

    /// Failovers found so far to have lost changes this mount had answered.
    pub fn losses(&self) -> u64 {
        self.losses.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// How many changes kept for a replica were answered so far.
    pub fn answered_so_far(&self) -> u64 {
        self.answered.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until a replica of the primary has every change answered so far (at once, for a
    /// primary without replicas), retrying as any request does, up to the I/O timeout; a
    /// primary lost meanwhile is replaced, and the answer says so (see [`Replicated::lost`]).
    /// A `WAIT` begun after this call covers everything answered before it: callers that
    /// arrive while one is under way share the next.
    pub async fn reach_replicas(&self) -> RedisResult<Replicated> {
        use std::sync::atomic::Ordering::SeqCst;
        let waits = &self.waits;
        let arrived = waits.begun.load(SeqCst);
        let mut last = waits.last.lock().await;
        if let Some((number, outcome)) = &*last {
            if *number > arrived {
                return outcome.clone();
            }
        }
        let number = waits.begun.fetch_add(1, SeqCst) + 1;
        let outcome = self.wait_for_a_replica().await;
        *last = Some((number, outcome.clone()));
        outcome
    }

    /// One wait for a replica (see [`Store::reach_replicas`]).
    async fn wait_for_a_replica(&self) -> RedisResult<Replicated> {
        self.retry_on_node(|node| async move {
            let confirmed = Replicated {
                generation: node.generation,
                through: self.answered.load(std::sync::atomic::Ordering::SeqCst),
            };
            let noted = self.losses.noted.load(std::sync::atomic::Ordering::SeqCst);
            let has_replicas = node.replicas.load(std::sync::atomic::Ordering::Relaxed) > 0;
            // WAIT covers its own connection's last write: a PUBLISH (which replicas receive
            // too) on it puts that after every change already answered on the other one. On
            // a cluster, the connection to each primary that carried the writes asks it (and
            // a cluster's PUBLISH goes to other nodes, not to replicas).
            let mut pipe = redis::pipe();
            if !node.is_cluster() {
                pipe.cmd("PUBLISH")
                    .arg(self.keys.event_probes())
                    .arg("")
                    .ignore();
            }
            pipe.cmd("WAIT").arg(1).arg(REPLICA_WAIT.as_millis() as u64);
            // On a cluster, blocks went over connections of their own to each primary: they
            // are waited for on those (see `BlockWriter::confirm`).
            let acknowledged = match has_replicas {
                true => {
                    let mut conn = node.replication_conn.clone();
                    let (general, blocks) = futures_util::future::join(
                        pipe.query_async::<(u64,)>(&mut conn),
                        node.confirm_block_writes(REPLICA_WAIT),
                    )
                    .await;
                    let blocks = match blocks {
                        Ok(blocks) => blocks.unwrap_or(u64::MAX),
                        // Blocks written on a connection lost before they were confirmed: on
                        // a new node every block kept for a replica is stored again.
                        Err(e) => {
                            tracing::warn!("{}: {e}; connecting again", node.address);
                            self.link.replace(node.generation).await?;
                            return Err(RedisError::from((
                                ErrorKind::Server(ServerErrorKind::TryAgain),
                                "block writes to store again",
                                e.to_string(),
                            )));
                        }
                    };
                    general?.0.min(blocks)
                }
                false => 0,
            };
            let replicas_left = match node.is_cluster() {
                true => Some(self.cluster_unmoved(&node, has_replicas).await?),
                false => None,
            };
            if !has_replicas {
                return Ok(confirmed);
            }
            // No replica answered in time and none is left: nothing to wait for.
            let answered = acknowledged >= 1
                || match replicas_left {
                    Some(count) => count,
                    None => node.count_replicas().await?,
                } == 0;
            // (A node replaced meanwhile does not speak for the new one.)
            if answered && self.link.node().generation == node.generation {
                self.changes_replicated(node.generation, noted);
                return Ok(confirmed);
            }
            // Waited for again, as a busy server is (the node itself stays in use).
            Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::TryAgain),
                "no replica acknowledged the writes",
                format!("on {}", node.address),
            )))
        })
        .await
    }

    /// After a wait for replicas on a cluster (which followed any failover by itself), fails
    /// with `TRYAGAIN` when a primary changed, replacing the node first (asked even where no
    /// primary has a replica now: the replica promoted after a primary died has none, and
    /// what the dead one had not passed on is to be found), or when replicas linked since
    /// none was counted (`waited`: whether the wait asked any); answers the fewest replicas
    /// of a primary.
    async fn cluster_unmoved(&self, node: &Node, waited: bool) -> RedisResult<u64> {
        let now = node.replication_now().await?;
        if now.failed_over {
            tracing::warn!(
                "a primary of {} changed: what was answered before is checked and stored again",
                node.address
            );
            self.link.replace(node.generation).await?;
        }
        if now.failed_over || !waited && now.replicas > 0 {
            return Err(RedisError::from((
                ErrorKind::Server(ServerErrorKind::TryAgain),
                match now.failed_over {
                    true => "a primary of the cluster changed",
                    false => "replicas of the cluster linked since they were counted",
                },
                node.address.clone(),
            )));
        }
        Ok(now.replicas)
    }

    /// Makes every later request of this store (and its clones) check that the filesystem in
    /// Redis is the one whose identity is `uuid`: Redis can lose a filesystem under a mount
    /// (restarted without persistence, flushed) and another mount can then make a new one under
    /// the same prefix, whose inodes the first must not write to (nor read zeros for its lost
    /// blocks).
    pub fn serve(&self, uuid: &str) {
        let _ = self.serving.set(uuid.to_string());
    }

    /// Notes that the filesystem served is no longer in Redis: every later request fails
    /// (see [`Store::retry_on_node`]). Said once, in the log.
    pub fn lost_filesystem(&self) {
        if !self.gone.swap(true, std::sync::atomic::Ordering::AcqRel) {
            tracing::error!("{FILESYSTEM_GONE}");
        }
    }

    /// After the filesystem served left Redis, deletes `keys`, blocks this mount stored before
    /// it noticed, unless a filesystem is there again (its blocks may have the same ids):
    /// once, without retries, past the refusal of everything else.
    pub async fn delete_strays(&self, keys: &[String]) -> RedisResult<()> {
        let mut conn = self.link.node().conn.clone();
        let again: bool = redis::cmd("EXISTS")
            .arg(self.keys.meta())
            .query_async(&mut conn)
            .await?;
        if !again {
            redis::cmd("DEL")
                .arg(keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(())
    }

    /// Whether the filesystem served was found gone from Redis.
    pub fn is_gone(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The identity of the filesystem served (see [`Store::serve`]), empty before a mount
    /// checked it and for tools.
    pub fn serving(&self) -> &str {
        self.serving.get().map_or("", String::as_str)
    }

    /// `pipe`, of reads of the metadata, sent with a check that the filesystem is still the
    /// one served (see [`Store::serve`]), in the same round trip; fails without retrying when
    /// it is not. (A missing key reads as empty: only while the filesystem is the one served.)
    pub async fn pipe_of_served(&self, pipe: &redis::Pipeline) -> RedisResult<Vec<Value>> {
        if self.serving().is_empty() {
            return self.pipe(pipe).await;
        }
        let mut checked = pipe.clone();
        checked.cmd("HGET").arg(self.keys.meta()).arg("uuid");
        let mut replies: Vec<Value> = self.pipe(&checked).await?;
        match replies.pop() {
            Some(Value::BulkString(uuid)) if uuid == self.serving().as_bytes() => Ok(replies),
            _ => {
                self.lost_filesystem();
                Err(filesystem_gone())
            }
        }
    }

    /// [`Store::pipe_of_served`] of one command.
    pub async fn cmd_of_served<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> RedisResult<T> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        let reply = self.pipe_of_served(&pipe).await?.remove(0);
        Ok(redis::from_redis_value(reply)?)
    }

    /// The same connection, for the filesystem under another prefix.
    pub fn with_prefix(&self, prefix: &str) -> Store {
        Store {
            keys: Keys::new(prefix),
            serving: Arc::default(),
            gone: Arc::default(),
            ..self.clone()
        }
    }

    /// Turns a Redis error into the library's error, saying what was being done.
    pub fn failed(&self, context: &str) -> impl FnOnce(RedisError) -> Error {
        let address = self.address.clone();
        let context = context.to_string();
        move |source| Error::Redis {
            address,
            context,
            source,
        }
    }

    /// Runs `op` on a connection, retrying with back-off while Redis is unreachable, up to
    /// the I/O timeout.
    pub async fn retry<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        self.retry_on_node(|node| op(node.conn.clone())).await
    }

    /// Runs `op` on the node in use, retrying with back-off while Redis is unreachable, up
    /// to the I/O timeout; a node lost is replaced before the next attempt. Once the
    /// filesystem served is found gone (see [`Store::serve`]) nothing is sent any more: not a
    /// block, whose id may be one the new filesystem there uses, nor its deletion.
    pub async fn retry_on_node<T, F, Fut>(&self, op: F) -> RedisResult<T>
    where
        F: Fn(Arc<Node>) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        retry_while_away(&self.address, self.io_timeout, || {
            let started = std::time::Instant::now();
            let node = self.link.node();
            let generation = node.generation;
            let reply = (!self.is_gone()).then(|| op(node));
            async move {
                let Some(reply) = reply else {
                    return Err(filesystem_gone());
                };
                let reply = reply.await;
                crate::metrics::metrics().round_trip(started.elapsed());
                if reply.as_ref().is_err_and(is_filesystem_gone) {
                    self.lost_filesystem();
                }
                match reply {
                    Err(e) if self.link.is_lost(&e) => match self.link.replace(generation).await {
                        // Sent again, to the new node (a retry runs nothing twice).
                        Ok(()) if !is_transient(&e) => Err(RedisError::from((
                            ErrorKind::Io,
                            "the primary moved",
                            e.to_string(),
                        ))),
                        Ok(()) => Err(e),
                        Err(unreachable) => Err(unreachable),
                    },
                    other => other,
                }
            }
        })
        .await
    }

    /// Runs a command with retries.
    pub async fn cmd<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        self.retry(|mut c| async move { cmd.query_async(&mut c).await })
            .await
    }

    /// Runs `cmd` on the node at `address` of a cluster (on the server, for one server),
    /// with retries.
    pub async fn cmd_on<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
        address: &NodeAddress,
    ) -> RedisResult<T> {
        self.retry(|mut c| async move {
            let value = c.send_to(cmd, address).await?.extract_error()?;
            Ok(T::from_redis_value(value)?)
        })
        .await
    }

    /// The primaries of a cluster now, one `None` standing for the server otherwise: where
    /// a walk over every key goes.
    pub async fn primaries(&self) -> RedisResult<Vec<Option<NodeAddress>>> {
        let listed = self
            .retry_on_node(|node| async move { node.primaries().await })
            .await?;
        Ok(match listed.is_empty() {
            true => vec![None],
            false => listed.into_iter().map(Some).collect(),
        })
    }

    /// Runs a pipeline with retries.
    pub async fn pipe<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> RedisResult<T> {
        self.retry(|mut c| async move { pipe.query_async(&mut c).await.map_err(cause_of_abort) })
            .await
    }

    /// A new request of `session`: its identity for every attempt of one script call (tools,
    /// session 0, have no ring of replies and no identity).
    pub fn request(&self, session: u64) -> Request {
        let id = if session == 0 {
            0
        } else {
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        };
        Request {
            session,
            id,
            bounded: false,
        }
    }

    /// Whether `request` ran: its reply is in its slot of its session's ring. Asked once no
    /// attempt of it can run any more (a bounded request past its deadline), the answer is
    /// final.
    pub async fn ran(&self, request: &Request) -> RedisResult<bool> {
        let done: Option<Vec<u8>> = self
            .cmd(
                redis::cmd("HGET")
                    .arg(self.keys.session_replies(request.session))
                    .arg(request.id % 4096),
            )
            .await?;
        Ok(holds_reply(done.as_deref(), request))
    }

    /// Reserves `count` numbers of `counter`: the last of them (the first is `count - 1`
    /// before it).
    pub async fn reserve(&self, counter: Counter, count: u64) -> RedisResult<u64> {
        let args = ScriptArgs::default().bytes(counter.name()).num(count);
        let reply = self.script(crate::scripts::reserve(), 0, &args).await?;
        match reply.get(1) {
            Some(Value::Int(last)) => Ok(*last as u64),
            other => Err(RedisError::from((
                ErrorKind::Parse,
                "reserving numbers",
                format!("{other:?}"),
            ))),
        }
    }

    /// Runs a script with the prefix and the calling session as its first two arguments;
    /// loads it when Redis lacks it. While a snapshot holds the filesystem still, waits.
    pub async fn script(
        &self,
        script: &Script,
        session: u64,
        args: &ScriptArgs,
    ) -> RedisResult<Vec<Value>> {
        Ok(self
            .script_as(script, &self.request(session), args)
            .await?
            .0)
    }

    /// Runs a script as `request`, which may have been sent before; answers its reply and the
    /// node that gave it: it runs at most once
    /// (see `src/scripts.rs`), so a caller that gave up waiting for a reply can send the same
    /// request again later and learn what became of it. A bounded request carries a deadline
    /// on Redis's clock, set anew whenever Redis answered that it did not run it (a snapshot's
    /// hold), past which it refuses to run (`ETIMEDOUT`).
    pub async fn script_as(
        &self,
        script: &Script,
        request: &Request,
        args: &ScriptArgs,
    ) -> RedisResult<(Vec<Value>, u64)> {
        self.script_after_blocks(script, request, args, BlocksFirst::default())
            .await
    }

    /// [`Store::script_as`] for a script that swaps blocks into maps: scripts never touch a
    /// block (on a cluster it lives elsewhere, see `src/keys.rs`), so the blocks it names are
    /// stored first, with it in one transaction or before it on one node (see [`BlocksFirst`]).
    pub async fn script_after_blocks(
        &self,
        script: &Script,
        request: &Request,
        args: &ScriptArgs,
        blocks: BlocksFirst<'_>,
    ) -> RedisResult<(Vec<Value>, u64)> {
        let meta = self.keys.meta();
        let prefix = self.keys.prefix();
        // On a cluster the scripts check that their slot is not moving (see the prelude).
        let meta_slot = match self.link.node().is_cluster() {
            true => crate::wire::slot_of(meta.as_bytes()).to_string(),
            false => String::new(),
        };
        let mut held = Duration::from_millis(1);
        loop {
            let deadline = if request.bounded { self.deadline() } else { 0 };
            let identity = format!(
                "{}:{}:{deadline}:{meta_slot}:{}",
                request.session,
                request.id,
                self.serving()
            );
            let (reply, generation) = self
                .retry_on_node(|node| {
                    let mut inv = script.key(&meta);
                    inv.arg(prefix).arg(&identity);
                    for a in &args.0 {
                        inv.arg(a.as_slice());
                    }
                    let mut conn = node.conn.clone();
                    async move {
                        if blocks.stored_on.is_some_and(|g| g != node.generation) {
                            return Err(moved_since_stored(&node.address));
                        }
                        let reply = if blocks.with.is_empty() {
                            inv.invoke_async::<Vec<Value>>(&mut conn).await?
                        } else {
                            in_one_transaction(script, &inv, blocks.with, &mut conn).await?
                        };
                        Ok((reply, node.generation))
                    }
                })
                .await?;
            if !matches!(reply.first(), Some(Value::Int(-1))) {
                return Ok((reply, generation));
            }
            tokio::time::sleep(held).await;
            held = (held * 2).min(Duration::from_millis(20));
        }
    }
}

/// The blocks a script that swaps them into maps names, stored before it runs.
#[derive(Clone, Copy, Default)]
pub struct BlocksFirst<'a> {
    /// Blocks (key, stored bytes) set in one transaction with the script (`MULTI` … `EXEC`):
    /// they land with it or not at all, in one round trip.
    pub with: &'a [(String, &'a Encoded)],
    /// The node (its generation) the script's other blocks were stored on before: the script
    /// runs there only, since a node that replaced it may lack them (answered with
    /// [`moved_since_stored`]: store them again).
    pub stored_on: Option<u64>,
}

/// Why a script that names blocks stored on one node was not sent to the node that replaced
/// it.
fn moved_since_stored(address: &str) -> RedisError {
    RedisError::from((
        ErrorKind::Client,
        MOVED_SINCE_STORED,
        format!("now {address}"),
    ))
}

const MOVED_SINCE_STORED: &str = "the primary changed after the blocks were stored";

/// Whether `err` says a script was not sent because the primary changed after its blocks were
/// stored (see [`BlocksFirst::stored_on`]).
pub fn is_moved_since_stored(err: &RedisError) -> bool {
    err.to_string().contains(MOVED_SINCE_STORED)
}

/// Sets `blocks` and runs the script `inv` of `script` in one transaction, loading the script
/// first when the server lacks it.
async fn in_one_transaction(
    script: &Script,
    inv: &redis::ScriptInvocation<'_>,
    blocks: &[(String, &Encoded)],
    conn: &mut Conn,
) -> RedisResult<Vec<Value>> {
    let mut pipe = redis::pipe();
    pipe.atomic();
    for (key, data) in blocks {
        pipe.cmd("SET").arg(key).arg(*data).ignore();
    }
    pipe.invoke_script(inv);
    match pipe
        .query_async::<(Vec<Value>,)>(conn)
        .await
        .map_err(cause_of_abort)
    {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(conn).await?;
            let again = pipe.query_async::<(Vec<Value>,)>(conn).await;
            Ok(again.map_err(cause_of_abort)?.0)
        }
        other => Ok(other?.0),
    }
}

/// The error a transaction Redis refused before running any of it (`EXECABORT`) stands for:
/// its first refused command's, so that the transaction fails as that command sent alone
/// would (a server still loading its data is waited for, a full one answers `ENOSPC`).
fn cause_of_abort(err: RedisError) -> RedisError {
    if err.kind() != ErrorKind::Server(ServerErrorKind::ExecAbort) {
        return err;
    }
    let first = (err.clone().into_server_errors()).and_then(|all| all.first().cloned());
    match first {
        Some((_, cause)) => cause.into(),
        None => err,
    }
}
