//! `redisfs-dump` and `redisfs-restore`: round trips through files, pipes and local trees, and
//! damaged dump files.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::{check, cpath, set_xattr, tool, tool_ok, tree_listing, Mount, Redis};

fn set_times(path: &Path, sec: i64, nsec: i64) {
    let t = [
        libc::timespec {
            tv_sec: sec - 100,
            tv_nsec: nsec / 2,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cpath(path).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    check(r as i64).unwrap();
}

/// A tree with every kind of thing a dump must carry.
fn populate(root: &Path, big: usize) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::write(root.join("a/b/c/deep"), b"deep file").unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("random"), common::random_bytes(big, 3)).unwrap();
    fs::write(root.join("text"), common::text_bytes(200_000)).unwrap();
    // A sparse file: a hole, then data 10 MiB in, then a hole to the end.
    let sparse = fs::File::create(root.join("sparse")).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, b"island", 10 << 20).unwrap();
    sparse.set_len(12 << 20).unwrap();
    drop(sparse);
    fs::hard_link(root.join("text"), root.join("a/text-link")).unwrap();
    fs::hard_link(root.join("text"), root.join("a/b/text-link2")).unwrap();
    std::os::unix::fs::symlink("../text", root.join("a/sym")).unwrap();
    std::os::unix::fs::symlink("/nowhere/at/all", root.join("dangling")).unwrap();
    // SAFETY: valid C strings.
    unsafe {
        check(libc::mkfifo(cpath(&root.join("fifo")).as_ptr(), 0o640) as i64).unwrap();
        check(libc::mknod(
            cpath(&root.join("null")).as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(1, 3),
        ) as i64)
        .unwrap();
    }
    fs::write(root.join("name with spaces & ünïcödé"), b"x").unwrap();
    fs::write(root.join("setuid"), b"#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(root.join("setuid"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(root.join("setuid"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("a/b"), fs::Permissions::from_mode(0o1777)).unwrap();
    std::os::unix::fs::lchown(root.join("a/sym"), Some(42), Some(43)).unwrap();
    set_xattr(&root.join("text"), "user.note", b"hello");
    set_xattr(&root.join("a"), "user.bin", &[0, 255, 1]);
    set_times(&root.join("random"), 1_000_000_000, 123_456_789);
    set_times(&root.join("a/sym"), 1_200_000_000, 5);
    set_times(&root.join("a/b/c"), 1_300_000_000, 999_999_999);
}

fn data_offset(path: &Path) -> i64 {
    let f = fs::File::open(path).unwrap();
    // SAFETY: a valid descriptor.
    unsafe { libc::lseek(std::os::fd::AsRawFd::as_raw_fd(&f), 0, libc::SEEK_DATA) }
}

fn diff_r(a: &Path, b: &Path) {
    let out = Command::new("diff")
        .args(["-r", "--no-dereference", "-x", "fifo", "-x", "null"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "diff -r: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn everything_survives_dump_and_restore() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let source = Mount::new(&redis, "skx", &[]);
    populate(&source.path, 3 << 20);
    let want = tree_listing(&source.path);
    let dir = tempfile::tempdir().unwrap();

    // MessagePack to a file, while the source is mounted (the dump reads a snapshot of it).
    let file = dir.path().join("fs.rfs");
    let summary = tool_ok(
        "dump",
        &[
            "--redis",
            &url,
            "--prefix",
            "skx",
            file.to_str().unwrap(),
            "--json",
        ],
    );
    let report: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(report["snapshotted"], true, "{summary}");
    assert!(
        redis.keys("skx.dump-*").is_empty(),
        "the scratch snapshot stays behind"
    );
    tool_ok(
        "restore",
        &["--redis", &url, "--prefix", "back", file.to_str().unwrap()],
    );
    let back = Mount::new(&redis, "back", &[]);
    assert_eq!(tree_listing(&back.path), want);
    diff_r(&source.path, &back.path);
    // Holes stay holes (redisfs keeps them at block granularity).
    assert_eq!(
        data_offset(&back.join("sparse")),
        data_offset(&source.join("sparse"))
    );
    assert!(
        data_offset(&back.join("sparse")) > 10_000_000,
        "the hole was filled"
    );

    // JSON, gzipped, through a pipe.
    let piped = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "'{}' --redis {url} --prefix skx --format json --gzip - | '{}' --redis {url} --prefix piped -",
            env!("CARGO_BIN_EXE_redisfs-dump"),
            env!("CARGO_BIN_EXE_redisfs-restore")
        ))
        .output()
        .unwrap();
    assert!(
        piped.status.success(),
        "{}",
        String::from_utf8_lossy(&piped.stderr)
    );
    let copy = Mount::new(&redis, "piped", &["--read-only"]);
    assert_eq!(tree_listing(&copy.path), want);

    // Out to a plain directory and back in without FUSE.
    let exported = dir.path().join("tree");
    tool_ok(
        "dump",
        &[
            "--redis",
            &url,
            "--prefix",
            "skx",
            "--to-dir",
            exported.to_str().unwrap(),
        ],
    );
    assert_eq!(tree_listing(&exported), want);
    assert!(
        data_offset(&exported.join("sparse")) > 10_000_000,
        "the hole was filled"
    );
    tool_ok(
        "restore",
        &[
            "--redis",
            &url,
            "--prefix",
            "imported",
            "--from-dir",
            exported.to_str().unwrap(),
        ],
    );
    let imported = Mount::new(&redis, "imported", &["--read-only"]);
    assert_eq!(tree_listing(&imported.path), want);
}

