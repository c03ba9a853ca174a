//! Names and attributes this mount remembers between requests.
//!
//! Entries stay true because every change is either this mount's own (which drops or updates
//! what it touched) or announced by a change event (which drops it). A look-up that raced with
//! a change does not store what it read: every drop bumps an epoch, and a result is kept only
//! if the epoch it started in is still current.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::attr::Attr;

use super::lock;

/// Entries kept before the cache starts over (bounds memory on huge trees).
const LIMIT: usize = 500_000;

/// Names (parent, name) → inode, and inode → attributes.
#[derive(Default)]
pub struct MetaCache {
    names: Mutex<HashMap<(u64, Vec<u8>), u64>>,
    attrs: Mutex<HashMap<u64, Attr>>,
    epoch: AtomicU64,
}

impl MetaCache {
    /// The current epoch, taken before reading from Redis.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The attributes of the inode `parent/name`, if both are remembered.
    pub fn entry(&self, parent: u64, name: &[u8]) -> Option<Attr> {
        let ino = *lock(&self.names).get(&(parent, name.to_vec()))?;
        self.attr(ino)
    }

    /// The attributes of `ino`, if remembered.
    pub fn attr(&self, ino: u64) -> Option<Attr> {
        lock(&self.attrs).get(&ino).copied()
    }

    /// Remembers what was read in `epoch` (and the name it was found under), unless something
    /// changed since.
    pub fn remember(&self, epoch: u64, name: Option<(u64, &[u8])>, attr: Attr) {
        let mut attrs = lock(&self.attrs);
        if self.epoch() != epoch {
            return;
        }
        if attrs.len() >= LIMIT {
            attrs.clear();
        }
        attrs.insert(attr.ino, attr);
        if let Some((parent, name)) = name {
            let mut names = lock(&self.names);
            if names.len() >= LIMIT {
                names.clear();
            }
            names.insert((parent, name.to_vec()), attr.ino);
        }
    }

    /// Forgets an inode's attributes.
    pub fn forget_attr(&self, ino: u64) {
        let mut attrs = lock(&self.attrs);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        attrs.remove(&ino);
    }

    /// Forgets a name.
    pub fn forget_name(&self, parent: u64, name: &[u8]) {
        // Taken in the same order as `remember`, so that the epoch check there is exact.
        let _attrs = lock(&self.attrs);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        lock(&self.names).remove(&(parent, name.to_vec()));
    }

    /// Forgets everything (events may have been missed).
    pub fn clear(&self) {
        let mut attrs = lock(&self.attrs);
        self.epoch.fetch_add(1, Ordering::AcqRel);
        attrs.clear();
        lock(&self.names).clear();
    }
}
