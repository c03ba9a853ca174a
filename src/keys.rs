//! Key names: the only Rust code that builds or parses them.
//!
//! A filesystem's metadata keys start with `{<prefix>}:`, its blocks' with `<prefix>:b:`;
//! nothing outside those two spaces is ever touched. On a Redis Cluster the braces put every
//! metadata key in one hash slot, so that a script can change any of them at once, while each
//! block's slot comes from its whole name, so that blocks spread over every node. The Lua
//! scripts (`src/lua/prelude.lua`) build the same names from the same prefix, and
//! `docs/design.md` describes the layout. Inodes are stored 64 to a hash (see
//! [`INODES_PER_BUCKET`]) because a key per inode costs more Redis memory than the inode itself.

/// Inode records per `P:i:<bucket>` hash. Small enough that the hash stays a compact listpack
/// under Redis's default `hash-max-listpack-entries` (128).
pub const INODES_PER_BUCKET: u64 = 64;

/// One kind of key, named once for Rust and for the scripts: `{<prefix>}:<before><n><after>`
/// for the kinds numbered by an inode, bucket or session, `{<prefix>}:<before>` for the single
/// keys, and `<prefix>:<before><n>` for blocks (the one `spread` family). The scripts' prelude
/// gets a builder of each, named `lua` (see [`lua_builders`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Family {
    /// The Lua name: a function of the number, or a constant for a single key.
    pub lua: &'static str,
    /// What follows the prefix, up to the number (the whole name, for a single key).
    pub before: &'static str,
    /// What follows the number; `None` for a single key.
    pub after: Option<&'static str>,
    /// Keys spread over a cluster's slots by their whole name (blocks), rather than kept in
    /// the filesystem's metadata slot.
    pub spread: bool,
}

impl Family {
    const fn single(lua: &'static str, name: &'static str) -> Family {
        Family {
            lua,
            before: name,
            after: None,
            spread: false,
        }
    }

    const fn numbered(lua: &'static str, before: &'static str, after: &'static str) -> Family {
        Family {
            lua,
            before,
            after: Some(after),
            spread: false,
        }
    }

    const fn spread(self) -> Family {
        Family {
            spread: true,
            ..self
        }
    }

    /// The key of this single family under `base` (the prefix and its `:`).
    fn at(&self, base: &str) -> String {
        debug_assert!(self.after.is_none(), "{} is numbered", self.lua);
        format!("{base}{}", self.before)
    }

    /// The key numbered `n` of this family under `base`.
    fn of(&self, base: &str, n: u64) -> String {
        format!("{base}{}{n}{}", self.before, self.after.unwrap_or_default())
    }
}

