//! `redisfs-dump` and `redisfs-restore`: portable backups of a filesystem in a file, and plain
//! directory trees in and out.
//!
//! | module | owns |
//! | --- | --- |
//! | [`format`] | the records, their encodings, checksums and the checks on reading |
//! | [`export`] | a filesystem in Redis → records |
//! | [`import`] | records → an empty prefix in Redis |
//! | [`local`] | a local directory tree ↔ records |
//!
//! Reading and writing files runs on blocking threads; records pass through a small bounded
//! channel, so memory stays bounded whatever the size of the filesystem.

pub mod export;
pub mod import;
pub mod local;
pub mod records;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use tokio::sync::mpsc;

use crate::codec::Codec;
use crate::error::Error;
use crate::options::{on_off, parse_size};
use crate::scripts::Scripts;
use crate::store::Store;
use crate::tool::{self, Progress, ToolArgs};
use records::{Encoding, Header, Record, RecordWriter, DUMP_VERSION, MAGIC};

/// Records in flight between Redis and the file.
const CHANNEL: usize = 64;

/// `redisfs-dump`: write a filesystem to a portable file, or to a local directory.
#[derive(Parser, Clone, Debug)]
#[command(
    after_help = "Examples:\n  redisfs-dump --prefix skx backup.rfs.gz\n  redisfs-dump --prefix skx --format json backup.json\n  redisfs-dump --prefix skx - | ssh host redisfs-restore --prefix skx -\n  redisfs-dump --prefix skx --to-dir /srv/export",
    name = "redisfs-dump",
    version,
    about = "Write a redisfs filesystem to a portable backup file (or a local directory)",
    long_about = "Write a redisfs filesystem to a portable backup file: MessagePack (default) or \
                  JSON records, gzipped with --gzip or a FILE ending in .gz, with a checksum per \
                  file and one over the whole stream. FILE `-` writes to standard output. A \
                  mounted filesystem is first snapshotted (briefly holding its mounts still) to a \
                  temporary prefix `<prefix>.dump-…` that is removed afterwards, so the dump is \
                  one point in time; this needs Redis memory for the copy while the dump runs."
)]
pub struct DumpArgs {
    /// Prefix of the filesystem to dump.
    #[arg(long, default_value = "skx", value_name = "NAME")]
    pub prefix: String,
    /// Output file, or `-` for standard output.
    #[arg(
        value_name = "FILE",
        required_unless_present = "to_dir",
        conflicts_with = "to_dir"
    )]
    pub file: Option<PathBuf>,
    /// Record encoding.
    #[arg(long, value_enum, default_value = "msgpack")]
    pub format: Encoding,
    /// Compress with gzip (implied by a FILE name ending in .gz).
    #[arg(long)]
    pub gzip: bool,
    /// Write the files themselves into DIR (created if missing, must be empty) instead.
    #[arg(long, value_name = "DIR")]
    pub to_dir: Option<PathBuf>,
    #[command(flatten)]
    pub tool: ToolArgs,
}

