//! File data: large files, holes, compression with every codec, and Redis memory per byte.

mod common;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;

use common::{Mount, Redis};
use sha2::{Digest, Sha256};

/// Total bytes stored in block values of `prefix`.
fn stored_block_bytes(redis: &Redis, prefix: &str) -> u64 {
    redis
        .keys(prefix)
        .iter()
        .filter(|k| k.starts_with(&format!("{prefix}:b:")))
        .map(|k| redis.cmd::<u64>(&["STRLEN", k]))
        .sum()
}

#[test]
fn a_256_mib_file_round_trips_by_sha256() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let path = m.join("big");
    let mut hasher = Sha256::new();
    {
        let mut f = fs::File::create(&path).unwrap();
        for i in 0..256u64 {
            let chunk = common::random_bytes(1 << 20, i + 1);
            hasher.update(&chunk);
            f.write_all(&chunk).unwrap();
        }
        f.sync_all().unwrap();
    }
    let written = hasher.finalize();
    assert_eq!(fs::metadata(&path).unwrap().len(), 256 << 20);
    // Read back through fresh mounts, so nothing comes from this mount's caches: one with
    // the default block cache, which read-ahead runs far ahead in, and one whose cache is
    // smaller than the widest read-ahead window.
    m.unmount();
    for extra in [&[][..], &["--cache-size", "2M"][..]] {
        let m = Mount::new(&redis, "skx", extra);
        assert_eq!(
            sha256_of(&m.join("big")),
            written.to_vec(),
            "read back with {extra:?}"
        );
    }
}

/// The SHA-256 of the file at `path`, read in order, a MiB at a time.
fn sha256_of(path: &std::path::Path) -> Vec<u8> {
    let mut hasher = Sha256::new();
    let mut f = fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    hasher.finalize().to_vec()
}

#[test]
fn sparse_files_read_zeros_in_holes_and_store_nothing_there() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let path = m.join("sparse");
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    f.seek(SeekFrom::Start(5000)).unwrap();
    f.write_all(b"start").unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::metadata(&path).unwrap().len(), (100 << 20) + 3);
    let blocks = redis
        .keys("skx")
        .iter()
        .filter(|k| k.starts_with("skx:b:"))
        .count();
    assert_eq!(blocks, 2, "only the two written blocks are stored");
    let mut f = fs::File::open(&path).unwrap();
    let mut buf = vec![0u8; 10_000];
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf[5000..5005], b"start");
    assert!(buf[..5000].iter().chain(&buf[5005..]).all(|&b| b == 0));
    f.seek(SeekFrom::Start(50 << 20)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "the middle is a hole");
    f.seek(SeekFrom::Start(100 << 20)).unwrap();
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, b"end");
    // Writing zeros stores nothing either.
    fs::write(m.join("zeros"), vec![0u8; 1 << 20]).unwrap();
    let after = redis
        .keys("skx")
        .iter()
        .filter(|k| k.starts_with("skx:b:"))
        .count();
    assert_eq!(after, 2);
}

#[test]
fn every_codec_stores_text_compactly_and_random_data_intact() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let text = common::text_bytes(4 << 20);
    let random = common::random_bytes(4 << 20, 42);
    for codec in ["none", "lz4", "zstd", "zlib"] {
        let prefix = format!("fs-{codec}");
        let m = Mount::new(&redis, &prefix, &["--compression", codec]);
        assert_eq!(
            redis.cmd::<String>(&["HGET", &format!("{{{prefix}}}:meta"), "codec"]),
            codec
        );
        fs::write(m.join("text"), &text).unwrap();
        let text_stored = stored_block_bytes(&redis, &prefix);
        fs::write(m.join("random"), &random).unwrap();
        let random_stored = stored_block_bytes(&redis, &prefix) - text_stored;
        if codec == "none" {
            assert!(text_stored >= text.len() as u64);
        } else {
            assert!(
                text_stored * 2 < text.len() as u64,
                "{codec}: text stored in {text_stored} bytes"
            );
        }
        let overhead = random_stored as f64 / random.len() as f64;
        assert!(overhead < 1.001, "{codec}: random data grew by {overhead}");
        m.unmount();
        let m = Mount::new(&redis, &prefix, &[]);
        assert_eq!(fs::read(m.join("text")).unwrap(), text, "{codec}");
        assert_eq!(fs::read(m.join("random")).unwrap(), random, "{codec}");
    }
}