/// `P:meta`: format version, block size, codec, uuid, state.
pub const META: Family = Family::single("META_KEY", "meta");
/// `P:stat`: inode and block counters for statfs.
pub const STAT: Family = Family::single("STAT_KEY", "stat");
/// `P:next:blk`: the block id counter.
pub const NEXT_BLOCK: Family = Family::single("NEXT_BLOCK_KEY", "next:blk");
/// `P:next:ino`: the inode number counter.
pub const NEXT_INODE: Family = Family::single("NEXT_INODE_KEY", "next:ino");
/// `P:next:sid`: the session id counter.
pub const NEXT_SESSION: Family = Family::single("NEXT_SESSION_KEY", "next:sid");
/// `P:next:issuer`: the server (its replication id) each counter last handed out numbers on,
/// `inode`/`block`/`session` → id; a counter moves far ahead on a server that is not that one
/// (see `issue` in `src/lua/prelude.lua`).
pub const ISSUERS: Family = Family::single("ISSUERS_KEY", "next:issuer");
/// `P:i:<bucket>`: the records of inodes `bucket * 64 ..`, field `ino % 64`.
pub const INODES: Family = Family::numbered("inodes_key", "i:", "");
/// `P:d:<ino>`: a directory's entries, name → type letter and inode number.
pub const DIR: Family = Family::numbered("dir_key", "d:", "");
/// `P:m:<ino>`: a file's block map, block index → block id.
pub const MAP: Family = Family::numbered("map_key", "m:", "");
/// `<prefix>:b:<id>` (no braces: see the module's note): one block.
pub const BLOCK: Family = Family::numbered("block_key", "b:", "").spread();
/// `P:x:<ino>`: extended attributes.
pub const XATTRS: Family = Family::numbered("xattrs_key", "x:", "");
/// `P:l:<ino>`: a symlink's target.
pub const SYMLINK: Family = Family::numbered("symlink_key", "l:", "");
/// `P:free:<ino>`: the block map of a large deleted file, freed in the background.
pub const FREED_MAP: Family = Family::numbered("freed_map_key", "free:", "");
/// `P:freeing`: inodes whose large block maps are being freed in the background.
pub const FREEING: Family = Family::single("FREEING_KEY", "freeing");
/// `P:garbage`: blocks no map names any more, waiting to be deleted in the background, block
/// id → `c` (counted in `stored_bytes`), `u` (never counted) or `w` (weighed: its bytes left
/// the count; see `src/lua/garbage.lua`).
pub const GARBAGE: Family = Family::single("GARBAGE_KEY", "garbage");
/// `P:lk:<ino>`: the byte-range locks held on an inode.
pub const LOCKS: Family = Family::numbered("locks_key", "lk:", "");
/// `P:events`: the Pub/Sub channel of change events.
pub const EVENTS: Family = Family::single("EVENTS_KEY", "events");
/// `P:events:probes`: the Pub/Sub channel on which mounts time the delivery of events.
pub const EVENT_PROBES: Family = Family::single("EVENT_PROBES_KEY", "events:probes");
/// `P:freeze`: set while a snapshot or dump holds the filesystem still (see `freeze.rs`).
pub const FREEZE: Family = Family::single("FREEZE_KEY", "freeze");
/// `P:freeze:acks`: the sessions that have stored their buffers and hold their changes.
pub const FREEZE_ACKS: Family = Family::single("FREEZE_ACKS_KEY", "freeze:acks");
/// `P:sessions`: live mounts, scored by their last heartbeat (ms since the epoch).
pub const SESSIONS: Family = Family::single("SESSIONS_KEY", "sessions");
/// `P:lease`: directories leased to a session, directory → session id.
pub const LEASE: Family = Family::single("LEASE_KEY", "lease");
/// `P:session:<sid>`: what a mount says of itself (host, pid, mount point, version).
pub const SESSION: Family = Family::numbered("session_key", "session:", "");
/// `P:session:<sid>:replies`: recent replies of the session's scripts, so that a retry after
/// a lost connection does not run a change twice.
pub const SESSION_REPLIES: Family = Family::numbered("session_replies_key", "session:", ":replies");
/// `P:session:<sid>:leases`: the directories leased to that session.
pub const SESSION_LEASES: Family = Family::numbered("session_leases_key", "session:", ":leases");
/// `P:session:<sid>:open`: inodes that mount has open, with a count (see
/// `src/lua/prelude.lua`).
pub const SESSION_OPEN: Family = Family::numbered("session_open_key", "session:", ":open");
/// `P:session:<sid>:held`: unlinked inodes that mount still holds open.
pub const SESSION_HELD: Family = Family::numbered("session_held_key", "session:", ":held");
/// `P:session:<sid>:locks`: the inodes that mount holds byte-range locks on.
pub const SESSION_LOCKS: Family = Family::numbered("session_locks_key", "session:", ":locks");

/// Every kind of key a filesystem has.
pub const FAMILIES: &[Family] = &[
    META,
    STAT,
    NEXT_BLOCK,
    NEXT_INODE,
    NEXT_SESSION,
    ISSUERS,
    INODES,
    DIR,
    MAP,
    BLOCK,
    XATTRS,
    SYMLINK,
    FREED_MAP,
    FREEING,
    GARBAGE,
    LOCKS,
    EVENTS,
    EVENT_PROBES,
    FREEZE,
    FREEZE_ACKS,
    SESSIONS,
    LEASE,
    SESSION,
    SESSION_REPLIES,
    SESSION_LEASES,
    SESSION_OPEN,
    SESSION_HELD,
    SESSION_LOCKS,
];

/// Lua defining a builder of every key family from the prefix `P`, for the scripts' prelude:
/// the only place the scripts' key names come from. Numbers go in through `decimal`: Lua writes
/// a number past 10^14 as `1e+14` (to 14 digits), which would name another key.
///
/// Blocks get no builder: a script never touches a block, which on a cluster lives on another
/// node than the metadata (the caller stores blocks before the script that names them, and
/// deletes them after, see `src/lua/garbage.lua`).
pub fn lua_builders() -> String {
    let builders = FAMILIES
        .iter()
        .filter(|f| !f.spread)
        .map(|f| match f.after {
            None => format!("local {} = P .. '{}'\n", f.lua, f.before),
            Some("") => format!(
                "local function {}(n) return P .. '{}' .. decimal(n) end\n",
                f.lua, f.before
            ),
            Some(after) => format!(
                "local function {}(n) return P .. '{}' .. decimal(n) .. '{after}' end\n",
                f.lua, f.before
            ),
        });
    std::iter::once(LUA_BASES.to_string())
        .chain(builders)
        .collect()
}

