//! Sessions: each writable mount registers itself, heartbeats, and owns the unlinked inodes
//! it still holds open, so that they can be reclaimed even if the mount dies.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::Error;
use crate::store::{Counter, Store};

/// A mount silent for this long is dead, unless configured otherwise (`--session-timeout`).
pub const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The sessions that heartbeated within `timeout`: the live mounts.
pub async fn live(store: &Store, timeout: std::time::Duration) -> Result<Vec<u64>, Error> {
    let cutoff = now_ms().saturating_sub(timeout.as_millis() as u64);
    store
        .cmd(
            redis::cmd("ZRANGEBYSCORE")
                .arg(store.keys.sessions())
                .arg(cutoff)
                .arg("+inf"),
        )
        .await
        .map_err(store.failed("listing the live mounts"))
}

/// A registered mount.
pub struct Session {
    store: Store,
    /// The session's id.
    pub id: u64,
    /// The heartbeat, as a script that runs even when Redis is over its `maxmemory`: a full
    /// Redis must not make other mounts take a live mount for dead and expire its session.
    beat: redis::Script,
}

/// Now, in milliseconds since the epoch: the unit of heartbeats.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// This machine's host name, as sessions record it.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length and gethostname NUL-terminates within it.
    let ok = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0;
    let end = buf.iter().position(|&b| b == 0).unwrap_or(0);
    if ok {
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    }
}

impl Session {
    /// Registers a mount of `mount_point`, serving its metrics at `metrics` (if it does).
    pub async fn register(
        store: &Store,
        mount_point: &Path,
        metrics: Option<std::net::SocketAddr>,
    ) -> Result<Session, Error> {
        let keys = &store.keys;
        let fail = |e| store.failed("registering the session")(e);
        let id = store.reserve(Counter::Session, 1).await.map_err(fail)?;
        let mut pipe = redis::pipe();
        let info = pipe
            .cmd("HSET")
            .arg(keys.session_info(id))
            .arg("host")
            .arg(host_name())
            .arg("pid")
            .arg(std::process::id())
            .arg("mount_point")
            .arg(mount_point.to_string_lossy().as_ref())
            .arg("version")
            .arg(env!("CARGO_PKG_VERSION"))
            .arg("started_ms")
            .arg(now_ms());
        if let Some(address) = metrics {
            info.arg("metrics").arg(address.to_string());
        }
        info.ignore();
        pipe.cmd("ZADD")
            .arg(keys.sessions())
            .arg(now_ms())
            .arg(id)
            .ignore();
        store.pipe::<()>(&pipe).await.map_err(fail)?;
        Ok(Session {
            store: store.clone(),
            id,
            // (Not into a filesystem that is no longer the one served: see `Store::serve`.)
            beat: redis::Script::new(
                "#!lua flags=allow-oom
                if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], 'uuid') ~= ARGV[3] then
                  return -1
                end
                local alive = redis.call('ZSCORE', KEYS[1], ARGV[2])
                redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
                if alive then return 1 end
                return 0",
            ),
        })
    }

    /// Tells other mounts this one is alive; says `false` if they had taken it for dead and
    /// expired its session (it was cut off for longer than the timeout), which it rejoins.
    pub async fn heartbeat(&self) -> bool {
        let (sessions, meta) = (self.store.keys.sessions(), self.store.keys.meta());
        let beat = self
            .store
            .retry(|mut c| {
                let mut call = self.beat.key(&sessions);
                call.key(&meta)
                    .arg(now_ms())
                    .arg(self.id)
                    .arg(self.store.serving());
                async move { call.invoke_async::<i64>(&mut c).await }
            })
            .await;
        match beat {
            Ok(-1) => {
                self.store.lost_filesystem();
                true
            }
            Ok(alive) => alive == 1,
            Err(e) => {
                tracing::warn!("session heartbeat failed: {e}");
                true
            }
        }
    }

    /// Sessions other than this one whose last heartbeat is older than `timeout`, with the
    /// cutoff used (ms since the epoch).
    pub async fn stale(&self, timeout: std::time::Duration) -> (Vec<u64>, u64) {
        let cutoff = now_ms().saturating_sub(timeout.as_millis() as u64);
        let ids: Vec<u64> = self
            .store
            .cmd(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.store.keys.sessions())
                    .arg("-inf")
                    .arg(format!("({cutoff}")),
            )
            .await
            .unwrap_or_default();
        (
            ids.into_iter().filter(|&id| id != self.id).collect(),
            cutoff,
        )
    }
}
