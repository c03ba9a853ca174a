//! `redisfs-admin`: the filesystems on a Redis, one filesystem's settings, usage and mounts,
//! the settings that may change after creation, and removing a filesystem.

use std::collections::HashMap;
use std::fmt;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::codec::Codec;
use crate::error::Error;
use crate::format::{self, FsConfig};
use crate::meta::counters::Counters;
use crate::options::parse_seconds;
use crate::server::ServerInfo;
use crate::session::now_ms;
use crate::store::Store;
use crate::tool::{self, ToolArgs};

/// `redisfs-admin`: see and manage the filesystems kept in a Redis.
#[derive(Parser, Debug)]
#[command(
    name = "redisfs-admin",
    version,
    about = "See and manage the redisfs filesystems kept in a Redis",
    long_about = "See and manage the redisfs filesystems kept in a Redis: list them, show one's \
                  settings, usage and live mounts, change what may change after creation, \
                  destroy one that is no longer mounted."
)]
pub struct AdminArgs {
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// What `redisfs-admin` does.
#[derive(Subcommand, Debug)]
pub enum AdminCommand {
    /// The filesystems on this Redis, with their files and blocks.
    List {
        #[command(flatten)]
        tool: ToolArgs,
    },
    /// A filesystem's settings, usage, and every mount of it (host, pid, mount point, version,
    /// start, last heartbeat, metrics address, leases, locks and held files).
    Status {
        #[command(flatten)]
        tool: ToolArgs,
        /// Prefix of the filesystem.
        #[arg(long, default_value = "skx", value_name = "NAME")]
        prefix: String,
        /// A mount silent for this long counts as dead.
        #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
        session_timeout: std::time::Duration,
    },
    /// Change a setting of an existing filesystem (mounts started afterwards use it).
    Config {
        #[command(flatten)]
        tool: ToolArgs,
        /// Prefix of the filesystem.
        #[arg(long, default_value = "skx", value_name = "NAME")]
        prefix: String,
        /// Compression of blocks written from now on (none, lz4, zstd, zlib); blocks already
        /// stored keep theirs and stay readable.
        #[arg(long, value_name = "CODEC")]
        compression: Option<Codec>,
        /// Refused: every block map is cut at the block size the filesystem was made with.
        #[arg(long, value_name = "SIZE", hide_possible_values = true)]
        block_size: Option<String>,
        /// Refused: files' ACLs would start or stop being enforced without their owners'
        /// knowledge; dump and restore into a filesystem made with --acl instead.
        #[arg(long, value_name = "on|off")]
        acl: Option<String>,
    },
    /// A live view of a mount on this machine: requests, bytes and Redis round trips per
    /// second, from the metrics it serves.
    Stats {
        #[command(flatten)]
        tool: ToolArgs,
        /// Prefix of the filesystem.
        #[arg(long, default_value = "skx", value_name = "NAME")]
        prefix: String,
        /// The mount to watch [default: the only mount of the filesystem on this machine].
        #[arg(value_name = "MOUNTPOINT")]
        mount_point: Option<std::path::PathBuf>,
        /// Seconds between lines.
        #[arg(long, default_value = "1", value_parser = parse_seconds, value_name = "SECONDS")]
        interval: std::time::Duration,
        /// Stop after this many lines [default: until interrupted].
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Convert a filesystem made before format 2 (metadata keys `<prefix>:…`) to the current
    /// key layout (`{<prefix>}:…`, one hash slot on a Redis Cluster); blocks keep their names.
    /// Refused while it is mounted; safe to run again after an interruption.
    Upgrade {
        #[command(flatten)]
        tool: ToolArgs,
        /// Prefix of the filesystem.
        #[arg(long, value_name = "NAME")]
        prefix: String,
        /// A mount silent for this long counts as dead.
        #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
        session_timeout: std::time::Duration,
    },
    /// Delete every key of a filesystem (refused while it is mounted).
    Destroy {
        #[command(flatten)]
        tool: ToolArgs,
        /// Prefix of the filesystem.
        #[arg(long, value_name = "NAME")]
        prefix: String,
        /// Confirm: the filesystem and all its files are gone for good.
        #[arg(long)]
        yes: bool,
        /// A mount silent for this long counts as dead.
        #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
        session_timeout: std::time::Duration,
    },
}

impl AdminCommand {
    /// The connection and output options of the command.
    pub fn tool(&self) -> &ToolArgs {
        match self {
            AdminCommand::List { tool }
            | AdminCommand::Status { tool, .. }
            | AdminCommand::Config { tool, .. }
            | AdminCommand::Stats { tool, .. }
            | AdminCommand::Upgrade { tool, .. }
            | AdminCommand::Destroy { tool, .. } => tool,
        }
    }
}

/// One filesystem of `list`.
#[derive(Serialize, Debug)]
pub struct Listed {
    pub prefix: String,
    /// `ready`, the state of a restore that did not finish, or what to do with a filesystem
    /// of an earlier key layout.
    pub state: String,
    pub inodes: u64,
    pub blocks: u64,
    /// The regular files' sizes, summed; `None` until fsck counts it on a filesystem made
    /// before the counter.
    pub file_bytes: Option<u64>,
    /// What the blocks take in Redis; `None` as for `file_bytes`.
    pub stored_bytes: Option<u64>,
    pub block_size: u32,
    pub codec: &'static str,
    pub live_mounts: u64,
}

impl Listed {
    /// A filesystem listed by its state alone (one of an earlier key layout).
    fn unreadable(prefix: String, state: String) -> Listed {
        Listed {
            prefix,
            state,
            inodes: 0,
            blocks: 0,
            file_bytes: None,
            stored_bytes: None,
            block_size: 0,
            codec: "?",
            live_mounts: 0,
        }
    }
}

/// A byte count for people: `1.5G`, `300K`, `?` when not known.
fn bytes_shown(bytes: Option<u64>) -> String {
    let Some(bytes) = bytes else {
        return "?".into();
    };
    let mut value = bytes as f64;
    for unit in ["", "K", "M", "G", "T"] {
        if value < 1024.0 || unit == "T" {
            return if unit.is_empty() {
                format!("{bytes}")
            } else {
                format!("{value:.1}{unit}")
            };
        }
        value /= 1024.0;
    }
    unreachable!("the last unit returns")
}

/// What `list` found.
#[derive(Serialize, Debug)]
pub struct Listing {
    pub filesystems: Vec<Listed>,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:>12} {:>10} {:>10} {:>12} {:>10} {:>6} {:>6}  STATE",
            "PREFIX", "INODES", "SIZE", "STORED", "BLOCKS", "BLOCK", "CODEC", "MOUNTS"
        )?;
        for fs in &self.filesystems {
            writeln!(
                f,
                "{:<20} {:>12} {:>10} {:>10} {:>12} {:>10} {:>6} {:>6}  {}",
                fs.prefix,
                fs.inodes,
                bytes_shown(fs.file_bytes),
                bytes_shown(fs.stored_bytes),
                fs.blocks,
                fs.block_size,
                fs.codec,
                fs.live_mounts,
                fs.state
            )?;
        }
        Ok(())
    }
}

