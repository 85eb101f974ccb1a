//! The unconfined part of an install: `BASE -m venv --without-pip ENV`, then pip from the base
//! interpreter (`BASE -I -m pip --python ENV/bin/python install ...`), as the installing user.
//!
//! pip is the installer, not plugin code, and it runs no package code: `--only-binary=:all:`
//! is always given (a wheel is unpacked, never executed), and the lock pip reads was checked
//! and written again by plugbox (no option can come from it). With a lock, `--require-hashes`
//! pins every file; with bundled wheels only, `--no-index` keeps pip offline and pip's
//! configuration files are not read.

use super::inputs::Inputs;
use super::InstallError;
use std::path::Path;
use std::process::{Command, Stdio};

/// Bytes of pip's output quoted in an error.
const TAIL_BYTES: u64 = 8 * 1024;

/// pip's environment variables kept: where packages come from and how to reach it. Every
/// other `PIP_*` (find-links, binary choices, targets) and every `PYTHON*` is dropped.
const KEPT_PIP_VARS: &[&str] = &[
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_TRUSTED_HOST",
    "PIP_CERT",
    "PIP_CLIENT_CERT",
    "PIP_PROXY",
    "PIP_TIMEOUT",
    "PIP_DEFAULT_TIMEOUT",
    "PIP_RETRIES",
    "PIP_CACHE_DIR",
    "PIP_NO_CACHE_DIR",
    "PIP_CONFIG_FILE",
];

fn command(program: &Path, log: &Path) -> Result<Command, InstallError> {
    let out = std::fs::File::options()
        .append(true)
        .create(true)
        .open(log)
        .map_err(|e| pip_error("open the log", e))?;
    let err = out.try_clone().map_err(|e| pip_error("open the log", e))?;
    let mut cmd = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let pip = name.starts_with("PIP_") && !KEPT_PIP_VARS.contains(&name.as_ref());
        if pip || name.starts_with("PYTHON") {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    Ok(cmd)
}

fn pip_error(what: &str, e: impl std::fmt::Display) -> InstallError {
    InstallError::Pip {
        what: what.to_owned(),
        output: e.to_string(),
    }
}

/// `BASE -I -m venv --without-pip ENV`.
pub fn create_venv(base: &Path, env: &Path, log: &Path) -> Result<(), InstallError> {
    let mut cmd = command(base, log)?;
    cmd.args(["-I", "-m", "venv", "--without-pip"]).arg(env);
    finish("create the virtual environment", &mut cmd, log)
}

/// pip installs the inputs into `env`.
pub fn install(base: &Path, env: &Path, inputs: &Inputs, log: &Path) -> Result<(), InstallError> {
    let mut cmd = command(base, log)?;
    cmd.args(["-I", "-m", "pip", "--python"])
        .arg(env.join("bin/python"))
        .args([
            "install",
            "--no-input",
            "--disable-pip-version-check",
            "--no-warn-script-location",
            "--only-binary=:all:",
            // Compiled afterwards, confined (`pyenv::compile`): parsing is not pip's job here.
            "--no-compile",
        ]);
    match (&inputs.requirements, &inputs.wheels) {
        (Some(requirements), wheels) => {
            let lock = log.with_file_name("requirements.lock");
            std::fs::write(&lock, super::lock::render(requirements))
                .map_err(|e| pip_error("write the checked lock", e))?;
            cmd.arg("--require-hashes").arg("-r").arg(&lock);
            if let Some(dir) = wheels {
                cmd.arg("--find-links").arg(dir);
            }
        }
        (None, Some(dir)) => {
            cmd.env("PIP_CONFIG_FILE", "/dev/null")
                .arg("--no-index")
                .arg("--find-links")
                .arg(dir)
                .args(&inputs.wheel_files);
        }
        (None, None) => return Ok(()),
    }
    finish("pip install", &mut cmd, log)
}

fn finish(what: &str, cmd: &mut Command, log: &Path) -> Result<(), InstallError> {
    let status = cmd.status().map_err(|e| pip_error(what, e))?;
    if status.success() {
        return Ok(());
    }
    let output = tail(log);
    if let Some(requirement) = no_wheel(&output) {
        return Err(InstallError::NoWheel { requirement });
    }
    Err(InstallError::Pip {
        what: format!("{what} ({status})"),
        output,
    })
}

/// The requirement pip found no wheel for, from its message.
fn no_wheel(output: &str) -> Option<String> {
    let line = output
        .lines()
        .find(|l| l.contains("No matching distribution found for "))?;
    let (_, requirement) = line.split_once("No matching distribution found for ")?;
    Some(requirement.trim().to_owned())
}

/// The last [`TAIL_BYTES`] of the log.
fn tail(log: &Path) -> String {
    let Ok(file) = crate::untrusted_file::UntrustedFile::open(log) else {
        return String::new();
    };
    let Ok(bytes) = file.read_capped(64 * 1024 * 1024) else {
        return String::new();
    };
    let start = bytes.len().saturating_sub(TAIL_BYTES as usize);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_requirement_without_a_wheel_is_named() {
        let out = "ERROR: Could not find a version that satisfies the requirement foo==1.0 (from versions: none)\nERROR: No matching distribution found for foo==1.0\n";
        assert_eq!(no_wheel(out).as_deref(), Some("foo==1.0"));
        assert_eq!(no_wheel("ERROR: other"), None);
    }
}
