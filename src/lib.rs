//! redisfs: a shared POSIX filesystem kept entirely in Redis.
//!
//! All file data and metadata live under one key prefix in Redis, so any number of machines
//! can mount the same filesystem, and it can be copied, backed up and checked with Redis's own
//! means. The binaries in `src/bin` only parse arguments and call into this library.
//!
//! # Module map
//!
//! | module | owns |
//! | --- | --- |
//! | [`options`] | command-line options, the Redis connection shared by every binary |
//! | [`command_line`] | the mount's command line as mount(8) and fstab write it (`-o name=value`, the `mount.fuse.redisfs` helper) |
//! | [`store`] | the connection to Redis and the retry policy when it is lost |
//! | [`link`] | where the Redis primary is now (a fixed address, or the one sentinels name) and the connections to it |
//! | [`keys`] | the only Rust code that builds key names |
//! | [`scripts`] | the Lua scripts that make each metadata change atomic |
//! | [`attr`] | the packed inode record and timestamps |
//! | [`meta`] | typed metadata operations, one round trip each; [`meta::calls`]: one typed call per script; [`meta::deferred`]: directories leased to a mount, and the changes it defers in them |
//! | [`codec`] | block compression |
//! | [`blocks`] | block storage and the block cache |
//! | [`wire`] | block writes over connections of their own, without the general client's copies |
//! | [`format`] | creating a filesystem and checking one before use |
//! | [`server`] | what a Redis server says of itself, and the checks made on it |
//! | [`session`] | a mount's registration, heartbeat, held inodes, and expiring dead mounts |
//! | [`events`] | change events between mounts |
//! | [`fs`] | the filesystem operations and the FUSE adapter |
//! | [`local_redis`] | a private redis-server when none is reachable |
//! | [`metrics`] | a mount's measurements, served as Prometheus text |
//! | [`mount`] | mounting, serving and unmounting; a core without the kernel ([`mount::Headless`]) |
//! | [`scan`] | walking a filesystem's keys with SCAN |
//! | [`freeze`] | holding a filesystem still for a point-in-time copy |
//! | [`tool`] | what the tools share: options, connection, progress, summaries |
//! | [`dump`] | `redisfs-dump` and `redisfs-restore`: portable backups, local trees |
//! | [`admin`] | `redisfs-admin`: the filesystems of a server, one's status and mounts, settings, removal |
//! | [`fsck`] | `redisfs-fsck`: checks and repairs |
//! | [`snapshot`] | `redisfs-snapshot`: a point-in-time copy under another prefix |
//! | [`error`] | the error policy: errno-shaped [`error::FsError`], typed [`error::Error`] |

pub mod admin;
pub mod attr;
pub mod blocks;
pub mod codec;
pub mod command_line;
pub mod dump;
pub mod error;
pub mod events;
pub mod format;
pub mod freeze;
pub mod fs;
pub mod fsck;
pub mod keys;
pub mod link;
pub mod local_redis;
pub mod meta;
pub mod metrics;
pub mod mount;
pub mod options;
pub mod scan;
pub mod scripts;
pub mod server;
pub mod session;
pub mod snapshot;
pub mod store;
pub mod tool;
pub mod wire;