/// A mount of a filesystem, as its session records it.
#[derive(Serialize, Debug)]
pub struct MountStatus {
    pub session: u64,
    pub host: String,
    pub pid: u64,
    pub mount_point: String,
    pub version: String,
    /// Milliseconds since the epoch.
    pub started_ms: u64,
    /// Milliseconds since its last heartbeat.
    pub heartbeat_age_ms: u64,
    /// Whether it heartbeated within the session timeout.
    pub live: bool,
    /// Where it serves its metrics (on its host), if it does.
    pub metrics: Option<String>,
    /// Directories leased to it.
    pub leases: u64,
    /// Inodes it holds byte-range or flock locks on.
    pub locked_inodes: u64,
    /// Unlinked files it still holds open.
    pub held_inodes: u64,
}

/// What `status` shows.
#[derive(Serialize, Debug)]
pub struct Status {
    pub prefix: String,
    pub uuid: String,
    pub block_size: u32,
    pub codec: &'static str,
    pub acl: bool,
    pub inodes: u64,
    pub blocks: u64,
    /// The regular files' sizes, summed; `None` until fsck counts it on a filesystem made
    /// before the counter.
    pub file_bytes: Option<u64>,
    /// What the blocks take in Redis (after compression); `None` as for `file_bytes`.
    pub stored_bytes: Option<u64>,
    pub redis_used_memory: u64,
    /// `maxmemory`, or the machine's memory when unlimited.
    pub redis_capacity: u64,
    pub mounts: Vec<MountStatus>,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1 << 20) as f64;
        writeln!(f, "filesystem {} ({})", self.prefix, self.uuid)?;
        writeln!(
            f,
            "  settings: block size {}, compression {}, ACLs {}",
            self.block_size,
            self.codec,
            if self.acl { "on" } else { "off" }
        )?;
        writeln!(
            f,
            "  usage: {} inodes, {} bytes in files, {} stored in {} blocks{}; Redis uses {:.1} of {:.1} MiB",
            self.inodes,
            bytes_shown(self.file_bytes),
            bytes_shown(self.stored_bytes),
            self.blocks,
            if self.stored_bytes.is_none() {
                " (byte counts come with redisfs-fsck --repair)"
            } else {
                ""
            },
            mib(self.redis_used_memory),
            mib(self.redis_capacity)
        )?;
        if self.mounts.is_empty() {
            return writeln!(f, "  not mounted");
        }
        for m in &self.mounts {
            writeln!(
                f,
                "  session {}: {}:{} pid {} (redisfs {}), heartbeat {:.1} s ago{}; metrics {}; {} leases, {} locked, {} held",
                m.session,
                m.host,
                m.mount_point,
                m.pid,
                m.version,
                m.heartbeat_age_ms as f64 / 1000.0,
                if m.live { "" } else { " (dead)" },
                m.metrics.as_deref().unwrap_or("none"),
                m.leases,
                m.locked_inodes,
                m.held_inodes
            )?;
        }
        Ok(())
    }
}