/// `redisfs-restore`: load a dump file, or a local directory, into an empty prefix.
#[derive(Parser, Clone, Debug)]
#[command(
    after_help = "Examples:\n  redisfs-restore --prefix restored backup.rfs.gz\n  redisfs-restore --prefix skx - < backup.rfs\n  redisfs-restore --prefix photos --from-dir /home/me/photos",
    name = "redisfs-restore",
    version,
    about = "Load a redisfs dump (or a local directory tree) into an empty prefix",
    long_about = "Load a redisfs dump into an empty prefix. The format (MessagePack or JSON, gzipped \
                  or not) is detected. Every record and file checksum is verified; the filesystem \
                  stays marked incomplete (mounts refuse it) until the last record is in, and a \
                  failed restore removes what it wrote. FILE `-` reads standard input. With \
                  --from-dir, imports a local directory tree without FUSE."
)]
pub struct RestoreArgs {
    /// Prefix to restore into; must hold no keys.
    #[arg(long, default_value = "skx", value_name = "NAME")]
    pub prefix: String,
    /// Dump file, or `-` for standard input.
    #[arg(
        value_name = "FILE",
        required_unless_present = "from_dir",
        conflicts_with = "from_dir"
    )]
    pub file: Option<PathBuf>,
    /// Import the local directory tree DIR instead.
    #[arg(long, value_name = "DIR")]
    pub from_dir: Option<PathBuf>,
    /// Compression of the restored blocks [default: the dump's; lz4 for --from-dir].
    #[arg(long, value_name = "CODEC")]
    pub compression: Option<Codec>,
    /// Block size (Redis value size) of a filesystem imported with --from-dir.
    #[arg(long, default_value = "64K", value_parser = parse_size, value_name = "SIZE")]
    pub block_size: u64,
    /// Whether a filesystem imported with --from-dir keeps POSIX ACLs.
    #[arg(long, default_value = "on", value_parser = on_off(), value_name = "on|off", action = clap::ArgAction::Set)]
    pub acl: bool,
    #[command(flatten)]
    pub tool: ToolArgs,
}

/// What a dump did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DumpReport {
    /// The filesystem dumped.
    pub prefix: String,
    /// Where it went.
    pub output: String,
    /// Inodes, entries and data bytes written.
    pub stats: export::ExportStats,
    /// Whether a live filesystem was snapshotted first.
    pub snapshotted: bool,
    /// Wall time, in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for DumpReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dumped '{}' to {}: {} inodes, {} entries, {} bytes of data in {:.2} s{}",
            self.prefix,
            self.output,
            self.stats.inodes,
            self.stats.entries,
            self.stats.data_bytes,
            self.seconds,
            if self.snapshotted {
                " (from a snapshot of the mounted filesystem)"
            } else {
                ""
            }
        )
    }
}

/// What a restore did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct RestoreReport {
    /// The filesystem written.
    pub prefix: String,
    /// Where it came from.
    pub input: String,
    /// Inodes, entries, blocks and bytes written.
    pub stats: import::ImportStats,
    /// Wall time, in seconds.
    pub seconds: f64,
}

impl std::fmt::Display for RestoreReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "restored {} into '{}': {} inodes, {} entries, {} bytes of data in {:.2} s",
            self.input,
            self.prefix,
            self.stats.inodes,
            self.stats.entries,
            self.stats.data_bytes,
            self.seconds
        )
    }
}

/// Parses the options and dumps (the binary's whole job).
pub fn run_dump(args: &DumpArgs) -> Result<DumpReport, Error> {
    tool::block_on(async {
        let store = args.tool.connect(&args.prefix).await?;
        let progress = args.tool.progress("dumping data");
        dump(&store, args, &progress).await
    })
}

