//! `redisfs-fsck`: check a filesystem, and with `--repair` fix it.
//!
//! | module | owns |
//! | --- | --- |
//! | [`model`] | reading every key into one picture; wrong-typed and unknown keys |
//! | [`checks`] | the checks on that picture, and their repairs |
//!
//! Exit codes follow e2fsck: 0 clean, 1 errors corrected, 4 errors left, 8 operational error.
//! A repair changes keys directly (or through the filesystem's own scripts where a mount's
//! rules apply), so it refuses to run while mounts are live unless forced.

pub mod checks;
pub mod model;

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::error::Error;
use crate::options::parse_seconds;
use crate::store::Store;
use crate::tool::{self, Progress, ToolArgs};

/// `redisfs-fsck`: check a filesystem and repair it.
#[derive(Parser, Clone, Debug)]
#[command(
    after_help = "Examples:\n  redisfs-fsck --prefix skx                      # check only\n  redisfs-fsck --prefix skx --repair --verify-data\n  redisfs-fsck --prefix skx --json | jq .exit_code",
    name = "redisfs-fsck",
    version,
    about = "Check a redisfs filesystem and, with --repair, fix it",
    long_about = "Check a redisfs filesystem: its meta key, key types, inodes, directory entries, \
                  link counts, parent links, unreachable inodes, block maps, leaked blocks, \
                  counters, sessions and locks (and, with --verify-data, every block's bytes). \
                  With --repair, fix what it finds: unreachable inodes go to /lost+found. Exit \
                  codes as e2fsck: 0 clean, 1 errors corrected, 4 errors left, 8 operational error."
)]
pub struct FsckArgs {
    /// Prefix of the filesystem to check.
    #[arg(long, default_value = "skx", value_name = "NAME")]
    pub prefix: String,
    /// Fix what is found (refused while the filesystem is mounted, unless --force).
    #[arg(long)]
    pub repair: bool,
    /// Repair even though mounts are live (they may be changing what is being fixed).
    #[arg(long)]
    pub force: bool,
    /// Also read and decode every block.
    #[arg(long)]
    pub verify_data: bool,
    /// A mount silent for this long is dead (its session is expired on repair).
    #[arg(long, default_value = "30", value_parser = parse_seconds, value_name = "SECONDS")]
    pub session_timeout: Duration,
    #[command(flatten)]
    pub tool: ToolArgs,
}

/// One thing found wrong.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Problem {
    /// What kind of damage (a stable code, e.g. `missing_block`).
    pub kind: &'static str,
    /// The key or inode at fault.
    pub at: String,
    /// What is wrong, and for a repair what was done.
    pub detail: String,
    /// Whether it was fixed.
    pub repaired: bool,
}

/// Problems found so far, and whether to fix them.
pub struct Findings {
    repair: bool,
    problems: Vec<Problem>,
}

/// A problem just found, to be fixed (on repair) or left.
pub struct Finding<'a> {
    findings: &'a mut Findings,
}

impl Findings {
    /// Records a problem; the returned handle fixes it when repairing.
    pub fn problem(&mut self, kind: &'static str, at: &str, detail: &str) -> Finding<'_> {
        tracing::debug!("{kind} at {at}: {detail}");
        self.problems.push(Problem {
            kind,
            at: at.to_string(),
            detail: detail.to_string(),
            repaired: false,
        });
        Finding { findings: self }
    }

    /// Whether problems are being fixed.
    pub fn repairing(&self) -> bool {
        self.repair
    }
}

impl Finding<'_> {
    /// Runs `fix` when repairing and marks the problem repaired, noting `done`.
    pub async fn fix(
        self,
        done: &str,
        fix: impl Future<Output = Result<(), Error>>,
    ) -> Result<(), Error> {
        if !self.findings.repair {
            return Ok(());
        }
        fix.await?;
        if let Some(p) = self.findings.problems.last_mut() {
            p.repaired = true;
            p.detail = format!("{}; {done}", p.detail);
        }
        Ok(())
    }