/// What `config` and `destroy` did.
#[derive(Serialize, Debug)]
pub struct Done {
    pub prefix: String,
    pub done: String,
}

impl fmt::Display for Done {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prefix, self.done)
    }
}

/// The outcome of a command, printed as text or JSON.
#[derive(Serialize, Debug)]
#[serde(untagged)]
pub enum Outcome {
    Listing(Listing),
    Status(Box<Status>),
    Done(Done),
    Watched(Watched),
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Listing(l) => l.fmt(f),
            Outcome::Status(s) => s.fmt(f),
            Outcome::Done(d) => d.fmt(f),
            Outcome::Watched(w) => w.fmt(f),
        }
    }
}

/// Runs `redisfs-admin`.
pub fn run(args: &AdminArgs) -> Result<Outcome, Error> {
    tool::block_on(async {
        match &args.command {
            AdminCommand::List { tool } => {
                // Any valid prefix: `list` reads every filesystem's keys by name.
                let store = tool.connect("skx").await?;
                Ok(Outcome::Listing(list(&store).await?))
            }
            AdminCommand::Status {
                tool,
                prefix,
                session_timeout,
            } => {
                let store = tool.connect(prefix).await?;
                Ok(Outcome::Status(Box::new(
                    status(&store, *session_timeout).await?,
                )))
            }
            AdminCommand::Config {
                tool,
                prefix,
                compression,
                block_size,
                acl,
            } => {
                if block_size.is_some() {
                    return Err(Error::Setting(
                        "the block size cannot change: every file's block map is cut at the \
                         size the filesystem was made with (dump, then restore into a new \
                         filesystem made with --block-size)"
                            .into(),
                    ));
                }
                if acl.is_some() {
                    return Err(Error::Setting(
                        "ACLs cannot be turned on or off: files' ACLs would start or stop being \
                         enforced behind their owners' backs (dump, then restore into a new \
                         filesystem made with --acl)"
                            .into(),
                    ));
                }
                let Some(codec) = compression else {
                    return Err(Error::Setting(
                        "nothing to change: give --compression".into(),
                    ));
                };
                let store = tool.connect(prefix).await?;
                format::read(&store).await?;
                store
                    .cmd::<()>(
                        redis::cmd("HSET")
                            .arg(store.keys.meta())
                            .arg("codec")
                            .arg(codec.name()),
                    )
                    .await
                    .map_err(store.failed("HSET"))?;
                Ok(Outcome::Done(Done {
                    prefix: prefix.clone(),
                    done: format!(
                        "new blocks are compressed with {} by mounts started from now on",
                        codec.name()
                    ),
                }))
            }
            AdminCommand::Stats {
                tool,
                prefix,
                mount_point,
                interval,
                count,
            } => {
                let store = tool.connect(prefix).await?;
                let address = metrics_address(&store, mount_point.as_deref()).await?;
                watch(&address, *interval, *count, tool.json).await
            }
            AdminCommand::Upgrade {
                tool,
                prefix,
                session_timeout,
            } => {
                let store = tool.connect(prefix).await?;
                upgrade(&store, *session_timeout).await
            }
            AdminCommand::Destroy {
                tool,
                prefix,
                yes,
                session_timeout,
            } => {
                let store = tool.connect(prefix).await?;
                destroy(&store, *yes, *session_timeout).await
            }
        }
    })
}