/// Dumps the filesystem of `store` as `args` say.
pub async fn dump(
    store: &Store,
    args: &DumpArgs,
    progress: &Progress,
) -> Result<DumpReport, Error> {
    let started = Instant::now();
    let config = crate::format::open(store, &Scripts::new(), None).await?;
    let live = crate::session::live(store, crate::session::DEFAULT_TIMEOUT).await?;
    let header = Header {
        magic: MAGIC.into(),
        version: DUMP_VERSION,
        block_size: config.block_size,
        codec: config.codec.name().into(),
        source: store.keys.prefix().into(),
        created: crate::attr::Timestamp::now().sec,
        writer: env!("CARGO_PKG_VERSION").into(),
        acl: config.acl,
    };
    let (tx, rx) = mpsc::channel(CHANNEL);
    let (output, sink) = match (&args.to_dir, &args.file) {
        (Some(dir), _) => (
            dir.display().to_string(),
            spawn_tree_writer(dir.clone(), config.block_size, rx),
        ),
        (None, Some(file)) => {
            let gzip = args.gzip || file.extension().is_some_and(|e| e == "gz");
            let binary = gzip || args.format == Encoding::Msgpack;
            if binary && file == Path::new("-") && std::io::stdout().is_terminal() {
                return Err(Error::Setting(
                    "a binary dump would go to the terminal: redirect standard output \
                     (> FILE, | …), name a file, or use --format json"
                        .into(),
                ));
            }
            (
                display_file(file),
                spawn_file_writer(file.clone(), args.format, gzip, rx),
            )
        }
        (None, None) => return Err(Error::Setting("give a FILE or --to-dir".into())),
    };
    let exported = async {
        tx.send(Record::Header(header))
            .await
            .map_err(|_| Error::WriterStopped)?;
        let stats = if live.is_empty() {
            export::export(store, config.block_size, &tx, progress).await?
        } else {
            dump_snapshot(store, config.block_size, &tx, progress).await?
        };
        // The end marker: the writer adds the real trailer.
        let end = Record::Trailer(records::Trailer {
            records: 0,
            sha256: records::Bytes::default(),
        });
        tx.send(end).await.map_err(|_| Error::WriterStopped)?;
        Ok(stats)
    }
    .await;
    drop(tx);
    let written = sink
        .await
        .map_err(|e| Error::Pipeline(format!("the writer failed: {e}")))?;
    let stats = match (exported, written) {
        (Ok(stats), Ok(())) => stats,
        // The writer failed first (an unwritable file, a full disk): its error is the cause.
        (Err(Error::WriterStopped), Err(cause)) => return Err(cause),
        // Otherwise the export's error is, and the writer only saw the dump end early.
        (Err(e), _) | (Ok(_), Err(e)) => return Err(e),
    };
    progress.finish();
    Ok(DumpReport {
        prefix: store.keys.prefix().into(),
        output,
        stats,
        snapshotted: !live.is_empty(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Exports a mounted filesystem, which changes while it is read, from a snapshot of it.
async fn dump_snapshot(
    store: &Store,
    block_size: u32,
    tx: &mpsc::Sender<Record>,
    progress: &Progress,
) -> Result<export::ExportStats, Error> {
    let scratch_prefix = format!("{}.dump-{}", store.keys.prefix(), crate::format::new_uuid());
    let scratch = store.with_prefix(&scratch_prefix);
    let result = async {
        crate::snapshot::snapshot(store, &scratch, false, &Progress::hidden()).await?;
        export::export(&scratch, block_size, tx, progress).await
    }
    .await;
    if let Err(e) = crate::scan::delete_all(&scratch).await {
        tracing::warn!(
            "removing the scratch snapshot '{scratch_prefix}' failed: {e}; delete its keys by hand"
        );
    }
    result
}

fn display_file(file: &Path) -> String {
    if file == Path::new("-") {
        "standard output".into()
    } else {
        file.display().to_string()
    }
}

/// Where dump bytes go: buffered, maybe through gzip.
enum Output {
    Plain(std::io::BufWriter<Box<dyn Write>>),
    Gzip(Box<flate2::write::GzEncoder<std::io::BufWriter<Box<dyn Write>>>>),
}

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Output::Plain(w) => w.write(buf),
            Output::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Output::Plain(w) => w.flush(),
            Output::Gzip(w) => w.flush(),
        }
    }
}

impl Output {
    /// Ends the gzip stream, if any, and flushes everything, reporting any failure.
    fn finish(self) -> std::io::Result<()> {
        let mut inner = match self {
            Output::Plain(w) => w,
            Output::Gzip(w) => w.finish()?,
        };
        inner.flush()
    }
}

/// Where a dump's bytes go.
enum Destination {
    Stdout,
    /// A regular file, or a new one: written under a temporary name, renamed over it when
    /// complete, so that a failed dump never leaves a file that looks like one.
    Replace(PathBuf),
    /// Anything else (a device such as `/dev/null`, a FIFO, a symlink): written in place, since
    /// renaming over it would replace it.
    InPlace,
}

impl Destination {
    fn of(file: &Path) -> Destination {
        if file == Path::new("-") {
            return Destination::Stdout;
        }
        match std::fs::symlink_metadata(file) {
            Ok(m) if !m.file_type().is_file() => Destination::InPlace,
            _ => Destination::Replace(file.with_extension(format!(
                "{}partial",
                file.extension()
                    .map(|e| format!("{}.", e.to_string_lossy()))
                    .unwrap_or_default()
            ))),
        }
    }
}

/// Writes records to a file or stdout (see [`Destination`]).
fn spawn_file_writer(
    file: PathBuf,
    encoding: Encoding,
    gzip: bool,
    mut rx: mpsc::Receiver<Record>,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    tokio::task::spawn_blocking(move || {
        let destination = Destination::of(&file);
        let fail = |e: std::io::Error| Error::Local {
            path: display_file(&file),
            reason: e.to_string(),
        };
        let raw: Box<dyn Write> = match &destination {
            Destination::Stdout => Box::new(std::io::stdout().lock()),
            Destination::Replace(partial) => {
                Box::new(std::fs::File::create(partial).map_err(fail)?)
            }
            Destination::InPlace => Box::new(
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&file)
                    .map_err(fail)?,
            ),
        };
        let raw = std::io::BufWriter::with_capacity(1 << 20, raw);
        let out = if gzip {
            Output::Gzip(Box::new(flate2::write::GzEncoder::new(
                raw,
                flate2::Compression::fast(),
            )))
        } else {
            Output::Plain(raw)
        };
        // The exporter ends a complete stream with a trailer record; without one (it failed),
        // no trailer is written and the output is unusable, as it must be.
        let written = (|| {
            let mut writer = RecordWriter::new(out, encoding);
            while let Some(record) = rx.blocking_recv() {
                if matches!(record, Record::Trailer(_)) {
                    return writer.finish()?.finish();
                }
                writer.write(&record)?;
            }
            Err(std::io::Error::other("the dump stopped before its end"))
        })();
        match (written, destination) {
            (Ok(()), Destination::Replace(partial)) => {
                std::fs::rename(&partial, &file).map_err(fail)
            }
            (Ok(()), _) => Ok(()),
            (Err(e), destination) => {
                if let Destination::Replace(partial) = destination {
                    let _ = std::fs::remove_file(&partial);
                }
                Err(fail(e))
            }
        }
    })
}

