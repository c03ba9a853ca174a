//! `redisfs-snapshot`: a point-in-time copy of a filesystem under another prefix.
//!
//! The copy is made while the source is held still (see [`crate::freeze`]), with COPY inside
//! one server or DUMP/RESTORE between two. Only the filesystem's content is copied, not the
//! mounts' sessions and locks; files that were deleted but still open on a mount are left out.
//! The copy is marked unfinished until its last key lands, so an interrupted snapshot is never
//! mounted.

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;

use crate::error::Error;
use crate::format::{self, FsConfig};
use crate::freeze::{self, HoldReport};
use crate::keys::KeyKind;
use crate::meta::Meta;
use crate::scan::{self, Scan};
use crate::scripts::Scripts;
use crate::server::ServerInfo;
use crate::session;
use crate::store::Store;
use crate::tool::{self, Progress, ToolArgs};

/// `redisfs-snapshot`: copy a filesystem, at one point in time, to a new prefix.
#[derive(Parser, Clone, Debug)]
#[command(
    after_help = "Examples:\n  redisfs-snapshot --from skx --to copy          # then: redisfs --prefix copy /mnt/copy\n  redisfs-snapshot --from skx --to nightly --replace\n  redisfs-snapshot --from skx --to skx --to-redis redis://backup-host:6379/0",
    name = "redisfs-snapshot",
    version,
    about = "Copy a redisfs filesystem, at one point in time, to a new prefix",
    long_about = "Copy a redisfs filesystem, at one point in time, to a new prefix, which then \
                  mounts with `redisfs --prefix DST`. Live mounts of the source store their \
                  buffered writes and hold their changes for the few moments of the copy; \
                  their writers wait, they do not fail. The copy is made inside Redis (COPY), or \
                  with DUMP/RESTORE when --to-redis names another server."
)]
pub struct SnapshotArgs {
    /// Prefix of the filesystem to copy.
    #[arg(long, default_value = "skx", value_name = "SRC")]
    pub from: String,
    /// Prefix of the copy; must hold no keys.
    #[arg(long, value_name = "DST")]
    pub to: String,
    /// Delete whatever DST holds first (refused while DST is mounted).
    #[arg(long)]
    pub replace: bool,
    /// Redis URL for the copy, when it goes to another server [default: the source's].
    #[arg(long, value_name = "URL")]
    pub to_redis: Option<String>,
    #[command(flatten)]
    pub tool: ToolArgs,
}

/// What a snapshot did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SnapshotReport {
    /// Source prefix.
    pub from: String,
    /// Destination prefix.
    pub to: String,
    /// Keys copied.
    pub keys: u64,
    /// Whether the keys were copied inside one server (COPY) or between two (DUMP/RESTORE).
    pub method: &'static str,
    /// Deleted-but-open files of live mounts, left out of the copy.
    pub left_out: u64,
    /// The hold on the source.
    pub hold: HoldReport,
    /// Keys deleted from DST first (with `--replace`).
    pub replaced: u64,
    /// Wall time, in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for SnapshotReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "snapshot of '{}' is '{}': {} keys copied with {} in {:.2} s; {} live mount(s) held still for {} ms",
            self.from, self.to, self.keys, self.method, self.seconds, self.hold.mounts, self.hold.held_ms
        )?;
        if !self.hold.silent.is_empty() {
            write!(
                f,
                "\nwarning: sessions {:?} did not store their buffers in time; their unstored writes are not in the copy",
                self.hold.silent
            )?;
        }
        Ok(())
    }
}

/// Parses the options and runs the snapshot (the binary's whole job).
pub fn run(args: &SnapshotArgs) -> Result<SnapshotReport, Error> {
    tool::block_on(async {
        let src = args.tool.connect(&args.from).await?;
        let dst = match &args.to_redis {
            Some(url) => {
                // The same certificates: one private CA usually signs both servers'.
                let connection = crate::options::ConnectionArgs {
                    redis: Some(url.clone()),
                    tls: args.tool.connection.tls.clone(),
                    ..Default::default()
                };
                tool::connect(&connection.target()?, &args.to, args.tool.io_timeout).await?
            }
            None => args.tool.connect(&args.to).await?,
        };
        let progress = args.tool.progress("copying keys");
        snapshot(&src, &dst, args.replace, &progress).await
    })
}