/// Every filesystem on the server of `store`.
async fn list(store: &Store) -> Result<Listing, Error> {
    let mut scan = crate::scan::Scan::every_filesystem(store);
    let mut prefixes = Vec::new();
    while let Some(keys) = scan.next_batch().await? {
        for key in keys {
            let key = String::from_utf8_lossy(&key);
            if let Some(prefix) = crate::keys::prefix_of_meta_key(&key) {
                if tool::validate_prefix(prefix).is_ok() {
                    prefixes.push(prefix.to_string());
                }
            }
        }
    }
    prefixes.sort();
    prefixes.dedup();
    let mut filesystems = Vec::new();
    for prefix in prefixes {
        let store = store.with_prefix(&prefix);
        let (state, block_size, codec) = match format::read(&store).await {
            Ok(config) => ("ready".to_string(), config.block_size, config.codec.name()),
            Err(Error::Incomplete { state, .. }) => (state, 0, "?"),
            // Counted once converted: its counters are under names this layout does not read.
            Err(format_1 @ Error::Format1 { .. }) => {
                filesystems.push(Listed::unreadable(prefix, format_1.to_string()));
                continue;
            }
            // A key that happens to be named like a filesystem's.
            Err(_) => continue,
        };
        let counters = Counters::read(&store).await?;
        let live = crate::session::live(&store, crate::session::DEFAULT_TIMEOUT).await?;
        filesystems.push(Listed {
            prefix,
            state,
            inodes: counters.inodes,
            blocks: counters.blocks,
            file_bytes: counters.file_bytes,
            stored_bytes: counters.stored_bytes,
            block_size,
            codec,
            live_mounts: live.len() as u64,
        });
    }
    Ok(Listing { filesystems })
}

async fn status(store: &Store, session_timeout: std::time::Duration) -> Result<Status, Error> {
    let FsConfig {
        block_size,
        codec,
        uuid,
        acl,
    } = format::read(store).await?;
    let counters = Counters::read(store).await?;
    let server = ServerInfo::read(store).await?;
    let sessions: Vec<(u64, u64)> = store
        .cmd(
            redis::cmd("ZRANGE")
                .arg(store.keys.sessions())
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES"),
        )
        .await
        .map_err(store.failed("ZRANGE"))?;
    let now = now_ms();
    let mut mounts = Vec::new();
    for (session, heartbeat) in sessions {
        let keys = &store.keys;
        let mut pipe = redis::pipe();
        pipe.cmd("HGETALL").arg(keys.session_info(session));
        for set in [
            keys.session_leases(session),
            keys.session_locks(session),
            keys.session_held(session),
        ] {
            pipe.cmd("SCARD").arg(set);
        }
        let (info, leases, locked_inodes, held_inodes): (HashMap<String, String>, u64, u64, u64) =
            store.pipe(&pipe).await.map_err(store.failed("HGETALL"))?;
        let field = |name: &str| info.get(name).cloned().unwrap_or_default();
        let heartbeat_age_ms = now.saturating_sub(heartbeat);
        mounts.push(MountStatus {
            session,
            host: field("host"),
            pid: field("pid").parse().unwrap_or(0),
            mount_point: field("mount_point"),
            version: field("version"),
            started_ms: field("started_ms").parse().unwrap_or(0),
            heartbeat_age_ms,
            live: heartbeat_age_ms <= session_timeout.as_millis() as u64,
            metrics: info.get("metrics").cloned(),
            leases,
            locked_inodes,
            held_inodes,
        });
    }
    Ok(Status {
        prefix: store.keys.prefix().to_string(),
        uuid,
        block_size,
        codec: codec.name(),
        acl,
        inodes: counters.inodes,
        blocks: counters.blocks,
        file_bytes: counters.file_bytes,
        stored_bytes: counters.stored_bytes,
        redis_used_memory: server.used_memory,
        redis_capacity: server.capacity(),
        mounts,
    })
}