fn spawn_tree_writer(
    dir: PathBuf,
    block_size: u32,
    mut rx: mpsc::Receiver<Record>,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    tokio::task::spawn_blocking(move || {
        let mut tree = local::TreeWriter::new(&dir, block_size)?;
        while let Some(record) = rx.blocking_recv() {
            tree.add(record)?;
        }
        tree.finish()
    })
}

/// Parses the options and restores (the binary's whole job).
pub fn run_restore(args: &RestoreArgs) -> Result<RestoreReport, Error> {
    tool::block_on(async {
        let store = args.tool.connect(&args.prefix).await?;
        let progress = args.tool.progress("restoring");
        restore(&store, args, &progress).await
    })
}

/// A record read from the input, with where it was: (record number, byte offset).
type Positioned = (Result<Record, Error>, (u64, u64));

/// Restores into the empty prefix of `store` as `args` say.
pub async fn restore(
    store: &Store,
    args: &RestoreArgs,
    progress: &Progress,
) -> Result<RestoreReport, Error> {
    let started = Instant::now();
    let (tx, mut rx) = mpsc::channel::<Positioned>(CHANNEL);
    // Bytes of a dump file read so far (a tree is counted in inodes instead).
    let input_read = Arc::new(AtomicU64::new(0));
    let (input, reader) = match (&args.from_dir, &args.file) {
        (Some(dir), _) => {
            let value = crate::format::CreateOptions {
                value_size: args.block_size,
                codec: args.compression.unwrap_or(Codec::Lz4),
                acl: args.acl,
            };
            (
                dir.display().to_string(),
                spawn_tree_reader(dir.clone(), value, tx)?,
            )
        }
        (None, Some(file)) => {
            // A dump in a file shows progress in its bytes, read of its size.
            if let Ok(size) = std::fs::metadata(file).map(|m| m.len()) {
                if file != Path::new("-") {
                    progress.set_total_bytes(size);
                }
            }
            let reader = spawn_dump_reader(file.clone(), tx, input_read.clone());
            (display_input(file), reader)
        }
        (None, None) => return Err(Error::Setting("give a FILE or --from-dir".into())),
    };
    let name = Arc::new(input.clone());
    let at = |pos: (u64, u64)| {
        let name = name.clone();
        move |reason: &str| records::bad_dump(&name, pos.0, pos.1, reason)
    };
    let header = match rx.recv().await {
        Some((Ok(Record::Header(h)), _)) => h,
        Some((Err(e), _)) => return Err(e),
        Some((Ok(_), pos)) => return Err(at(pos)("the input does not start with a header")),
        None => {
            reader
                .await
                .map_err(|e| Error::Pipeline(format!("the reader failed: {e}")))??;
            return Err(at((0, 0))("the input is empty"));
        }
    };
    let mut importer = import::Importer::start(store, &header, args.compression).await?;
    // From here on the prefix is ours: on any failure, remove what was written.
    let outcome = async {
        let mut last = (1, 0);
        while let Some((record, pos)) = rx.recv().await {
            last = pos;
            let is_inode = matches!(record, Ok(Record::Inode(_)));
            importer.add(record?, &at(pos)).await?;
            match input_read.load(Ordering::Relaxed) {
                0 if is_inode => progress.advance(1),
                0 => {}
                read => progress.reach(read),
            }
        }
        reader
            .await
            .map_err(|e| Error::Pipeline(format!("the reader failed: {e}")))??;
        importer.finish(&at(last)).await
    }
    .await;
    progress.finish();
    match outcome {
        Ok(stats) => Ok(RestoreReport {
            prefix: store.keys.prefix().into(),
            input,
            stats,
            seconds: started.elapsed().as_secs_f64(),
        }),
        Err(e) => {
            if let Err(cleanup) = crate::scan::delete_all(store).await {
                tracing::warn!(
                    "removing the partial restore failed ({cleanup}); '{}' stays marked incomplete",
                    store.keys.prefix()
                );
            }
            Err(e)
        }
    }
}

