//! Source distributions, with the manifest's `build_sdists = true` only: each bundled sdist
//! is built into a wheel inside a plugbox sandbox, by
//! `BASE -I -m pip wheel --no-deps --no-build-isolation --no-index -w OUT SDIST`. Building
//! runs the package's own code (`setup.py`, a build backend), so the sandbox reads only the
//! baseline, the base interpreter's library and the sdist, writes only a fresh scratch
//! directory, has no network, runs as uid 65534 when plugbox is root, and has bounded memory
//! and time. The wheel it leaves is then installed like a bundled one.
//!
//! With a lock, the sdist must be the locked file (its sha256 among the requirement's
//! hashes); the built wheel's sha256 is added to that requirement for pip's
//! `--require-hashes`.

use super::confined::{self, Step};
use super::inputs::{copy_from, Inputs};
use super::InstallError;
use crate::audit::chain::hex;
use crate::untrusted_file::{open_node_at, Node, UntrustedFile};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// System files pip reads (its user agent names the distribution; `mimetypes` reads the
/// type map), granted read-only when they exist: public, and refusing them breaks pip.
const SYSTEM_FILES: &[&str] = &[
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/lsb-release",
    "/etc/mime.types",
];
/// Wall-clock budget of one sdist build.
const BUILD_WALL: Duration = Duration::from_secs(600);

/// Builds every sdist of `inputs` into a wheel in `inputs.wheels`, confined; `build` is a
/// fresh directory the sandbox may write, `read` the base interpreter's files beyond the
/// baseline.
pub fn build_all(
    base: &Path,
    inputs: &mut Inputs,
    build: &Path,
    read: &[PathBuf],
) -> Result<(), InstallError> {
    let Some(wheels) = inputs.wheels.clone() else {
        return Ok(());
    };
    for (i, (sdist, digest)) in std::mem::take(&mut inputs.sdists).into_iter().enumerate() {
        let out = build.join(format!("wheels-{i}"));
        build_one(base, &sdist, build, &out, read)?;
        let built = built_wheel(&sdist, &out)?;
        let name = built.path().file_name().unwrap_or_default().to_owned();
        let copy = wheels.join(&name);
        let wheel_digest = copy_from(built, &copy)?;
        if let Some(requirements) = &mut inputs.requirements {
            let project =
                super::lock::normalise(name.to_str().unwrap_or("").split('-').next().unwrap_or(""));
            let sha = |d: &[u8]| format!("sha256:{}", hex(d));
            if let Some(r) = requirements.iter_mut().find(|r| r.name == project) {
                if !r.hashes.contains(&sha(&digest)) {
                    return Err(InstallError::Build {
                        sdist: sdist.display().to_string(),
                        output: format!(
                            "its sha256 is not among the hashes of lock line {}",
                            r.line
                        ),
                    });
                }
                r.hashes.push(sha(&wheel_digest));
            }
        }
        inputs.wheel_files.push(copy);
    }
    Ok(())
}

fn build_one(
    base: &Path,
    sdist: &Path,
    build: &Path,
    out: &Path,
    read: &[PathBuf],
) -> Result<(), InstallError> {
    let mut read = read.to_vec();
    read.push(sdist.to_owned());
    read.extend(
        SYSTEM_FILES
            .iter()
            .map(PathBuf::from)
            .filter(|p| p.exists()),
    );
    let args: Vec<OsString> = [
        "-I",
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "--no-index",
        "--no-input",
        "--disable-pip-version-check",
        "-w",
    ]
    .into_iter()
    .map(OsString::from)
    .chain([out.into(), sdist.into()])
    .collect();
    let step = Step {
        name: format!("build {}", sdist.display()),
        program: base.to_owned(),
        args,
        env: build_env(build),
        read,
        write: build.to_owned(),
        subprocesses: true,
        wall: BUILD_WALL,
    };
    let failed = |output: String| InstallError::Build {
        sdist: sdist.display().to_string(),
        output,
    };
    let outcome = confined::run(&step).map_err(failed)?;
    if !outcome.success() {
        return Err(failed(format!(
            "{}: {}",
            outcome
                .status
                .map_or("killed at the wall-clock budget".into(), |s| format!(
                    "{s:?}"
                )),
            outcome.output
        )));
    }
    Ok(())
}

/// The build's environment: its scratch directory as `HOME` and `TMPDIR`, no pip
/// configuration, no cache.
fn build_env(build: &Path) -> Vec<(String, OsString)> {
    vec![
        ("HOME".into(), build.into()),
        ("TMPDIR".into(), build.into()),
        ("PIP_CONFIG_FILE".into(), "/dev/null".into()),
        ("PIP_NO_CACHE_DIR".into(), "1".into()),
        ("PATH".into(), "/usr/bin:/bin".into()),
        ("LC_ALL".into(), "C.UTF-8".into()),
    ]
}

/// The one `*.whl` the build left in `out`, open. The sandbox owned `out` and could have
/// planted symlinks: it is opened from `/` without following one, and the wheel beneath it.
fn built_wheel(sdist: &Path, out: &Path) -> Result<UntrustedFile, InstallError> {
    let failed = |output: String| InstallError::Build {
        sdist: sdist.display().to_string(),
        output,
    };
    let fd = crate::nofollow_dir::open(out, |_, _| Ok(()))
        .map_err(|e| failed(format!("{}: {e:?}", out.display())))?;
    let mut wheels: Vec<std::ffi::OsString> = crate::untrusted_file::entries(fd.as_fd())
        .map_err(|e| failed(format!("{}: {e}", out.display())))?
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| Path::new(n).extension().is_some_and(|x| x == "whl"))
        .collect();
    let name = match (wheels.pop(), wheels.is_empty()) {
        (Some(name), true) => name,
        _ => return Err(failed("the build did not leave exactly one wheel".into())),
    };
    match open_node_at(fd.as_fd(), &name, &out.join(&name)) {
        Ok(Node::File(file)) => Ok(file),
        Ok(Node::Dir(_)) => Err(failed("the built wheel is a directory".into())),
        Err(e) => Err(failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_build_output_that_is_a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();
        std::fs::write(elsewhere.join("secret-1.0-py3-none-any.whl"), "x").unwrap();
        let out = tmp.path().join("wheels-0");
        std::os::unix::fs::symlink(&elsewhere, &out).unwrap();
        assert!(built_wheel(Path::new("s.tar.gz"), &out).is_err());
        // The wheel itself a symlink: refused too.
        std::fs::remove_file(&out).unwrap();
        std::fs::create_dir(&out).unwrap();
        std::os::unix::fs::symlink(
            elsewhere.join("secret-1.0-py3-none-any.whl"),
            out.join("a-1.0-py3-none-any.whl"),
        )
        .unwrap();
        assert!(built_wheel(Path::new("s.tar.gz"), &out).is_err());
        std::fs::remove_file(out.join("a-1.0-py3-none-any.whl")).unwrap();
        std::fs::write(out.join("a-1.0-py3-none-any.whl"), "wheel").unwrap();
        assert!(built_wheel(Path::new("s.tar.gz"), &out).is_ok());
    }
}
