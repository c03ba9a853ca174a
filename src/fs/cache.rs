//! Names and attributes this mount remembers between requests.
//!
//! Entries stay true because every change is either this mount's own (which drops or updates
//! what it touched) or announced by a change event (which drops it, or for a directory brings
//! its new record). A look-up that raced with a change does not store what it read: every drop
//! bumps an epoch, and a result is kept only if the epoch it started in is still current.
//!
//! A directory's record carries a version (see `src/attr.rs`), so that records of it are
//! ordered whichever way they arrive: an event's, a read's, a script's reply. Of two counted
//! records the higher version stands; epochs decide only where a version cannot (nothing
//! remembered, or a record built here). Another mount creating in a shared directory so keeps
//! this mount's copy of it current, and the kernel's next look at it costs no round trip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::attr::{version_after, Attr};

use super::lock;

/// The cache's maps: a listing fills them with a hundred thousand entries at a time.
/// foldhash seeds each map at random, so names chosen elsewhere cannot be made to collide.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
type HashSet<T> = std::collections::HashSet<T, foldhash::fast::RandomState>;

/// Entries kept before the cache starts over (bounds memory on huge trees).
const LIMIT: usize = 500_000;

/// Adds `ino` to a set of inodes known to lack something, forgetting them all at `LIMIT`.
fn remember_in(set: &Mutex<HashSet<u64>>, ino: u64) {
    let mut set = lock(set);
    if set.len() >= LIMIT {
        set.clear();
    }
    set.insert(ino);
}

/// Names of a directory that changed elsewhere (a change event named them) and have not been
/// read since: each may exist or not. More than this and the directory stops being known.
const UNCERTAIN_LIMIT: usize = 10_000;

/// Directories whose names are all known (created here, or listed whole), but for the names
/// changed elsewhere since, which events named without saying how: a name not remembered
/// there and not among those is known not to exist. A directory other mounts create in stays
/// known this way, so a create there needs no look-up in Redis.
#[derive(Default)]
struct KnownDirs {
    /// Each known directory, with its uncertain names.
    dirs: HashMap<u64, HashSet<Vec<u8>>>,
    /// Uncertain names in all of them: past `LIMIT`, every directory is forgotten.
    uncertain: usize,
}

impl KnownDirs {
    fn know(&mut self, dir: u64) {
        self.forget(dir);
        self.dirs.insert(dir, HashSet::default());
    }

    fn forget(&mut self, dir: u64) {
        if let Some(names) = self.dirs.remove(&dir) {
            self.uncertain -= names.len();
        }
    }

    fn clear(&mut self) {
        self.dirs.clear();
        self.uncertain = 0;
    }

    /// Whether `dir` is known and `name` is not uncertain there.
    fn knows(&self, dir: u64, name: &[u8]) -> bool {
        self.dirs
            .get(&dir)
            .is_some_and(|names| !names.contains(name))
    }

    fn uncertain(&mut self, dir: u64, name: &[u8]) {
        let Some(names) = self.dirs.get_mut(&dir) else {
            return;
        };
        if names.len() >= UNCERTAIN_LIMIT {
            self.forget(dir);
        } else if self.uncertain >= LIMIT {
            self.clear();
        } else if names.insert(name.to_vec()) {
            self.uncertain += 1;
        }
    }

    fn certain(&mut self, dir: u64, name: &[u8]) {
        if let Some(names) = self.dirs.get_mut(&dir) {
            if names.remove(name) {
                self.uncertain -= 1;
            }
        }
    }
}

/// Names (parent, name) → inode, and inode → attributes; and the directories whose every
/// name is known, so that a name missing there is known not to exist (a create's look-up then
/// costs no round trip).
#[derive(Default)]
pub struct MetaCache {
    names: Mutex<HashMap<(u64, Vec<u8>), u64>>,
    attrs: Mutex<AttrTable>,
    /// Directories whose names are all known (see [`KnownDirs`]).
    complete: Mutex<KnownDirs>,
    /// Inodes known to have no extended attributes (this mount created them, and no change
    /// to them was announced since): the kernel asks for `security.capability` before every
    /// write, and this answers it without a round trip.
    no_xattrs: Mutex<HashSet<u64>>,
    /// Directories known to have no default ACL (a create there applies the umask).
    no_default_acl: Mutex<HashSet<u64>>,
    epoch: AtomicU64,
    /// The epoch of the last change other than a store of a file's data (which changes no
    /// directory): a listing taken since is still whole.
    beyond_data: AtomicU64,
    /// The epoch of the last change to any name: a look-up begun before it keeps nothing.
    names_changed: AtomicU64,
    /// Bumped whenever a name may have appeared without this cache learning it.
    names_epoch: AtomicU64,
}

