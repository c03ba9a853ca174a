//! What a Redis server says of itself (INFO), and the checks a mount makes before trusting it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::error::Error;
use crate::store::Store;

/// The INFO fields redisfs cares about.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// `redis_version`.
    pub version: String,
    /// `maxmemory_policy`.
    pub maxmemory_policy: String,
    /// Whether the server is a replica (`role:slave`).
    pub is_replica: bool,
    /// For a replica, whether it is linked to its primary (`master_link_status:up`), which
    /// means it has its primary's data; always true of a primary.
    pub synced: bool,
    /// `maxmemory` (0: unlimited).
    pub maxmemory: u64,
    /// `total_system_memory` of the server's machine.
    pub total_system_memory: u64,
    /// `used_memory`.
    pub used_memory: u64,
    /// `run_id`: tells two connections to one server from connections to two.
    pub run_id: String,
    /// `connected_slaves`: replicas linked to this server now.
    pub replicas: u64,
    /// `master_replid`: the replication history the server is on (a new one when a replica
    /// is promoted or a primary restarts).
    pub replication_id: String,
    /// `cluster_enabled`: the server is a node of a Redis Cluster.
    pub cluster: bool,
}

impl ServerInfo {
    /// Reads INFO from the server, or from every primary of a cluster (see
    /// [`ServerInfo::of_cluster`]).
    pub async fn read(store: &Store) -> Result<ServerInfo, Error> {
        let info = redis::cmd("INFO")
            .arg("server")
            .arg("memory")
            .arg("replication")
            .arg("cluster")
            .clone();
        let primaries = (store.primaries().await).map_err(store.failed("CLUSTER NODES"))?;
        let mut each = Vec::new();
        for primary in &primaries {
            let text: String = match primary {
                Some(address) => store.cmd_on(&info, address).await,
                None => store.cmd(&info).await,
            }
            .map_err(store.failed("INFO"))?;
            each.push(ServerInfo::parse(&text));
        }
        Ok(match <[ServerInfo; 1]>::try_from(each) {
            Ok([server]) => server,
            Err(primaries) => ServerInfo::of_cluster(primaries),
        })
    }

    /// What a cluster's primaries say, as one server: the oldest version, a policy that may
    /// evict if any may, their memory together, the fewest replicas.
    fn of_cluster(primaries: Vec<ServerInfo>) -> ServerInfo {
        let oldest = (primaries.iter())
            .min_by_key(|p| version_numbers(&p.version))
            .map(|p| p.version.clone())
            .unwrap_or_default();
        let policy = (primaries.iter())
            .find(|p| p.maxmemory_policy.starts_with("allkeys"))
            .or(primaries.first())
            .map(|p| p.maxmemory_policy.clone())
            .unwrap_or_default();
        let capacity = primaries.iter().map(ServerInfo::capacity).sum();
        ServerInfo {
            version: oldest,
            maxmemory_policy: policy,
            is_replica: false,
            synced: true,
            maxmemory: capacity,
            total_system_memory: capacity,
            used_memory: primaries.iter().map(|p| p.used_memory).sum(),
            // Sorted: nodes list the primaries in orders of their own, and one cluster must
            // always say the same (a snapshot tells its source from its target by it).
            run_id: {
                let mut ids: Vec<&str> = primaries.iter().map(|p| p.run_id.as_str()).collect();
                ids.sort_unstable();
                ids.join(",")
            },
            replicas: primaries.iter().map(|p| p.replicas).min().unwrap_or(0),
            replication_id: String::new(),
            cluster: true,
        }
    }

