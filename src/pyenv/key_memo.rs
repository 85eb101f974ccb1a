//! A memo of store keys, so that finding an installed environment does not hash every bundled
//! byte again (an 18 MB numpy wheel costs about 26 ms of sha256 per lookup here).
//!
//! `ROOT/.keys/<name>` (one per plugin directory and base interpreter) records the key and
//! the identity of every input file: device, inode, size, mtime and ctime, as `lstat` reports
//! them. A lookup stats the inputs again (and lists the wheels directory) and uses the key
//! only when every stamp is unchanged. Writing a file, renaming another over it, or setting
//! its times always moves its ctime to the present, which nobody but the clock's owner can set
//! back; a memo is written only when every input's ctime is at least [`SETTLED`] old, so a
//! change within the timestamp granularity of the hashing itself cannot go unseen.

use crate::manifest::{Manifest, PythonSection};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// The memo directory in the store.
pub const MEMO_DIR: &str = ".keys";
/// Largest memo read.
const MAX_MEMO_BYTES: u64 = 1024 * 1024;
/// How old every input's ctime must be before a memo of it is written.
pub const SETTLED: Duration = Duration::from_secs(2);

/// The identity of one input file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    name: String,
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Memo {
    dir: PathBuf,
    base: PathBuf,
    python: PythonSection,
    stamps: Vec<Stamp>,
    key: String,
}

fn memo_path(root: &Path, manifest: &Manifest, base: &Path) -> PathBuf {
    let mut hash = Sha256::new();
    hash.update(manifest.dir.as_os_str().as_encoded_bytes());
    hash.update([0]);
    hash.update(base.as_os_str().as_encoded_bytes());
    root.join(MEMO_DIR)
        .join(crate::audit::chain::hex(&hash.finalize()[..16]))
}

/// The stamps of the manifest's inputs: the lock, then every file of the wheels directory
/// by name. `None` when one cannot be read (the full key computation then reports why).
pub fn stamps(manifest: &Manifest) -> Option<Vec<Stamp>> {
    let python = &manifest.file.python;
    let mut out = Vec::new();
    if let Some(lock) = &python.requirements {
        out.push(stamp("lock".into(), &manifest.dir.join(lock))?);
    }
    if let Some(wheels) = &python.wheels {
        let dir = manifest.dir.join(wheels);
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .ok()?
            .map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect::<Option<_>>()?;
        names.sort();
        for name in names {
            let path = dir.join(&name);
            out.push(stamp(name, &path)?);
        }
    }
    Some(out)
}

fn stamp(name: String, path: &Path) -> Option<Stamp> {
    let meta = path.symlink_metadata().ok()?;
    Some(Stamp {
        name,
        dev: meta.dev(),
        ino: meta.ino(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
    })
}

/// The memoised key of `manifest`'s environment for `base`, when its inputs are unchanged.
pub fn lookup(root: &Path, manifest: &Manifest, base: &Path) -> Option<String> {
    let path = memo_path(root, manifest, base);
    let bytes = crate::untrusted_file::read(&path, MAX_MEMO_BYTES).ok()?;
    let memo: Memo = serde_json::from_slice(&bytes).ok()?;
    let same = memo.dir == manifest.dir
        && memo.base == base
        && memo.python == manifest.file.python
        && Some(&memo.stamps) == stamps(manifest).as_ref();
    same.then_some(memo.key)
}

/// Records `key` for `manifest`'s inputs, stamped `before` the key was computed: only when
/// they are unchanged since and settled (see the module doc), and the store root exists.
/// Failing to write is not an error: the next lookup hashes.
pub fn record(root: &Path, manifest: &Manifest, base: &Path, key: &str, before: Vec<Stamp>) {
    record_settled(root, manifest, base, key, before, SETTLED);
}

fn record_settled(
    root: &Path,
    manifest: &Manifest,
    base: &Path,
    key: &str,
    before: Vec<Stamp>,
    settle: Duration,
) {
    let settled = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()
        .and_then(|now| now.checked_add(Duration::from_secs(1))?.checked_sub(settle))
        .map(|t| i64::try_from(t.as_secs()).unwrap_or(i64::MAX));
    // Whole seconds: `ctime.0 < limit` holds for a ctime at least `settle` old (rounded up).
    let all_settled = settled.is_some_and(|limit| before.iter().all(|s| s.ctime.0 < limit));
    if !all_settled || stamps(manifest).as_ref() != Some(&before) || !root.is_dir() {
        return;
    }
    let memo = Memo {
        dir: manifest.dir.clone(),
        base: base.to_owned(),
        python: manifest.file.python.clone(),
        stamps: before,
        key: key.to_owned(),
    };
    let path = memo_path(root, manifest, base);
    let Some(dir) = path.parent() else { return };
    // Readable by an engine running as another user than the installer.
    if std::fs::DirBuilder::new().mode(0o755).create(dir).is_ok() {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    }
    let Ok(text) = serde_json::to_vec(&memo) else {
        return;
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)));
    if written.is_err() || std::fs::rename(&tmp, &path).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn plugin(dir: &Path) -> Manifest {
        let toml = "schema = 1\n[plugin]\nname = \"m\"\nversion = \"1.0.0\"\napi = \"^1\"\nentry = \"main.py\"\n[python]\nwheels = \"w\"\n";
        std::fs::write(dir.join("plugbox.toml"), toml).unwrap();
        std::fs::write(dir.join("main.py"), "").unwrap();
        std::fs::create_dir_all(dir.join("w")).unwrap();
        std::fs::write(dir.join("w/a.whl"), "a").unwrap();
        Manifest::load_for_host(dir).unwrap()
    }

    #[test]
    fn a_memo_holds_until_an_input_changes_and_fresh_inputs_are_not_memoised() {
        let (dir, root) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let m = plugin(dir.path());
        let base = Path::new("/usr/bin/python3.11");
        let before = stamps(&m).unwrap();
        // Just written: not settled, so not recorded.
        record(root.path(), &m, base, "k1", before.clone());
        assert_eq!(lookup(root.path(), &m, base), None);
        record_settled(root.path(), &m, base, "k1", before, Duration::ZERO);
        assert_eq!(lookup(root.path(), &m, base).as_deref(), Some("k1"));
        assert_eq!(lookup(root.path(), &m, Path::new("/other")), None);
        std::fs::write(dir.path().join("w/a.whl"), "changed").unwrap();
        assert_eq!(lookup(root.path(), &m, base), None, "a changed file");
        let before = stamps(&m).unwrap();
        record_settled(root.path(), &m, base, "k2", before, Duration::ZERO);
        std::fs::write(dir.path().join("w/b.whl"), "b").unwrap();
        assert_eq!(lookup(root.path(), &m, base), None, "an added file");
    }
}