/// Attributes by inode, with the epoch of each inode's last change, so that a read which
/// raced only with changes to other inodes may still keep what it read (during `cp -r`
/// something changes all the time, and each file's store would otherwise forget its file).
#[derive(Default)]
struct AttrTable {
    attrs: HashMap<u64, Attr>,
    changed: HashMap<u64, u64>,
    /// Reads begun before this epoch keep nothing (`changed` was cleared then).
    floor: u64,
}

impl AttrTable {
    /// Whether nothing changed `ino`'s attributes since `epoch`.
    fn unchanged_since(&self, ino: u64, epoch: u64) -> bool {
        epoch >= self.floor && self.changed.get(&ino).is_none_or(|&at| at <= epoch)
    }

    /// How `new` compares with what is remembered of its inode by directory version:
    /// `Some(true)` as new or newer, `Some(false)` older, `None` if versions cannot tell
    /// (nothing remembered, or `new` was not counted).
    fn by_version(&self, new: &Attr) -> Option<bool> {
        if new.version == 0 {
            return None;
        }
        let kept = self.attrs.get(&new.ino)?;
        Some(!version_after(kept.version, new.version))
    }

    /// Notes that `ino` changed in `epoch`.
    fn note_change(&mut self, ino: u64, epoch: u64) {
        if self.changed.len() >= LIMIT {
            self.changed.clear();
            self.floor = epoch;
        }
        self.changed.insert(ino, epoch);
    }
}

impl MetaCache {
    /// The current epoch, taken before reading from Redis.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Moves the epoch for a change other than a data store's (see [`Self::replace`]).
    fn bump(&self) -> u64 {
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.beyond_data.store(now, Ordering::Release);
        now
    }

    /// Whether nothing but stores of files' data changed since `epoch`: names, directories
    /// and other attributes are as they were then.
    pub fn only_data_changed_since(&self, epoch: u64) -> bool {
        self.beyond_data.load(Ordering::Acquire) <= epoch
    }

    /// The attributes of the inode `parent/name`, if both are remembered.
    pub fn entry(&self, parent: u64, name: &[u8]) -> Option<Attr> {
        self.attr(self.named(parent, name)?)
    }

    /// The inode `parent/name` names, if remembered (its attributes may not be).
    pub fn named(&self, parent: u64, name: &[u8]) -> Option<u64> {
        lock(&self.names).get(&(parent, name.to_vec())).copied()
    }