    /// Reads INFO; of a replica still loading its primary's data (right after it started or
    /// was pointed at its primary), waits until it has it, at most `patience`, saying so.
    /// (Before, it looks empty: a mount would find no filesystem there.)
    pub async fn read_synced(store: &Store, patience: Duration) -> Result<ServerInfo, Error> {
        let deadline = Instant::now() + patience;
        let mut said = false;
        loop {
            let info = ServerInfo::read(store).await?;
            if info.synced {
                if said {
                    tracing::info!("{}: replica in sync", store.address);
                }
                return Ok(info);
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    "{} is a replica still not in sync with its primary after {patience:?}: \
                     going on with what it has",
                    store.address
                );
                return Ok(info);
            }
            if !said {
                tracing::warn!(
                    "{} is a replica still syncing with its primary: waiting for its data (at \
                     most {patience:?}, --io-timeout)",
                    store.address
                );
                said = true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Parses INFO's `field:value` lines.
    pub fn parse(text: &str) -> ServerInfo {
        let fields: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.trim_end().split_once(':'))
            .collect();
        let num = |k: &str| fields.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        ServerInfo {
            version: fields.get("redis_version").unwrap_or(&"").to_string(),
            maxmemory_policy: fields
                .get("maxmemory_policy")
                .unwrap_or(&"noeviction")
                .to_string(),
            is_replica: fields.get("role") == Some(&"slave"),
            synced: fields.get("role") != Some(&"slave")
                || fields.get("master_link_status") == Some(&"up"),
            maxmemory: num("maxmemory"),
            total_system_memory: num("total_system_memory"),
            used_memory: num("used_memory"),
            run_id: fields.get("run_id").unwrap_or(&"").to_string(),
            replicas: num("connected_slaves"),
            replication_id: fields.get("master_replid").unwrap_or(&"").to_string(),
            cluster: num("cluster_enabled") == 1,
        }
    }

    /// The memory Redis may use: `maxmemory`, or the machine's memory when unlimited.
    pub fn capacity(&self) -> u64 {
        if self.maxmemory > 0 {
            self.maxmemory
        } else {
            self.total_system_memory
        }
    }

    /// Refuses servers that are too old for the scripts, that write numbers from scripts
    /// wrongly, or that may evict keys.
    pub fn check(&self, address: &str, force: bool) -> Result<(), Error> {
        let (major, minor, patch) = version_numbers(&self.version);
        if major < 7 {
            return Err(Error::RedisTooOld {
                address: address.to_string(),
                version: self.version.clone(),
            });
        }
        // These hand a script's number with eight or more trailing zeros to commands as
        // `1e+08` (redis/redis#13113): a count of exactly 100,000,000 bytes would fail a
        // script half-way.
        if (major, minor) == (7, 2) && patch < 5 {
            return Err(Error::RedisNumbers {
                address: address.to_string(),
                version: self.version.clone(),
            });
        }
        // volatile-* policies only evict keys with a TTL, and redisfs sets none.
        if self.maxmemory_policy.starts_with("allkeys") && !force {
            return Err(Error::EvictingPolicy {
                address: address.to_string(),
                policy: self.maxmemory_policy.clone(),
            });
        }
        Ok(())
    }
}

/// A version's major, minor and patch numbers (0 for what is missing).
fn version_numbers(version: &str) -> (u32, u32, u32) {
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed_and_checked() {
        let info = ServerInfo::parse(
            "# Server\r\nredis_version:7.0.15\r\n# Memory\r\nused_memory:1000\r\nmaxmemory:0\r\n\
             total_system_memory:5000\r\nmaxmemory_policy:allkeys-lru\r\nrole:slave\r\n",
        );
        assert_eq!(info.version, "7.0.15");
        assert!(info.is_replica);
        assert!(
            !info.synced,
            "a replica without a link up has not its primary's data"
        );
        assert!(ServerInfo::parse("role:slave\r\nmaster_link_status:up\r\n").synced);
        assert!(ServerInfo::parse("role:master\r\n").synced);
        assert_eq!(info.capacity(), 5000);
        assert!(info
            .check("x", false)
            .unwrap_err()
            .to_string()
            .contains("allkeys-lru"));
        assert!(info.check("x", true).is_ok());
        let node = |text: &str| ServerInfo::parse(&format!("cluster_enabled:1\r\n{text}"));
        let cluster = ServerInfo::of_cluster(vec![
            node("redis_version:7.0.15\r\nmaxmemory:100\r\nused_memory:10\r\nconnected_slaves:1"),
            node("redis_version:7.2.5\r\nmaxmemory:200\r\nused_memory:20\r\nconnected_slaves:0"),
        ]);
        assert!(cluster.cluster && !cluster.is_replica);
        assert_eq!(cluster.version, "7.0.15");
        assert_eq!((cluster.capacity(), cluster.used_memory), (300, 30));
        assert_eq!(cluster.replicas, 0);
        assert!(cluster.check("x", false).is_ok());
        let numbers_wrong = ServerInfo {
            version: "7.2.4".into(),
            cluster: false,
            ..info.clone()
        };
        assert!(numbers_wrong
            .check("x", true)
            .unwrap_err()
            .to_string()
            .contains("7.2.5"));
        let fixed = ServerInfo {
            version: "7.2.5".into(),
            cluster: false,
            ..info.clone()
        };
        assert!(fixed.check("x", true).is_ok());
        let old = ServerInfo {
            version: "6.2.1".into(),
            ..info
        };
        assert!(old
            .check("x", true)
            .unwrap_err()
            .to_string()
            .contains("6.2.1"));
    }
}
