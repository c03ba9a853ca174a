//! A private redis-server for a mount when no Redis was named and none is running locally.
//!
//! It listens only on a Unix socket in the state directory, persists with AOF there, and is
//! stopped (cleanly, flushing its AOF) when the mount that started it ends.

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use redis::{ConnectionAddr, IntoConnectionInfo};

use crate::error::Error;
use crate::options::{describe, Place, RedisTarget, DEFAULT_HOST, DEFAULT_PORT};

/// A redis-server started by this process.
pub struct LocalRedis {
    child: Option<Child>,
    socket: PathBuf,
}

/// Whether something accepts connections on 127.0.0.1:6379.
pub fn default_server_reachable() -> bool {
    let addr: SocketAddr = format!("{DEFAULT_HOST}:{DEFAULT_PORT}")
        .parse()
        .expect("a valid literal address");
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok()
}

/// The default state directory: /var/lib/redisfs for root, else under XDG_STATE_HOME.
pub fn default_state_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/redisfs");
    }
    std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir)
        .join("redisfs")
}

fn socket_alive(socket: &Path) -> bool {
    std::os::unix::net::UnixStream::connect(socket).is_ok()
}

impl LocalRedis {
    /// Starts redis-server with its data in `dir`, or attaches to one already running there.
    pub fn start(dir: &Path) -> Result<LocalRedis, Error> {
        let fail = |what: String| Error::LocalRedis(what);
        std::fs::create_dir_all(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
        let socket = dir.join("redis.sock");
        if socket_alive(&socket) {
            eprintln!(
                "redisfs: using the private redis-server already running at {}",
                socket.display()
            );
            return Ok(LocalRedis {
                child: None,
                socket,
            });
        }
        let log = dir.join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&socket)
            .arg("--unixsocketperm")
            .arg("700")
            .arg("--dir")
            .arg(dir)
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("everysec")
            .arg("--save")
            .arg("")
            .arg("--maxmemory-policy")
            .arg("noeviction")
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: a Ctrl-C meant for the mount must not kill Redis before the
        // mount has stored its buffered writes.
        cmd.process_group(0);
        let mut child = cmd.spawn().map_err(|e| {
            fail(if e.kind() == std::io::ErrorKind::NotFound {
                "no Redis is reachable at 127.0.0.1:6379 and redis-server is not installed; \
                 install it (apt-get install redis-server) or name a server with --redis URL"
                    .to_string()
            } else {
                format!("cannot start redis-server: {e}")
            })
        })?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket_alive(&socket) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(fail(format!(
                    "redis-server exited ({status}); see {}",
                    log.display()
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(fail(format!(
                    "redis-server did not start; see {}",
                    log.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "redisfs: no Redis at {DEFAULT_HOST}:{DEFAULT_PORT}; started a private redis-server \
             (data in {}, socket {})",
            dir.display(),
            socket.display()
        );
        Ok(LocalRedis {
            child: Some(child),
            socket,
        })
    }

    /// Where to connect.
    pub fn target(&self) -> Result<RedisTarget, Error> {
        let info = ConnectionAddr::Unix(self.socket.clone())
            .into_connection_info()
            .map_err(|e| Error::LocalRedis(e.to_string()))?;
        Ok(RedisTarget {
            display: describe(&info),
            place: Place::Addresses(vec![info]),
            explicit: false,
            certificates: None,
        })
    }

    /// Stops the server if this process started it (SIGTERM: Redis flushes its AOF and exits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill with a valid pid and signal has no memory effects.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
