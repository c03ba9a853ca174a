//! What the four tools (snapshot, dump, restore, fsck) share: their common options, the
//! connection, progress reporting, and the summary they print.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::Error;
use crate::options::{parse_seconds, ConnectionArgs, RedisTarget};
use crate::server::ServerInfo;
use crate::store::Store;

/// Options every tool takes besides its own.
#[derive(Args, Clone, Debug)]
pub struct ToolArgs {
    #[command(flatten)]
    pub connection: ConnectionArgs,
    /// Print a machine-readable summary (JSON) on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Print nothing but errors (no progress, no summary).
    #[arg(short, long)]
    pub quiet: bool,
    /// How long to wait for a lost Redis to come back before giving up.
    #[arg(long, default_value = "60", value_parser = parse_seconds, value_name = "SECONDS")]
    pub io_timeout: Duration,
}

impl ToolArgs {
    /// Connects to the Redis these options name, for the filesystem under `prefix`; checks
    /// that the server can run the filesystem's scripts.
    pub async fn connect(&self, prefix: &str) -> Result<Store, Error> {
        crate::options::hide_passwords_from_process_list();
        connect(&self.connection.target()?, prefix, self.io_timeout).await
    }

    /// Progress reporting suited to where the tool's output goes.
    pub fn progress(&self, what: &str) -> Progress {
        Progress::new(what, self.quiet || self.json)
    }
}

/// Connects to `target` for the filesystem under `prefix` and checks the server's version.
pub async fn connect(
    target: &RedisTarget,
    prefix: &str,
    io_timeout: Duration,
) -> Result<Store, Error> {
    validate_prefix(prefix)?;
    let store = Store::connect(target, prefix, io_timeout).await?;
    // Tools never evict anything themselves: the eviction policy is the mount's concern.
    ServerInfo::read_synced(&store, io_timeout)
        .await?
        .check(&store.address, true)?;
    Ok(store)
}

/// Refuses prefixes that cannot name a filesystem.
pub fn validate_prefix(prefix: &str) -> Result<(), Error> {
    // A ':' would let one filesystem's keys (`a:…`) cover another's (`a:b:…`); braces would
    // choose another hash slot than the layout's (see `src/keys.rs`).
    if prefix.is_empty()
        || prefix
            .contains(|c: char| matches!(c, ':' | '{' | '}') || c.is_whitespace() || c.is_control())
    {
        return Err(Error::Setting(format!(
            "prefix '{prefix}' must be non-empty, without ':', '{{', '}}', spaces or control characters"
        )));
    }
    Ok(())
}

/// Runs a tool's async body on a small runtime.
pub fn block_on<T>(work: impl std::future::Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| Error::System {
            context: "cannot start the runtime".into(),
            source,
        })?
        .block_on(work)
}

/// Sets up logging for a tool: warnings and errors on stderr (progress lines too when stderr
/// is not a terminal), everything with `RUST_LOG`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("redisfs=info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Ends a tool's run: prints its summary (on stderr when stdout carries its data), or its
/// error; returns the exit code.
pub fn finish<R: serde::Serialize + std::fmt::Display>(
    tool: &str,
    args: &ToolArgs,
    outcome: Result<R, Error>,
    stdout_busy: bool,
) -> std::process::ExitCode {
    match outcome {
        Ok(report) => {
            print_summary(args, &report, stdout_busy);
            std::process::ExitCode::SUCCESS
        }
        Err(e) => fail(tool, &e, 1),
    }
}

/// Reports a tool's failure as one line on stderr; returns the exit code.
pub fn fail(tool: &str, err: &Error, code: u8) -> std::process::ExitCode {
    // The library's messages already carry their causes.
    eprintln!("{tool}: {err}");
    std::process::ExitCode::from(code)
}