/// The metadata's base from the prefix (`PREFIX`, the scripts' first argument), and a whole
/// number (or a string of one) as its decimal digits, exact to 2^53.
const LUA_BASES: &str = "local P = '{' .. PREFIX .. '}:'\n\
                         local function decimal(n) return string.format('%d', n) end\n";

/// The key names of one filesystem.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    /// `{<prefix>}:`, before every metadata key.
    metadata_base: String,
    /// `<prefix>:`, before every block key.
    spread_base: String,
}

impl Keys {
    /// Key names for the filesystem stored under `prefix`.
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            metadata_base: format!("{{{prefix}}}:"),
            spread_base: format!("{prefix}:"),
        }
    }

    /// The prefix, as the scripts receive it.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn base(&self, family: &Family) -> &str {
        if family.spread {
            &self.spread_base
        } else {
            &self.metadata_base
        }
    }

    fn single(&self, family: Family) -> String {
        family.at(self.base(&family))
    }

    fn numbered(&self, family: Family, n: u64) -> String {
        family.of(self.base(&family), n)
    }

    /// SCAN MATCH patterns that together match every key of this filesystem (its metadata,
    /// then everything under `<prefix>:`), glob characters escaped.
    pub fn scan_patterns(&self) -> [String; 2] {
        [&self.metadata_base, &self.spread_base].map(|base| {
            let mut pattern = String::with_capacity(base.len() + 1);
            for c in base.chars() {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    pattern.push('\\');
                }
                pattern.push(c);
            }
            pattern.push('*');
            pattern
        })
    }

    /// The name a key of this layout had in format 1, before the metadata had its braces
    /// (see `redisfs-admin upgrade`).
    pub fn format_1(&self, key: &str) -> String {
        match key.strip_prefix(&self.metadata_base) {
            Some(rest) => format!("{}{rest}", self.spread_base),
            None => key.to_string(),
        }
    }

    /// A format-1 key's name in this layout (blocks keep theirs), if it is one of this
    /// filesystem's.
    pub fn from_format_1(&self, key: &[u8]) -> Option<Vec<u8>> {
        let rest = key.strip_prefix(self.spread_base.as_bytes())?;
        if rest.starts_with(BLOCK.before.as_bytes()) {
            return Some(key.to_vec());
        }
        Some([self.metadata_base.as_bytes(), rest].concat())
    }

    /// See [`META`].
    pub fn meta(&self) -> String {
        self.single(META)
    }

    /// See [`STAT`].
    pub fn stat(&self) -> String {
        self.single(STAT)
    }

    /// See [`NEXT_BLOCK`].
    pub fn next_block(&self) -> String {
        self.single(NEXT_BLOCK)
    }

    /// See [`NEXT_INODE`].
    pub fn next_inode(&self) -> String {
        self.single(NEXT_INODE)
    }

    /// See [`NEXT_SESSION`].
    pub fn next_session(&self) -> String {
        self.single(NEXT_SESSION)
    }

    /// See [`ISSUERS`].
    pub fn issuers(&self) -> String {
        self.single(ISSUERS)
    }

    /// The hash holding the record of `ino` (see [`INODES`]), and the field within it.
    pub fn inode(&self, ino: u64) -> (String, u64) {
        (
            self.numbered(INODES, ino / INODES_PER_BUCKET),
            ino % INODES_PER_BUCKET,
        )
    }

    /// See [`DIR`].
    pub fn dir(&self, ino: u64) -> String {
        self.numbered(DIR, ino)
    }

    /// See [`MAP`].
    pub fn map(&self, ino: u64) -> String {
        self.numbered(MAP, ino)
    }

    /// See [`BLOCK`].
    pub fn block(&self, id: u64) -> String {
        self.numbered(BLOCK, id)
    }

    /// See [`XATTRS`].
    pub fn xattrs(&self, ino: u64) -> String {
        self.numbered(XATTRS, ino)
    }

    /// See [`SYMLINK`].
    pub fn symlink(&self, ino: u64) -> String {
        self.numbered(SYMLINK, ino)
    }

    /// See [`EVENTS`].
    pub fn events(&self) -> String {
        self.single(EVENTS)
    }

    /// See [`EVENT_PROBES`].
    pub fn event_probes(&self) -> String {
        self.single(EVENT_PROBES)
    }

    /// See [`FREED_MAP`].
    pub fn freed_map(&self, ino: u64) -> String {
        self.numbered(FREED_MAP, ino)
    }

    /// See [`LOCKS`].
    pub fn locks(&self, ino: u64) -> String {
        self.numbered(LOCKS, ino)
    }

    /// See [`FREEZE`].
    pub fn freeze(&self) -> String {
        self.single(FREEZE)
    }

    /// See [`FREEZE_ACKS`].
    pub fn freeze_acks(&self) -> String {
        self.single(FREEZE_ACKS)
    }

    /// See [`FREEING`].
    pub fn freeing(&self) -> String {
        self.single(FREEING)
    }

    /// See [`GARBAGE`].
    pub fn garbage(&self) -> String {
        self.single(GARBAGE)
    }

    /// See [`SESSIONS`].
    pub fn sessions(&self) -> String {
        self.single(SESSIONS)
    }

    /// See [`SESSION`].
    pub fn session_info(&self, sid: u64) -> String {
        self.numbered(SESSION, sid)
    }

    /// See [`SESSION_REPLIES`].
    pub fn session_replies(&self, sid: u64) -> String {
        self.numbered(SESSION_REPLIES, sid)
    }

    /// See [`LEASE`].
    pub fn lease(&self) -> String {
        self.single(LEASE)
    }

    /// See [`SESSION_LEASES`].
    pub fn session_leases(&self, sid: u64) -> String {
        self.numbered(SESSION_LEASES, sid)
    }

    /// See [`SESSION_OPEN`].
    pub fn session_open(&self, sid: u64) -> String {
        self.numbered(SESSION_OPEN, sid)
    }

    /// See [`SESSION_HELD`].
    pub fn session_held(&self, sid: u64) -> String {
        self.numbered(SESSION_HELD, sid)
    }

    /// See [`SESSION_LOCKS`].
    pub fn session_locks(&self, sid: u64) -> String {
        self.numbered(SESSION_LOCKS, sid)
    }
}

