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
use std::ffi::OsString;
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
        place(site, out, &tag, &mut done)?;
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

/// Copies `OUT/<dir>/<name>.<tag>.pyc` to `<dir>/__pycache__/` for every `.py` under `dir`.
fn place(dir: &Path, out: &Path, tag: &str, done: &mut Compiled) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mirror = out.join(dir.strip_prefix("/").unwrap_or(dir));
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = path.symlink_metadata() else {
            continue;
        };
        if meta.is_dir() {
            if entry.file_name() != "__pycache__" {
                place(&path, out, tag, done)?;
            }
            continue;
        }
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".py")) else {
            continue;
        };
        if !meta.is_file() {
            continue;
        }
        let pyc_name = format!("{stem}.{tag}.pyc");
        let Ok(bytes) = crate::untrusted_file::read(&mirror.join(&pyc_name), MAX_PYC_BYTES) else {
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
