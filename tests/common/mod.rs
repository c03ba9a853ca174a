//! Test harness: real redis-server processes and real FUSE mounts of the built binary.
//!
//! Every test starts its own redis-server on a free port in a temporary directory and mounts
//! `redisfs` on a temporary mount point. Both are torn down on drop, also when a test panics.
//! A test that cannot run here (no /dev/fuse, no redis-server) says so on stderr and returns;
//! under CI (`CI=true`) that is a failure instead.

#![allow(dead_code)]

use std::collections::HashMap;
use std::ffi::CString;
use std::net::TcpListener;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether the machine can run mount tests. Prints why not; panics under CI.
pub fn ready() -> bool {
    can_run(&[("/dev/fuse", Path::new("/dev/fuse").exists())])
}

/// Whether the machine can run tests of the core without FUSE (a redis-server is all they
/// need). Prints why not; panics under CI.
pub fn redis_ready() -> bool {
    can_run(&[])
}

/// Whether everything in `needs` (name, present) and a redis-server are here.
fn can_run(needs: &[(&str, bool)]) -> bool {
    let redis = ("redis-server", which("redis-server").is_some());
    let missing: Vec<&str> = needs
        .iter()
        .chain([&redis])
        .filter(|(_, present)| !present)
        .map(|(name, _)| *name)
        .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "cannot run: {} missing (run tests/run to install)",
        missing.join(", ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg}");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// The full path of a program on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([
            PathBuf::from("/root/.cargo/bin"),
            PathBuf::from("/usr/sbin"),
        ])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// A free port below the ephemeral range. A port from that range can be taken by a client
