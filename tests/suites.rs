//! External suites against a fresh mount: pjdfstest (POSIX semantics) and fsx (data).

mod common;

use std::process::Command;

use common::{Mount, Redis};

/// A tool installed by `tests/run`; a missing one fails under CI and is reported otherwise.
fn tool(name: &str) -> Option<std::path::PathBuf> {
    let found = common::which(name);
    if found.is_none() {
        let msg = format!("cannot run: {name} is not installed (tests/run installs it)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}");
        }
        eprintln!("SKIPPED: {msg}");
    }
    found
}

/// pjdfstest runs some checks as these users.
fn ensure_users() {
    for (user, args) in [(
        "tests",
        vec!["-M", "-s", "/usr/sbin/nologin", "-U", "tests"],
    )] {
        if !Command::new("id")
            .arg(user)
            .output()
            .is_ok_and(|o| o.status.success())
        {
            let ok = Command::new("useradd")
                .args(&args)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "could not create user {user} for pjdfstest");
        }
    }
    assert!(
        Command::new("id")
            .arg("nobody")
            .output()
            .is_ok_and(|o| o.status.success()),
        "user nobody is missing"
    );
}

#[test]
fn pjdfstest_passes_everything_tmpfs_passes() {
    if !common::ready() {
        return;
    }
    let Some(pjdfstest) = tool("pjdfstest") else {
        return;
    };
    ensure_users();
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("pjdfstest.toml");
    std::fs::write(
        &config,
        "[features]\nposix_fallocate = {}\nutime_now = {}\nutimensat = {}\nrename_ctime = {}\n\n[settings]\nnaptime = 0.01\n",
    )
    .unwrap();
    let secondary = work.path().join("secondary");
    std::fs::create_dir(&secondary).unwrap();
    let dir = m.join("pjdfstest");
    std::fs::create_dir(&dir).unwrap();
    let out = Command::new(pjdfstest)
        .arg("-c")
        .arg(&config)
        .arg("-p")
        .arg(&dir)
        .arg("-s")
        .arg(&secondary)
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("Summary:"))
        .unwrap_or_else(|| {
            panic!(
                "no summary from pjdfstest:\n{stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_end().ends_with("FAILED"))
        .collect();
    // pjdfstest says why a case failed (a panic with the assertion) on stderr.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| {
            !l.trim_start().starts_with(|c: char| c.is_ascii_digit()) && !l.contains(" at ")
        })
        .take(40)
        .collect();
    assert!(
        summary.contains(" 0 failed"),
        "{summary}\n{}\n{}",
        failures.join("\n"),
        reasons.join("\n")
    );
    let passed: u32 = summary
        .split(',')
        .find_map(|p| {
            p.trim()
                .strip_suffix(" passed")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0);
    assert!(passed >= 384, "{summary}");
}

fn fsx(seed: u32) {
    if !common::ready() {
        return;
    }
    let Some(fsx) = tool("fsx") else { return };
    let redis = Redis::start();
    let m = Mount::new(&redis, "skx", &[]);
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("fsx.toml");
    let ops = [
        "close_open",
        "invalidate",
        "mapread",
        "mapwrite",
        "read",
        "write",
        "truncate",
        "fsync",
        "fdatasync",
        "posix_fallocate",
        "punch_hole",
        "sendfile",
        "posix_fadvise",
        "copy_file_range",
    ];
    let weights: String = ops.iter().map(|o| format!("{o} = 1\n")).collect();
    std::fs::write(&config, format!("[weights]\n{weights}")).unwrap();
    let out = Command::new(fsx)
        .args(["-N", "20000", "-S", &seed.to_string(), "-f"])
        .arg(&config)
        .arg("-P")
        .arg(work.path())
        .arg(m.join("fsx-file"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("All operations completed A-OK!"),
        "fsx seed {seed} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn fsx_every_operation_seed_1() {
    fsx(1);
}

#[test]
fn fsx_every_operation_seed_2() {
    fsx(2);
}
