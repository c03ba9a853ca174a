//! The error policy of the core.
//!
//! Two kinds of failure exist and they never mix:
//!
//! * [`FsError`] is what a filesystem operation answers the kernel: a `Copy` value that maps
//!   one-to-one to an errno. Operations log the cause (a Redis error, a corrupt key) where it
//!   happens and hand the kernel only the errno.
//! * [`Error`] is what the library's entry points (mount, format checks, connection set-up)
//!   return: typed, with the key, prefix or URL at fault named in the message, its cause
//!   included. Binaries print it as one line (`tool::fail`) and exit non-zero; nothing in the
//!   library panics on bad input.

use std::fmt;

/// A failed filesystem operation, as the errno the kernel will see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FsError {
    /// `EPERM`: the operation is not allowed on this kind of inode.
    NotPermitted,
    /// `ENOENT`: no such entry or inode.
    NotFound,
    /// `EIO`: Redis failed or held something that does not decode.
    Io,
    /// `E2BIG`: an extended attribute value is too large.
    TooBig,
    /// `EBADF`: an unknown file handle.
    BadHandle,
    /// `EAGAIN`: a compare-and-swap lost a race; the caller retries.
    Again,
    /// `EACCES`: permission denied.
    Access,
    /// `EEXIST`: the name is taken.
    Exists,
    /// `EXDEV`: not on this filesystem.
    CrossDevice,
    /// `ENOTDIR`: a directory was expected.
    NotDir,
    /// `EISDIR`: a non-directory was expected.
    IsDir,
    /// `EINVAL`: an argument makes no sense (e.g. moving a directory into itself).
    Invalid,
    /// `EFBIG`: the file would grow past the largest size the format stores.
    FileTooBig,
    /// `ENOSPC`: Redis refused to store more.
    NoSpace,
    /// `EROFS`: the mount is read-only (by option or because Redis is a replica).
    ReadOnly,
    /// `EMLINK`: too many hard links.
    TooManyLinks,
    /// `ERANGE`: a buffer is too small or an xattr name too long.
    Range,
    /// `ENAMETOOLONG`: a name is longer than 255 bytes.
    NameTooLong,
    /// `ENOSYS`: not implemented.
    NotImplemented,
    /// `ENOTEMPTY`: the directory still has entries.
    NotEmpty,
    /// `ENODATA`: no such extended attribute.
    NoData,
    /// `EOPNOTSUPP`: not supported by this filesystem.
    NotSupported,
    /// `ENXIO`: no data or hole past this offset (lseek).
    NoSuchOffset,
    /// `EINTR`: a signal interrupted a wait (for a lock).
    Interrupted,
    /// `ESTALE`: the kernel acted on a name this mount had told it of, which changed since;
    /// an open then looks the name up again and retries.
    Stale,
}

impl FsError {
    /// The errno this error stands for.
    pub fn errno(self) -> i32 {
        match self {
            FsError::NotPermitted => libc::EPERM,
            FsError::NotFound => libc::ENOENT,
            FsError::Io => libc::EIO,
            FsError::TooBig => libc::E2BIG,
            FsError::BadHandle => libc::EBADF,
            FsError::Again => libc::EAGAIN,
            FsError::Access => libc::EACCES,
            FsError::Exists => libc::EEXIST,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Invalid => libc::EINVAL,
            FsError::FileTooBig => libc::EFBIG,
            FsError::NoSpace => libc::ENOSPC,
            FsError::ReadOnly => libc::EROFS,
            FsError::TooManyLinks => libc::EMLINK,
            FsError::Range => libc::ERANGE,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::NotImplemented => libc::ENOSYS,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NoData => libc::ENODATA,
            FsError::NotSupported => libc::EOPNOTSUPP,
            FsError::NoSuchOffset => libc::ENXIO,
            FsError::Interrupted => libc::EINTR,
            FsError::Stale => libc::ESTALE,
        }
    }

    /// The error for an errno returned by a metadata script; unknown values become `EIO`.
    pub fn from_errno(errno: i64) -> FsError {
        const ALL: [FsError; 25] = [
            FsError::NotPermitted,
            FsError::NotFound,
            FsError::Io,
            FsError::TooBig,
            FsError::BadHandle,
            FsError::Again,
            FsError::Access,
            FsError::Exists,
            FsError::CrossDevice,
            FsError::NotDir,
            FsError::IsDir,
            FsError::Invalid,
            FsError::FileTooBig,
            FsError::NoSpace,
            FsError::ReadOnly,
            FsError::TooManyLinks,
            FsError::Range,
            FsError::NameTooLong,
            FsError::NotImplemented,
            FsError::NotEmpty,
            FsError::NoData,
            FsError::NotSupported,
            FsError::NoSuchOffset,
            FsError::Interrupted,
            FsError::Stale,
        ];
        ALL.into_iter()
            .find(|e| i64::from(e.errno()) == errno)
            .unwrap_or(FsError::Io)
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", std::io::Error::from_raw_os_error(self.errno()))
    }
}

impl std::error::Error for FsError {}