#[test]
fn redis_memory_stays_close_to_the_data() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let before = redis.used_memory();
    fs::write(m.join("random"), common::random_bytes(64 << 20, 5)).unwrap();
    let per_byte = (redis.used_memory() - before) as f64 / (64 << 20) as f64;
    assert!(
        per_byte <= 1.03,
        "incompressible data costs {per_byte} bytes of Redis per byte"
    );
}

#[test]
fn concurrent_writers_to_different_files_and_overlapping_reads() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = m.join(format!("f{t}"));
            std::thread::spawn(move || {
                let data = common::random_bytes(3 << 20, t + 100);
                let mut f = fs::File::create(&path).unwrap();
                for chunk in data.chunks(4096 * 3 + 17) {
                    f.write_all(chunk).unwrap();
                }
                drop(f);
                assert_eq!(fs::read(&path).unwrap(), data);
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn random_writes_into_blocks_survive_a_write_buffer_smaller_than_the_file() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    // 16 blocks of buffer for a 128-block file: partial blocks are stored under pressure.
    let m = Mount::new(&redis, "skx", &["--write-buffer", "1M"]);
    let path = m.join("random");
    let mut expected = common::random_bytes(8 << 20, 7);
    fs::write(&path, &expected).unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..3000u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let len = 1 + (seed >> 52) as usize % 9000;
        let offset = (seed >> 8) as usize % (expected.len() - len);
        let bytes = common::random_bytes(len, i);
        f.seek(SeekFrom::Start(offset as u64)).unwrap();
        f.write_all(&bytes).unwrap();
        expected[offset..offset + len].copy_from_slice(&bytes);
        if i % 1000 == 999 {
            let mut seen = Vec::new();
            f.seek(SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut seen).unwrap();
            assert!(
                seen == expected,
                "read back through the writer's handle after {i} writes"
            );
        }
    }
    drop(f);
    let other = Mount::new(&redis, "skx", &[]);
    assert!(
        fs::read(other.join("random")).unwrap() == expected,
        "another mount reads every random write after the close"
    );
}

/// A page-aligned buffer of `len` bytes of `byte`, as O_DIRECT wants.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn filled(len: usize, byte: u8) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        assert!(!ptr.is_null());
        // SAFETY: `len` bytes were just allocated at `ptr`.
        unsafe { std::ptr::write_bytes(ptr, byte, len) };
        Aligned { ptr, layout }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) };
    }
}

/// The kernel's `struct iocb` (little-endian layout).
#[repr(C)]
#[derive(Default)]
struct Iocb {
    data: u64,
    key: u32,
    rw_flags: i32,
    opcode: u16,
    reqprio: i16,
    fildes: u32,
    buf: u64,
    nbytes: u64,
    offset: i64,
    reserved: u64,
    flags: u32,
    resfd: u32,
}

/// The kernel's `struct io_event`.
#[repr(C)]
#[derive(Default)]
struct IoEvent {
    data: u64,
    obj: u64,
    res: i64,
    res2: i64,
}