/// A SCAN pattern matching the `meta` key of every filesystem on a server.
pub fn every_meta_key() -> String {
    format!("*:{}", META.before)
}

/// The prefix whose `meta` key `key` is, if it is one (a prefix has no `:`): `{<prefix>}:meta`,
/// or `<prefix>:meta` as format 1 named it.
pub fn prefix_of_meta_key(key: &str) -> Option<&str> {
    let named = key.strip_suffix(META.before)?.strip_suffix(':')?;
    let prefix = match named.strip_prefix('{') {
        Some(braced) => braced.strip_suffix('}')?,
        None => named,
    };
    (!prefix.is_empty() && !prefix.contains([':', '{', '}'])).then_some(prefix)
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
    /// `next:issuer`
    Issuers,
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
    /// `garbage`
    Garbage,
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
            | KeyKind::Issuers
            | KeyKind::Garbage
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
        let number = |s: &str| -> Option<u64> {
            (!s.is_empty()
                && s.bytes().all(|b| b.is_ascii_digit())
                && (s == "0" || !s.starts_with('0')))
            .then(|| s.parse().ok())
            .flatten()
        };
        if let Some(block) = key.strip_prefix(self.spread_base.as_bytes()) {
            let id = std::str::from_utf8(block.strip_prefix(BLOCK.before.as_bytes())?).ok()?;
            return number(id).map(KeyKind::Block);
        }
        let rest = std::str::from_utf8(key.strip_prefix(self.metadata_base.as_bytes())?).ok()?;
        Some(match rest {
            "meta" => KeyKind::Meta,
            "stat" => KeyKind::Stat,
            "next:ino" | "next:blk" | "next:sid" => KeyKind::Counter,
            "next:issuer" => KeyKind::Issuers,
            "freeing" => KeyKind::Freeing,
            "garbage" => KeyKind::Garbage,
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
        if let Some(rest) = key.strip_prefix(self.metadata_base.as_bytes()) {
            return Some([to.metadata_base.as_bytes(), rest].concat());
        }
        let rest = key.strip_prefix(self.spread_base.as_bytes())?;
        Some([to.spread_base.as_bytes(), rest].concat())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_prefix() {
        let keys = Keys::new("skx");
        assert_eq!(keys.meta(), "{skx}:meta");
        assert_eq!(keys.inode(1), ("{skx}:i:0".to_string(), 1));
        assert_eq!(keys.inode(130), ("{skx}:i:2".to_string(), 2));
        assert_eq!(keys.block(7), "skx:b:7");
        assert_eq!(keys.prefix(), "skx");
        assert_eq!(keys.format_1(&keys.meta()), "skx:meta");
        assert_eq!(keys.format_1(&keys.block(7)), "skx:b:7");
        assert_eq!(keys.from_format_1(b"skx:d:1"), Some(b"{skx}:d:1".to_vec()));
        assert_eq!(keys.from_format_1(b"skx:b:9"), Some(b"skx:b:9".to_vec()));
        assert_eq!(keys.from_format_1(b"skx2:d:1"), None);
    }

    #[test]
    fn keys_are_classified() {
        let keys = Keys::new("skx");
        assert_eq!(keys.classify(b"{skx}:i:3"), Some(KeyKind::Inodes(3)));
        assert_eq!(keys.classify(b"skx:b:70"), Some(KeyKind::Block(70)));
        assert_eq!(keys.classify(b"{skx}:lease"), Some(KeyKind::Leases));
        assert_eq!(
            keys.classify(b"{skx}:session:4:leases"),
            Some(KeyKind::Session(4))
        );
        assert!(!KeyKind::Leases.is_content());
        assert_eq!(
            keys.classify(b"{skx}:session:4:held"),
            Some(KeyKind::Session(4))
        );
        assert_eq!(keys.classify(b"{skx}:session:4:other"), None);
        assert_eq!(keys.classify(b"skx:b:07"), None);
        assert_eq!(keys.classify(b"{skx}:zz"), None);
        assert_eq!(keys.classify(b"{skx2}:meta"), None);
        // Format 1's names and a block in the metadata slot are not this layout's.
        assert_eq!(keys.classify(b"skx:meta"), None);
        assert_eq!(keys.classify(b"skx:i:3"), None);
        assert_eq!(keys.classify(b"{skx}:b:70"), None);
        let copy = Keys::new("copy");
        assert_eq!(
            keys.rebase(b"{skx}:d:1", &copy),
            Some(b"{copy}:d:1".to_vec())
        );
        assert_eq!(keys.rebase(b"skx:b:5", &copy), Some(b"copy:b:5".to_vec()));
        assert_eq!(prefix_of_meta_key("{skx}:meta"), Some("skx"));
        assert_eq!(prefix_of_meta_key("skx:meta"), Some("skx"));
        assert_eq!(prefix_of_meta_key("a:b:meta"), None);
        assert_eq!(prefix_of_meta_key("{a}b:meta"), None);
        assert_eq!(prefix_of_meta_key("{}:meta"), None);
    }

    #[test]
    fn every_family_is_a_name_the_checks_know() {
        let keys = Keys::new("skx");
        // (The events and probes are Pub/Sub channels: never keys.)
        for family in FAMILIES
            .iter()
            .filter(|&&f| f != EVENTS && f != EVENT_PROBES)
        {
            let key = match family.after {
                None => keys.single(*family),
                Some(_) => keys.numbered(*family, 70),
            };
            assert!(keys.classify(key.as_bytes()).is_some(), "{key}");
        }
        let lua: Vec<&str> = FAMILIES.iter().map(|f| f.lua).collect();
        let mut unique = lua.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), lua.len(), "Lua names must differ: {lua:?}");
    }

    /// The scripts build no key name by hand: every one comes from [`lua_builders`].
    #[test]
    fn scripts_name_keys_only_through_the_builders() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/lua");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("--").next().unwrap_or_default();
                assert!(
                    !code.contains("P .."),
                    "{}:{}: a key name built by hand: {line}",
                    path.display(),
                    n + 1
                );
                // Names that hold numbers go into strings through `decimal` only.
                for number in ["ino", "parent", "dir", "id", "lo", "hi"] {
                    let joined = |s: &str| {
                        code.split(s).skip(1).any(|after| {
                            after.starts_with(number)
                                && !after[number.len()..]
                                    .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                        })
                    };
                    assert!(
                        !joined(".. ") && !joined(".."),
                        "{}:{}: {number} joined without decimal(): {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
            read += 1;
        }
        assert!(read > 15, "read {read} scripts from {dir}");
        let builders = lua_builders();
        assert!(builders.contains("local function dir_key(n) return P .. 'd:' .. decimal(n) end\n"));
        assert!(
            !builders.contains("block_key"),
            "scripts never touch a block"
        );
        assert!(builders.contains(
            "local function session_held_key(n) return P .. 'session:' .. decimal(n) .. ':held' end\n"
        ));
        assert!(builders.contains("local META_KEY = P .. 'meta'\n"));
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(Keys::new("a*b").scan_patterns(), ["{a\\*b}:*", "a\\*b:*"]);
        // `skx:*` can never match `skx2:...`, nor `{skx}:*` another's metadata.
        assert_eq!(Keys::new("skx").scan_patterns(), ["{skx}:*", "skx:*"]);
    }
}