/// Copies the filesystem of `src` to `dst`'s prefix at one point in time.
pub async fn snapshot(
    src: &Store,
    dst: &Store,
    replace: bool,
    progress: &Progress,
) -> Result<SnapshotReport, Error> {
    let started = Instant::now();
    let scripts = Arc::new(Scripts::new());
    let config = format::open(src, &scripts, None).await?;
    let (here, there) = (ServerInfo::read(src).await?, ServerInfo::read(dst).await?);
    // A server that does not say who it is is taken for another one (DUMP/RESTORE works
    // either way; COPY only inside one server, and not across a cluster's slots).
    let same_redis = !here.run_id.is_empty() && here.run_id == there.run_id;
    let same_server = same_redis && !here.cluster;
    if same_redis && src.db == dst.db && src.keys.prefix() == dst.keys.prefix() {
        return Err(Error::Setting(
            "--from and --to name the same filesystem".into(),
        ));
    }
    // Keys to copy: about one per block, plus inode buckets, directories and maps.
    progress.total_from_counters(src, 1, 1).await;
    let replaced = make_room(dst, replace).await?;
    format::mark_unfinished(dst, "snapshotting").await?;
    let copier = Copier {
        src,
        dst,
        same_server,
    };
    let outcome = async {
        let ((keys, held), hold) = freeze::while_held(src, || copier.copy_all(progress)).await?;
        let left_out = Meta::new(dst.clone(), scripts, 0)
            .reclaim_for(0, &held)
            .await
            .map_err(|source| Error::Operation {
                what: "leaving deleted files out of the copy".into(),
                source,
            })?;
        let copy = FsConfig {
            uuid: format::new_uuid(),
            ..config
        };
        format::finish_copy(dst, &copy).await?;
        Ok(SnapshotReport {
            from: src.keys.prefix().to_string(),
            to: dst.keys.prefix().to_string(),
            keys,
            method: if same_server { "COPY" } else { "DUMP/RESTORE" },
            left_out,
            hold,
            replaced,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
    .await;
    if outcome.is_err() {
        // Nothing half-copied stays behind; if even this fails, the meta key still says the
        // copy is unfinished and no mount accepts it.
        if let Err(e) = scan::delete_all(dst).await {
            tracing::warn!("removing the unfinished copy '{}': {e}", dst.keys.prefix());
        }
    }
    progress.finish();
    outcome
}

/// Empties `dst` when asked to (and nothing mounts it); refuses a non-empty one otherwise.
async fn make_room(dst: &Store, replace: bool) -> Result<u64, Error> {
    let Some(example) = scan::any_key(dst).await? else {
        return Ok(0);
    };
    if !replace {
        return Err(Error::Busy(format!(
            "prefix '{}' is not empty (it holds '{example}'); choose another --to or pass --replace",
            dst.keys.prefix()
        )));
    }
    let live = session::live(dst, session::DEFAULT_TIMEOUT).await?;
    if !live.is_empty() {
        return Err(Error::Busy(format!(
            "prefix '{}' is mounted (sessions {live:?}); unmount it before replacing it",
            dst.keys.prefix()
        )));
    }
    scan::delete_all(dst).await
}

/// Copies keys from one filesystem's prefix to another's.
struct Copier<'a> {
    src: &'a Store,
    dst: &'a Store,
    same_server: bool,
}

impl Copier<'_> {
    /// Copies every content key but the meta key; returns how many were copied and the inodes
    /// that mounts hold open after their last link went.
    async fn copy_all(&self, progress: &Progress) -> Result<(u64, Vec<u64>), Error> {
        let mut scan = Scan::all(self.src);
        let (mut copied, mut held_sets) = (0, Vec::new());
        while let Some(batch) = scan.next_batch().await? {
            let mut content = Vec::with_capacity(batch.len());
            for key in batch {
                match self.src.keys.classify(&key) {
                    Some(KeyKind::Session(_)) if key.ends_with(b":held") => held_sets.push(key),
                    Some(KeyKind::Meta) => {}
                    Some(kind) if kind.is_content() => content.push(key),
                    Some(_) => {}
                    None => tracing::warn!(
                        "not copying '{}': not a key of the filesystem's format",
                        String::from_utf8_lossy(&key)
                    ),
                }
            }
            copied += self.copy(&content).await?;
            progress.advance(content.len() as u64);
        }
        let mut held = Vec::new();
        for set in held_sets {
            let members: Vec<u64> = self
                .src
                .cmd(redis::cmd("SMEMBERS").arg(&set))
                .await
                .map_err(self.src.failed("SMEMBERS"))?;
            held.extend(members);
        }
        Ok((copied, held))
    }

    async fn copy(&self, keys: &[Vec<u8>]) -> Result<u64, Error> {
        if keys.is_empty() {
            return Ok(0);
        }
        let rebased = |k: &Vec<u8>| {
            self.src
                .keys
                .rebase(k, &self.dst.keys)
                .unwrap_or_else(|| k.clone())
        };
        if self.same_server {
            let mut pipe = redis::pipe();
            for key in keys {
                let cmd = pipe.cmd("COPY").arg(key).arg(rebased(key));
                if self.dst.db != self.src.db {
                    cmd.arg("DB").arg(self.dst.db);
                }
            }
            let done: Vec<u64> = self
                .src
                .pipe(&pipe)
                .await
                .map_err(self.src.failed("COPY"))?;
            return Ok(done.iter().sum());
        }
        let mut dump = redis::pipe();
        for key in keys {
            dump.cmd("DUMP").arg(key);
        }
        let payloads: Vec<Option<Vec<u8>>> = self
            .src
            .pipe(&dump)
            .await
            .map_err(self.src.failed("DUMP"))?;
        let mut restore = redis::pipe();
        let mut n = 0;
        for (key, payload) in keys.iter().zip(payloads) {
            if let Some(payload) = payload {
                // REPLACE: SCAN may name a key twice.
                restore
                    .cmd("RESTORE")
                    .arg(rebased(key))
                    .arg(0)
                    .arg(payload)
                    .arg("REPLACE")
                    .ignore();
                n += 1;
            }
        }
        self.dst
            .pipe::<()>(&restore)
            .await
            .map_err(self.dst.failed("RESTORE"))?;
        Ok(n)
    }
}