/// Writes `buf` at `offset` of `fd` with Linux AIO (io_submit), and waits for it.
fn aio_write(fd: i32, buf: &Aligned, offset: i64) -> i64 {
    const IOCB_CMD_PWRITE: u16 = 1;
    let mut ctx = 0u64;
    // SAFETY: raw AIO syscalls on a context, control block and event owned here.
    unsafe {
        assert_eq!(
            libc::syscall(libc::SYS_io_setup, 4, &mut ctx as *mut u64),
            0
        );
        let mut cb = Iocb {
            opcode: IOCB_CMD_PWRITE,
            fildes: fd as u32,
            buf: buf.ptr as u64,
            nbytes: buf.layout.size() as u64,
            offset,
            ..Default::default()
        };
        let mut list = [&mut cb as *mut Iocb];
        assert_eq!(
            libc::syscall(libc::SYS_io_submit, ctx, 1, list.as_mut_ptr()),
            1
        );
        let mut event = IoEvent::default();
        let got = libc::syscall(
            libc::SYS_io_getevents,
            ctx,
            1,
            1,
            &mut event as *mut IoEvent,
            std::ptr::null::<libc::timespec>(),
        );
        assert_eq!(got, 1);
        libc::syscall(libc::SYS_io_destroy, ctx);
        event.res
    }
}

/// A buffered read after an O_DIRECT write (plain, and through AIO) of the same range returns
/// the new bytes, on the writing mount (its cached pages are dropped) and on another; also
/// with the kernel's writeback cache.
#[test]
fn buffered_reads_after_direct_writes_see_the_new_bytes() {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::os::unix::io::AsRawFd;
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let other = Mount::new(&redis, "skx", &[]);
    for extra in [&[][..], &["--writeback"][..]] {
        let m = Mount::new(&redis, "skx", extra);
        let path = m.join("direct");
        fs::write(&path, vec![b'a'; 1 << 20]).unwrap();
        let buffered = fs::OpenOptions::new().read(true).open(&path).unwrap();
        let mut cached = vec![0u8; 1 << 20];
        buffered.read_exact_at(&mut cached, 0).unwrap();
        let direct = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let plain = Aligned::filled(65536, b'b');
        // SAFETY: a valid descriptor and an aligned buffer of the size given.
        let wrote = unsafe { libc::pwrite(direct.as_raw_fd(), plain.ptr.cast(), 65536, 0) };
        assert_eq!(wrote, 65536, "{extra:?}");
        let through_aio = Aligned::filled(65536, b'c');
        assert_eq!(
            aio_write(direct.as_raw_fd(), &through_aio, 131072),
            65536,
            "{extra:?}"
        );
        let mut back = vec![0u8; 65536];
        buffered.read_exact_at(&mut back, 0).unwrap();
        assert!(
            back.iter().all(|&b| b == b'b'),
            "{extra:?}: direct write not seen"
        );
        buffered.read_exact_at(&mut back, 131072).unwrap();
        assert!(
            back.iter().all(|&b| b == b'c'),
            "{extra:?}: AIO direct write not seen"
        );
        direct.sync_all().unwrap();
        drop((direct, buffered));
        let seen = fs::read(other.join("direct")).unwrap();
        assert!(
            seen[..65536].iter().all(|&b| b == b'b')
                && seen[131072..196608].iter().all(|&b| b == b'c')
        );
        assert!(seen[65536..131072].iter().all(|&b| b == b'a'));
        fs::remove_file(&path).unwrap();
        m.unmount();
    }
}

/// A program copied in, made executable and run at once, as a build does: the chmod that
/// follows the close must not bring back a size from before the close's store (it did, now
/// and then: `stat` said 0 bytes and `exec` failed with `ENOEXEC`).
#[test]
fn a_program_written_made_executable_and_run_at_once_runs() {
    if !common::ready() {
        return;
    }
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let program = fs::read("/bin/true").unwrap();
    let dir = m.join("bin");
    fs::create_dir(&dir).unwrap();
    for i in 0..400 {
        let path = dir.join(format!("true{i}"));
        fs::write(&path, &program).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let size = fs::metadata(&path).unwrap().len();
        assert_eq!(
            size,
            program.len() as u64,
            "the size of {} after its chmod",
            path.display()
        );
        let ran = std::process::Command::new(&path).status();
        assert!(
            ran.as_ref().is_ok_and(|s| s.success()),
            "{}: {ran:?}",
            path.display()
        );
    }
}