#[test]
fn restore_refuses_a_non_empty_prefix_and_a_mount_refuses_an_unfinished_one() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    {
        let m = Mount::new(&redis, "skx", &[]);
        fs::write(m.join("f"), b"1").unwrap();
        m.unmount();
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("d.rfs");
    tool_ok("dump", &["--redis", &url, file.to_str().unwrap()]);
    let out = tool(
        "restore",
        &["--redis", &url, "--prefix", "skx", file.to_str().unwrap()],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not empty"), "{err}");
    assert_eq!(
        fs::read(Mount::new(&redis, "skx", &["--read-only"]).join("f")).unwrap(),
        b"1"
    );

    redis.cmd::<()>(&["HSET", "{half}:meta", "version", "2", "state", "restoring"]);
    let refusal = Mount::with_args(&[
        "--redis".into(),
        url.clone(),
        "--prefix".into(),
        "half".into(),
    ])
    .err()
    .expect("mounted an unfinished restore");
    assert!(refusal.stderr.contains("incomplete"), "{}", refusal.stderr);
    let out = tool("fsck", &["--redis", &url, "--prefix", "half"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{report}");
    assert!(report.contains("incomplete"), "{report}");
}

#[test]
fn damaged_dumps_are_refused_with_clear_errors() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    {
        let m = Mount::new(&redis, "skx", &[]);
        populate(&m.path, 200_000);
        m.unmount();
    }
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("d.rfs");
    let zipped = dir.path().join("d.rfs.gz");
    let json = dir.path().join("d.json");
    tool_ok("dump", &["--redis", &url, plain.to_str().unwrap()]);
    tool_ok("dump", &["--redis", &url, zipped.to_str().unwrap()]);
    tool_ok(
        "dump",
        &["--redis", &url, "--format", "json", json.to_str().unwrap()],
    );
    let originals = [
        fs::read(&plain).unwrap(),
        fs::read(&zipped).unwrap(),
        fs::read(&json).unwrap(),
    ];

    let mut seed = 0x9e37_79b9_u64;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let mut variants: Vec<(String, Vec<u8>)> = Vec::new();
    for i in 0..100 {
        let original = &originals[i % 3];
        let mut bytes = original.clone();
        let what = if i % 2 == 0 {
            let cut = next(bytes.len());
            bytes.truncate(cut);
            format!("truncated to {cut}")
        } else {
            let at = next(bytes.len());
            bytes[at] ^= 1 << next(8);
            format!("bit flipped at {at}")
        };
        variants.push((what, bytes));
    }
    // An unknown version.
    let newer = String::from_utf8(originals[2].clone()).unwrap().replacen(
        "\"version\":1",
        "\"version\":9",
        1,
    );
    variants.push(("version 9".into(), newer.into_bytes()));

    for (i, (what, bytes)) in variants.iter().enumerate() {
        let path = dir.path().join(format!("bad{i}"));
        fs::write(&path, bytes).unwrap();
        let prefix = format!("v{i}");
        let out = tool(
            "restore",
            &["--redis", &url, "--prefix", &prefix, path.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: restore succeeded");
        assert!(!err.contains("panicked"), "{what}: {err}");
        // One line naming the file, the record and its offset.
        assert!(
            err.lines().count() == 1
                && err.contains(path.to_str().unwrap())
                && err.contains(" at byte "),
            "{what}: unclear error: {err}"
        );
        assert!(
            redis.keys(&prefix).is_empty(),
            "{what}: left keys behind: {:?}",
            redis.keys(&prefix)
        );
    }
    let err = String::from_utf8_lossy(
        &tool(
            "restore",
            &[
                "--redis",
                &url,
                "--prefix",
                "x",
                dir.path().join("bad100").to_str().unwrap(),
            ],
        )
        .stderr,
    )
    .into_owned();
    assert!(err.contains("version 9"), "{err}");
}

/// Caught: the dump was written under a temporary name and renamed over its target, so
/// `redisfs-dump … /dev/null` run as root replaced the null device with a regular file. A
/// target that is not a regular file is written in place and stays what it was. (A private
/// null device stands in for the machine's own.)
#[test]
fn a_dump_into_a_device_fifo_or_symlink_writes_through_it_and_leaves_it_in_place() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let url = redis.url();
    let m = Mount::new(&redis, "skx", &[]);
    fs::write(m.join("hello"), b"hello").unwrap();
    m.unmount();
    let dir = tempfile::tempdir().unwrap();
    let dump = |target: &Path| {
        tool_ok(
            "dump",
            &["--redis", &url, "--prefix", "skx", target.to_str().unwrap()],
        )
    };

    let null = dir.path().join("null");
    // SAFETY: valid C string; makedev(1, 3) is the null device.
    let made = unsafe {
        libc::mknod(
            cpath(&null).as_ptr(),
            libc::S_IFCHR | 0o666,
            libc::makedev(1, 3),
        )
    };
    check(i64::from(made)).expect("mknod of a private null device");
    dump(&null);
    let meta = fs::symlink_metadata(&null).unwrap();
    assert!(meta.file_type().is_char_device(), "the device was replaced");
    assert_eq!(meta.rdev(), libc::makedev(1, 3));
    assert!(
        fs::read_dir(dir.path()).unwrap().count() == 1,
        "a temporary file stayed behind"
    );

    let fifo = dir.path().join("fifo");
    // SAFETY: valid C string.
    check(i64::from(unsafe {
        libc::mkfifo(cpath(&fifo).as_ptr(), 0o600)
    }))
    .unwrap();
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || fs::read(fifo).unwrap())
    };
    dump(&fifo);
    let through_fifo = reader.join().unwrap();
    assert!(!through_fifo.is_empty(), "nothing came through the FIFO");
    assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());

    let real = dir.path().join("real.rfs");
    fs::write(&real, b"old").unwrap();
    let link = dir.path().join("link.rfs");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    dump(&link);
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(
        fs::read(&real).unwrap().len() > 3,
        "the dump did not go through the link"
    );
    tool_ok(
        "restore",
        &["--redis", &url, "--prefix", "copy", link.to_str().unwrap()],
    );
    let copy = Mount::new(&redis, "copy", &[]);
    assert_eq!(fs::read(copy.join("hello")).unwrap(), b"hello");
    copy.unmount();
}