    /// Leaves the problem: nothing safe can fix it.
    pub fn leave(self) {}

    /// Repairs by deleting `key`.
    pub async fn delete_key(self, store: &Store, key: &[u8]) -> Result<(), Error> {
        self.fix("deleted", command(store, redis::cmd("DEL").arg(key)))
            .await
    }

    /// Repairs by deleting `field` of the hash `key`.
    pub async fn delete_field(self, store: &Store, key: &[u8], field: &[u8]) -> Result<(), Error> {
        self.fix(
            "removed",
            command(store, redis::cmd("HDEL").arg(key).arg(field)),
        )
        .await
    }
}

/// Runs one repair command.
pub async fn command(store: &Store, cmd: &redis::Cmd) -> Result<(), Error> {
    store
        .cmd::<()>(cmd)
        .await
        .map_err(store.failed("repairing"))
}

/// What a check found.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FsckReport {
    /// The filesystem checked.
    pub prefix: String,
    /// Whether repairs were made.
    pub repair: bool,
    /// Live mounts while checking (their changes in flight may show as problems).
    pub live_mounts: usize,
    /// Inodes and blocks seen.
    pub inodes: u64,
    /// Blocks seen.
    pub blocks: u64,
    /// Everything found.
    pub problems: Vec<Problem>,
    /// e2fsck-style exit code: 0 clean, 1 corrected, 4 left.
    pub exit_code: u8,
    /// Wall time, in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for FsckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for p in &self.problems {
            let state = if p.repaired { "fixed" } else { "FOUND" };
            writeln!(f, "{state}: {} at {}: {}", p.kind, p.at, p.detail)?;
        }
        let verdict = match self.exit_code {
            0 => "clean".to_string(),
            1 => format!("{} problems, all repaired", self.problems.len()),
            _ => format!(
                "{} problems, {} left{}",
                self.problems.len(),
                self.problems.iter().filter(|p| !p.repaired).count(),
                if self.repair {
                    ""
                } else {
                    " (run with --repair to fix)"
                }
            ),
        };
        write!(
            f,
            "'{}': {} inodes, {} blocks: {verdict} ({:.2} s)",
            self.prefix, self.inodes, self.blocks, self.seconds
        )?;
        if self.live_mounts > 0 {
            write!(
                f,
                "\nnote: {} live mount(s); changes in flight may show as problems",
                self.live_mounts
            )?;
        }
        Ok(())
    }
}

/// Parses the options and checks (the binary's whole job).
pub fn run(args: &FsckArgs) -> Result<FsckReport, Error> {
    tool::block_on(async {
        let store = args.tool.connect(&args.prefix).await?;
        let progress = args.tool.progress("reading keys");
        fsck(&store, args, &progress).await
    })
}

/// Checks (and repairs) the filesystem of `store`.
pub async fn fsck(
    store: &Store,
    args: &FsckArgs,
    progress: &Progress,
) -> Result<FsckReport, Error> {
    let started = Instant::now();
    let live = crate::session::live(store, args.session_timeout).await?;
    if args.repair && !live.is_empty() && !args.force {
        return Err(Error::Busy(format!(
            "'{}' is mounted (live sessions {live:?}); unmount it first, or pass --force",
            store.keys.prefix()
        )));
    }
    let mut findings = Findings {
        repair: args.repair,
        problems: Vec::new(),
    };
    let (inodes, blocks) = checks::check(store, args, &mut findings, progress).await?;
    progress.finish();
    let left = findings.problems.iter().any(|p| !p.repaired);
    Ok(FsckReport {
        prefix: store.keys.prefix().to_string(),
        repair: args.repair,
        live_mounts: live.len(),
        inodes,
        blocks,
        exit_code: match (findings.problems.is_empty(), left) {
            (true, _) => 0,
            (false, false) => 1,
            (false, true) => 4,
        },
        problems: findings.problems,
        seconds: started.elapsed().as_secs_f64(),
    })
}