async fn destroy(
    store: &Store,
    yes: bool,
    session_timeout: std::time::Duration,
) -> Result<Outcome, Error> {
    let prefix = store.keys.prefix().to_string();
    // A filesystem whose restore never finished may be destroyed too; keys that are not a
    // filesystem's never are.
    match format::read(store).await {
        Ok(_) | Err(Error::Incomplete { .. }) => {}
        Err(e) => return Err(e),
    }
    let live = crate::session::live(store, session_timeout).await?;
    if !live.is_empty() {
        return Err(Error::Setting(format!(
            "'{prefix}' is mounted (live sessions {live:?}); unmount it everywhere first"
        )));
    }
    if !yes {
        return Err(Error::Setting(format!(
            "destroying '{prefix}' deletes all its files for good: add --yes to confirm"
        )));
    }
    let deleted = crate::scan::delete_all(store).await?;
    Ok(Outcome::Done(Done {
        prefix,
        done: format!("destroyed ({deleted} keys deleted)"),
    }))
}

/// Renames a format-1 filesystem's metadata keys into braces, its `meta` hash last, so that
/// an interrupted upgrade still reads as format 1 and runs again from where it stopped.
async fn upgrade(store: &Store, session_timeout: std::time::Duration) -> Result<Outcome, Error> {
    let keys = &store.keys;
    let prefix = keys.prefix().to_string();
    let (meta, old_meta) = (keys.meta(), keys.format_1(&keys.meta()));
    let (state, version): (Option<String>, Option<String>) = store
        .cmd(
            redis::cmd("HMGET")
                .arg(&old_meta)
                .arg("state")
                .arg("version"),
        )
        .await
        .map_err(store.failed("HMGET"))?;
    let Some(version) = version else {
        format::read(store).await?;
        return Ok(Outcome::Done(Done {
            prefix,
            done: "already in the current key layout".into(),
        }));
    };
    let state = state.unwrap_or_default();
    if version != "1" || !matches!(state.as_str(), "ready" | "upgrading") {
        return Err(Error::CorruptKey {
            key: old_meta,
            reason: format!("version '{version}' in state '{state}' is not a format-1 filesystem"),
        });
    }
    // Marked first, so that no mount of format 1 starts once the check below has passed (they
    // refuse a filesystem that is not ready).
    let mark = |state: &str| {
        redis::cmd("HSET")
            .arg(&old_meta)
            .arg("state")
            .arg(state)
            .clone()
    };
    store
        .cmd::<()>(&mark("upgrading"))
        .await
        .map_err(store.failed("HSET"))?;
    let cutoff = now_ms().saturating_sub(session_timeout.as_millis() as u64);
    let live: Vec<u64> = store
        .cmd(
            redis::cmd("ZRANGEBYSCORE")
                .arg(keys.format_1(&keys.sessions()))
                .arg(cutoff)
                .arg("+inf"),
        )
        .await
        .map_err(store.failed("listing the live mounts"))?;
    if !live.is_empty() {
        store
            .cmd::<()>(&mark(&state))
            .await
            .map_err(store.failed("HSET"))?;
        return Err(Error::Setting(format!(
            "'{prefix}' is mounted (live sessions {live:?}); unmount it everywhere first"
        )));
    }
    let pattern = keys.scan_patterns()[1].clone();
    let mut scan = crate::scan::Scan::matching(store, pattern);
    let mut renamed = 0;
    while let Some(batch) = scan.next_batch().await? {
        let moves: Vec<(Vec<u8>, Vec<u8>)> = batch
            .into_iter()
            .filter(|key| key.as_slice() != old_meta.as_bytes())
            .filter_map(|key| keys.from_format_1(&key).map(|new| (key, new)))
            .filter(|(old, new)| old != new)
            .collect();
        let mut pipe = redis::pipe();
        for (old, new) in &moves {
            pipe.cmd("RENAMENX").arg(old).arg(new);
        }
        let done: Vec<bool> = store.pipe(&pipe).await.map_err(store.failed("RENAMENX"))?;
        if let Some(((old, new), _)) = moves.iter().zip(&done).find(|(_, done)| !**done) {
            return Err(Error::CorruptKey {
                key: String::from_utf8_lossy(old).into_owned(),
                reason: format!(
                    "'{}' exists already: both layouts hold this key",
                    String::from_utf8_lossy(new)
                ),
            });
        }
        renamed += moves.len();
    }
    let mut last = redis::pipe();
    last.atomic()
        .cmd("HSET")
        .arg(&old_meta)
        .arg("version")
        .arg(format::FORMAT_VERSION)
        .arg("state")
        .arg("ready")
        .ignore()
        .cmd("RENAMENX")
        .arg(&old_meta)
        .arg(&meta);
    let (moved,): (bool,) = store.pipe(&last).await.map_err(store.failed("RENAMENX"))?;
    if !moved {
        return Err(Error::CorruptKey {
            key: meta,
            reason: format!("exists beside '{old_meta}': both layouts hold the filesystem"),
        });
    }
    format::read(store).await?;
    Ok(Outcome::Done(Done {
        prefix,
        done: format!(
            "converted to format {} ({} metadata keys renamed; blocks keep their names)",
            format::FORMAT_VERSION,
            renamed + 1
        ),
    }))
}

