//! POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`), kept as the extended
//! attributes the kernel reads them from. With `FUSE_POSIX_ACL` the kernel enforces them and
//! leaves the rest to the filesystem, done here as a local filesystem does (the kernel's
//! `posix_acl_update_mode`, `posix_acl_chmod`, `posix_acl_create`): an access ACL sets the
//! permission bits, `chmod` rewrites the ACL, and a directory's default ACL is inherited by
//! what is created in it, in place of the umask.

/// The access ACL's attribute name.
pub const ACCESS: &[u8] = b"system.posix_acl_access";
/// The default ACL's attribute name (directories only).
pub const DEFAULT: &[u8] = b"system.posix_acl_default";

/// `POSIX_ACL_XATTR_VERSION`.
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// One entry: a tag, its permission bits (rwx) and, for named users and groups, an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct AclEntry {
    tag: u16,
    perm: u16,
    id: u32,
}

/// An ACL in the kernel's extended-attribute form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Acl {
    entries: Vec<AclEntry>,
}

impl Acl {
    /// Reads an ACL attribute; `None` if it is not one (the kernel checks what it writes).
    pub fn decode(bytes: &[u8]) -> Option<Acl> {
        let (version, rest) = bytes.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*version) != VERSION || rest.len() % 8 != 0 {
            return None;
        }
        let entries: Vec<AclEntry> = rest
            .chunks_exact(8)
            .map(|e| AclEntry {
                tag: u16::from_le_bytes([e[0], e[1]]),
                perm: u16::from_le_bytes([e[2], e[3]]) & 7,
                id: u32::from_le_bytes([e[4], e[5], e[6], e[7]]),
            })
            .collect();
        let has = |tag| entries.iter().any(|e| e.tag == tag);
        let named = entries.iter().any(|e| e.tag == USER || e.tag == GROUP);
        (has(USER_OBJ) && has(GROUP_OBJ) && has(OTHER) && (!named || has(MASK)))
            .then_some(Acl { entries })
    }

    /// The attribute's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.entries {
            out.extend_from_slice(&e.tag.to_le_bytes());
            out.extend_from_slice(&e.perm.to_le_bytes());
            out.extend_from_slice(&e.id.to_le_bytes());
        }
        out
    }

    fn perm(&self, tag: u16) -> u32 {
        self.entries
            .iter()
            .find(|e| e.tag == tag)
            .map_or(0, |e| u32::from(e.perm))
    }

    fn set_perm(&mut self, tag: u16, perm: u32) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.tag == tag) {
            e.perm = (perm & 7) as u16;
        }
    }

    /// The class whose bits a mode's group bits show: the mask if there is one.
    fn group_class(&self) -> u16 {
        if self.entries.iter().any(|e| e.tag == MASK) {
            MASK
        } else {
            GROUP_OBJ
        }
    }

    /// The permission bits (0o777) the ACL stands for.
    pub fn mode_bits(&self) -> u32 {
        self.perm(USER_OBJ) << 6 | self.perm(self.group_class()) << 3 | self.perm(OTHER)
    }

    /// Whether the permission bits say all the ACL says (then no attribute is kept).
    pub fn is_minimal(&self) -> bool {
        self.entries.len() == 3
    }

    /// The ACL after a `chmod` to permission bits `mode`.
    pub fn chmod(&mut self, mode: u32) {
        self.set_perm(USER_OBJ, mode >> 6);
        self.set_perm(self.group_class(), mode >> 3);
        self.set_perm(OTHER, mode);
    }

    /// What a new inode asking for permission bits `mode` gets in a directory with this
    /// default ACL: its access ACL (`None` when the bits say it all) and its bits.
    pub fn inherit(&self, mode: u32) -> (Option<Acl>, u32) {
        let mut acl = self.clone();
        let granted = self.mode_bits();
        let mode = mode & !0o777 | mode & 0o777 & granted;
        acl.chmod(mode);
        ((!acl.is_minimal()).then_some(acl), mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Acl {
        Acl {
            entries: entries
                .iter()
                .map(|&(tag, perm, id)| AclEntry { tag, perm, id })
                .collect(),
        }
    }

    const NONE: u32 = u32::MAX;

    #[test]
    fn attributes_round_trip_and_garbage_is_refused() {
        let a = acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, NONE),
            (MASK, 5, NONE),
            (OTHER, 0, NONE),
        ]);
        assert_eq!(Acl::decode(&a.encode()), Some(a));
        assert_eq!(Acl::decode(b"junk"), None);
        let no_mask = acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 5, 1000),
            (GROUP_OBJ, 5, NONE),
            (OTHER, 0, NONE),
        ]);
        assert_eq!(
            Acl::decode(&no_mask.encode()),
            None,
            "a named entry needs a mask"
        );
    }

    #[test]
    fn the_mask_shows_as_the_group_bits_and_chmod_rewrites_it() {
        let mut a = acl(&[
            (USER_OBJ, 6, NONE),
            (USER, 7, 1000),
            (GROUP_OBJ, 4, NONE),
            (MASK, 6, NONE),
            (OTHER, 4, NONE),
        ]);
        assert_eq!(a.mode_bits(), 0o664);
        assert!(!a.is_minimal());
        a.chmod(0o640);
        assert_eq!(a.mode_bits(), 0o640);
        assert_eq!(a.perm(GROUP_OBJ), 4, "the owning group's entry stays");
        assert_eq!(a.perm(USER), 7, "named entries stay; the mask limits them");
    }

    #[test]
    fn a_default_acl_is_inherited_in_place_of_the_umask() {
        let d = acl(&[
            (USER_OBJ, 7, NONE),
            (USER, 7, 1000),
            (GROUP_OBJ, 5, NONE),
            (MASK, 7, NONE),
            (OTHER, 0, NONE),
        ]);
        let (file, mode) = d.inherit(0o666);
        assert_eq!(mode, 0o660);
        let file = file.unwrap();
        assert_eq!(file.perm(USER), 7);
        assert_eq!(file.perm(MASK), 6);
        let minimal = acl(&[(USER_OBJ, 7, NONE), (GROUP_OBJ, 5, NONE), (OTHER, 5, NONE)]);
        assert_eq!(minimal.inherit(0o777), (None, 0o755));
    }
}
