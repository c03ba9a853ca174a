//! Mounting: checks, set-up, serving until unmounted, and a clean shutdown.

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{MountOption, SessionACL};

use crate::blocks::BlockStore;
use crate::codec::Codec;
use crate::error::Error;
use crate::events::{self, Listener};
use crate::format::{self, CreateOptions};
use crate::fs::fuse::RedisFs;
use crate::fs::notify::KernelNotifier;
use crate::fs::{AtimePolicy, Core, MountSettings};
use crate::local_redis::{self, LocalRedis};
use crate::meta::Meta;
use crate::options::MountArgs;
use crate::scripts::Scripts;
use crate::server::ServerInfo;
use crate::session::Session;
use crate::store::Store;

/// Environment variable naming the pipe a daemonised child reports readiness on.
const READY_FD: &str = "REDISFS_READY_FD";
/// How long the kernel caches names and attributes.
const TTL: Duration = Duration::from_secs(1);
/// How long an unmount waits for the reclaimer to send what it queued (closes that end
/// registered opens, deletions of unlinked files); what is left goes with the session's end.
const RECLAIMS_PATIENCE: Duration = Duration::from_secs(10);

/// Sets up tracing: to `--log-file`, else to stderr (colours only on a terminal); `--debug`
/// logs every operation. (A mount going to the background gives its background process
/// [`default_log_file`] when it has no `--log-file`.)
pub fn init_logging(args: &MountArgs) -> Result<(), Error> {
    let default = if args.debug {
        "redisfs=debug,fuser=debug"
    } else {
        "redisfs=info,fuser=error"
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match &args.log_file {
        Some(path) => {
            let open = || {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
            };
            let f = open().map_err(|e| Error::Local {
                path: format!("log file {}", path.display()),
                reason: e.to_string(),
            })?;
            builder
                .with_ansi(false)
                .with_writer(std::sync::Mutex::new(f))
                .init();
        }
        None => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
    Ok(())
}

/// Where a mount in the background logs without `--log-file`: `/var/log/redisfs/PREFIX.log`
/// as root, else `PREFIX.log` in the state directory.
pub fn default_log_file(prefix: &str) -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let dir = if unsafe { libc::geteuid() } == 0 {
        PathBuf::from("/var/log/redisfs")
    } else {
        local_redis::default_state_dir()
    };
    dir.join(format!("{prefix}.log"))
}

fn check_mount_point(path: &Path) -> Result<PathBuf, Error> {
    let fail = |reason: &str| Error::MountPoint {
        path: path.display().to_string(),
        reason: reason.to_string(),
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail("does not exist"),
        _ => fail(&e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(fail("is not a directory"));
    }
    let path = path.canonicalize().map_err(|e| fail(&e.to_string()))?;
    if let Some(mounted) = mounted_on(&path) {
        return Err(fail(&format!(
            "is already a mount point ({}); unmount it first",
            mounted.fs_type
        )));
    }
    Ok(path)
}

/// A filesystem mounted on a directory, as `/proc/self/mountinfo` lists it.
struct MountEntry {
    /// `major:minor`.
    device: String,
    /// `fuse.redisfs`, `ext4`, …
    fs_type: String,
}

/// The filesystem mounted last on `mount_point` (a canonical path), if any.
fn mounted_on(mount_point: &Path) -> Option<MountEntry> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // mountinfo escapes space, tab, newline and backslash in paths as octal.
    let wanted: String = mount_point
        .to_str()?
        .chars()
        .map(|c| match c {
            ' ' | '\t' | '\n' | '\\' => format!("\\{:03o}", c as u32),
            c => c.to_string(),
        })
        .collect();
    // Fields: id, parent, major:minor, root, mount point, options, optional fields, "-", type.
    table.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) != Some(&wanted.as_str()) {
            return None;
        }
        let fs_type = line.split(" - ").nth(1)?.split(' ').next()?;
        Some(MountEntry {
            device: fields.get(2)?.to_string(),
            fs_type: fs_type.to_string(),
        })
    })
}

