//! flock and fcntl locks exclude each other across mounts as on one machine.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Mount, On, Place};

/// `flock -n FILE true`: whether the lock could be taken at once.
fn flock_now(path: &std::path::Path, shared: bool) -> bool {
    let mut cmd = Command::new("flock");
    if shared {
        cmd.arg("-s");
    }
    cmd.arg("-n")
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
}

/// A process holding a flock on `path` (exclusive unless `shared`) until it is killed. One
/// process, so that killing it closes the descriptor and so releases the lock.
fn hold_flock(path: &std::path::Path, shared: bool) -> Child {
    let kind = if shared { "LOCK_SH" } else { "LOCK_EX" };
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(format!(
            "import fcntl, sys, time\nf = open(sys.argv[1])\nfcntl.flock(f, fcntl.{kind})\nprint('locked', flush=True)\ntime.sleep(600)"
        ))
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "locked");
    child
}

/// Runs a Python check script on one file seen through two mounts; it prints `ok` when done.
fn run_script(script: &str, on_a: &std::path::Path, on_b: &std::path::Path, ok: &str) {
    let run = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(on_a)
        .arg(on_b)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success() && out.contains(ok),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn flock_excludes_across_mounts_and_ends_with_its_process(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("lock"), b"").unwrap();
    let mut holder = hold_flock(&a.join("lock"), false);
    assert!(
        !flock_now(&b.join("lock"), false),
        "exclusive lock held on the other mount"
    );
    assert!(
        !flock_now(&b.join("lock"), true),
        "a shared lock conflicts with an exclusive one"
    );
    // A blocked waiter on B gets the lock when the holder on A exits.
    let waiter = Command::new("flock")
        .arg(b.join("lock"))
        .arg("true")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    // While it waits, B serves everything else.
    assert!(b.join("lock").exists() && std::fs::read_dir(&b.path).unwrap().count() == 1);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let mut waiter = waiter;
    let status = waiter.wait().unwrap();
    assert!(status.success());
    // Shared locks coexist.
    let mut reader = hold_flock(&a.join("lock"), true);
    assert!(
        !flock_now(&b.join("lock"), false),
        "an exclusive lock conflicts with a shared one"
    );
    assert!(
        flock_now(&b.join("lock"), true),
        "shared locks do not conflict"
    );
    reader.kill().unwrap();
    reader.wait().unwrap();
    common::eventually("release on exit", Duration::from_secs(10), || {
        flock_now(&b.join("lock"), false)
    });
}

fn a_blocked_waiter_can_be_interrupted(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("lock"), b"").unwrap();
    let mut holder = hold_flock(&a.join("lock"), false);
    let mut waiter = Command::new("flock")
        .arg(b.join("lock"))
        .arg("true")
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        waiter.try_wait().unwrap().is_none(),
        "waits while the lock is held"
    );
    // SAFETY: signalling our own child.
    unsafe { libc::kill(waiter.id() as i32, libc::SIGTERM) };
    let started = Instant::now();
    let status = waiter.wait().unwrap();
    assert!(!status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the signal ended the wait"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
}

const FCNTL_SCRIPT: &str = r#"
import fcntl, os, struct, sys
a = os.open(sys.argv[1], os.O_RDWR)
b = os.open(sys.argv[2], os.O_RDWR)
def try_lock(fd, kind, start, length):
    try:
        fcntl.lockf(fd, kind | fcntl.LOCK_NB, length, start)
        return True
    except OSError as e:
        assert e.errno in (11, 13), e
        return False
def getlk(fd, kind, start, length):
    fl = struct.pack('hhqqi', kind, 0, start, length, 0)
    return struct.unpack('hhqqi', fcntl.fcntl(fd, fcntl.F_GETLK, fl))
