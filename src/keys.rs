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

    /// `P:next:ino`: the inode number counter.
    pub fn next_inode(&self) -> String {
        format!("{}next:ino", self.base)
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

    /// `P:free:<ino>`: the block map of a large deleted file, freed in the background.
    pub fn freed_map(&self, ino: u64) -> String {
        format!("{}free:{ino}", self.base)
    }

    /// `P:lk:<ino>`: the byte-range locks held on an inode.
    pub fn locks(&self, ino: u64) -> String {
        format!("{}lk:{ino}", self.base)
    }

    /// `P:freeze`: set while a snapshot or dump holds the filesystem still (see `freeze.rs`).
    pub fn freeze(&self) -> String {
        format!("{}freeze", self.base)
    }

    /// `P:freeze:acks`: the sessions that have stored their buffers and hold their changes.
    pub fn freeze_acks(&self) -> String {
        format!("{}freeze:acks", self.base)
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

    /// `P:lease`: directories leased to a session, directory → session id.
    pub fn lease(&self) -> String {
        format!("{}lease", self.base)
    }

    /// `P:session:<sid>:leases`: the directories leased to that session.
    pub fn session_leases(&self, sid: u64) -> String {
        format!("{}session:{sid}:leases", self.base)
    }

    /// `P:session:<sid>:open`: inodes that mount has open, with a count (see
    /// `src/lua/prelude.lua`).
    pub fn session_open(&self, sid: u64) -> String {
        format!("{}session:{sid}:open", self.base)
    }

    /// `P:session:<sid>:held`: unlinked inodes that mount still holds open.
    pub fn session_held(&self, sid: u64) -> String {
        format!("{}session:{sid}:held", self.base)
    }
}

/// What a key of a filesystem is, read back from its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `meta`
    Meta,
    /// `stat`
    Stat,
    /// `next:ino`, `next:blk`, `next:sid`
    Counter,
    /// `i:<bucket>`
    Inodes(u64),
    /// `d:<ino>`
    Dir(u64),
    /// `m:<ino>`
    Map(u64),
    /// `b:<id>`
    Block(u64),
    /// `x:<ino>`
    Xattrs(u64),
    /// `l:<ino>`
    Symlink(u64),
    /// `free:<ino>`
    FreedMap(u64),
    /// `freeing`
    Freeing,
    /// `lk:<ino>`
    Locks(u64),
    /// `sessions`
    Sessions,
    /// `session:<sid>` and its `:held`, `:open`, `:locks`, `:leases`, `:replies`
    Session(u64),
    /// `lease`
    Leases,
    /// `freeze`, `freeze:acks`
    Freeze,
}

impl KeyKind {
    /// The Redis type a key of this kind must have.
    pub fn redis_type(self) -> &'static str {
        match self {
            KeyKind::Meta
            | KeyKind::Stat
            | KeyKind::Inodes(_)
            | KeyKind::Dir(_)
            | KeyKind::Map(_)
            | KeyKind::Xattrs(_)
            | KeyKind::FreedMap(_)
            | KeyKind::Locks(_)
            | KeyKind::Leases => "hash",
            KeyKind::Counter | KeyKind::Block(_) | KeyKind::Symlink(_) => "string",
            KeyKind::Freeing => "set",
            KeyKind::Sessions => "zset",
            // A session's info, open files and reply ring are hashes, its held inodes and
            // locks sets.
            KeyKind::Session(_) | KeyKind::Freeze => "",
        }
    }

    /// Whether the key belongs to the filesystem's content (what a snapshot copies), rather
    /// than to the mounts using it.
    pub fn is_content(self) -> bool {
        !matches!(
            self,
            KeyKind::Locks(_)
                | KeyKind::Sessions
                | KeyKind::Session(_)
                | KeyKind::Freeze
                | KeyKind::Leases
        )
    }
}

impl Keys {
    /// The kind of `key`, or `None` if it is not a name this format uses (or not under the
    /// prefix at all).
    pub fn classify(&self, key: &[u8]) -> Option<KeyKind> {
        let rest = std::str::from_utf8(key.strip_prefix(self.base.as_bytes())?).ok()?;
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0')))
            .then(|| s.parse().ok())
            .flatten()
        };
        Some(match rest {
            "meta" => KeyKind::Meta,
            "stat" => KeyKind::Stat,
            "next:ino" | "next:blk" | "next:sid" => KeyKind::Counter,
            "freeing" => KeyKind::Freeing,
            "sessions" => KeyKind::Sessions,
            "lease" => KeyKind::Leases,
            "freeze" | "freeze:acks" => KeyKind::Freeze,
            _ => {
                let (kind, arg) = rest.split_once(':')?;
                if kind == "session" {
                    let sid = arg.split_once(':').map_or(arg, |(sid, part)| {
                        if matches!(part, "held" | "open" | "locks" | "leases" | "replies") {
                            sid
                        } else {
                            ""
                        }
                    });
                    return number(sid).map(KeyKind::Session);
                }
                let n = number(arg)?;
                match kind {
                    "i" => KeyKind::Inodes(n),
                    "d" => KeyKind::Dir(n),
                    "m" => KeyKind::Map(n),
                    "b" => KeyKind::Block(n),
                    "x" => KeyKind::Xattrs(n),
                    "l" => KeyKind::Symlink(n),
                    "free" => KeyKind::FreedMap(n),
                    "lk" => KeyKind::Locks(n),
                    _ => return None,
                }
            }
        })
    }

    /// The same key under another filesystem's prefix.
    pub fn rebase(&self, key: &[u8], to: &Keys) -> Option<Vec<u8>> {
        let rest = key.strip_prefix(self.base.as_bytes())?;
        Some([to.base.as_bytes(), rest].concat())
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
    fn keys_are_classified() {
        let keys = Keys::new("skx");
        assert_eq!(keys.classify(b"skx:i:3"), Some(KeyKind::Inodes(3)));
        assert_eq!(keys.classify(b"skx:b:70"), Some(KeyKind::Block(70)));
        assert_eq!(keys.classify(b"skx:lease"), Some(KeyKind::Leases));
        assert_eq!(
            keys.classify(b"skx:session:4:leases"),
            Some(KeyKind::Session(4))
        );
        assert!(!KeyKind::Leases.is_content());
        assert_eq!(
            keys.classify(b"skx:session:4:held"),
            Some(KeyKind::Session(4))
        );
        assert_eq!(keys.classify(b"skx:session:4:other"), None);
        assert_eq!(keys.classify(b"skx:b:07"), None);
        assert_eq!(keys.classify(b"skx:zz"), None);
        assert_eq!(keys.classify(b"skx2:meta"), None);
        assert_eq!(
            keys.rebase(b"skx:d:1", &Keys::new("copy")),
            Some(b"copy:d:1".to_vec())
        );
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(Keys::new("a*b").scan_pattern(), "a\\*b:*");
        // `skx:*` can never match `skx2:...`.
        assert_eq!(Keys::new("skx").scan_pattern(), "skx:*");
    }
}
