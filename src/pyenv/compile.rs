//! Byte-compiling an environment before any plugin runs in it: the sandbox cannot write
//! `__pycache__`, so without this every import would compile from source, every time.
//!
//! `compileall` parses untrusted bytes, so it runs confined (read the environment, write only a
//! fresh output directory, no network) with `-X pycache_prefix=OUT`: the bytecode lands in
//! `OUT/<source dir>/`, never in the environment. plugbox then copies each `.pyc` into the
//! `__pycache__` beside its source. Code objects name the environment's final path (`-d`), so
//! tracebacks do too.

use crate::install::confined::{self, Step};
use crate::sys::WaitStatus;
use crate::untrusted_file::{open_node_at, Node};
use std::ffi::OsString;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Largest `.pyc` copied.
const MAX_PYC_BYTES: u64 = 64 * 1024 * 1024;
/// Wall-clock budget of the compilation.
const COMPILE_WALL: Duration = Duration::from_secs(600);

/// What byte-compiling found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compiled {
    /// `.py` files with their `.pyc` installed.
    pub compiled: usize,
    /// `.py` files `compileall` could not compile (a syntax error: imported from source, or
    /// failing, as without plugbox).
    pub failed: Vec<PathBuf>,
}

/// Compiles `site` (an environment's site-packages being built, `version` its Python) with
/// `python`, confined; `final_site` is the path it will have once installed; `out` a fresh
/// directory the confined step may write; `read` what it may read besides the baseline.
pub fn compile(
    python: &Path,
    version: (u32, u32),
    site: &Path,
    final_site: &Path,
    out: &Path,
    read: Vec<PathBuf>,
) -> Result<Compiled, String> {
    let mut prefix = OsString::from("pycache_prefix=");
    prefix.push(out);
    let step = Step {
        name: "byte-compile".into(),
        program: python.to_owned(),
        args: vec![
            "-I".into(),
            "-S".into(),
            "-X".into(),
            prefix,
            "-m".into(),
            "compileall".into(),
            "-q".into(),
            "-d".into(),
            final_site.into(),
            site.into(),
        ],
        env: vec![("LC_ALL".into(), "C.UTF-8".into())],
        read,
        write: out.to_owned(),
        subprocesses: false,
        wall: COMPILE_WALL,
    };
    let outcome = confined::run(&step)?;
    // compileall exits 1 when some file did not compile; anything else is the step failing.
    let ran = matches!(
        outcome.status,
        Some(WaitStatus::Exited(0)) | Some(WaitStatus::Exited(1))
    );
    let tag = format!("cpython-{}{}", version.0, version.1);
    let mut done = Compiled::default();
    if ran {
        let mirror = mirror_of(out, site)?;
        place(site, mirror.as_ref(), &tag, &mut done)?;
    }
    if !ran || (done.compiled == 0 && !done.failed.is_empty()) {
        return Err(format!(
            "byte-compile (confined) failed: {}: {}",
            outcome.status.map_or_else(
                || format!("killed after {} s", COMPILE_WALL.as_secs()),
                |s| format!("{s:?}")
            ),
            outcome.output
        ));
    }
    Ok(done)
}

/// The descriptor of `OUT/<site without its leading />`, opened one component at a time
/// without following a symlink (the confined step owned `OUT` and could have planted one);
/// `None` when compileall wrote nothing there.
fn mirror_of(out: &Path, site: &Path) -> Result<Option<OwnedFd>, String> {
    let shown = |e: &dyn std::fmt::Display| format!("{}: {e}", out.display());
    let mut fd =
        crate::nofollow_dir::open(out, |_, _| Ok(())).map_err(|e| shown(&format!("{e:?}")))?;
    for component in site.components().skip(1) {
        match open_node_at(fd.as_fd(), component.as_os_str(), out) {
            Ok(Node::Dir(next)) => fd = next,
            _ => return Ok(None),
        }
    }
    Ok(Some(fd))
}

/// Copies `<mirror>/<name>.<tag>.pyc` to `<dir>/__pycache__/` for every `.py` under `dir`,
/// reading the confined step's output only beneath descriptors, never through a symlink.
fn place(
    dir: &Path,
    mirror: Option<&OwnedFd>,
    tag: &str,
    done: &mut Compiled,
) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        let name = entry.file_name();
        if meta.is_dir() {
            if name != "__pycache__" {
                let sub = mirror.and_then(|m| match open_node_at(m.as_fd(), &name, &path) {
                    Ok(Node::Dir(fd)) => Some(fd),
                    _ => None,
                });
                place(&path, sub.as_ref(), tag, done)?;
            }
            continue;
        }
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".py")) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let pyc_name = format!("{stem}.{tag}.pyc");
        let bytes = mirror.and_then(
            |m| match open_node_at(m.as_fd(), pyc_name.as_ref(), &path) {
                Ok(Node::File(file)) => file.read_capped(MAX_PYC_BYTES).ok(),
                _ => None,
            },
        );
        let Some(bytes) = bytes else {
            done.failed.push(path);
            continue;
        };
        let cache = dir.join("__pycache__");
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(&cache)
            .map_err(|e| format!("{}: {e}", cache.display()))?;
        let target = cache.join(&pyc_name);
        std::fs::write(&target, bytes).map_err(|e| format!("{}: {e}", target.display()))?;
        done.compiled += 1;
    }
    Ok(())
}
