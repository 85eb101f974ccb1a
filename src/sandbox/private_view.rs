//! Parent side: the sandbox's private `/proc` and user database, when the host is root.
//!
//! Without them, a confined program cannot read `/proc/self` (Landlock cannot grant it: a rule
//! on the host's procfs would reach every `/proc/PID`) nor ask who it is (the host's
//! `/etc/passwd` lists the host's users and is never granted). With them, each spawn enters a
//! mount namespace of its own, made while the child is still root, in which:
//! - `/proc` is a procfs mounted `hidepid=invisible,subset=pid`: only the processes the
//!   program may ptrace-read are listed, and Landlock allows that only within its own domain
//!   (itself and its children), so it sees its own `/proc/self` and nothing else (no
//!   `/proc/sys`, `/proc/kcore`, other processes or other sandboxes of the same uid);
//! - `/etc/passwd` and `/etc/group` are the generated files of [`super::userdb`].
//!
//! Everything costly happens here, once per host process ([`PrivateView::shared`]): the procfs
//! and a tmpfs for the generated files are *detached* mounts (no host path reaches them). The
//! files of one identity are made the first time it spawns; they depend on nothing but the
//! uid and gid, so every preparation shares them. Each preparation adds the Landlock rules
//! granting read on them to its own ruleset ([`ViewGrant`]). The child clones the mounts (`open_tree`), calls
//! `unshare(CLONE_NEWNS)` and attaches them ([`attach`]). Mounts propagate one way only
//! (slave), so nothing reaches the host, and mounting stays refused to the program (seccomp, no
//! capabilities).

use super::userdb;
use crate::sys;
use landlock::{AccessFs, BitFlags};
use std::collections::btree_map::{BTreeMap, Entry};
use std::collections::BTreeSet;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

/// The raw fds a child attaches: its `/proc`, and the generated user database files.
#[derive(Debug, Clone, Copy)]
pub struct ViewFds {
    /// The detached procfs.
    pub proc: RawFd,
    /// `/etc/passwd` to bind, if the host has that file to mount over.
    pub passwd: Option<RawFd>,
    /// `/etc/group` to bind, if the host has that file to mount over.
    pub group: Option<RawFd>,
}

/// The detached mounts of this host process, and the user database files made so far.
#[derive(Debug)]
pub struct PrivateView {
    proc: OwnedFd,
    files: OwnedFd,
    bind_passwd: bool,
    bind_group: bool,
    made: Mutex<BTreeMap<(u32, u32), (OwnedFd, OwnedFd)>>,
}

/// What the enforcement report lists for the private view: path, what it is, rights.
pub const REPORTED: [(&str, &str, &[&str]); 3] = [
    (
        "/proc",
        "private procfs (hidepid=invisible,subset=pid): own processes only",
        &["ReadFile", "ReadDir"],
    ),
    (
        "/etc/passwd",
        "generated: root, the sandbox user, nobody",
        &["ReadFile"],
    ),
    (
        "/etc/group",
        "generated: root, the sandbox group, nogroup",
        &["ReadFile"],
    ),
];

fn read_dir_access() -> BitFlags<AccessFs> {
    AccessFs::ReadFile | AccessFs::ReadDir
}