/// The metrics address of the mount of `store`'s filesystem on `mount_point` on this machine
/// (or of its only mount here).
async fn metrics_address(
    store: &Store,
    mount_point: Option<&std::path::Path>,
) -> Result<String, Error> {
    let prefix = store.keys.prefix();
    let wanted = match mount_point {
        Some(path) => Some(path.canonicalize().map_err(|e| Error::MountPoint {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?),
        None => None,
    };
    let here = crate::session::host_name();
    let mounts: Vec<MountStatus> = status(store, crate::session::DEFAULT_TIMEOUT)
        .await?
        .mounts
        .into_iter()
        .filter(|m| m.live && m.host == here)
        .filter(|m| {
            wanted
                .as_ref()
                .is_none_or(|w| std::path::Path::new(&m.mount_point) == w)
        })
        .collect();
    let [mount] = mounts.as_slice() else {
        let points: Vec<&str> = mounts.iter().map(|m| m.mount_point.as_str()).collect();
        return Err(Error::Setting(match (mounts.len(), mount_point) {
            (0, Some(path)) => format!("'{prefix}' is not mounted on {} here", path.display()),
            (0, None) => format!("'{prefix}' is not mounted on this machine"),
            _ => format!("'{prefix}' is mounted here on {points:?}: name one"),
        }));
    };
    mount.metrics.clone().ok_or_else(|| {
        Error::Setting(format!(
            "the mount on {} serves no metrics (--no-metrics)",
            mount.mount_point
        ))
    })
}

/// The counters of one scrape of a mount's metrics that `stats` shows.
#[derive(Clone, Copy, Default, Debug)]
struct Scrape {
    requests: f64,
    request_seconds: f64,
    read_bytes: f64,
    written_bytes: f64,
    round_trips: f64,
    round_trip_seconds: f64,
    buffered_bytes: f64,
    deferred_changes: f64,
}

impl Scrape {
    /// Sums the samples of Prometheus `text` that `stats` shows.
    fn parse(text: &str) -> Scrape {
        let mut c = Scrape::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let family = name.split('{').next().unwrap_or(name);
            let slot = match family {
                "redisfs_fuse_requests_total" => &mut c.requests,
                "redisfs_fuse_request_seconds_sum" => &mut c.request_seconds,
                "redisfs_read_bytes_total" => &mut c.read_bytes,
                "redisfs_written_bytes_total" => &mut c.written_bytes,
                "redisfs_redis_round_trips_total" => &mut c.round_trips,
                "redisfs_redis_round_trip_seconds_sum" => &mut c.round_trip_seconds,
                "redisfs_buffered_bytes" => &mut c.buffered_bytes,
                "redisfs_deferred_changes" => &mut c.deferred_changes,
                _ => continue,
            };
            *slot += value;
        }
        c
    }
}

/// One line of `stats`: rates over the last interval and the state now.
#[derive(Serialize, Debug)]
pub struct Rates {
    pub requests_per_second: f64,
    /// Mean latency of the interval's requests.
    pub request_ms: f64,
    pub read_mib_per_second: f64,
    pub written_mib_per_second: f64,
    pub round_trips_per_second: f64,
    pub round_trip_ms: f64,
    pub buffered_mib: f64,
    pub deferred_changes: u64,
}

impl Rates {
    fn between(before: &Scrape, after: &Scrape, seconds: f64) -> Rates {
        let per_second = |a: f64, b: f64| (b - a).max(0.0) / seconds;
        let mean_ms = |sum: f64, n: f64| if n > 0.0 { sum / n * 1000.0 } else { 0.0 };
        let mib = (1u64 << 20) as f64;
        Rates {
            requests_per_second: per_second(before.requests, after.requests),
            request_ms: mean_ms(
                after.request_seconds - before.request_seconds,
                after.requests - before.requests,
            ),
            read_mib_per_second: per_second(before.read_bytes, after.read_bytes) / mib,
            written_mib_per_second: per_second(before.written_bytes, after.written_bytes) / mib,
            round_trips_per_second: per_second(before.round_trips, after.round_trips),
            round_trip_ms: mean_ms(
                after.round_trip_seconds - before.round_trip_seconds,
                after.round_trips - before.round_trips,
            ),
            buffered_mib: after.buffered_bytes / mib,
            deferred_changes: after.deferred_changes as u64,
        }
    }
}

/// How many lines `stats` printed.
#[derive(Serialize, Debug)]
pub struct Watched {
    pub lines: u64,
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} lines", self.lines)
    }
}