/// reconnecting to it while the server restarts (TCP self-connect), and the server then cannot
/// bind it again.
pub fn free_port() -> u16 {
    let ephemeral_start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next().and_then(|p| p.parse().ok()))
        .unwrap_or(32768);
    let span = u32::from(ephemeral_start.saturating_sub(10_000).max(1));
    let mut seed = u32::from(std::process::id() as u16)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
    for _ in 0..1000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let port = 10_000 + (seed >> 8) % span;
        if TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port below the ephemeral range");
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            let log = what
                .split("log: ")
                .nth(1)
                .map(|p| p.trim_end_matches(')'))
                .unwrap_or("");
            panic!(
                "timed out waiting for {what}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether a Redis answers PING on `port`, waiting at most a moment.
fn ping(port: u16) -> bool {
    let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}/")) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

/// Waits until `done` holds, failing the test with `what` after `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A private redis-server, killed on drop.
pub struct Redis {
    child: Option<Child>,
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its working directory (AOF and RDB files).
    pub dir: tempfile::TempDir,
    extra: Vec<String>,
}

impl Redis {
    /// A server with no persistence.
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// A server with extra `redis-server` arguments (e.g. `--appendonly yes`).
    pub fn start_with(extra: &[&str]) -> Redis {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.launch();
        redis
    }

    /// Starts a supervisor that runs redis-server and starts it again whenever it exits (until
    /// told to stop; not while held, see [`Redis::kill_and_hold`]). Restarts come from the
    /// supervisor, not from the test: a process the test forks later would inherit its open
    /// files on a mount, and closing them at exec would wait for the very server being
    /// restarted.
    fn launch(&mut self) {
        let stop = self.dir.path().join("stop");
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(
                "while :; do redis-server \"$@\"; [ -e \"$0\" ] && exit 0; \
                 while [ -e \"$0.hold\" ]; do sleep 0.02; done; sleep 0.02; done",
            )
            .arg(&stop)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        self.child = Some(command.spawn().expect("start redis-server"));
        self.wait_until_up();
    }

    fn wait_until_up(&self) {
        let port = self.port;
        let log = self.dir.path().join("redis.log");
        wait_for(
            &format!("redis-server (log: {})", log.display()),
            Duration::from_secs(20),
            || ping(port),
        );
    }

    /// The server's own process id.
    fn server_pid(&self) -> i32 {
        let info: String = self.cmd(&["INFO", "server"]);
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|p| p.trim().parse().ok())
            .expect("process_id in INFO")
    }

    /// Stops the server with SIGTERM (it writes its AOF first) and waits until it is back on
    /// the same port with the same data directory.
    pub fn restart(&mut self) {
        let old = self.server_pid();
        // SAFETY: kill with the server's pid.
        unsafe { libc::kill(old, libc::SIGTERM) };
        wait_for("redis-server to stop", Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{old}")).exists() || !ping(self.port)
        });
        self.wait_until_up();
    }

    /// Stops the server with SIGSTOP, as a stalled host would: connections stay open and
    /// requests queue up unanswered until [`Redis::resume`].
    pub fn pause(&self) -> i32 {
        let pid = self.server_pid();
        // SAFETY: kill with the server's pid.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        pid
    }

    /// Lets a server stopped by [`Redis::pause`] run again.
    pub fn resume(&self, pid: i32) {
        // SAFETY: kill with the server's pid.
        unsafe { libc::kill(pid, libc::SIGCONT) };
    }

    /// Stalls the server for `how_long` ([`Redis::pause`], then [`Redis::resume`]).
    pub fn stall(&self, how_long: Duration) {
        let pid = self.pause();
        std::thread::sleep(how_long);
        self.resume(pid);
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until the supervisor has it
    /// back up on the same port and data directory (it reloads its AOF, if it keeps one).
    pub fn crash(&self) {
        let old = self.server_pid();
        // SAFETY: kill with the server's pid.
        unsafe { libc::kill(old, libc::SIGKILL) };
        wait_for("redis-server to die", Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{old}")).exists() || !ping(self.port)
        });
        self.wait_until_up();
    }

    /// Kills the server with SIGKILL and keeps it down until [`Redis::release`]: a machine that
    /// died and comes back later, with no data (the test servers keep none) and the
    /// configuration it started with.
    pub fn kill_and_hold(&self) {
        std::fs::write(self.dir.path().join("stop.hold"), b"").expect("hold file");
        let old = self.server_pid();
        // SAFETY: kill with the server's pid.
        unsafe { libc::kill(old, libc::SIGKILL) };
        wait_for("redis-server to die", Duration::from_secs(20), || {
            !Path::new(&format!("/proc/{old}")).exists()
        });
    }

    /// Starts a server held down by [`Redis::kill_and_hold`] again, and waits until it answers.
    pub fn release(&self) {
        std::fs::remove_file(self.dir.path().join("stop.hold")).expect("hold file");
        self.wait_until_up();
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The URL of a link to this server adding `rtt` to every round trip, as if it ran on
    /// another host. The link serves until the test's process ends.
    pub fn url_at_distance(&self, rtt: Duration) -> String {
        format!("redis://127.0.0.1:{}/", self.port_at_distance(rtt))
    }

    /// The port of a link to this server adding `rtt` to every round trip (see
    /// [`Redis::url_at_distance`]).
    pub fn port_at_distance(&self, rtt: Duration) -> u16 {
        self.link_at_distance(rtt).port
    }

    /// A link to this server adding `rtt` to every round trip, which the test can cut.
    pub fn link_at_distance(&self, rtt: Duration) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("a port for the link");
        let port = listener.local_addr().expect("the link's address").port();
        let target = ([127, 0, 0, 1], self.port).into();
        let cut = Arc::new(AtomicBool::new(false));
        let cut_link = cut.clone();
        std::thread::spawn(move || delay_link::serve_until_cut(listener, target, rtt, cut_link));
        Link { port, cut }
    }

    /// Whether the server is a replica now (not while it cannot say: a server turned into a
    /// replica drops its clients' connections as it loads its primary's data).
    pub fn is_replica(&self) -> bool {
        let info: redis::RedisResult<String> = redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .and_then(|mut c| redis::cmd("INFO").arg("replication").query(&mut c));
        info.is_ok_and(|text| text.contains("role:slave"))
    }

    /// A plain connection for inspecting or damaging keys.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .expect("connect to test redis")
    }

    /// Runs one command and returns its reply.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut self.conn()).expect("redis command")
    }

    /// Every key of the filesystem `prefix`: under `{prefix}:` (metadata) and `prefix:`.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut conn = self.conn();
        let mut keys: Vec<String> = [format!("{{{prefix}}}:*"), format!("{prefix}:*")]
            .iter()
            .flat_map(|pattern| {
                redis::cmd("SCAN")
                    .cursor_arg(0)
                    .arg("MATCH")
                    .arg(pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .clone()
                    .iter(&mut conn)
                    .expect("scan")
                    .map(|k| k.expect("key name"))
                    .collect::<Vec<String>>()
            })
            .collect();
        keys.sort();
        keys
    }

    /// Redis's `used_memory`.
    pub fn used_memory(&self) -> u64 {
        let info: String = self.cmd(&["INFO", "memory"]);
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("used_memory in INFO")
    }
}