assert try_lock(a, fcntl.LOCK_EX, 0, 100)
assert not try_lock(b, fcntl.LOCK_EX, 50, 10), "overlapping write lock"
assert not try_lock(b, fcntl.LOCK_SH, 99, 1), "read lock over a write lock"
assert try_lock(b, fcntl.LOCK_EX, 100, 50), "the byte after the range is free"
t, _, start, length, pid = getlk(b, fcntl.F_WRLCK, 0, 10)
assert (t, start, length) == (fcntl.F_WRLCK, 0, 100), (t, start, length)
assert pid > 0
# Unlocking the middle splits A's lock.
fcntl.lockf(a, fcntl.LOCK_UN, 20, 40)
assert try_lock(b, fcntl.LOCK_EX, 45, 10)
assert not try_lock(b, fcntl.LOCK_EX, 30, 5)
assert not try_lock(b, fcntl.LOCK_EX, 70, 5)
# Downgrade to a read lock: others may read-lock, not write-lock.
fcntl.lockf(a, fcntl.LOCK_SH, 20, 0)
assert try_lock(b, fcntl.LOCK_SH, 0, 10)
assert not try_lock(b, fcntl.LOCK_EX, 0, 10)
t = getlk(b, fcntl.F_RDLCK, 0, 10)[0]
assert t == fcntl.F_UNLCK, "read locks do not conflict with a read lock"
# Closing any descriptor of the file drops the process's locks there.
os.close(a)
assert try_lock(b, fcntl.LOCK_EX, 0, 40)
print("fcntl ok")
"#;

fn fcntl_byte_range_locks_across_mounts(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("ranges"), vec![0u8; 200]).unwrap();
    // One process holds both descriptors, yet its two sides conflict: they go through two mounts,
    // as two machines would.
    run_script(
        FCNTL_SCRIPT,
        &a.join("ranges"),
        &b.join("ranges"),
        "fcntl ok",
    );
}

fn a_killed_holders_locks_go_when_its_session_expires(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &["--session-timeout", "2"]);
    let b = Mount::on(&redis, "skx", &["--session-timeout", "2"]);
    std::fs::write(a.join("lock"), b"").unwrap();
    let mut holder = hold_flock(&a.join("lock"), false);
    assert!(!flock_now(&b.join("lock"), false));
    a.kill();
    common::eventually(
        "the dead mount's lock is released",
        Duration::from_secs(20),
        || flock_now(&b.join("lock"), false),
    );
    let _ = holder.kill();
    let _ = holder.wait();
    // The kernel sends RELEASE (which drops a flock) after close(2) returns: give it a moment.
    common::eventually("no lock keys left", Duration::from_secs(10), || {
        redis
            .keys("skx")
            .iter()
            .all(|k| !k.starts_with("{skx}:lk:"))
    });
}

/// Checks OFD locks over two mounts (argv 1 and 2 name one file): a lock belongs to its open
/// file description and goes with that description's last close, or its process's exit.
const OFD_SCRIPT: &str = r#"
import fcntl, os, struct, subprocess, sys, threading
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
def ofd(fd, cmd, kind):
    return fcntl.fcntl(fd, cmd, struct.pack("hhqqi", kind, 0, 0, 0, 0))
def free_now(path):
    fd = os.open(path, os.O_RDWR)
    try:
        ofd(fd, F_OFD_SETLK, fcntl.F_WRLCK)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
def waiter_gets_it(path, within):
    # F_OFD_SETLKW must end once nobody holds the lock, however long the wait was meant to be.
    fd = os.open(path, os.O_RDWR)
    done = threading.Event()
    def wait():
        ofd(fd, F_OFD_SETLKW, fcntl.F_WRLCK)
        done.set()
    threading.Thread(target=wait, daemon=True).start()
    got = done.wait(within)
    os.close(fd)
    return got
a, b = sys.argv[1], sys.argv[2]
# Two descriptors of one description: closing one keeps the lock, the last close ends it.
fd1 = os.open(a, os.O_RDWR)
ofd(fd1, F_OFD_SETLK, fcntl.F_WRLCK)
fd2 = os.dup(fd1)
os.close(fd1)
assert not free_now(b), "the lock went with a descriptor that was not the last"
assert not free_now(a), "an OFD lock excludes other descriptions on its own mount too"
os.close(fd2)
assert waiter_gets_it(b, 10), "the lock outlived the last close of its description"
# A process that exits holding an OFD lock leaves nothing behind.
subprocess.run([sys.executable, "-c", f"""
import fcntl, os, struct
fd = os.open({a!r}, os.O_RDWR)
fcntl.fcntl(fd, {F_OFD_SETLK}, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
"""], check=True)
assert waiter_gets_it(b, 10), "the lock outlived its process"
assert waiter_gets_it(a, 10)
# A waiter killed while it waits is gone at once (its wait must not outlive it).
held = os.open(a, os.O_RDWR)
ofd(held, F_OFD_SETLK, fcntl.F_WRLCK)
waiter = subprocess.Popen([sys.executable, "-c", f"""
import fcntl, os, struct, threading
fd = os.open({b!r}, os.O_RDWR)
t = threading.Thread(target=lambda: fcntl.fcntl(fd, {F_OFD_SETLKW}, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0)))
t.start()
t.join()
"""])
try:
    waiter.wait(1)
    assert False, "the waiter did not wait"