/// Prints the rates of the mount serving metrics at `address` every `interval`, `count`
/// times (or until interrupted): a table, or one JSON object per line.
async fn watch(
    address: &str,
    interval: std::time::Duration,
    count: Option<u64>,
    json: bool,
) -> Result<Outcome, Error> {
    let mut before = Scrape::parse(&scrape(address).await?);
    let mut at = std::time::Instant::now();
    if !json {
        println!(
            "{:>9} {:>8} {:>10} {:>10} {:>9} {:>8} {:>10} {:>9}",
            "requests/s",
            "ms",
            "read MiB/s",
            "write MiB/s",
            "redis/s",
            "rtt ms",
            "buffered",
            "deferred"
        );
    }
    let mut lines = 0;
    while count.is_none_or(|n| lines < n) {
        tokio::time::sleep(interval).await;
        let after = Scrape::parse(&scrape(address).await?);
        let now = std::time::Instant::now();
        let rates = Rates::between(&before, &after, (now - at).as_secs_f64());
        if json {
            println!("{}", serde_json::to_string(&rates).unwrap_or_default());
        } else {
            println!(
                "{:>10.0} {:>8.3} {:>10.1} {:>11.1} {:>9.0} {:>8.3} {:>9.1}M {:>9}",
                rates.requests_per_second,
                rates.request_ms,
                rates.read_mib_per_second,
                rates.written_mib_per_second,
                rates.round_trips_per_second,
                rates.round_trip_ms,
                rates.buffered_mib,
                rates.deferred_changes
            );
        }
        (before, at) = (after, now);
        lines += 1;
    }
    Ok(Outcome::Watched(Watched { lines }))
}

/// The metrics text a mount serves at `address`.
async fn scrape(address: &str) -> Result<String, Error> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let failed = |e: std::io::Error| Error::System {
        context: format!("reading the mount's metrics at {address}"),
        source: e,
    };
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(failed)?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: redisfs\r\n\r\n")
        .await
        .map_err(failed)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.map_err(failed)?;
    Ok(answer
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
