//! Holding a filesystem still for a point-in-time copy (snapshot, dump of a mounted source).
//!
//! The protocol, in two phases, each marked in `P:freeze`:
//!
//! 1. `flush <token>`: the tool publishes a freeze request on `P:events`. Each live mount
//!    closes its gate (new changes wait, in-flight ones finish), stores every buffered write,
//!    and adds its session id to `P:freeze:acks`. Its writers now wait; none fails.
//! 2. `hold <token>`: once every live session answered (or the answer time ran out), every
//!    changing script refuses to run while the key says `hold`, and the mount that ran it
//!    waits and tries again. This also holds a mount that missed the request or started
//!    during the copy, so the copy is consistent whatever the mounts do.
//!
//! The tool then copies and deletes the key; mounts poll it and open their gates when it is
//! gone. The key expires unless the tool keeps refreshing it, so a tool that dies cannot hold
//! a filesystem for longer than [`HOLD_LEASE`].

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::session;
use crate::store::Store;

/// How long a hold lasts unless the tool renews it.
pub const HOLD_LEASE: Duration = Duration::from_secs(10);
/// How often the tool renews it.
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How long live mounts get to store their buffers and answer.
const ANSWER_TIME: Duration = Duration::from_secs(10);

/// Compare-and-set of the freeze key, so that a tool only ever changes its own hold.
/// KEYS: freeze, acks. ARGV: expected value, new value ('' deletes both keys), lease (ms).
const SWAP: &str = "
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then redis.call('DEL', KEYS[1], KEYS[2])
else redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return 1";

/// Replaces the freeze key's value `from` by `to` (`""`: deletes it); false if it no longer
/// held `from`.
async fn swap(store: &Store, from: &str, to: &str) -> Result<bool, Error> {
    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new(SWAP));
    let script = &*SCRIPT;
    let keys = &store.keys;
    let (freeze, acks) = (keys.freeze(), keys.freeze_acks());
    let lease = HOLD_LEASE.as_millis() as u64;
    let done: i64 = store
        .retry(|mut c| {
            let mut inv = script.key(&freeze);
            inv.key(&acks).arg(from).arg(to).arg(lease);
            async move { inv.invoke_async(&mut c).await }
        })
        .await
        .map_err(store.failed("updating the freeze key"))?;
    Ok(done == 1)
}

/// What a hold did, for the tool's summary.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct HoldReport {
    /// Live mounts asked to store their buffers.
    pub mounts: usize,
    /// Those that did not answer in time (their unstored buffers are not in the copy).
    pub silent: Vec<u64>,
    /// How long changes were held, in milliseconds.
    pub held_ms: u64,
}

/// Event message asking mounts to hold still: session 0 (a tool), record `F<token>`.
fn request_message(token: &str) -> String {
    format!("0\0F{token}")
}

fn new_token() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    )
}

/// Runs `work` while the filesystem of `store` is held still, and releases it afterwards,
/// whether `work` succeeded or not. Fails if another tool holds it, or if the hold lapsed
/// during `work` (its result would not be a point in time).
pub async fn while_held<T, F, Fut>(store: &Store, work: F) -> Result<(T, HoldReport), Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let keys = &store.keys;
    let token = new_token();
    let lease = HOLD_LEASE.as_millis() as u64;
    let taken: Option<String> = store
        .cmd(
            redis::cmd("SET")
                .arg(keys.freeze())
                .arg(format!("flush {token}"))
                .arg("NX")
                .arg("PX")
                .arg(lease + ANSWER_TIME.as_millis() as u64),
        )
        .await
        .map_err(store.failed("taking the freeze key"))?;
    if taken.is_none() {
        return Err(Error::Busy(format!(
            "another snapshot or dump is holding '{}' (key {} exists); try again when it is done",
            keys.prefix(),
            keys.freeze()
        )));
    }
    let mut report = HoldReport::default();
    let started = Instant::now();
    let result = async {
        let live = session::live(store, session::DEFAULT_TIMEOUT).await?;
        report.mounts = live.len();
        if !live.is_empty() {
            report.silent = ask_mounts(store, &token, &live).await?;
        }
        if !swap(store, &format!("flush {token}"), &format!("hold {token}")).await? {
            return Err(lapsed(keys.prefix()));
        }
        let renewing = tokio::spawn(renew(store.clone(), token.clone()));
        let outcome = work().await;
        renewing.abort();
        // Renewing the lease once more proves it never lapsed (else another tool could have
        // taken the key, and changes could have run).
        if !swap(store, &format!("hold {token}"), &format!("hold {token}")).await? {
            return Err(lapsed(keys.prefix()));
        }
        outcome
    }
    .await;
    report.held_ms = started.elapsed().as_millis() as u64;
    release(store, &token).await;
    result.map(|v| (v, report))
}

