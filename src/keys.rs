//! Key names: the only Rust code that builds or parses them.
//!
//! Every key of a filesystem starts with `<prefix>:`; nothing outside that space is ever
//! touched. The Lua scripts (`src/lua/prelude.lua`) build the same names from the same prefix,
//! and `docs/design.md` describes the layout. Inodes are stored 64 to a hash (see
//! [`INODES_PER_BUCKET`]) because a key per inode costs more Redis memory than the inode itself.

/// Inode records per `P:i:<bucket>` hash. Small enough that the hash stays a compact listpack
/// under Redis's default `hash-max-listpack-entries` (128).
pub const INODES_PER_BUCKET: u64 = 64;

/// The key names of one filesystem.
#[derive(Clone, Debug)]
pub struct Keys {
    /// The prefix followed by `:`.
    base: String,
}

impl Keys {
    /// Key names for the filesystem stored under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            base: format!("{prefix}:"),
        }
    }

    /// The prefix with its trailing `:`, as the scripts receive it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The prefix without the trailing `:`.
    pub fn prefix(&self) -> &str {
        &self.base[..self.base.len() - 1]
    }

    /// A SCAN MATCH pattern for every key of this filesystem, glob characters escaped.
    pub fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.base.len() + 1);
        for c in self.base.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('*');
        pattern
    }

    /// `P:meta`: format version, block size, codec, uuid, state.
    pub fn meta(&self) -> String {
        format!("{}meta", self.base)
    }

    /// `P:stat`: inode and block counters for statfs.
    pub fn stat(&self) -> String {
        format!("{}stat", self.base)
    }

    /// `P:next:blk`: the block id counter.
    pub fn next_block(&self) -> String {
        format!("{}next:blk", self.base)
    }

    /// `P:next:sid`: the session id counter.
    pub fn next_session(&self) -> String {
        format!("{}next:sid", self.base)
    }

    /// The hash holding the record of `ino`, and the field within it.
    pub fn inode(&self, ino: u64) -> (String, u64) {
        (
            format!("{}i:{}", self.base, ino / INODES_PER_BUCKET),
            ino % INODES_PER_BUCKET,
        )
    }

    /// `P:d:<ino>`: a directory's entries, name → type letter and inode number.
    pub fn dir(&self, ino: u64) -> String {
        format!("{}d:{ino}", self.base)
    }

    /// `P:m:<ino>`: a file's block map, block index → block id.
    pub fn map(&self, ino: u64) -> String {
        format!("{}m:{ino}", self.base)
    }

    /// `P:b:<id>`: one block.
    pub fn block(&self, id: u64) -> String {
        format!("{}b:{id}", self.base)
    }

    /// `P:x:<ino>`: extended attributes.
    pub fn xattrs(&self, ino: u64) -> String {
        format!("{}x:{ino}", self.base)
    }

    /// `P:l:<ino>`: a symlink's target.
    pub fn symlink(&self, ino: u64) -> String {
        format!("{}l:{ino}", self.base)
    }

    /// `P:events`: the Pub/Sub channel of change events.
    pub fn events(&self) -> String {
        format!("{}events", self.base)
    }

    /// `P:freeing`: inodes whose large block maps are being freed in the background.
    pub fn freeing(&self) -> String {
        format!("{}freeing", self.base)
    }

    /// `P:sessions`: live mounts, scored by their last heartbeat (ms since the epoch).
    pub fn sessions(&self) -> String {
        format!("{}sessions", self.base)
    }

    /// `P:session:<sid>`: what a mount says of itself (host, pid, mount point, version).
    pub fn session_info(&self, sid: u64) -> String {
        format!("{}session:{sid}", self.base)
    }

    /// `P:session:<sid>:replies`: recent replies of the session's scripts, so that a retry after
    /// a lost connection does not run a change twice.
    pub fn session_replies(&self, sid: u64) -> String {
        format!("{}session:{sid}:replies", self.base)
    }

    /// `P:session:<sid>:held`: unlinked inodes that mount still holds open.
    pub fn session_held(&self, sid: u64) -> String {
        format!("{}session:{sid}:held", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_prefix() {
        let keys = Keys::new("skx");
        assert_eq!(keys.meta(), "skx:meta");
        assert_eq!(keys.inode(1), ("skx:i:0".to_string(), 1));
        assert_eq!(keys.inode(130), ("skx:i:2".to_string(), 2));
        assert_eq!(keys.block(7), "skx:b:7");
        assert_eq!(keys.prefix(), "skx");
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(Keys::new("a*b").scan_pattern(), "a\\*b:*");
        // `skx:*` can never match `skx2:...`.
        assert_eq!(Keys::new("skx").scan_pattern(), "skx:*");
    }
}