/// A Redis Cluster of private servers on free ports, each in its own directory, killed on
/// drop; its slots spread over the primaries, each primary with its replicas.
pub struct Cluster {
    /// Every node, primaries first.
    pub nodes: Vec<Redis>,
}

impl Cluster {
    /// Starts `primaries` primaries with `replicas` replicas each, joins them with `redis-cli
    /// --cluster create`, and waits until every node says the cluster is `ok`.
    pub fn start(primaries: usize, replicas: usize) -> Cluster {
        Cluster::start_with(primaries, replicas, &[])
    }

    /// [`Cluster::start`] with more arguments for every `redis-server`.
    pub fn start_with(primaries: usize, replicas: usize, extra: &[&str]) -> Cluster {
        let nodes: Vec<Redis> = (0..primaries * (1 + replicas))
            .map(|_| {
                let args = cluster_node_args(extra);
                Redis::start_with(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        let ports: Vec<u16> = nodes.iter().map(|n| n.port).collect();
        create_cluster(&nodes, &[], &ports, replicas);
        Cluster { nodes }
    }

    /// The URL of its first node.
    pub fn url(&self) -> String {
        self.nodes[0].url()
    }

    /// Runs one command on the node that serves its key.
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        let client = redis::cluster::ClusterClient::new(vec![self.url()]).expect("client");
        let mut conn = client.get_connection().expect("connect to the cluster");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn).expect("cluster command")
    }

    /// One URL naming every node (`redis://127.0.0.1:p1,127.0.0.1:p2,…/0`).
    pub fn seeds_url(&self) -> String {
        let hosts: Vec<String> = (self.nodes.iter())
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis://{}/0", hosts.join(","))
    }

    /// The nodes that are primaries now.
    pub fn primaries(&self) -> Vec<&Redis> {
        (self.nodes.iter()).filter(|n| !n.is_replica()).collect()
    }
}

/// Joins `nodes` into a cluster with `redis-cli` (`options` before `--cluster create`, such as
/// TLS ones; `ports` where it reaches each node), `replicas` to a primary, and waits until every
/// node says the cluster is `ok`.
pub fn create_cluster(nodes: &[Redis], options: &[String], ports: &[u16], replicas: usize) {
    let out = Command::new("redis-cli")
        .args(options)
        .args(["--cluster", "create"])
        .args(ports.iter().map(|p| format!("127.0.0.1:{p}")))
        .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
        .output()
        .expect("run redis-cli --cluster create");
    assert!(
        out.status.success(),
        "redis-cli --cluster create: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for node in nodes {
        eventually("the cluster to be ok", Duration::from_secs(30), || {
            node.cmd::<String>(&["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
        });
    }
    // A replica takes its primary's data a moment later, in a full copy: until then it cannot
    // take over from it.
    for node in nodes {
        eventually("every replica in step", Duration::from_secs(30), || {
            let info = node.cmd::<String>(&["INFO", "replication"]);
            !info.contains("role:slave") || info.contains("master_link_status:up")
        });
    }
}

/// The arguments of a `redis-server` that is a node of a test cluster, with `extra`: its
/// cluster bus on a free port of its own (by default it is the client port + 10000, which may
/// lie in the ephemeral range and be taken by some connection).
pub fn cluster_node_args(extra: &[&str]) -> Vec<String> {
    let bus = free_port().to_string();
    // (No wait before a replica's first copy: every test starts with replicas in step.)
    let args = [
        "--cluster-enabled",
        "yes",
        "--cluster-node-timeout",
        "2000",
        "--repl-diskless-sync-delay",
        "0",
    ];
    (args.iter().chain(&["--cluster-port", &bus]).chain(extra))
        .map(|a| a.to_string())
        .collect()
}

/// Which Redis a test that can run on either puts its filesystem on.
#[derive(Clone, Copy, Debug)]
pub enum On {
    /// One redis-server.
    Server,
    /// A Redis Cluster of three primaries.
    Cluster,
}

/// Each test named (a function of [`On`]) runs twice: on one redis-server, and on a Redis
/// Cluster of three primaries (where its blocks spread over every node and its metadata lies
/// on one). (Not every test binary uses it.)
#[allow(unused_macros)]
macro_rules! on_a_server_and_on_a_cluster {
    ($($name:ident),* $(,)?) => {
        mod on_a_server {
            $(#[test]
            fn $name() {
                super::$name(super::common::On::Server)
            })*
        }
        mod on_a_cluster {
            $(#[test]
            fn $name() {
                super::$name(super::common::On::Cluster)
            })*
        }
    };
}
#[allow(unused_imports)]
pub(crate) use on_a_server_and_on_a_cluster;

/// Where a test's filesystem lives: one server, or a cluster.
pub enum Place {
    Server(Redis),
    Cluster(Cluster),
}

impl Place {
    /// Starts a fresh one.
    pub fn start(on: On) -> Place {
        match on {
            On::Server => Place::Server(Redis::start()),
            On::Cluster => Place::Cluster(Cluster::start(3, 0)),
        }
    }

    /// The URL mounts are given.
    pub fn url(&self) -> String {
        match self {
            Place::Server(r) => r.url(),
            Place::Cluster(c) => c.url(),
        }
    }

    /// Runs one command (on a cluster, on the node that serves its key).
    pub fn cmd<T: redis::FromRedisValue>(&self, args: &[&str]) -> T {
        match self {
            Place::Server(r) => r.cmd(args),
            Place::Cluster(c) => c.cmd(args),
        }
    }

    /// A plain connection to the server, or to the node of a cluster that holds the metadata
    /// of `skx` (for commands on those keys, transactions and `MONITOR`).
    pub fn conn(&self) -> redis::Connection {
        match self {
            Place::Server(r) => r.conn(),
            Place::Cluster(c) => (c.primaries().into_iter())
                .find(|n| {
                    let owner: redis::RedisResult<i64> =
                        redis::cmd("EXISTS").arg("{skx}:meta").query(&mut n.conn());
                    owner.is_ok()
                })
                .expect("a node serving the slot of {skx}")
                .conn(),
        }
    }

    /// Every key of the filesystem `prefix`, on every node.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        match self {
            Place::Server(r) => r.keys(prefix),
            Place::Cluster(c) => c.nodes.iter().flat_map(|n| n.keys(prefix)).collect(),
        }
    }
}

/// A link to a Redis that serves until the test process ends (see [`Redis::link_at_distance`]).
pub struct Link {
    /// Its port on 127.0.0.1.
    pub port: u16,
    cut: Arc<AtomicBool>,
}

impl Link {
    /// From now on the link drops every byte either way, its connections left open: a
    /// network partition neither end is told of.
    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How long sentinels give a failover (one that failed is tried again after twice this), and a
/// replica before they make it replicate from the address they know its primary by.
pub const SENTINEL_FAILOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// Redis Sentinels watching one primary, each a `redis-server --sentinel` on a free port, with
/// a failover a second after the primary stops answering. Killed on drop.
pub struct Sentinels {
    children: Vec<Child>,
    ports: Vec<u16>,
    /// The name they know the primary by.
    pub name: String,
    /// Their configuration files and logs.
    pub dir: tempfile::TempDir,
}

impl Sentinels {
    /// Starts `count` sentinels watching `primary` (quorum: a majority) and waits until each
    /// knows the others and the primary's `replicas`.
    pub fn start(count: usize, name: &str, primary: &Redis, replicas: usize) -> Sentinels {
        Sentinels::start_configured(count, name, primary.port(), replicas, "")
    }

