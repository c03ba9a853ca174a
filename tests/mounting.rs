//! How the mount binary starts, refuses, runs read-only, and stops.

mod common;

use std::fs;
use std::process::Command;

use common::{Mount, Redis};

fn refused(args: &[String]) -> common::Refusal {
    match Mount::with_args(args) {
        Ok(m) => panic!(
            "mount with {args:?} should have been refused; it mounted at {}",
            m.path.display()
        ),
        Err(r) => r,
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn assert_clear(r: &common::Refusal, needle: &str) {
    assert_ne!(r.code, Some(0));
    assert!(r.code.is_some(), "killed by a signal:\n{}", r.stderr);
    assert!(
        r.stderr.contains(needle),
        "expected '{needle}' in:\n{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}

#[test]
fn bad_mount_points_and_addresses_are_refused_clearly() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let out = Command::new(common::binary())
        .args(["--redis", &redis.url(), "/nonexistent/redisfs-mnt"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("/nonexistent/redisfs-mnt")
            && stderr.contains("does not exist"),
        "{stderr}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new(common::binary())
        .arg("--redis")
        .arg(redis.url())
        .arg(file.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a directory"));

    assert_clear(
        &refused(&args(&["--redis", "http://example"])),
        "bad Redis address",
    );
    assert_clear(
        &refused(&args(&["--redis", "redis://user:hunter2@127.0.0.1:1/"])),
        "cannot connect",
    );
    let r = refused(&args(&["--redis", "redis://user:hunter2@127.0.0.1:1/"]));
    assert!(
        !r.stderr.contains("hunter2"),
        "password printed:\n{}",
        r.stderr
    );
    assert_clear(&refused(&args(&["--port", "1"])), "127.0.0.1:1");
}

#[test]
fn foreign_corrupt_newer_and_incomplete_prefixes_are_refused() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let base = |prefix: &str| args(&["--redis", &redis.url(), "--prefix", prefix]);
    let _: () = redis.cmd(&["SET", "app:config", "x"]);
    assert_clear(&refused(&base("app")), "not a redisfs filesystem");
    let _: () = redis.cmd(&["SET", "{odd}:meta", "x"]);
    assert_clear(&refused(&base("odd")), "{odd}:meta");

    Mount::new(&redis, "newer", &[]).unmount();
    let _: () = redis.cmd(&["HSET", "{newer}:meta", "version", "3"]);
    assert_clear(&refused(&base("newer")), "format version 3");

    Mount::new(&redis, "half", &[]).unmount();
    let _: () = redis.cmd(&["HSET", "{half}:meta", "state", "restoring"]);
    assert_clear(&refused(&base("half")), "incomplete");

    let _: () = redis.cmd(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    assert_clear(&refused(&base("fresh")), "allkeys-lru");
    let m = Mount::new(&redis, "fresh", &["--force"]);
    fs::write(m.join("f"), b"1").unwrap();
    m.unmount();
    // Nothing of the refused prefixes was changed.
    assert_eq!(redis.cmd::<String>(&["GET", "app:config"]), "x");
    assert_eq!(redis.keys("app"), vec!["app:config"]);
}

#[test]
fn read_only_mounts_refuse_every_write() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    fs::create_dir(m.join("d")).unwrap();
    fs::write(m.join("d/f"), b"content").unwrap();
    m.unmount();
    let before = redis.keys("skx").len();
    let m = Mount::new(&redis, "skx", &["--read-only"]);
    assert!(
        common::mount_options(&m.path).split(',').any(|o| o == "ro"),
        "{}",
        common::mount_options(&m.path)
    );
    assert_eq!(fs::read(m.join("d/f")).unwrap(), b"content");
    let erofs =
        |r: std::io::Result<()>| assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EROFS));
    erofs(fs::write(m.join("new"), b""));
    erofs(fs::write(m.join("d/f"), b"x"));
    erofs(fs::create_dir(m.join("e")));
    erofs(fs::remove_file(m.join("d/f")));
    erofs(fs::rename(m.join("d/f"), m.join("g")));
    erofs(std::os::unix::fs::symlink("x", m.join("l")));
    m.unmount();
    assert_eq!(redis.keys("skx").len(), before);
    // A read-only mount cannot create a filesystem either.
    assert_clear(
        &refused(&args(&[
            "--redis",
            &redis.url(),
            "--prefix",
            "none",
            "--read-only",
        ])),
        "no filesystem",
    );
}

#[test]
fn signals_unmount_cleanly_after_storing_buffered_data() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    for signal in [libc::SIGTERM, libc::SIGINT] {
        let m = Mount::new(&redis, "skx", &[]);
        let data = common::random_bytes(5 << 20, signal as u64);
        fs::write(m.join(format!("f{signal}")), &data).unwrap();
        let path = m.path.clone();
        let status = m.signal_and_wait(signal);
        assert!(status.success(), "exit after signal {signal}: {status}");
        assert!(!common::is_mounted(&path));
        let m = Mount::new(&redis, "skx", &[]);
        assert_eq!(fs::read(m.join(format!("f{signal}"))).unwrap(), data);
        m.unmount();
    }
    assert_eq!(
        redis.cmd::<u64>(&["ZCARD", "{skx}:sessions"]),
        0,
        "clean unmounts remove their sessions"
    );
}

/// Caught: an unmount under load ended the session while requests read just before were
/// still under way; one that landed after left keys of a session that no longer existed.
/// The session ends only once every request and the work it started have ended.
#[test]
fn an_unmount_under_load_ends_the_session_after_its_last_request() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    // Requests take a while, so that some are under way whenever the unmount comes.
    let far = redis.url_at_distance(std::time::Duration::from_millis(5));
    for round in 0..6 {
        let m = Mount::with_args(&args(&["--redis", &far, "--prefix", "skx"]))
            .unwrap_or_else(|r| panic!("mount failed: {}", r.stderr));
        let busy: Vec<std::process::Child> = (0..4)
            .map(|n| {
                let file = m.join(format!("f{n}"));
                let script = format!(
                    "while :; do echo {round} > {f}; cat {f} > /dev/null; mv {f} {f}.old; \
                     touch -a {f}.old; rm -f {f}.old; done",
                    f = file.display()
                );
                std::process::Command::new("sh")
                    .args(["-c", &script])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .expect("a shell")
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let status = m.signal_and_wait(libc::SIGTERM);
        for mut child in busy {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert!(
            status.success(),
            "round {round}: exit after SIGTERM: {status}"
        );
        common::assert_clean(&redis, "skx");
        let left = redis.keys("skx");
        assert!(
            !left.iter().any(|k| k.contains(":session:")),
            "round {round}: keys of ended sessions: {left:?}"
        );
    }
}

/// Unmounts a background mount (its process then exits by itself).
fn unmount_background(mount_point: &std::path::Path) {
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(mount_point)
        .status()
        .unwrap()
        .success());
}

/// Runs `redisfs -d` with `args` on `mount_point`; asserts that it reports success.
fn mount_in_background(args: &[&str], mount_point: &std::path::Path) {
    let out = Command::new(common::binary())
        .arg("-d")
        .args(args)
        .arg(mount_point)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn daemon_mode_returns_once_mounted() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    mount_in_background(&["--redis", &redis.url(), "--mount"], dir.path());
    assert!(
        common::is_mounted(dir.path()),
        "mounted when the command returns"
    );
    fs::write(dir.path().join("f"), b"daemon").unwrap();
    assert_eq!(fs::read(dir.path().join("f")).unwrap(), b"daemon");
    unmount_background(dir.path());
    sessions_end(&redis, "skx");
}

#[test]
fn without_redis_options_a_private_persistent_server_is_started() {
    if !common::ready() {
        return;
    }
    // A network namespace of our own, so that nothing listens on 127.0.0.1:6379 there.
    if !Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        panic!("unshare --net is needed to isolate 127.0.0.1:6379 for this test");
    }
    let state = tempfile::tempdir().unwrap();
    let run = |mnt: &std::path::Path, extra: &[&str]| {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let child = Command::new("unshare")
            .args([
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec \"$0\" \"$@\"",
            ])
            .arg(common::binary())
            .arg("--state-dir")
            .arg(state.path())
            .args(extra)
            .arg(mnt)
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if common::is_mounted(mnt) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            common::is_mounted(mnt),
            "{}",
            fs::read_to_string(&log).unwrap()
        );
        (child, log, dir)
    };
    let mnt = tempfile::tempdir().unwrap();
    let (mut child, log, _d) = run(mnt.path(), &[]);
    assert!(fs::read_to_string(&log)
        .unwrap()
        .contains("started a private redis-server"));
    fs::write(mnt.path().join("kept"), b"across remounts").unwrap();
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(mnt.path())
        .status()
        .unwrap()
        .success());
    assert!(
        child.wait().unwrap().success(),
        "{}",
        fs::read_to_string(&log).unwrap()
    );
    assert!(
        state.path().join("appendonlydir").exists() || state.path().join("appendonly.aof").exists(),
        "AOF written"
    );
    assert!(
        std::os::unix::net::UnixStream::connect(state.path().join("redis.sock")).is_err(),
        "server stopped at unmount"
    );
    // The quick start's way: in the background (-d), the command returns once mounted even
    // though the private server it started lives on.
    let (mut child, log, _d) = run(mnt.path(), &["-d"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "redisfs -d did not return once mounted"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{}", fs::read_to_string(&log).unwrap());
    assert_eq!(
        fs::read(mnt.path().join("kept")).unwrap(),
        b"across remounts"
    );
    assert!(Command::new("fusermount3")
        .arg("-u")
        .arg(mnt.path())
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(state.path().join("redis.sock")).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the background mount did not stop its server"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn the_kernel_reads_ahead_a_whole_mebibyte() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let mount = Mount::new(&redis, "skx", &[]);
    let out = Command::new("mountpoint")
        .arg("-d")
        .arg(&mount.path)
        .output()
        .unwrap();
    let device = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let knob = format!("/sys/class/bdi/{device}/read_ahead_kb");
    assert_eq!(
        fs::read_to_string(&knob).unwrap().trim(),
        "1024",
        "{knob}: the kernel's 128 KiB default makes sequential reads pay per request"
    );
}

/// Every process on the machine whose command line holds `needle`, as `ps` would show it.
fn processes_showing(needle: &str) -> Vec<String> {
    fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|p| fs::read(p.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

/// Caught: a background mount given a URL with a password kept it on its command line, where
/// every user of the machine could read it (`ps`). Neither a background nor a foreground
/// mount shows it.
#[test]
fn the_redis_password_never_shows_in_the_process_list() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    redis.cmd::<()>(&[
        "ACL",
        "SETUSER",
        "bob",
        "on",
        ">pw-d8e1f",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = format!("redis://bob:pw-d8e1f@127.0.0.1:{}/0", redis.port);
    let dir = tempfile::tempdir().unwrap();
    mount_in_background(&["--redis", &url, "--prefix", "skx"], dir.path());
    fs::write(dir.path().join("f"), b"daemon").unwrap();
    let shown = processes_showing("pw-d8e1f");
    assert!(shown.is_empty(), "the password shows: {shown:?}");
    let mount_point = dir.path().to_string_lossy().into_owned();
    assert!(
        !processes_showing(&mount_point).is_empty(),
        "the background mount is not running"
    );
    unmount_background(dir.path());

    let m = Mount::with_args(&args(&["--redis", &url, "--prefix", "skx"]))
        .unwrap_or_else(|r| panic!("{}", r.stderr));
    assert_eq!(fs::read(m.join("f")).unwrap(), b"daemon");
    let shown = processes_showing("pw-d8e1f");
    assert!(shown.is_empty(), "the password shows: {shown:?}");
    m.unmount();
}

/// The TCP sockets process `pid` has connected to port `port` on 127.0.0.1, each with whether
/// it sends small writes at once (`TCP_NODELAY`), read through a copy of the descriptor.
fn sockets_to(pid: i32, port: u16) -> Vec<bool> {
    // SAFETY: plain system calls on descriptors this function owns, and checked buffers.
    unsafe {
        let pidfd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        let mut found = Vec::new();
        for entry in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            let Ok(target) = fs::read_link(entry.path()) else {
                continue;
            };
            if !target.to_string_lossy().starts_with("socket:") {
                continue;
            }
            let remote: i32 = entry.file_name().to_string_lossy().parse().unwrap();
            let fd = libc::syscall(libc::SYS_pidfd_getfd, pidfd, remote, 0) as i32;
            if fd < 0 {
                continue;
            }
            let mut peer: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let named = libc::getpeername(fd, (&raw mut peer).cast(), &mut len) == 0;
            if named
                && i32::from(peer.sin_family) == libc::AF_INET
                && u16::from_be(peer.sin_port) == port
            {
                let mut on: libc::c_int = 0;
                let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
                let got = libc::getsockopt(
                    fd,
                    libc::IPPROTO_TCP,
                    libc::TCP_NODELAY,
                    (&raw mut on).cast(),
                    &mut len,
                );
                assert_eq!(got, 0);
                found.push(on != 0);
            }
            libc::close(fd);
        }
        libc::close(pidfd);
        found
    }
}

/// A mount's requests overlap on its connections (a close's bookkeeping and the next create,
/// read-ahead): each must go out at once, not wait for the reply to the one before, as
/// Nagle's algorithm makes small writes do on any network but loopback.
#[test]
fn every_connection_to_redis_sends_at_once() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    // Data written, so that connections for blocks (if kept open) are counted too.
    fs::write(m.join("f"), vec![7u8; 4 << 20]).unwrap();
    fs::File::open(m.join("f")).unwrap().sync_all().unwrap();
    let sockets = sockets_to(m.pid(), redis.port);
    assert!(
        sockets.len() >= 2,
        "metadata and events at least: {sockets:?}"
    );
    assert!(
        sockets.iter().all(|&at_once| at_once),
        "TCP_NODELAY: {sockets:?}"
    );
}

/// `/sbin/mount.fuse.redisfs` linked to the binary under test for as long as this lives;
/// whatever was there before (an installed redisfs) is put back on drop.
struct MountHelper {
    before: Option<std::path::PathBuf>,
}

const HELPER: &str = "/sbin/mount.fuse.redisfs";

impl MountHelper {
    /// Installs redisfs as `scripts/install` does, with its binaries in `prefix/bin` and the
    /// helper in /sbin.
    fn install(prefix: &std::path::Path) -> MountHelper {
        let before = fs::read_link(HELPER).ok();
        assert!(
            before.is_some() || !std::path::Path::new(HELPER).exists(),
            "{HELPER} exists and is not a link: the test will not replace it"
        );
        let built = common::binary().parent().unwrap().to_path_buf();
        let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install"))
            .arg("--prefix")
            .arg(prefix)
            .arg("--from")
            .arg(&built)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        MountHelper { before }
    }
}

impl Drop for MountHelper {
    fn drop(&mut self) {
        let _ = fs::remove_file(HELPER);
        if let Some(target) = &self.before {
            let _ = std::os::unix::fs::symlink(target, HELPER);
        }
    }
}

/// Waits until no session of `prefix` is left: its mounts' processes ended cleanly.
fn sessions_end(redis: &Redis, prefix: &str) {
    let key = format!("{{{prefix}}}:sessions");
    common::eventually(
        "the mount's process ends (cleanly) after its unmount",
        std::time::Duration::from_secs(10),
        || redis.cmd::<u64>(&["ZCARD", &key]) == 0,
    );
}

/// Caught: `mount -t fuse.redisfs SOURCE DIR -o prefix=x` failed ("unexpected argument"),
/// options for mount(8) and boot reached the kernel (EINVAL), and a second mount on a mounted
/// directory was accepted, leaving a daemon behind after `umount`.
#[test]
fn mount_8_and_fstab_lines_mount_and_umount_ends_them() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let installed = tempfile::tempdir().unwrap();
    let _helper = MountHelper::install(installed.path());
    for page in ["man/man1/redisfs.1", "bash-completion/completions/redisfs"] {
        assert!(installed.path().join("share").join(page).exists(), "{page}");
    }
    let prefix = format!("m8-{}", std::process::id());
    let source = redis.url() + "0";
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let log = a.path().join("..").join(format!("{prefix}-a.log"));

    let options = format!(
        "prefix={prefix},_netdev,nofail,defaults,noauto,x-systemd.automount,io_timeout=30,log_file={}",
        log.display()
    );
    let mount = |dir: &std::path::Path| {
        Command::new("mount")
            .args(["-t", "fuse.redisfs", &source])
            .arg(dir)
            .args(["-o", &options])
            .output()
            .unwrap()
    };
    let out = mount(a.path());
    assert!(
        out.status.success(),
        "mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        common::is_mounted(a.path()),
        "mounted when mount(8) returns"
    );
    fs::write(a.path().join("f"), b"through mount(8)").unwrap();

    // A second mount on a mounted directory is refused, in one plain line.
    let again = mount(a.path());
    let said = String::from_utf8_lossy(&again.stderr);
    assert!(!again.status.success());
    assert!(said.contains("already a mount point"), "{said}");
    assert!(
        !said.contains('\x1b'),
        "escape codes in piped stderr: {said:?}"
    );

    // An fstab line (an alternative fstab, as `mount -T` reads it); the mount logs to its
    // default file, as a background mount without --log-file does.
    let fstab = b.path().join("..").join(format!("{prefix}.fstab"));
    fs::write(
        &fstab,
        format!(
            "{source} {} fuse.redisfs prefix={prefix},_netdev,nofail 0 0\n",
            b.path().display()
        ),
    )
    .unwrap();
    let out = Command::new("mount")
        .arg("-T")
        .arg(&fstab)
        .arg(b.path())
        .output()
        .unwrap();
    let _ = fs::remove_file(&fstab);
    assert!(
        out.status.success(),
        "mount -T: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read(b.path().join("f")).unwrap(), b"through mount(8)");

    for dir in [a.path(), b.path()] {
        let out = Command::new("umount").arg(dir).output().unwrap();
        assert!(
            out.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sessions_end(&redis, &prefix);
    let default_log = std::path::PathBuf::from(format!("/var/log/redisfs/{prefix}.log"));
    for file in [&log, &default_log] {
        let read =
            || fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        // The daemon's last line comes as it exits, a moment after its session ends.
        common::eventually(
            "the daemon to log its end",
            std::time::Duration::from_secs(10),
            || read().contains("unmounted"),
        );
        let text = read();
        let _ = fs::remove_file(file);
        assert!(
            text.contains("mounting") && text.contains("unmounted"),
            "{}: {text}",
            file.display()
        );
        assert!(!text.contains('\x1b'), "escape codes in {}", file.display());
    }
}

/// The metrics a mount serves at `address`, fetched as Prometheus scrapes them.
fn scrape(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: redisfs\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of the sample `name` (with its labels, as written) in `text`, 0 when absent.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn metrics_are_served_over_http_recorded_in_the_session_and_move_with_work() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let address = format!("127.0.0.1:{}", common::free_port());
    let m = Mount::new(&redis, "skx", &["--metrics", &address]);
    // The default address (or the next free port after it) for a mount not told one.
    let other = Mount::new(&redis, "skx", &[]);
    let recorded: Vec<String> = redis
        .keys("skx")
        .into_iter()
        .filter(|k| k.starts_with("{skx}:session:"))
        .filter_map(|k| redis.cmd::<Option<String>>(&["HGET", &k, "metrics"]))
        .collect();
    assert_eq!(
        recorded.len(),
        2,
        "each session records its metrics address: {recorded:?}"
    );
    assert!(recorded.contains(&address), "{recorded:?}");
    let default = recorded.iter().find(|a| **a != address).unwrap();
    assert!(default.starts_with("127.0.0.1:95"), "{default}");
    assert!(scrape(default).contains("redisfs_written_bytes_total"));

    let before = scrape(&address);
    for i in 0..10 {
        fs::write(m.join(format!("f{i}")), vec![7u8; 100_000]).unwrap();
    }
    for i in 0..10 {
        assert_eq!(fs::read(m.join(format!("f{i}"))).unwrap().len(), 100_000);
    }
    assert!(fs::metadata(m.join("missing")).is_err());
    let after = scrape(&address);
    let grew = |name: &str| sample(&after, name) - sample(&before, name);
    assert!(
        grew(r#"redisfs_fuse_requests_total{operation="create"}"#) >= 10.0,
        "{after}"
    );
    assert!(grew(r#"redisfs_fuse_request_seconds_count{operation="create"}"#) >= 10.0);
    assert!(
        grew("redisfs_written_bytes_total") >= 1_000_000.0,
        "{after}"
    );
    assert!(
        grew(r#"redisfs_fuse_errors_total{errno="ENOENT"}"#) >= 1.0,
        "{after}"
    );
    assert!(grew("redisfs_redis_round_trips_total") >= 1.0, "{after}");
    let lookups = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("redisfs_cache_lookups_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    assert!(lookups(&after) > lookups(&before), "{after}");
    for gauge in ["redisfs_buffered_bytes ", "redisfs_deferred_changes "] {
        assert!(after.contains(gauge), "{gauge}missing: {after}");
    }
    // Pub/Sub lag: a probe at the start, and every 5 s, each back within a second here.
    let delivered =
        |text: &str, name: &str| sample(text, &format!("redisfs_event_delivery_seconds_{name}"));
    common::eventually(
        "an event probe came back",
        std::time::Duration::from_secs(10),
        || delivered(&scrape(&address), "count") >= 1.0,
    );
    let probed = scrape(&address);
    assert!(
        delivered(&probed, "sum") < delivered(&probed, "count"),
        "{probed}"
    );
    drop(other);
}

#[test]
fn debug_logs_each_request_with_its_result_and_latency() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &["--debug"]);
    fs::write(m.join("made"), b"x").unwrap();
    assert!(fs::metadata(m.join("absent")).is_err());
    let log = m.log_text();
    let logged = |needle: &str| {
        log.lines()
            .any(|l| l.contains(needle) && l.ends_with(" µs"))
    };
    assert!(logged("create ok in "), "{log}");
    assert!(logged("lookup ENOENT in "), "{log}");
}