/// Prints a tool's summary: JSON with `--json`, else its text form (unless quiet); on stdout,
/// or on stderr when stdout carries the tool's data.
pub fn print_summary<R: serde::Serialize + std::fmt::Display>(
    args: &ToolArgs,
    report: &R,
    stdout_busy: bool,
) {
    let text = if args.json {
        match serde_json::to_string_pretty(report) {
            Ok(text) => text,
            Err(e) => format!("cannot render the summary as JSON: {e}"),
        }
    } else if !args.quiet {
        report.to_string()
    } else {
        return;
    };
    if stdout_busy {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// The filesystem counter `field` of `P:stat` (`inodes`, `blocks`), for a progress total;
/// 0 when it cannot be read (the progress then shows no total).
pub async fn counter(store: &Store, field: &str) -> u64 {
    store
        .cmd::<Option<u64>>(redis::cmd("HGET").arg(store.keys.stat()).arg(field))
        .await
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// Progress of a long piece of work: a bar on a terminal, a log line every few seconds
/// otherwise, nothing when quiet.
pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    done: AtomicU64,
    total: AtomicU64,
    /// Whether the units are bytes.
    bytes: std::sync::atomic::AtomicBool,
    quiet: bool,
    last_line: Mutex<Instant>,
}

/// How often a progress line is logged when there is no terminal.
const LINE_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    /// Progress of `what` (e.g. "copying keys"); `quiet` shows nothing.
    pub fn new(what: &str, quiet: bool) -> Progress {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {msg}: {human_pos} ({per_sec}, {elapsed})")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar.set_message(what.to_string());
            bar
        });
        Progress {
            bar,
            what: what.to_string(),
            done: AtomicU64::new(0),
            total: AtomicU64::new(0),
            bytes: Default::default(),
            quiet,
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// A progress that shows nothing (for library callers without a user).
    pub fn hidden() -> Progress {
        Progress::new("", true)
    }

    /// Sets how much work there is, when known (an estimate is fine: the bar stops at full).
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.show_bar(
            "{msg}: {human_pos}/{human_len} {wide_bar} {eta} left",
            total,
        );
    }

    /// Turns the spinner into a bar of `total` drawn by `template`.
    fn show_bar(&self, template: &str, total: u64) {
        if let Some(bar) = &self.bar {
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar.set_length(total);
        }
    }

    /// Sets the total from the filesystem's counters: `inodes` and `blocks` weighted as the
    /// work counts them.
    pub async fn total_from_counters(&self, store: &Store, per_inode: u64, per_block: u64) {
        let total =
            counter(store, "inodes").await * per_inode + counter(store, "blocks").await * per_block;
        if total > 0 {
            self.set_total(total);
        }
    }

    /// Counts bytes from now on, toward `total` (sizes, a rate and an ETA are shown); the
    /// clock restarts, so that work done before (a snapshot taken first) does not make the
    /// rate look slow.
    pub fn set_total_bytes(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        self.bytes.store(true, Ordering::Relaxed);
        self.show_bar(
            "{msg}: {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}) {wide_bar} {eta} left",
            total,
        );
        if let Some(bar) = &self.bar {
            bar.set_position(0);
            bar.reset_eta();
            bar.reset_elapsed();
        }
    }

    /// Counts `n` more units done.
    pub fn advance(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        self.show(done);
    }

    /// Sets how many units are done.
    pub fn reach(&self, done: u64) {
        self.done.store(done, Ordering::Relaxed);
        self.show(done);
    }

    fn show(&self, done: u64) {
        // A total that was an estimate grows with the work: it is never passed.
        let total = self.total.fetch_max(done, Ordering::Relaxed).max(done);
        if let Some(bar) = &self.bar {
            if bar.length().is_some_and(|length| length < total) {
                bar.set_length(total);
            }
            bar.set_position(done);
            return;
        }
        if self.quiet {
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= LINE_EVERY {
            *last = Instant::now();
            let mib = |b: u64| b as f64 / (1 << 20) as f64;
            match (total, self.bytes.load(Ordering::Relaxed)) {
                (0, _) => tracing::info!("{}: {done}", self.what),
                (total, false) => tracing::info!("{}: {done} of {total}", self.what),
                (total, true) => {
                    tracing::info!("{}: {:.1} of {:.1} MiB", self.what, mib(done), mib(total))
                }
            }
        }
    }

    /// Ends the display.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Caught: fsck showed "20,620/20,462": a total read from the counters is an estimate,
    /// and the work may pass it; the total then grows with the work.
    #[test]
    fn a_total_is_never_passed() {
        let progress = Progress::new("checking", true);
        progress.set_total(10);
        progress.advance(15);
        assert_eq!(progress.total.load(Ordering::Relaxed), 15);
        progress.set_total_bytes(1000);
        progress.reach(400);
        assert_eq!(progress.done.load(Ordering::Relaxed), 400);
        assert_eq!(progress.total.load(Ordering::Relaxed), 1000);
        progress.reach(1500);
        assert_eq!(progress.total.load(Ordering::Relaxed), 1500);
    }
}