    /// [`Sentinels::start`], watching the primary's `primary_port` (a TLS one, say), each
    /// sentinel's configuration ending with `extra` (each still answers on a plain port, for
    /// the harness).
    pub fn start_configured(
        count: usize,
        name: &str,
        primary_port: u16,
        replicas: usize,
        extra: &str,
    ) -> Sentinels {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sentinels = Sentinels {
            children: Vec::new(),
            ports: Vec::new(),
            name: name.to_string(),
            dir,
        };
        for i in 0..count {
            let port = free_port();
            let conf = sentinels.dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel-{i}.log\n\
                 sentinel monitor {name} 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds {name} 1000\n\
                 sentinel failover-timeout {name} {failover_timeout}\n{extra}\n",
                dir = sentinels.dir.path().display(),
                primary = primary_port,
                quorum = count / 2 + 1,
                failover_timeout = SENTINEL_FAILOVER_TIMEOUT.as_millis(),
            );
            std::fs::write(&conf, text).expect("sentinel configuration");
            let mut command = Command::new("redis-server");
            command
                .arg(&conf)
                .arg("--sentinel")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            sentinels
                .children
                .push(command.spawn().expect("start redis-server --sentinel"));
            sentinels.ports.push(port);
        }
        let log = sentinels.dir.path().join("sentinel-0.log");
        for &port in &sentinels.ports {
            // `None` while the sentinel does not answer (a count of 0 is no sign of life).
            let ask = |what: &str| -> Option<usize> {
                let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
                let mut conn = client
                    .get_connection_with_timeout(Duration::from_millis(300))
                    .ok()?;
                redis::cmd("SENTINEL")
                    .arg(what)
                    .arg(name)
                    .query::<Vec<redis::Value>>(&mut conn)
                    .ok()
                    .map(|v| v.len())
            };
            wait_for(
                &format!(
                    "sentinels to know each other and the replicas (log: {})",
                    log.display()
                ),
                Duration::from_secs(30),
                || ask("sentinels") == Some(count - 1) && ask("replicas") == Some(replicas),
            );
        }
        sentinels
    }