    /// The attributes of `ino`, if remembered.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        lock(&self.attrs).attrs.get(&ino).copied()
    }

    /// The epoch of name knowledge, taken before creating a directory (see [`Self::created_dir`]).
    pub fn names_epoch(&self) -> u64 {
        self.names_epoch.load(Ordering::Acquire)
    }

    /// Whether `parent/name` is known not to exist.
    pub fn absent(&self, parent: u64, name: &[u8]) -> bool {
        let _attrs = lock(&self.attrs);
        lock(&self.complete).knows(parent, name)
            && !lock(&self.names).contains_key(&(parent, name.to_vec()))
    }

    /// Records that this mount created the empty directory `dir`, having read the names
    /// epoch before: its names are then all known, unless one may have appeared since.
    pub fn created_dir(&self, names_epoch: u64, dir: u64) {
        self.listed_whole(names_epoch, dir, &[]);
    }

    /// Records that directory `dir` holds exactly the entries `listed` (name, inode), read
    /// after the names epoch was `names_epoch`: its names are then all known, unless one may
    /// have appeared since.
    pub fn listed_whole(&self, names_epoch: u64, dir: u64, listed: &[(&[u8], u64)]) {
        let _attrs = lock(&self.attrs);
        if self.names_epoch() != names_epoch {
            return;
        }
        let mut names = lock(&self.names);
        if names.len() + listed.len() >= LIMIT {
            return;
        }
        for &(name, ino) in listed {
            names.insert((dir, name.to_vec()), ino);
        }
        drop(names);
        lock(&self.complete).know(dir);
    }

    /// Notes that `parent/name` may exist or not: a directory whose names were all known
    /// keeps being known but for it (see `complete`).
    fn uncertain(&self, parent: u64, name: &[u8]) {
        lock(&self.complete).uncertain(parent, name);
    }

    /// Notes that `parent/name` is known again: it exists and is remembered.
    fn certain(&self, parent: u64, name: &[u8]) {
        lock(&self.complete).certain(parent, name);
    }

    /// Whether nothing this mount did or learned of changed `ino` since `epoch`: a read of it
    /// begun then is still the newest word on it.
    pub fn unchanged_since(&self, ino: u64, epoch: u64) -> bool {
        lock(&self.attrs).unchanged_since(ino, epoch)
    }

    /// Remembers what was read in `epoch` (and the name it was found under), unless the inode
    /// (or any name) changed since.
    pub fn remember(&self, epoch: u64, name: Option<(u64, &[u8])>, attr: Attr) {
        let mut attrs = lock(&self.attrs);
        let names_moved = name.is_some() && self.names_changed.load(Ordering::Acquire) > epoch;
        let order = attrs.by_version(&attr);
        if !names_moved && order == Some(false) {
            // An event brought a newer record meanwhile: it stays, and the name is known.
            let newer = attrs.attrs[&attr.ino];
            self.insert(&mut attrs, name, newer);
            return;
        }
        let newest = order.unwrap_or_else(|| attrs.unchanged_since(attr.ino, epoch));
        if names_moved || !newest {
            if let Some((parent, name)) = name {
                // The name exists but is not recorded.
                self.names_epoch.fetch_add(1, Ordering::AcqRel);
                self.uncertain(parent, name);
            }
            return;
        }
        self.insert(&mut attrs, name, attr);
    }

    /// Keeps `attr`, what a store of this mount's data (begun in `epoch`) left, in place of
    /// what was remembered of its inode; if the inode changed since, forgets it instead (what
    /// was remembered may be older). Either way reads of it begun before keep nothing: they
    /// may have read the inode before the store.
    pub fn replace(&self, epoch: u64, attr: Attr) {
        let mut attrs = lock(&self.attrs);
        let order = attrs.by_version(&attr);
        let keep = order.unwrap_or_else(|| attrs.unchanged_since(attr.ino, epoch));
        let now = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        attrs.note_change(attr.ino, now);
        if keep {
            self.insert(&mut attrs, None, attr);
        } else if order.is_none() {
            attrs.attrs.remove(&attr.ino);
        }
    }

    /// Records what this mount itself just changed: `attr` (named `name`, if given) stands,
    /// whatever was read before, unless an event already brought a newer version of it.
    /// Reads under way then do not store what they read.
    pub fn set(&self, name: Option<(u64, &[u8])>, attr: Attr) {
        let mut attrs = lock(&self.attrs);
        let now = self.bump();
        attrs.note_change(attr.ino, now);
        let attr = match attrs.by_version(&attr) {
            Some(false) => attrs.attrs[&attr.ino],
            _ => attr,
        };
        self.insert(&mut attrs, name, attr);
    }

    /// Takes a directory's record that another mount's change left (an event brought it), if
    /// this mount remembers the directory and nothing newer of it. Reads under way then keep
    /// what they read only if it is newer still.
    pub fn changed_elsewhere(&self, dir: Attr) {
        let mut attrs = lock(&self.attrs);
        let now = self.bump();
        attrs.note_change(dir.ino, now);
        if attrs.by_version(&dir) == Some(true) {
            self.insert(&mut attrs, None, dir);
        }
    }

    fn insert(&self, attrs: &mut AttrTable, name: Option<(u64, &[u8])>, attr: Attr) {
        if attrs.attrs.len() >= LIMIT {
            attrs.attrs.clear();
        }
        attrs.attrs.insert(attr.ino, attr);
        if let Some((parent, name)) = name {
            let mut names = lock(&self.names);
            if names.len() >= LIMIT {
                names.clear();
                lock(&self.complete).clear();
            }
            names.insert((parent, name.to_vec()), attr.ino);
            drop(names);
            self.certain(parent, name);
        }
    }

    /// Forgets an inode's attributes.
    pub fn forget_attr(&self, ino: u64) {
        let mut attrs = lock(&self.attrs);
        let now = self.bump();
        attrs.note_change(ino, now);
        attrs.attrs.remove(&ino);
    }

    /// Forgets a name whose entry may now name anything, or nothing (changed elsewhere).
    pub fn forget_name(&self, parent: u64, name: &[u8]) {
        // Taken in the same order as `remember`, so that the epoch check there is exact.
        let _attrs = lock(&self.attrs);
        let now = self.bump();
        self.names_changed.store(now, Ordering::Release);
        self.names_epoch.fetch_add(1, Ordering::AcqRel);
        lock(&self.names).remove(&(parent, name.to_vec()));
        self.uncertain(parent, name);
    }

    /// Forgets a name this mount removed: it is known not to exist now.
    pub fn removed(&self, parent: u64, name: &[u8]) {
        let _attrs = lock(&self.attrs);
        let now = self.bump();
        self.names_changed.store(now, Ordering::Release);
        // (Not certain: another mount may have made the name again since the removal, and
        // its event may already have marked it uncertain.)
        lock(&self.names).remove(&(parent, name.to_vec()));
    }

    /// Records that `ino` has no extended attributes (it was just created here).
    pub fn created_without_xattrs(&self, ino: u64) {
        remember_in(&self.no_xattrs, ino);
    }

    /// Records that `ino` had no extended attributes when a listing begun in `epoch` read it,
    /// unless it changed since (a change event may have told of a new one meanwhile).
    pub fn listed_without_xattrs(&self, epoch: u64, ino: u64) {
        let attrs = lock(&self.attrs);
        if attrs.unchanged_since(ino, epoch) {
            remember_in(&self.no_xattrs, ino);
        }
    }

    /// Whether `ino` is known to have no extended attributes.
    pub fn has_no_xattrs(&self, ino: u64) -> bool {
        lock(&self.no_xattrs).contains(&ino)
    }

    /// Forgets what was known of `ino`'s extended attributes (they, or its attributes, changed).
    pub fn xattrs_changed(&self, ino: u64) {
        lock(&self.no_xattrs).remove(&ino);
        lock(&self.no_default_acl).remove(&ino);
    }

    /// Records that directory `ino` has no default ACL (it was just read).
    pub fn without_default_acl(&self, ino: u64) {
        remember_in(&self.no_default_acl, ino);
    }

    /// Whether directory `ino` is known to have no default ACL.
    pub fn has_no_default_acl(&self, ino: u64) -> bool {
        self.has_no_xattrs(ino) || lock(&self.no_default_acl).contains(&ino)
    }

    /// Forgets everything (events may have been missed).
    pub fn clear(&self) {
        let mut attrs = lock(&self.attrs);
        let now = self.bump();
        self.names_changed.store(now, Ordering::Release);
        self.names_epoch.fetch_add(1, Ordering::AcqRel);
        attrs.attrs.clear();
        attrs.changed.clear();
        attrs.floor = now;
        lock(&self.names).clear();
        lock(&self.complete).clear();
        lock(&self.no_xattrs).clear();
        lock(&self.no_default_acl).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{FileKind, Timestamp};

    fn file(ino: u64, size: u64) -> Attr {
        Attr {
            ino,
            size,
            ..Attr::new(FileKind::File, 0o644, 0, 0, Timestamp::now())
        }
    }

    #[test]
    fn a_known_directory_stays_known_but_for_names_changed_elsewhere() {
        let cache = MetaCache::default();
        cache.created_dir(cache.names_epoch(), 5);
        assert!(cache.absent(5, b"x") && cache.absent(5, b"y"));
        // An event names "x": it may exist now; "y" is still known absent.
        cache.forget_name(5, b"x");
        assert!(!cache.absent(5, b"x") && cache.absent(5, b"y"));
        // A look-up reads it: known again.
        let epoch = cache.epoch();
        cache.remember(epoch, Some((5, b"x")), file(9, 0));
        assert_eq!(cache.entry(5, b"x").map(|a| a.ino), Some(9));
        cache.removed(5, b"x");
        assert!(cache.absent(5, b"x"));
        // A removal here raced with another mount making the name again, whose event came
        // first: the name stays uncertain.
        cache.forget_name(5, b"x");
        cache.removed(5, b"x");
        assert!(!cache.absent(5, b"x"), "it may exist again");
        // Too many uncertain names: the directory is not known any more.
        for i in 0..UNCERTAIN_LIMIT {
            cache.forget_name(5, format!("n{i}").as_bytes());
        }
        assert!(!cache.absent(5, b"y"));
        // A listing makes a directory known, with its names.
        cache.listed_whole(cache.names_epoch(), 6, &[(b"z", 9)]);
        assert!(cache.absent(6, b"w") && !cache.absent(6, b"z"));
        // Not if a name may have appeared while it was read.
        let before = cache.names_epoch();
        cache.forget_name(7, b"q");
        cache.listed_whole(before, 7, &[]);
        assert!(!cache.absent(7, b"w"));
    }

    #[test]
    fn a_directory_s_newest_record_stands_whichever_way_its_records_arrive() {
        let cache = MetaCache::default();
        let dir = |version, nlink| Attr {
            ino: 5,
            nlink,
            version,
            ..Attr::new(FileKind::Dir, 0o755, 0, 0, Timestamp::now())
        };
        let nlink = |cache: &MetaCache| cache.attr(5).map(|a| a.nlink);
        // Not remembered here: an event's record is not taken up.
        let read_began = cache.epoch();
        cache.changed_elsewhere(dir(3, 3));
        assert_eq!(nlink(&cache), None);
        cache.remember(read_began, None, dir(3, 3));
        assert_eq!(nlink(&cache), None, "the read began before the event");
        cache.remember(cache.epoch(), None, dir(3, 3));
        // This mount's own change replies with version 5; another mount's change, version 4,
        // is heard of after that reply, and must not undo it.
        let change_began = cache.epoch();
        cache.replace(change_began, dir(5, 5));
        cache.changed_elsewhere(dir(4, 4));
        assert_eq!(nlink(&cache), Some(5));
        // A newer change elsewhere is taken up, even while reads of the older one are under
        // way; those keep nothing.
        let read_began = cache.epoch();
        cache.changed_elsewhere(dir(6, 6));
        assert_eq!(nlink(&cache), Some(6));
        cache.remember(read_began, None, dir(5, 5));
        cache.replace(read_began, dir(5, 5));
        cache.set(None, dir(5, 5));
        assert_eq!(nlink(&cache), Some(6));
        // A read that began before the event but reached Redis after a later change keeps it.
        cache.remember(read_began, None, dir(7, 7));
        assert_eq!(nlink(&cache), Some(7));
        // A look-up that read an older record still learns the name, with the newer record.
        cache.remember(cache.epoch(), Some((1, b"d")), dir(6, 6));
        assert_eq!(cache.entry(1, b"d").map(|a| a.nlink), Some(7));
        // A record built here has no version: it stands (this mount's own change), and any
        // counted record heard of later replaces it.
        cache.set(None, dir(0, 8));
        assert_eq!(nlink(&cache), Some(8));
        cache.changed_elsewhere(dir(8, 9));
        assert_eq!(nlink(&cache), Some(9));
    }

    #[test]
    fn a_store_keeps_its_record_unless_its_own_inode_changed_meanwhile() {
        let cache = MetaCache::default();
        let before = cache.epoch();
        cache.set(None, file(7, 1));
        cache.replace(before, file(8, 10));
        assert_eq!(
            cache.attr(8).map(|a| a.size),
            Some(10),
            "raced only with inode 7"
        );

        let before = cache.epoch();
        cache.set(None, file(8, 20));
        cache.replace(before, file(8, 10));
        assert_eq!(
            cache.attr(8),
            None,
            "inode 8 changed while its record was read"
        );

        cache.set(None, file(9, 1));
        let before = cache.epoch();
        cache.clear();
        cache.replace(before, file(9, 5));
        assert_eq!(cache.attr(9), None, "everything was forgotten meanwhile");
    }

    #[test]
    fn a_read_begun_before_a_store_never_replaces_what_the_store_left() {
        let cache = MetaCache::default();
        let read_began = cache.epoch();
        let store_began = cache.epoch();
        cache.replace(store_began, file(7, 90));
        // The read saw the record from before the store.
        cache.remember(read_began, None, file(7, 81));
        assert_eq!(cache.attr(7).map(|a| a.size), Some(90));
        assert!(!cache.unchanged_since(7, read_began));
        // A read of another inode still keeps what it read.
        cache.remember(read_began, None, file(8, 5));
        assert_eq!(cache.attr(8).map(|a| a.size), Some(5));
    }
}