impl PrivateView {
    /// The view every preparation of this process shares, built the first time (an error, if
    /// the kernel refused it then, stays the answer: the kernel does not change).
    pub fn shared() -> Result<&'static PrivateView, &'static str> {
        static SHARED: OnceLock<Result<PrivateView, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PrivateView::new().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    /// Builds the detached mounts. Fails (and the caller runs without a private view) when
    /// the kernel lacks the new mount API or cannot clone a detached mount.
    fn new() -> io::Result<Self> {
        let proc = sys::detached_mount(
            c"proc",
            &[(c"hidepid", c"invisible"), (c"subset", c"pid")],
            sys::MOUNT_ATTR_LOCKED_DOWN,
        )?;
        // The child clones it after fork; a kernel that cannot do that must fail here.
        sys::close_raw(sys::clone_mount(proc.as_raw_fd())?);
        let files = sys::detached_mount(
            c"tmpfs",
            &[
                (c"mode", c"0700"),
                // Two files (a page each) per identity, for every identity the process
                // spawns: 8192 identities. tmpfs uses memory only for the pages written.
                (c"size", c"64m"),
                (c"nr_inodes", c"16384"),
            ],
            sys::MOUNT_ATTR_NO_SPECIAL,
        )?;
        Ok(Self {
            proc,
            files,
            bind_passwd: Path::new("/etc/passwd").is_file(),
            bind_group: Path::new("/etc/group").is_file(),
            made: Mutex::new(BTreeMap::new()),
        })
    }

    /// The fds for a spawn as `uid`:`gid`, making that identity's files the first time.
    fn for_identity(&self, uid: u32, gid: u32) -> io::Result<ViewFds> {
        let mut made = self
            .made
            .lock()
            .map_err(|_| io::Error::other("private view: a previous spawn panicked"))?;
        let (passwd, group) = match made.entry((uid, gid)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let passwd =
                    self.make(&format!("passwd-{uid}-{gid}"), &userdb::passwd(uid, gid))?;
                let group = self.make(&format!("group-{uid}-{gid}"), &userdb::group(gid))?;
                entry.insert((passwd, group))
            }
        };
        Ok(ViewFds {
            proc: self.proc.as_raw_fd(),
            passwd: self.bind_passwd.then_some(passwd.as_raw_fd()),
            group: self.bind_group.then_some(group.as_raw_fd()),
        })
    }

    fn make(&self, name: &str, contents: &str) -> io::Result<OwnedFd> {
        let name = CString::new(name).map_err(io::Error::other)?;
        sys::create_file_at(self.files.as_fd(), &name, 0o444, contents.as_bytes())
    }
}

/// One preparation's use of the shared view: the Landlock rules granting read on it, added to
/// that preparation's ruleset (on `/proc` at once, on an identity's files before its first
/// spawn).
#[derive(Debug)]
pub struct ViewGrant {
    view: &'static PrivateView,
    granted: Mutex<BTreeSet<(u32, u32)>>,
}

impl ViewGrant {
    /// Grants read on the shared view's `/proc` in `ruleset`.
    pub fn new(view: &'static PrivateView, ruleset: RawFd) -> io::Result<Self> {
        sys::landlock_add_path_rule(ruleset, view.proc.as_raw_fd(), read_dir_access().bits())?;
        Ok(Self {
            view,
            granted: Mutex::new(BTreeSet::new()),
        })
    }

    /// The fds for a spawn as `uid`:`gid`; the first time, read on that identity's files is
    /// granted in `ruleset` (this preparation's).
    pub fn for_identity(&self, ruleset: RawFd, uid: u32, gid: u32) -> io::Result<ViewFds> {
        let fds = self.view.for_identity(uid, gid)?;
        let mut granted = self
            .granted
            .lock()
            .map_err(|_| io::Error::other("private view: a previous spawn panicked"))?;
        if !granted.contains(&(uid, gid)) {
            let read = BitFlags::from(AccessFs::ReadFile).bits();
            for fd in [fds.passwd, fds.group].into_iter().flatten() {
                sys::landlock_add_path_rule(ruleset, fd, read)?;
            }
            granted.insert((uid, gid));
        }
        Ok(fds)
    }
}

/// Child side: enters a new mount namespace and attaches the private view. Async-signal-safe.
/// The clones are made first, while the detached mounts are reachable from the caller's
/// namespace as they were in the parent.
pub fn attach(view: &ViewFds) -> io::Result<()> {
    let proc = sys::clone_mount(view.proc)?;
    let passwd = clone_optional(view.passwd)?;
    let group = clone_optional(view.group)?;
    sys::unshare_mount_namespace()?;
    sys::attach_mount(proc, c"/proc")?;
    sys::close_raw(proc);
    if let Some(fd) = passwd {
        sys::attach_mount(fd, c"/etc/passwd")?;
        sys::close_raw(fd);
    }
    if let Some(fd) = group {
        sys::attach_mount(fd, c"/etc/group")?;
        sys::close_raw(fd);
    }
    Ok(())
}

fn clone_optional(fd: Option<RawFd>) -> io::Result<Option<RawFd>> {
    fd.map(sys::clone_mount).transpose()
}