    /// Sets `option` of the primary they watch to `value` on every sentinel (`SENTINEL SET`).
    pub fn set(&self, option: &str, value: &str) {
        for port in &self.ports {
            let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"));
            let set: redis::RedisResult<()> =
                client.and_then(|c| c.get_connection()).and_then(|mut c| {
                    (redis::cmd("SENTINEL")
                        .arg("SET")
                        .arg(&self.name)
                        .arg(option)
                        .arg(value))
                    .query(&mut c)
                });
            set.unwrap_or_else(|e| panic!("SENTINEL SET {option} on port {port}: {e}"));
        }
    }

    /// `redis+sentinel://` with every sentinel, naming the primary.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = (self.ports.iter())
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+sentinel://{}/{}", hosts.join(","), self.name)
    }

    /// Whether every sentinel names the server on `port` as primary, sees it up, and holds no
    /// other sentinel's word that it is down. A sentinel keeps a peer's "down" answer about
    /// the primary it failed over from for 5 s (`SENTINEL_ASK_PERIOD * 5` in Redis) and counts
    /// it for the new one: until then a single missed ping to the new primary (one second, as
    /// configured here, on a loaded machine) is a quorum and a second failover, to any replica
    /// it knows, such as a former primary restarted empty (which wipes the data everywhere).
    pub fn settled_on(&self, port: u16) -> bool {
        self.ports.iter().all(|&sentinel| {
            let settled = || -> redis::RedisResult<bool> {
                let client = redis::Client::open(format!("redis://127.0.0.1:{sentinel}/"))?;
                let mut conn = client.get_connection_with_timeout(Duration::from_secs(1))?;
                let ask = |what: &str| redis::cmd("SENTINEL").arg(what).arg(&self.name).clone();
                let (_, primary): (String, u16) =
                    ask("get-master-addr-by-name").query(&mut conn)?;
                let primary_flags: HashMap<String, String> = ask("master").query(&mut conn)?;
                let peers: Vec<HashMap<String, String>> = ask("sentinels").query(&mut conn)?;
                Ok(primary == port
                    && primary_flags.get("flags").is_some_and(|f| f == "master")
                    && (peers.iter())
                        .all(|p| p.get("flags").is_some_and(|f| !f.contains("master_down"))))
            };
            settled().unwrap_or(false)
        })
    }

    /// The port of the server the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.ports[0])).ok()?;
        let mut conn = client.get_connection().ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&self.name)
            .query(&mut conn)
            .ok()?;
        Some(port)
    }
}