fn lapsed(prefix: &str) -> Error {
    Error::Busy(format!(
        "the hold on '{prefix}' lapsed during the copy (was the tool stalled for over {} s?); \
         the copy is not a point in time",
        HOLD_LEASE.as_secs()
    ))
}

/// Publishes the request and waits for every live session to answer; returns the silent ones.
async fn ask_mounts(store: &Store, token: &str, live: &[u64]) -> Result<Vec<u64>, Error> {
    let keys = &store.keys;
    let _: () = store
        .cmd(redis::cmd("DEL").arg(keys.freeze_acks()))
        .await
        .map_err(store.failed("DEL"))?;
    let _: () = store
        .cmd(
            redis::cmd("PUBLISH")
                .arg(keys.events())
                .arg(request_message(token)),
        )
        .await
        .map_err(store.failed("asking mounts to hold still"))?;
    let deadline = Instant::now() + ANSWER_TIME;
    loop {
        let answered: Vec<String> = store
            .cmd(redis::cmd("SMEMBERS").arg(keys.freeze_acks()))
            .await
            .map_err(store.failed("SMEMBERS"))?;
        let silent: Vec<u64> = live
            .iter()
            .copied()
            .filter(|s| !answered.contains(&format!("{s}:{token}")))
            .collect();
        if silent.is_empty() {
            return Ok(silent);
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                "mount sessions {silent:?} did not store their buffers within {} s; \
                 holding their changes in Redis without them",
                ANSWER_TIME.as_secs()
            );
            return Ok(silent);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn renew(store: Store, token: String) {
    let value = format!("hold {token}");
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match swap(&store, &value, &value).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!("renewing the hold: {e}"),
        }
    }
}

/// Ends this tool's hold (in whichever phase) and tells the mounts.
async fn release(store: &Store, token: &str) {
    let keys = &store.keys;
    let mut released = Ok(false);
    for phase in ["hold", "flush"] {
        released = swap(store, &format!("{phase} {token}"), "").await;
        if !matches!(released, Ok(false)) {
            break;
        }
    }
    if let Err(e) = released {
        tracing::warn!(
            "releasing the hold failed ({e}); mounts resume when {} expires",
            keys.freeze()
        );
    }
    let thaw = redis::cmd("PUBLISH").arg(keys.events()).arg("0\0T").clone();
    if let Err(e) = store.cmd::<()>(&thaw).await {
        tracing::warn!("telling the mounts the hold ended: {e}");
    }
}

/// Mount side: whether the freeze key still holds the request `token`.
pub async fn still_held(store: &Store, token: &str) -> bool {
    match store
        .cmd::<Option<String>>(&redis::cmd("GET").arg(store.keys.freeze()).clone())
        .await
    {
        Ok(Some(v)) => v.split_once(' ').map(|(_, t)| t) == Some(token),
        Ok(None) => false,
        // Redis away: keep waiting; the key's lease decides once it is back.
        Err(_) => true,
    }
}

/// Mount side: tells the tool that session `sid` stored its buffers and holds still for the
/// request `token`.
pub async fn answer(store: &Store, sid: u64, token: &str) -> Result<(), redis::RedisError> {
    let mut pipe = redis::pipe();
    pipe.cmd("SADD")
        .arg(store.keys.freeze_acks())
        .arg(format!("{sid}:{token}"))
        .ignore();
    pipe.cmd("PEXPIRE")
        .arg(store.keys.freeze_acks())
        .arg(HOLD_LEASE.as_millis() as u64 * 6)
        .ignore();
    store.pipe(&pipe).await
}
