//! `plugbox check`'s syntax check of the entry file: compiled, never run, by Debian's
//! interpreter (never the manifest's `runtime`, which the plugin chose) inside the strictest
//! sandbox (`plugbox exec` with the default policy: no file beyond the interpreter's own, a
//! wall-clock limit), reading the source from a pipe, so a hostile file can neither run nor
//! hang `check`.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// The interpreter that compiles: a fixed, trusted path.
const PYTHON: &str = "/usr/bin/python3";
/// Largest entry file compiled, bytes.
pub(crate) const MAX_SOURCE_BYTES: u64 = 16 * 1024 * 1024;
/// Compiles stdin as `argv[1]`; prints the syntax error and exits 1 if there is one.
const COMPILE: &str = "import sys\n\
src = sys.stdin.buffer.read()\n\
try:\n    compile(src, sys.argv[1], 'exec', dont_inherit=True)\n\
except (SyntaxError, ValueError) as e:\n    print(f'{type(e).__name__}: {e}')\n    sys.exit(1)\n";

/// `Ok(None)` when the entry compiles, `Ok(Some(error))` when it has a syntax error, `Err`
/// when the check itself could not run.
pub fn check_entry(entry: &Path, shown_as: &str) -> Result<Option<String>, String> {
    let source = plugbox::untrusted_file::read(entry, MAX_SOURCE_BYTES)
        .map_err(|e| format!("entry: {e}"))?;
    let policy = write_default_policy()?;
    let result = compile(&policy, &source, shown_as);
    let _ = std::fs::remove_file(&policy);
    result
}

/// The default (strictest) policy in a new file of the temporary directory, created with
/// `O_EXCL` (never through a file or symlink someone put there first) and mode 0600.
pub(crate) fn write_default_policy() -> Result<std::path::PathBuf, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let name = format!("plugbox-check-{}-{nanos}.toml", std::process::id());
    let path = std::env::temp_dir().join(name);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| f.write_all(b"schema = 1\n"))
        .map_err(|e| format!("syntax check: {}: {e}", path.display()))?;
    Ok(path)
}

/// Runs `script` on Debian's interpreter under `plugbox exec --policy POLICY`, with `source`
/// on its stdin and `shown_as` as `argv[1]`.
pub(crate) fn run_confined(
    policy: &Path,
    script: &str,
    source: &[u8],
    shown_as: &str,
) -> std::io::Result<std::process::Output> {
    let me = std::env::current_exe()?;
    let mut child = Command::new(me)
        .arg("exec")
        .arg("--policy")
        .arg(policy)
        .args(["--", PYTHON, "-I", "-S", "-c", script, shown_as])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        // A script that stops reading early has already failed; its status says so.
        let _ = stdin.write_all(source);
    }
    child.wait_with_output()
}

fn compile(policy: &Path, source: &[u8], shown_as: &str) -> Result<Option<String>, String> {
    let out = run_confined(policy, COMPILE, source, shown_as)
        .map_err(|e| format!("syntax check: {e}"))?;
    match out.status.code() {
        Some(0) => Ok(None),
        Some(1) => Ok(Some(
            String::from_utf8_lossy(&out.stdout).trim_end().to_owned(),
        )),
        _ => Err(format!(
            "syntax check did not finish ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        )),
    }
}