impl Drop for Sentinels {
    fn drop(&mut self) {
        for child in &mut self.children {
            // SAFETY: each sentinel leads its own process group.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = std::fs::write(self.dir.path().join("stop"), b"");
        if let Some(mut child) = self.child.take() {
            // SAFETY: the supervisor leads its own process group: kill it and its server.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// The path of the built `redisfs` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_redisfs"))
}

/// Whether `path` is a mount point of a redisfs filesystem right now.
pub fn is_mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 4 && f[4] == want && l.contains("fuse.redisfs")
    })
}

/// The options `mount` shows for `path` (e.g. to find `ro`).
pub fn mount_options(path: &Path) -> String {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = path.to_string_lossy();
    info.lines()
        .find(|l| l.split(' ').nth(4) == Some(&want))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or("")
        .to_string()
}

/// A running `redisfs` mount, unmounted and killed on drop.
pub struct Mount {
    child: Option<Child>,
    /// The mount point.
    pub path: PathBuf,
    dir: tempfile::TempDir,
    log: PathBuf,
}

/// What a mount attempt that was expected to fail printed.
pub struct Refusal {
    /// Exit code.
    pub code: Option<i32>,
    /// Everything on stderr.
    pub stderr: String,
}

impl Mount {
    /// Mounts `prefix` of `redis` with extra arguments; panics with the log if it fails.
    pub fn new(redis: &Redis, prefix: &str, extra: &[&str]) -> Mount {
        Mount::at_url(&redis.url(), prefix, extra)
    }

    /// [`Mount::new`] on a server or a cluster.
    pub fn on(place: &Place, prefix: &str, extra: &[&str]) -> Mount {
        Mount::at_url(&place.url(), prefix, extra)
    }

    /// Mounts `prefix` of the Redis at `url` (a cluster's, say) with extra arguments; panics
    /// with the log if it fails.
    pub fn at_url(url: &str, prefix: &str, extra: &[&str]) -> Mount {
        let mut args = vec!["--redis", url, "--prefix", prefix];
        args.extend(extra);
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Mount::with_args(&args)
            .unwrap_or_else(|r| panic!("mount failed ({:?}):\n{}", r.code, r.stderr))
    }

    /// Mounts with exactly these arguments (the mount point is appended).
    pub fn with_args(args: &[String]) -> Result<Mount, Refusal> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).expect("mount point");
        Mount::at(dir, path, args, &[])
    }

    /// Mounts at a given point with extra environment variables.
    pub fn at(
        dir: tempfile::TempDir,
        path: PathBuf,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<Mount, Refusal> {
        let log = dir.path().join("redisfs.log");
        let child = Command::new(binary())
            .args(args)
            .arg(&path)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start redisfs");
        let mut mount = Mount {
            child: Some(child),
            path,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if is_mounted(&mount.path) {
                return Ok(mount);
            }
            if let Some(child) = mount.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    mount.child = None;
                    return Err(Refusal {
                        code: status.code(),
                        stderr: mount.log_text(),
                    });
                }
            }
            if Instant::now() > deadline {
                return Err(Refusal {
                    code: None,
                    stderr: format!("not mounted after 20 s\n{}", mount.log_text()),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The mount process's id.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("mount process").id() as i32
    }

    /// A path inside the mount.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// What the mount logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Unmounts with `fusermount3 -u` (or umount) and waits for a clean exit.
    pub fn unmount(mut self) {
        let ok = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("umount")
                .arg(&self.path)
                .status()
                .is_ok_and(|s| s.success());
        assert!(ok, "unmount of {} failed", self.path.display());
        let mut child = self.child.take().expect("mount process");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Ok(Some(s)) = child.try_wait() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "redisfs did not exit after unmount:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "redisfs exited with {status}:\n{}",
            self.log_text()
        );
    }

    /// Kills the mount process with SIGKILL, as a crash would (the kernel mount is detached).
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        lazy_unmount(&self.path);
    }

    /// Sends a signal to the mount process and waits for it to exit.
    pub fn signal_and_wait(mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("mount process");
        // SAFETY: kill with our own child's pid.
        unsafe { libc::kill(child.id() as i32, signal) };
        let status = child.wait().expect("wait for redisfs");
        lazy_unmount(&self.path);
        status
    }
}