/// A failure of one of the library's entry points, naming what is at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Redis address could not be parsed or is inconsistent.
    #[error("bad Redis address {address}: {reason}")]
    BadAddress {
        /// The address as given, password removed.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// Redis could not be reached or refused a command.
    #[error("Redis at {address}: {context}: {source}")]
    Redis {
        /// Where Redis was expected, password removed.
        address: String,
        /// What was being done.
        context: String,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// The prefix holds keys, but no redisfs filesystem.
    #[error(
        "prefix '{prefix}' holds keys that are not a redisfs filesystem (for example '{example}'); \
         choose another --prefix"
    )]
    NotAFilesystem {
        /// The prefix.
        prefix: String,
        /// One of the keys found.
        example: String,
    },
    /// The filesystem keeps its metadata under the names of format 1.
    #[error(
        "filesystem '{prefix}' has the key layout of format 1: convert it once with \
         `redisfs-admin upgrade --prefix {prefix}` while nothing mounts it"
    )]
    Format1 {
        /// The prefix.
        prefix: String,
    },
    /// The prefix holds no keys at all.
    #[error("there is no filesystem under prefix '{prefix}' (a writable mount of an empty prefix creates one)")]
    NoFilesystem {
        /// The prefix.
        prefix: String,
    },
    /// A key of the filesystem has the wrong type or an undecodable value.
    #[error("key '{key}' is corrupt: {reason}")]
    CorruptKey {
        /// The full key name.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The filesystem was written by a newer version of the format.
    #[error(
        "filesystem '{prefix}' has format version {found}; this redisfs understands up to {supported}"
    )]
    FormatVersion {
        /// The prefix.
        prefix: String,
        /// The version stored in the filesystem.
        found: String,
        /// The newest version this build handles.
        supported: u32,
    },
    /// A restore into the prefix never finished.
    #[error("filesystem '{prefix}' is incomplete (state '{state}'): a restore did not finish; run redisfs-fsck or restore again")]
    Incomplete {
        /// The prefix.
        prefix: String,
        /// The state recorded in its meta key.
        state: String,
    },
    /// Redis may evict keys, which would destroy files.
    #[error(
        "Redis at {address} uses maxmemory-policy '{policy}', which evicts keys and would destroy files; \
         set it to noeviction (or a volatile-* policy) or pass --force"
    )]
    EvictingPolicy {
        /// Where Redis is.
        address: String,
        /// The configured policy.
        policy: String,
    },
    /// Redis is too old for the scripts.
    #[error("Redis at {address} is version {version}; redisfs needs 7.0 or newer")]
    RedisTooOld {
        /// Where Redis is.
        address: String,
        /// The version it reported.
        version: String,
    },
    /// Redis writes some numbers of scripts wrongly.
    #[error(
        "Redis at {address} is version {version}, which passes some numbers from scripts to \
         commands wrongly (redis/redis#13113); use 7.2.5 or newer, or 7.0"
    )]
    RedisNumbers {
        /// Where Redis is.
        address: String,
        /// The version it reported.
        version: String,
    },
    /// The mount point is unusable.
    #[error("mount point {path}: {reason}")]
    MountPoint {
        /// The path given.
        path: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A dump file is unreadable, damaged or of an unknown version.
    #[error("dump {file}: record {record} at byte {offset}: {reason}")]
    BadDump {
        /// The file (or `-` for standard input).
        file: String,
        /// The record at fault (1 is the header).
        record: u64,
        /// Its offset in the uncompressed stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A local file or directory could not be read or written.
    #[error("{path}: {reason}")]
    Local {
        /// The path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Something else is using the filesystem in a way that excludes this operation.
    #[error("{0}")]
    Busy(String),
    /// A setting or argument is invalid.
    #[error("invalid setting: {0}")]
    Setting(String),
    /// The operating system refused something the program needs to run (a thread, a pipe, a
    /// process).
    #[error("{context}: {source}")]
    System {
        /// What was being done.
        context: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The mount started in the background ended before it was ready.
    #[error("the background mount failed ({0})")]
    BackgroundMount(String),
    /// A filesystem operation a tool needs failed (the cause is logged where it happened).
    #[error("{what}: {source}")]
    Operation {
        /// What was being done.
        what: String,
        /// The errno it failed with.
        #[source]
        source: FsError,
    },
    /// One stage of a tool's pipeline (reading, writing) stopped; its own error says why.
    #[error("{0}")]
    Pipeline(String),
    /// A dump's writer stopped taking records: its own error is the cause, reported instead.
    #[error("the dump's writer stopped")]
    WriterStopped,
    /// Starting or talking to a private redis-server failed.
    #[error("private redis-server: {0}")]
    LocalRedis(String),
    /// The kernel refused the mount or the FUSE session failed.
    #[error("FUSE: {context}: {source}")]
    Fuse {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_round_trips() {
        for errno in [libc::ENOENT, libc::EEXIST, libc::ENOTEMPTY, libc::ENODATA] {
            assert_eq!(FsError::from_errno(i64::from(errno)).errno(), errno);
        }
        assert_eq!(FsError::from_errno(9999), FsError::Io);
    }
}
