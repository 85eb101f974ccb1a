//! The Python SDK shipped inside the binary: every file of `python/plugbox/` is compiled in,
//! and materialised the first time an engine needs it into a versioned, content-addressed
//! directory (`sdk-<version>-<16 hex of its sha256>`) under a cache root, byte-compiled and
//! read-only. A `plugbox` binary copied anywhere therefore starts plugins without the source
//! tree; a host can still point at another SDK (`EngineConfig::sdk_dir`, `PLUGBOX_SDK`).
//!
//! The directory is built beside its final name and renamed into place, so a reader never
//! sees a half-written SDK; when two engines race, one rename wins and the other uses it. An
//! existing directory is used only after its files are compared with the compiled-in ones: a
//! changed file refuses the engine with an error naming it, rather than running plugins on it.

use sha2::{Digest, Sha256};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

macro_rules! sdk_files {
    ($($name:literal),* $(,)?) => {
        &[$(($name, include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/python/plugbox/", $name)) as &[u8])),*]
    };
}

/// Every file of the SDK package (`plugbox/`), by name. A unit test keeps this list equal to
/// the directory's contents.
pub const FILES: &[(&str, &[u8])] = sdk_files!(
    "__init__.py",
    "_bulk.py",
    "_calls.py",
    "_channel.py",
    "_commands.py",
    "_errors.py",
    "_frames.py",
    "_hosting_async.py",
    "_hosting_caps.py",
    "_hosting_discover.py",
    "_hosting_lines.py",
    "_hosting_types.py",
    "_messages.py",
    "_runtime.py",
    "_schema.py",
    "_serving.py",
    "_sourceonly.py",
    "_strict_json.py",
    "host.py",
    "hosting.py",
    "log.py",
    "py.typed",
    "testing.py",
    "_zygote.py",
);

/// Where the compiled-in SDK is byte-compiled (the interpreter plugins run on by default).
const COMPILER: &str = "/usr/bin/python3";

/// The SDK cannot be materialised or is not the one compiled in.
#[derive(Debug, thiserror::Error)]
#[error("engine: SDK {path}: {message}")]
pub struct SdkError {
    /// The directory or file.
    pub path: PathBuf,
    /// What went wrong.
    pub message: String,
}

fn sdk_error(path: &Path, message: impl std::fmt::Display) -> SdkError {
    SdkError {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The name of the compiled-in SDK's directory: `sdk-<crate version>-<16 hex digits of the
/// sha256 over every file's name and contents>`.
pub fn dir_name() -> String {
    let mut hash = Sha256::new();
    for (name, bytes) in FILES {
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    }
    let digest = hash.finalize();
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("sdk-{}-{hex}", env!("CARGO_PKG_VERSION"))
}

/// The default cache root: `/var/cache/plugbox` when running as root (readable by every
/// sandbox uid), else `$XDG_CACHE_HOME/plugbox` or `~/.cache/plugbox` (plugins then run as
/// the same user).
pub fn default_root() -> PathBuf {
    if crate::sys::geteuid() == 0 {
        return PathBuf::from("/var/cache/plugbox");
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|v| Path::new(v).is_absolute());
    match (xdg, std::env::var_os("HOME")) {
        (Some(cache), _) => PathBuf::from(cache).join("plugbox"),
        (None, Some(home)) => PathBuf::from(home).join(".cache/plugbox"),
        (None, None) => std::env::temp_dir().join(format!("plugbox-{}", crate::sys::geteuid())),
    }
}

/// The compiled-in SDK under `root`, materialised if it is not there yet; returns the
/// directory to put on the plugin's `sys.path` (it holds `plugbox/`).
pub fn materialise(root: &Path) -> Result<PathBuf, SdkError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(|e| sdk_error(root, format!("cannot create: {e}")))?;
    let target = root.join(dir_name());
    if target.exists() {
        verify(&target)?;
        return Ok(target);
    }
    // Unique per engine, not only per process: two engines of one process (a test binary's
    // threads) materialising at once must not remove each other's half-built copy.
    static SCRATCH: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SCRATCH.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let scratch = root.join(format!(".{}.{}.{n}", dir_name(), std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let built = build(&scratch, &target);
    if let Err(e) = built {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e);
    }
    if std::fs::rename(&scratch, &target).is_err() {
        // Another engine renamed its copy into place first: use that one.
        let _ = make_writable(&scratch);
        let _ = std::fs::remove_dir_all(&scratch);
    }
    verify(&target)?;
    Ok(target)
}

/// Checks that a host-chosen SDK directory holds the `plugbox` package (a regular
/// `plugbox/__init__.py`), so a wrong path is an error naming it rather than a plugin that
/// dies at import.
pub fn check_package(dir: &Path) -> Result<(), SdkError> {
    let init = dir.join("plugbox").join("__init__.py");
    match std::fs::metadata(&init) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(sdk_error(&init, "is not a regular file")),
        Err(e) => Err(sdk_error(
            &init,
            format!("the plugbox package is not there: {e}"),
        )),
    }
}

/// Writes every file into `scratch/plugbox/`, byte-compiles them as if they lived in
/// `target`, and makes the tree read-only.
fn build(scratch: &Path, target: &Path) -> Result<(), SdkError> {
    let package = scratch.join("plugbox");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(&package)
        .map_err(|e| sdk_error(&package, e))?;
    for (name, bytes) in FILES {
        let path = package.join(name);
        std::fs::write(&path, bytes).map_err(|e| sdk_error(&path, e))?;
        set_mode(&path, 0o444)?;
    }
    // Plugins cannot write `__pycache__` in their sandbox: compile here, with the final path
    // in the code objects so tracebacks name it.
    let status = std::process::Command::new(COMPILER)
        .args(["-m", "compileall", "-q", "-d"])
        .arg(target.join("plugbox"))
        .arg(&package)
        .stdout(std::process::Stdio::null())
        .status();
    if !status.is_ok_and(|s| s.success()) {
        tracing::warn!(sdk = %package.display(), "could not byte-compile the SDK; plugins will start slower");
    }
    let cache = package.join("__pycache__");
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for entry in entries.flatten() {
            set_mode(&entry.path(), 0o444)?;
        }
        set_mode(&cache, 0o555)?;
    }
    set_mode(&package, 0o555)?;
    set_mode(scratch, 0o555)
}

/// Checks an existing SDK directory: owned by this user, writable by nobody else, and every
/// compiled-in file present with the same contents.
fn verify(target: &Path) -> Result<(), SdkError> {
    for dir in [target.to_owned(), target.join("plugbox")] {
        let meta = std::fs::symlink_metadata(&dir).map_err(|e| sdk_error(&dir, e))?;
        if !meta.is_dir() || meta.uid() != crate::sys::geteuid() || meta.mode() & 0o022 != 0 {
            return Err(sdk_error(
                &dir,
                "is not a directory of this user that only it can write",
            ));
        }
    }
    for (name, bytes) in FILES {
        let path = target.join("plugbox").join(name);
        let found = crate::untrusted_file::read(&path, bytes.len() as u64)
            .map_err(|e| sdk_error(&path, e))?;
        if found != *bytes {
            return Err(sdk_error(
                &path,
                "differs from the SDK compiled into this binary (remove the directory to rebuild it)",
            ));
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> Result<(), SdkError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| sdk_error(path, e))
}

/// Lets a losing racer delete its read-only scratch copy.
fn make_writable(scratch: &Path) -> Result<(), SdkError> {
    set_mode(scratch, 0o755)?;
    let package = scratch.join("plugbox");
    set_mode(&package, 0o755)?;
    let _ = set_mode(&package.join("__pycache__"), 0o755);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_compiled_in_list_is_every_file_of_the_package() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/plugbox");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = FILES.iter().map(|(n, _)| (*n).to_owned()).collect();
        listed.sort();
        assert_eq!(listed, on_disk, "update sdk::FILES");
    }

    #[test]
    fn a_host_chosen_directory_without_the_package_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = check_package(dir.path()).unwrap_err();
        assert_eq!(e.path, dir.path().join("plugbox/__init__.py"));
        check_package(&Path::new(env!("CARGO_MANIFEST_DIR")).join("python")).unwrap();
    }

    #[test]
    fn engines_of_one_process_materialising_at_once_all_succeed() {
        let root = tempfile::tempdir().unwrap();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let root = root.path().to_owned();
                std::thread::spawn(move || materialise(&root))
            })
            .collect();
        for t in threads {
            assert_eq!(t.join().unwrap().unwrap(), root.path().join(dir_name()));
        }
    }

    #[test]
    fn materialised_once_read_only_and_a_changed_file_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = materialise(root.path()).unwrap();
        assert_eq!(dir, root.path().join(dir_name()));
        assert_eq!(materialise(root.path()).unwrap(), dir, "found, not rebuilt");
        let init = dir.join("plugbox/__init__.py");
        assert_eq!(std::fs::metadata(&init).unwrap().mode() & 0o777, 0o444);
        assert!(dir.join("plugbox/__pycache__").is_dir(), "byte-compiled");
        set_mode(&dir.join("plugbox"), 0o755).unwrap();
        set_mode(&init, 0o644).unwrap();
        std::fs::write(&init, b"import os; os.system('id')\n").unwrap();
        set_mode(&dir.join("plugbox"), 0o555).unwrap();
        let e = materialise(root.path()).unwrap_err();
        assert_eq!(e.path, init);
        assert!(e.message.contains("differs"), "{e}");
    }
}