fn display_input(file: &Path) -> String {
    if file == Path::new("-") {
        "standard input".into()
    } else {
        file.display().to_string()
    }
}

/// Counts the bytes read through it into a counter shared with the progress.
struct CountingReader<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

fn spawn_dump_reader(
    file: PathBuf,
    tx: mpsc::Sender<Positioned>,
    read: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<Result<(), Error>> {
    tokio::task::spawn_blocking(move || {
        let name = display_input(&file);
        let input: Box<dyn std::io::Read + Send> = if file == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            let opened = std::fs::File::open(&file).map_err(|e| Error::Local {
                path: name.clone(),
                reason: e.to_string(),
            })?;
            Box::new(CountingReader {
                inner: opened,
                read,
            })
        };
        let mut reader = records::open_reader(input, &name)?;
        loop {
            match reader.next_record() {
                Ok(Some(record)) => {
                    if tx.blocking_send((Ok(record), reader.position())).is_err() {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => {
                    let _ = tx.blocking_send((Err(e), reader.position()));
                    return Ok(());
                }
            }
        }
    })
}

fn spawn_tree_reader(
    dir: PathBuf,
    value: crate::format::CreateOptions,
    tx: mpsc::Sender<Positioned>,
) -> Result<tokio::task::JoinHandle<Result<(), Error>>, Error> {
    let block_size = value.block_size()?;
    Ok(tokio::task::spawn_blocking(move || {
        let mut n = 0;
        let result = local::read_tree(&dir, block_size, &value, &mut |record| {
            n += 1;
            tx.blocking_send((Ok(record), (n, 0)))
                .map_err(|_| Error::Pipeline("the restore stopped".into()))
        });
        if let Err(e) = result {
            let _ = tx.blocking_send((Err(e), (n, 0)));
        }
        Ok(())
    }))
}