/// Caught: a dump to a path it could not create said "the dump's writer stopped (see the
/// error above)" with nothing above; and `redisfs-dump -` wrote binary to a terminal.
#[test]
fn a_dump_that_cannot_be_written_says_why_and_binary_never_goes_to_a_terminal() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    fs::write(m.join("f"), b"data").unwrap();
    m.unmount();
    let url = redis.url();
    let out = tool("dump", &["--redis", &url, "/nonexistent-dir/x.dump"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("/nonexistent-dir/x.dump") && said.contains("No such file or directory"),
        "{said}"
    );
    assert!(!said.contains("see the error above"), "{said}");

    // On a terminal (script(1) gives the dump one), binary output is refused; JSON is not.
    let script = common::which("script").expect("script(1), from util-linux");
    let dump = env!("CARGO_BIN_EXE_redisfs-dump");
    let on_terminal = |format: &str| {
        let command = format!("{dump} --redis {url} --format {format} -q -");
        let out = Command::new(&script)
            .args(["-qec", &command, "/dev/null"])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, shown) = on_terminal("msgpack");
    assert_eq!(code, Some(1), "{shown}");
    assert!(
        shown.contains("a binary dump would go to the terminal"),
        "{shown}"
    );
    let (code, shown) = on_terminal("json");
    assert_eq!(code, Some(0), "{shown}");
    assert!(
        shown.contains("\"header\"") || shown.contains("skx"),
        "{shown}"
    );
}