except subprocess.TimeoutExpired:
    pass
waiter.kill()
waiter.wait(10)
os.close(held)
print("ofd ok")
"#;

fn ofd_locks_go_with_the_last_close_of_their_description(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("ofd"), b"").unwrap();
    run_script(OFD_SCRIPT, &a.join("ofd"), &b.join("ofd"), "ofd ok");
    common::eventually("no lock keys left", Duration::from_secs(10), || {
        redis
            .keys("skx")
            .iter()
            .all(|k| !k.starts_with("{skx}:lk:"))
    });
}

/// Checks that a lock is gone when the close(2) that ends it returns, as on a local
/// filesystem: the kernel sends the last close to the mount after close(2) has returned, so
/// a lock asked for at once must not find the closed one still held (argv 1 names the file).
const GONE_AT_CLOSE_SCRIPT: &str = r#"
import fcntl, os, struct, sys
F_OFD_SETLK = 37
path = sys.argv[1]
def ofd(fd):
    fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
def flock(fd):
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
for take, kind in ((ofd, "OFD lock"), (flock, "flock")):
    for round in range(100):
        fd = os.open(path, os.O_RDWR)
        take(fd)
        os.close(fd)
        fd = os.open(path, os.O_RDWR)
        try:
            take(fd)
        except BlockingIOError:
            sys.exit(f"round {round}: a closed {kind} was still held")
        os.close(fd)
print("gone ok")
"#;

fn locks_are_gone_when_the_last_close_returns(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("closed"), b"").unwrap();
    run_script(
        GONE_AT_CLOSE_SCRIPT,
        &a.join("closed"),
        &a.join("closed"),
        "gone ok",
    );
}

/// Checks over two mounts (argv 1 and 2 name one file) that flock and fcntl locks are
/// independent, as on Linux: each conflicts only with its own kind. Each check takes a lock
/// and closes it; the kernel tells the mount of that last close after close(2) returns, so the
/// other mount may see such a lock for a moment longer (README, Limits): a lock expected free
/// there is asked for again for up to two seconds.
const INDEPENDENT_SCRIPT: &str = r#"
import fcntl, os, struct, sys, time
a, b = sys.argv[1], sys.argv[2]
def soon(check, path):
    deadline = time.monotonic() + 2
    while not check(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True
F_OFD_SETLK = 37
def fcntl_free(path):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
def flock_free(path):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
held = os.open(a, os.O_RDWR)
fcntl.flock(held, fcntl.LOCK_EX)
assert fcntl_free(a) and soon(fcntl_free, b), "a flock stopped an fcntl lock"
assert not flock_free(b), "flocks still exclude each other"
os.close(held)
held = os.open(a, os.O_RDWR)
fcntl.fcntl(held, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
assert flock_free(a) and soon(flock_free, b), "an fcntl lock stopped a flock"
assert not fcntl_free(b), "fcntl locks still exclude each other"
# One holder with both kinds: releasing one keeps the other.
fcntl.flock(held, fcntl.LOCK_EX)
fcntl.flock(held, fcntl.LOCK_UN)
assert not fcntl_free(b), "unlocking a flock released an fcntl lock"
os.close(held)
assert soon(fcntl_free, b) and soon(flock_free, b)
print("independent ok")
"#;

fn flock_and_fcntl_locks_are_independent(on: On) {
    if !common::ready() {
        return;
    }
    let redis = Place::start(on);
    let a = Mount::on(&redis, "skx", &[]);
    let b = Mount::on(&redis, "skx", &[]);
    std::fs::write(a.join("both"), b"").unwrap();
    run_script(
        INDEPENDENT_SCRIPT,
        &a.join("both"),
        &b.join("both"),
        "independent ok",
    );
}

common::on_a_server_and_on_a_cluster!(
    flock_excludes_across_mounts_and_ends_with_its_process,
    a_blocked_waiter_can_be_interrupted,
    fcntl_byte_range_locks_across_mounts,
    a_killed_holders_locks_go_when_its_session_expires,
    ofd_locks_go_with_the_last_close_of_their_description,
    locks_are_gone_when_the_last_close_returns,
    flock_and_fcntl_locks_are_independent,
);