fn lazy_unmount(path: &Path) {
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: valid C string.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test's mount says what it saw: the log is gone with the temp dir after.
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- last lines of the log of the mount at {} ---",
                self.path.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(mut child) = self.child.take() {
            lazy_unmount(&self.path);
            // SAFETY: kill with our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A C string of a path, for raw system calls.
pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// Turns a libc return value into a Result with errno.
pub fn check(ret: i64) -> Result<i64, i32> {
    if ret < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

/// Deterministic pseudo-random bytes (incompressible).
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Compressible text.
pub fn text_bytes(n: usize) -> Vec<u8> {
    let words = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n";
    let mut out = Vec::with_capacity(n);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(format!("{i:08} ").as_bytes());
        out.extend_from_slice(words);
        i += 1;
    }
    out.truncate(n);
    out
}

/// Runs one of the tools (`snapshot`, `dump`, `restore`, `fsck`) with `args`.
pub fn tool(name: &str, args: &[&str]) -> std::process::Output {
    let program = match name {
        "snapshot" => env!("CARGO_BIN_EXE_redisfs-snapshot"),
        "dump" => env!("CARGO_BIN_EXE_redisfs-dump"),
        "restore" => env!("CARGO_BIN_EXE_redisfs-restore"),
        "fsck" => env!("CARGO_BIN_EXE_redisfs-fsck"),
        "admin" => env!("CARGO_BIN_EXE_redisfs-admin"),
        other => panic!("no tool named {other}"),
    };
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run tool")
}

/// The filesystem under `prefix` is consistent: fsck finds nothing to repair.
pub fn assert_clean(redis: &Redis, prefix: &str) {
    assert_clean_at(&redis.url(), prefix);
}

/// [`assert_clean`] of the Redis at `url`.
pub fn assert_clean_at(url: &str, prefix: &str) {
    let out = tool("fsck", &["--redis", url, "--prefix", prefix]);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("clean"), "{text}");
}

/// Runs a tool that must succeed; returns its stdout.
pub fn tool_ok(name: &str, args: &[&str]) -> String {
    let out = tool(name, args);
    assert!(
        out.status.success(),
        "redisfs-{name} {args:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every file, directory and link under `root`, with what a user would compare: kind, mode,
/// owner, size, modification time (ns), link count, link target and content digest.
pub fn tree_listing(root: &Path) -> Vec<String> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let m = std::fs::symlink_metadata(&path).expect("lstat");
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let detail = if m.file_type().is_symlink() {
                std::fs::read_link(&path).unwrap().display().to_string()
            } else if m.is_file() {
                format!(
                    "{:x}",
                    sha2::Sha256::digest(std::fs::read(&path).expect("read"))
                )
            } else {
                String::new()
            };
            let mtime = if m.file_type().is_symlink() {
                0
            } else {
                m.mtime() * 1_000_000_000 + m.mtime_nsec()
            };
            out.push(format!(
                "{rel} mode={:o} uid={} gid={} size={} nlink={} rdev={} mtime={mtime} {detail} xattrs={:?}",
                m.mode(),
                m.uid(),
                m.gid(),
                if m.is_dir() { 0 } else { m.size() },
                m.nlink(),
                m.rdev(),
                xattrs(&path),
            ));
            if m.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Sets the extended attribute `name` of `path` (not following symlinks).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::lsetxattr(
            cpath(path).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    check(r as i64).unwrap();
}

/// The extended attributes of `path` (not following symlinks), sorted by name.
pub fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let c = cpath(path);
    let mut names = vec![0u8; 65536];
    // SAFETY: valid C string and buffer.
    let n = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    assert!(n >= 0, "llistxattr {}", path.display());
    let mut out: Vec<(String, Vec<u8>)> = names[..n as usize]
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|name| {
            let cname = CString::new(name).unwrap();
            let mut value = vec![0u8; 65536];
            // SAFETY: valid C strings and buffer.
            let len = unsafe {
                libc::lgetxattr(
                    c.as_ptr(),
                    cname.as_ptr(),
                    value.as_mut_ptr().cast(),
                    value.len(),
                )
            };
            assert!(len >= 0, "lgetxattr {}", path.display());
            value.truncate(len as usize);
            (String::from_utf8_lossy(name).into_owned(), value)
        })
        .collect();
    out.sort();
    out
}
