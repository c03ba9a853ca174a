//! Redis over TLS: a private certificate authority, a client certificate (mutual TLS), the
//! tools with the same options, and clear refusals when a certificate is missing or wrong.
//!
//! Each test makes its own CA, server and client certificates with `openssl` and starts a
//! redis-server that listens on a TLS port (and on a plain one, for the harness to watch).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_clean, random_bytes, tool_ok, Mount, Redis, Sentinels};

/// Certificates of one test: a CA, the server's (for 127.0.0.1) and a client's, signed by it.
struct Certificates {
    dir: tempfile::TempDir,
}

impl Certificates {
    fn make() -> Certificates {
        let dir = tempfile::tempdir().expect("temp dir");
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(&[
            &["req", "-x509", "-days", "2", "-subj", "/CN=redisfs test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
        ]
        .concat());
        std::fs::write(
            dir.path().join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("client.ext"),
            "extendedKeyUsage=clientAuth\n",
        )
        .unwrap();
        for (name, subject) in [
            ("server", "/CN=localhost"),
            ("client", "/CN=redisfs client"),
        ] {
            let (key, csr, pem, ext) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            run(&[
                &["req", "-new", "-subj", subject][..],
                &ec,
                &["-keyout", &key, "-out", &csr],
            ]
            .concat());
            run(&[
                "x509",
                "-req",
                "-days",
                "2",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        Certificates { dir }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A redis-server that also listens on `tls_port`, asking clients for a certificate.
fn tls_redis(certs: &Certificates, tls_port: u16) -> Redis {
    tls_redis_with(certs, tls_port, &[])
}

/// [`tls_redis`] with more arguments.
fn tls_redis_with(certs: &Certificates, tls_port: u16, extra: &[&str]) -> Redis {
    let path = |n: &str| certs.file(n).display().to_string();
    let mut args = vec![
        "--tls-port".to_string(),
        tls_port.to_string(),
        "--tls-cert-file".into(),
        path("server.pem"),
        "--tls-key-file".into(),
        path("server.key"),
        "--tls-ca-cert-file".into(),
        path("ca.pem"),
        "--tls-auth-clients".into(),
        "yes".into(),
    ];
    args.extend(strings(extra));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Redis::start_with(&args)
}

/// fsck of the filesystem `secure` at `url`, over TLS with a client certificate, says clean.
fn assert_fsck_clean_over_tls(url: &str, certs: &Certificates) {
    let mut args = tls_args(url, certs, true);
    args.extend(strings(&["--prefix", "secure"]));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool_ok("fsck", &refs);
    assert!(out.contains("clean"), "{out}");
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Whether the test can run: mounts, and openssl to make certificates.
fn tls_ready() -> bool {
    if !common::ready() {
        return false;
    }
    if common::which("openssl").is_some() {
        return true;
    }
    let msg = "cannot run: openssl missing (run tests/run to install)";
    assert!(std::env::var("CI").ok().as_deref() != Some("true"), "{msg}");
    eprintln!("SKIPPED: {msg}");
    false
}

fn tls_args(url: &str, certs: &Certificates, client: bool) -> Vec<String> {
    let path = |n: &str| certs.file(n).display().to_string();
    let mut args = strings(&["--redis", url, "--tls-ca-cert", &path("ca.pem")]);
    if client {
        args.extend(strings(&[
            "--tls-cert",
            &path("client.pem"),
            "--tls-key",
            &path("client.key"),
        ]));
    }
    args
}

#[test]
fn a_mount_over_mutual_tls_with_a_private_ca_keeps_its_files() {
    if !tls_ready() {
        return;
    }
    let certs = Certificates::make();
    let tls_port = common::free_port();
    let redis = tls_redis(&certs, tls_port);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let mut args = tls_args(&url, &certs, true);
    args.extend(strings(&["--prefix", "secure"]));
    let data = random_bytes(3 << 20, 11);
    {
        let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
        std::fs::write(m.join("big"), &data).unwrap();
        std::fs::create_dir(m.join("d")).unwrap();
        std::fs::write(m.join("d/small"), b"over TLS").unwrap();
        m.unmount();
    }
    // The keys are in the server the TLS port belongs to.
    assert!(!redis.keys("secure").is_empty());
    let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
    assert_eq!(std::fs::read(m.join("big")).unwrap(), data);
    assert_eq!(std::fs::read(m.join("d/small")).unwrap(), b"over TLS");
    m.unmount();

    // The tools take the same options.
    assert_fsck_clean_over_tls(&url, &certs);
    assert_clean(&redis, "secure");
}

#[test]
fn missing_or_wrong_certificates_are_refused_in_one_clear_line() {
    if !tls_ready() {
        return;
    }
    let certs = Certificates::make();
    let tls_port = common::free_port();
    let _redis = tls_redis(&certs, tls_port);
    let url = format!("rediss://127.0.0.1:{tls_port}/");
    let quick = strings(&["--prefix", "secure", "--io-timeout", "3"]);
    let refused = |mut args: Vec<String>| {
        args.extend(quick.clone());
        match Mount::with_args(&args) {
            Ok(m) => panic!(
                "mount with {args:?} should have been refused at {}",
                m.path.display()
            ),
            Err(r) => r,
        }
    };
    let one_line = |r: &common::Refusal, needle: &str| {
        assert!(r.code.is_some_and(|c| c != 0), "{:?}: {}", r.code, r.stderr);
        let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert!(
            lines.len() == 1 && lines[0].contains(needle),
            "expected one line with '{needle}':\n{}",
            r.stderr
        );
        assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    };
    // No client certificate: the server ends the handshake.
    one_line(
        &refused(tls_args(&url, &certs, false)),
        &url.trim_end_matches('/').replace("rediss://", ""),
    );
    // The system's CA store does not know the private CA.
    let mut no_ca = strings(&["--redis", &url]);
    no_ca.extend(tls_args(&url, &certs, true).split_off(4));
    one_line(&refused(no_ca), "certificate");
    // Certificates with a plain URL: refused before connecting.
    let plain = format!("redis://127.0.0.1:{}/", _redis.port);
    one_line(&refused(tls_args(&plain, &certs, true)), "rediss://");
    // A certificate file that is not there is named.
    let mut missing = tls_args(&url, &certs, true);
    missing[3] = Path::new("/nonexistent/ca.pem").display().to_string();
    one_line(&refused(missing), "/nonexistent/ca.pem");
}

/// `rediss+sentinel://`: a sentinel that speaks only TLS to its clients and to the primary
/// (which asks every client for a certificate) names the primary; the mount reaches both
/// with the private CA and its client certificate, and the tools take the same URL.
#[test]
fn a_mount_through_a_sentinel_over_mutual_tls_keeps_its_files() {
    if !tls_ready() {
        return;
    }
    let certs = Certificates::make();
    let tls_port = common::free_port();
    let redis = tls_redis(&certs, tls_port);
    let sentinel_tls_port = common::free_port();
    let path = |n: &str| certs.file(n).display().to_string();
    let _sentinel = Sentinels::start_configured(
        1,
        "secure",
        tls_port,
        0,
        &format!(
            "tls-port {sentinel_tls_port}\ntls-cert-file {}\ntls-key-file {}\n\
             tls-ca-cert-file {}\ntls-auth-clients yes\ntls-replication yes",
            path("server.pem"),
            path("server.key"),
            path("ca.pem"),
        ),
    );
    let url = format!("rediss+sentinel://127.0.0.1:{sentinel_tls_port}/secure");
    let mut args = tls_args(&url, &certs, true);
    args.extend(strings(&["--prefix", "secure"]));
    let data = random_bytes(1 << 20, 12);
    {
        let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
        std::fs::write(m.join("f"), &data).unwrap();
        m.unmount();
    }
    assert!(!redis.keys("secure").is_empty());
    let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
    assert_eq!(std::fs::read(m.join("f")).unwrap(), data);
    m.unmount();
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = tool_ok("fsck", &refs);
    assert!(out.contains("clean"), "{out}");

    // Without the client certificate the sentinel ends the handshake: one line.
    let mut bare = tls_args(&url, &certs, false);
    bare.extend(strings(&["--prefix", "secure", "--io-timeout", "3"]));
    let Err(refused) = Mount::with_args(&bare) else {
        panic!("mounted without a client certificate");
    };
    let lines: Vec<&str> = refused
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert!(
        lines.len() == 1 && lines[0].contains("rediss+sentinel://"),
        "{}",
        refused.stderr
    );
}

/// A Redis Cluster whose nodes speak only TLS to each other and announce their TLS ports: a
/// mount given one node's `rediss://` URL with a private CA and a client certificate finds
/// every node over TLS, spreads its blocks over every primary, and reads everything back after
/// a remount; fsck takes the same options.
#[test]
fn a_mount_on_a_cluster_over_mutual_tls_keeps_its_files() {
    if !tls_ready() {
        return;
    }
    let certs = Certificates::make();
    let tls_ports: Vec<u16> = (0..3).map(|_| common::free_port()).collect();
    let nodes: Vec<Redis> = (tls_ports.iter())
        .map(|port| {
            tls_redis_with(
                &certs,
                *port,
                &(common::cluster_node_args(&["--tls-cluster", "yes", "--tls-replication", "yes"])
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>()),
            )
        })
        .collect();
    let path = |n: &str| certs.file(n).display().to_string();
    let tls = [
        "--tls",
        "--cacert",
        &path("ca.pem"),
        "--cert",
        &path("client.pem"),
    ];
    let tls = strings(&tls)
        .into_iter()
        .chain(strings(&["--key", &path("client.key")]));
    common::create_cluster(&nodes, &tls.collect::<Vec<_>>(), &tls_ports, 0);
    let url = format!("rediss://127.0.0.1:{}/0", tls_ports[0]);
    let mut args = tls_args(&url, &certs, true);
    args.extend(strings(&["--prefix", "secure"]));
    let files: Vec<Vec<u8>> = (0..6).map(|i| random_bytes(1 << 20, i)).collect();
    {
        let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
        for (i, data) in files.iter().enumerate() {
            std::fs::write(m.join(format!("f{i}")), data).unwrap();
        }
        m.unmount();
    }
    for node in &nodes {
        assert!(
            node.keys("secure")
                .iter()
                .any(|k| k.starts_with("secure:b:")),
            "blocks on the node at TLS port {}",
            node.port()
        );
    }
    let m = Mount::with_args(&args).unwrap_or_else(|r| panic!("{}", r.stderr));
    for (i, data) in files.iter().enumerate() {
        assert_eq!(
            &std::fs::read(m.join(format!("f{i}"))).unwrap(),
            data,
            "f{i}"
        );
    }
    m.unmount();
    assert_fsck_clean_over_tls(&url, &certs);
}