/// Starts this program again with `command_line` (its arguments in `redisfs`'s own syntax)
/// without `--daemon`, logging to `log_file` unless the command line names one, and waits
/// until it reports the mount ready.
fn daemonize(command_line: &[OsString], log_file: Option<&Path>) -> Result<(), Error> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe(fds.as_mut_ptr()) } != 0 {
        return Err(Error::System {
            context: "pipe".into(),
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: both descriptors were just created and are owned here.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let exe = std::env::current_exe().map_err(|source| Error::System {
        context: "cannot find own binary".into(),
        source,
    })?;
    // The Redis URL may hold a password: the background mount gets it in its environment,
    // which only its owner can read, never on its command line.
    let mut url = None;
    let mut args = Vec::new();
    let mut given = command_line.iter().skip(1).cloned();
    while let Some(arg) = given.next() {
        if arg == "-d" || arg == "--daemon" {
            continue;
        }
        if arg == "--redis" {
            url = given.next();
        } else if let Some(value) = arg.to_str().and_then(|a| a.strip_prefix("--redis=")) {
            url = Some(value.into());
        } else {
            args.push(arg);
        }
    }
    // Its stderr is /dev/null once it is ready.
    if let Some(file) = log_file {
        let options_end = args.iter().position(|a| a == "--").unwrap_or(args.len());
        args.insert(options_end, format!("--log-file={}", file.display()).into());
    }
    crate::options::hide_passwords_from_process_list();
    let mut cmd = std::process::Command::new(exe);
    cmd.args(args)
        .env(READY_FD, fds[1].to_string())
        .stdin(std::process::Stdio::null());
    if let Some(url) = url {
        cmd.env("REDISFS_URL", url);
    }
    let read_fd = fds[0];
    // SAFETY: between fork and exec the child only calls async-signal-safe functions.
    unsafe {
        cmd.pre_exec(move || {
            libc::setsid();
            libc::close(read_fd);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| Error::System {
        context: "cannot start the background mount".into(),
        source,
    })?;
    drop(write_end);
    // One line, not EOF: processes the mount starts (a private redis-server) may hold the pipe.
    let mut answer = String::new();
    let _ = std::io::BufRead::read_line(
        &mut std::io::BufReader::new(std::fs::File::from(read_end)),
        &mut answer,
    );
    if answer.trim() == "ready" {
        return Ok(());
    }
    let status = child.wait().ok();
    Err(Error::BackgroundMount(
        status.map_or("unknown status".into(), |s| s.to_string()),
    ))
}

/// Marks the readiness pipe close-on-exec, so that programs this mount starts do not keep it.
fn keep_ready_pipe_to_ourselves() {
    if let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: fcntl on a descriptor number; an invalid one only returns an error.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// Tells a waiting parent (see [`daemonize`]) that the mount is ready.
fn report_ready() {
    let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    std::env::remove_var(READY_FD);
    // SAFETY: the descriptor was inherited from the parent for exactly this purpose.
    let mut pipe = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let _ = pipe.write_all(b"ready\n");
    // Detach from the caller's terminal or pipes, as a daemon does: whoever started us may
    // be waiting for them to close. Logs go to --log-file.
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto the standard descriptors with a valid open file.
        unsafe {
            libc::dup2(null.as_raw_fd(), 1);
            libc::dup2(null.as_raw_fd(), 2);
        }
    }
}

fn fuse_options(args: &MountArgs, prefix: &str, read_only: bool) -> Result<fuser::Config, Error> {
    let mut options = vec![
        MountOption::FSName(format!("redisfs:{prefix}")),
        MountOption::CUSTOM("subtype=redisfs".into()),
        MountOption::DefaultPermissions,
    ];
    // SAFETY: geteuid has no preconditions.
    let mut acl = if unsafe { libc::geteuid() } == 0 {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    for opt in args.mount_options() {
        let parsed = match opt {
            "allow_other" => {
                acl = SessionACL::All;
                continue;
            }
            "allow_root" => {
                acl = SessionACL::RootAndOwner;
                continue;
            }
            "default_permissions" | "rw" => continue,
            "ro" => MountOption::RO,
            "dev" => MountOption::Dev,
            "nodev" => MountOption::NoDev,
            "suid" => MountOption::Suid,
            "nosuid" => MountOption::NoSuid,
            "exec" => MountOption::Exec,
            "noexec" => MountOption::NoExec,
            "atime" => MountOption::Atime,
            "noatime" => MountOption::NoAtime,
            // Access times are redisfs's to keep (see `fs/atime.rs`); the kernel shows its
            // default, relatime, for both.
            "relatime" | "strictatime" => continue,
            "sync" => MountOption::Sync,
            "async" => MountOption::Async,
            "dirsync" => MountOption::DirSync,
            "auto_unmount" => {
                return Err(Error::Setting(
                    "-o auto_unmount is not supported; redisfs unmounts itself on SIGINT/SIGTERM"
                        .into(),
                ))
            }
            other if other.starts_with("fsname=") => MountOption::FSName(other[7..].to_string()),
            other => MountOption::CUSTOM(other.to_string()),
        };
        options.push(parsed);
    }
    if read_only && !options.contains(&MountOption::RO) {
        options.push(MountOption::RO);
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(4);
    config.clone_fd = true;
    Ok(config)
}

/// Mounts the filesystem of `args` (parsed from `command_line`) and serves it until it is
/// unmounted (or, with `--daemon`, returns once it is mounted, leaving a background process
/// to serve it).
pub fn run(args: MountArgs, command_line: &[OsString]) -> Result<(), Error> {
    let mount_point = check_mount_point(&args.mount_point())?;
    if args.daemon && std::env::var_os(READY_FD).is_none() {
        let log_file = args
            .log_file
            .is_none()
            .then(|| default_log_file(&args.prefix));
        return daemonize(command_line, log_file.as_deref());
    }
    keep_ready_pipe_to_ourselves();
    crate::options::hide_passwords_from_process_list();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // One worker: a request's task, the Redis connection and the event listener then share
        // a thread, and a metadata operation costs 9 context switches instead of 13 (measured:
        // ~25% less CPU per create). Byte copying is mostly on the FUSE threads anyway.
        .worker_threads(1)
        .thread_name("redisfs")
        .enable_all()
        .build()
        .map_err(|source| Error::System {
            context: "cannot start the runtime".into(),
            source,
        })?;

    let mut target = args.connection.target()?;
    let mut local = None;
    if !target.explicit && !local_redis::default_server_reachable() {
        let dir = args
            .state_dir
            .clone()
            .unwrap_or_else(local_redis::default_state_dir);
        let server = LocalRedis::start(&dir)?;
        target = server.target()?;
        local = Some(server);
    }

    let result = runtime
        .block_on(prepare(&args, &target, &mount_point))
        .and_then(|mounted| serve(&runtime, mounted, &mount_point));
    if let Some(mut server) = local {
        server.stop();
    }
    result
}

/// Everything a running mount needs.
struct Mounted {
    core: Arc<Core>,
    session: Option<Session>,
    config: fuser::Config,
    store: Store,
    session_timeout: Duration,
    /// Where its metrics are served, unless `--no-metrics`.
    metrics: Option<tokio::net::TcpListener>,
}

/// A mount's core, connected and running, without the kernel: what [`run`] serves, with its
/// operations called directly. It follows other mounts' changes and heartbeats as a mount
/// does. The tests that drive `Core` where `/dev/fuse` is missing use it.
pub struct Headless {
    /// The core.
    pub core: Arc<Core>,
    session: Option<Arc<Session>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Headless {
    /// Starts the core a mount of `args` would serve (the mount point is only recorded, as
    /// the session's), on the current tokio runtime.
    pub async fn start(args: &MountArgs) -> Result<Headless, Error> {
        let target = args.connection.target()?;
        let mount_point = args.mount_point();
        let mounted = prepare(args, &target, &mount_point).await?;
        let session = mounted.session.map(Arc::new);
        let tasks = run_alongside(
            &mounted.core,
            session.clone(),
            &mounted.store,
            mounted.session_timeout,
            mounted.metrics,
        );
        Ok(Headless {
            core: mounted.core,
            session,
            tasks,
        })
    }

    /// Stores what is buffered and ends the session, as an unmount does.
    pub async fn stop(self) {
        for task in &self.tasks {
            task.abort();
        }
        shutdown(&self.core, self.session.as_deref()).await;
    }
}

/// Starts what runs beside a mount's requests: following other mounts' changes, and the
/// heartbeat and upkeep of [`maintain`].
fn run_alongside(
    core: &Arc<Core>,
    session: Option<Arc<Session>>,
    store: &Store,
    session_timeout: Duration,
    metrics: Option<tokio::net::TcpListener>,
) -> Vec<tokio::task::JoinHandle<()>> {
    // Read-only mounts publish nothing; u64::MAX never names a session.
    let own = session.as_ref().map_or(u64::MAX, |s| s.id);
    let listener: Arc<dyn Listener> = core.clone();
    let following = tokio::spawn(events::follow(store.clone(), own, listener));
    let background = tokio::spawn(maintain(core.clone(), session, session_timeout));
    let mut tasks = vec![following, background];
    if let Some(listener) = metrics {
        tasks.push(tokio::spawn(crate::metrics::serve(listener, core.clone())));
    }
    tasks
}

/// Warns of the creation options given for a filesystem made with others: it keeps its own.
fn warn_of_ignored_creation_options(
    args: &MountArgs,
    create: &CreateOptions,
    made: &format::FsConfig,
) {
    let mut ignored = Vec::new();
    if args.block_size.is_some() && create.block_size().ok() != Some(made.block_size) {
        ignored.push(format!(
            "--block-size (its blocks hold {} bytes)",
            made.block_size
        ));
    }
    if args.compression.is_some_and(|c| c != made.codec) {
        ignored.push(format!(
            "--compression (it uses {}; redisfs-admin config changes it)",
            made.codec.name()
        ));
    }
    if args.acl.is_some_and(|acl| acl != made.acl) {
        ignored.push(format!(
            "--acl (ACLs are {} on it)",
            if made.acl { "on" } else { "off" }
        ));
    }
    if !ignored.is_empty() {
        tracing::warn!(
            "'{}' exists and keeps the settings it was made with; ignored: {}",
            args.prefix,
            ignored.join(", ")
        );
    }
}

async fn prepare(
    args: &MountArgs,
    target: &crate::options::RedisTarget,
    mount_point: &Path,
) -> Result<Mounted, Error> {
    crate::tool::validate_prefix(&args.prefix)?;
    let store = Store::connect(target, &args.prefix, args.io_timeout).await?;
    store
        .measure_clock()
        .await
        .map_err(store.failed("reading the server's clock (TIME)"))?;
    let server = ServerInfo::read_synced(&store, args.io_timeout).await?;
    server.check(&store.address, args.force)?;
    let read_only = args.read_only || server.is_replica || args.mount_options().any(|o| o == "ro");
    if server.is_replica && !args.read_only {
        tracing::warn!("{} is a replica: mounting read-only", store.address);
    }
    let scripts = Arc::new(Scripts::new());
    let create = CreateOptions {
        value_size: args.block_size.unwrap_or(format::DEFAULT_VALUE_SIZE),
        codec: args.compression.unwrap_or(Codec::Lz4),
        acl: args.acl.unwrap_or(true),
    };
    let fs_config = format::open(&store, &scripts, (!read_only).then_some(&create)).await?;
    store.serve(&fs_config.uuid);
    warn_of_ignored_creation_options(args, &create, &fs_config);
    let metrics = match args.no_metrics {
        true => None,
        false => Some(crate::metrics::bind(args.metrics).await?),
    };
    let metrics_address = metrics.as_ref().and_then(|l| l.local_addr().ok());
    let session = if read_only {
        None
    } else {
        Some(Session::register(&store, mount_point, metrics_address).await?)
    };
    let mut meta = Meta::new(store.clone(), scripts, session.as_ref().map_or(0, |s| s.id));
    if !args.no_delegation {
        meta = meta.delegating(args.session_timeout);
    }
    let blocks = BlockStore::new(
        store.clone(),
        fs_config.block_size,
        fs_config.codec,
        args.cache_size,
    );
    let settings = MountSettings {
        read_only,
        ttl: TTL,
        writeback: args.writeback,
        write_buffer: args.write_buffer,
        atime: args
            .mount_options()
            .filter_map(AtimePolicy::from_option)
            .last()
            .unwrap_or_default(),
        acl: fs_config.acl,
    };
    let (core, queues) = Core::new(meta, blocks, settings);
    core.start_workers(queues);
    let config = fuse_options(args, &args.prefix, read_only)?;
    tracing::info!(
        "mounting '{}' from {} on {}{}",
        args.prefix,
        store.address,
        mount_point.display(),
        if read_only { " (read-only)" } else { "" }
    );
    Ok(Mounted {
        core,
        session,
        config,
        store,
        session_timeout: args.session_timeout,
        metrics,
    })
}

fn serve(
    runtime: &tokio::runtime::Runtime,
    mounted: Mounted,
    mount_point: &Path,
) -> Result<(), Error> {
    let Mounted {
        core,
        session,
        config,
        store,
        session_timeout,
        metrics,
    } = mounted;
    let session = session.map(Arc::new);
    let fs = RedisFs::new(core.clone(), runtime.handle().clone());
    let mut fuse = fuser::Session::new(fs, mount_point, &config).map_err(|source| Error::Fuse {
        context: format!("mounting on {}", mount_point.display()),
        source,
    })?;
    widen_read_ahead(mount_point);
    core.attach_kernel(KernelNotifier::start(fuse.notifier()));
    let alongside = {
        let _entered = runtime.enter();
        run_alongside(&core, session.clone(), &store, session_timeout, metrics)
    };
    report_ready();

    let mut unmounter = fuse.unmount_callable();
    let path = mount_point.to_path_buf();
    runtime.spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("unmounting {}", path.display());
        let busy = tokio::task::spawn_blocking(move || unmounter.unmount()).await;
        if !matches!(busy, Ok(Ok(()))) {
            // Files are still open: detach now; the kernel finishes when they close.
            lazy_unmount(&path);
        }
    });

    let served = fuse.run();
    for task in alongside {
        task.abort();
    }
    runtime.block_on(shutdown(&core, session.as_deref()));
    tracing::info!("unmounted {}", mount_point.display());
    served.map_err(|source| Error::Fuse {
        context: "serving requests".into(),
        source,
    })
}

fn lazy_unmount(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: c is a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// Raises the kernel's read-ahead window for this mount from its 128 KiB default to what
/// the mount asks for at INIT (the kernel keeps the smaller of the two): fewer, larger reads
/// cost less per byte. Done between the mount and INIT, without touching the mount point
/// (which would wait for INIT); needs root, and a failure only costs speed.
fn widen_read_ahead(mount_point: &Path) {
    let Some(device) = mounted_device(mount_point) else {
        tracing::debug!(
            "read-ahead left alone: {} not found in mountinfo",
            mount_point.display()
        );
        return;
    };
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    let kib = crate::fs::fuse::MAX_WRITE / 1024;
    if let Err(e) = std::fs::write(&knob, kib.to_string()) {
        tracing::debug!("read-ahead left alone: {knob}: {e}");
    }
}

/// The `major:minor` of the FUSE filesystem mounted last on `mount_point`.
fn mounted_device(mount_point: &Path) -> Option<String> {
    mounted_on(mount_point)
        .filter(|m| m.fs_type == "fuse" || m.fs_type.starts_with("fuse."))
        .map(|m| m.device)
}

/// How long the ring of replies of a session expired for silence is kept.
const REPLIES_KEPT: Duration = Duration::from_secs(3600);

/// While mounted: heartbeats, expires dead mounts, and frees blocks of large deleted files.
async fn maintain(core: Arc<Core>, session: Option<Arc<Session>>, timeout: Duration) {
    let Some(session) = session else { return };
    let period = (timeout / 6).clamp(Duration::from_millis(200), Duration::from_secs(5));
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        if !session.heartbeat().await {
            core.meta.delegation.session_lost();
        }
        if let Err(e) = core.meta.store.measure_clock().await {
            tracing::warn!("reading Redis's clock: {e}");
        }
        // A failover that left this mount's connections standing (the old primary lives on as
        // a replica) is found here; and replicas come and go.
        if let Err(e) = core.meta.store.link.check_primary().await {
            tracing::warn!("asking the sentinels for the primary: {e}");
        }
        if let Err(e) = core.meta.store.link.node().count_replicas().await {
            tracing::warn!("counting Redis's replicas: {e}");
        }
        let (stale, cutoff) = session.stale(timeout).await;
        for dead in stale {
            // Its ring of replies stays a while: it may only be cut off, retrying requests
            // that ran (see `src/lua/expire_session.lua`).
            match core.meta.expire_session(dead, cutoff, REPLIES_KEPT).await {
                Ok(Some(n)) => tracing::info!("session {dead} stopped heartbeating: expired it and deleted {n} unlinked inodes it held"),
                Ok(None) => {}
                Err(e) => tracing::warn!("expiring session {dead}: {e}"),
            }
        }
        core.free_queued_blocks().await;
    }
}

/// Once no request comes in any more: lets the requests under way end, stores what is still
/// buffered, stops the workers, then ends the session as a dead one would be ended: its
/// unlinked files are deleted, its locks released and its keys removed.
async fn shutdown(core: &Core, session: Option<&Session>) {
    core.finish_requests().await;
    core.meta.delegation.release_all();
    if let Err(e) = core.flush_all().await {
        tracing::error!("unmounted with unstored data: {e}");
    }
    core.reclaims_sent(RECLAIMS_PATIENCE).await;
    core.stop_workers().await;
    // A commit whose reply was lost is settled once no attempt of it can run any more: up to
    // `--io-timeout` and a second after it failed (its blocks deleted if it never ran).
    let patience = core.meta.store.io_timeout() + Duration::from_secs(2);
    if !core.meta.store.cleanups_done(patience).await {
        tracing::warn!("unmounted before blocks of failed writes were deleted: fsck finds them");
    }
    if let Some(session) = session {
        // Run as a tool (session 0): the session's own ring of replies must not outlive it.
        let mut as_tool = core.meta.clone();
        as_tool.session = 0;
        if let Err(e) = as_tool
            .expire_session(session.id, u64::MAX, Duration::ZERO)
            .await
        {
            tracing::warn!(
                "session {} is left for another mount or fsck to expire: {e}",
                session.id
            );
        }
        as_tool.free_queued().await;
        if let Err(e) = as_tool.delete_garbage().await {
            tracing::warn!("deleting unneeded blocks: {e}; they stay queued for another mount");
        }
    }
}
