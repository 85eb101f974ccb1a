//! Parent side: resolves the command to run into real paths, once per command.
//!
//! The sandbox grants execute on exactly the files needed to start the command: the command
//! itself, its ELF interpreter (the dynamic loader), and for a `#!` script the interpreter
//! named on its first line (and that one's loader). Names are resolved through the host's
//! `PATH` and then to their real paths, so a symlink or a shim is never what gets granted.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Bytes read from an executable to find its interpreter.
const HEADER_BYTES: u64 = 64 * 1024;
const PT_INTERP: u32 = 3;

/// A command resolved to real files.
#[derive(Debug, Clone)]
pub struct ResolvedCommand {
    /// The path `execve` is given: as found (absolute), symlinks kept, so that a virtual
    /// environment's `bin/python` still finds its `pyvenv.cfg`.
    path: PathBuf,
    executables: Vec<PathBuf>,
}

/// Why a command cannot be run.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such program on PATH.
    #[error("command: {0:?} not found on PATH")]
    NotFound(String),
    /// The file exists but is not a runnable file.
    #[error("command: {path}: {reason}")]
    NotRunnable {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The sandbox uid cannot reach or execute the file.
    #[error("command: {path} is not reachable by sandbox uid {uid}: {blocker} (mode {mode:o}) denies it; every directory on the way must be searchable and the file readable (and, for a program, executable) by that uid, as /usr/bin/python3 is")]
    Unreachable {
        /// The file the sandbox needs.
        path: PathBuf,
        /// The sandbox uid.
        uid: u32,
        /// The path component that blocks it.
        blocker: PathBuf,
        /// That component's mode bits.
        mode: u32,
    },
}

impl ResolvedCommand {
    /// Resolves `program` (a name looked up on `search_path`, or a path) to its real file and
    /// finds the interpreters it needs.
    pub fn resolve(program: &OsStr, search_path: Option<&OsStr>) -> Result<Self, CommandError> {
        let found = find(program, search_path)?;
        let real_path = real(&found)?;
        let path = std::path::absolute(&found).map_err(|e| CommandError::NotRunnable {
            path: found.clone(),
            reason: e.to_string(),
        })?;
        let mut executables = vec![real_path.clone()];
        add_interpreters(&real_path, &mut executables, 0)?;
        Ok(Self { path, executables })
    }

    /// The path passed to `execve`: the one found, absolute, with its symlinks (execute is
    /// granted on the real files it leads to, [`ResolvedCommand::executables`]; if a symlink
    /// on the way is changed after resolution, `execve` meets a file without execute access
    /// and fails).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every file that needs execute access: the command and its interpreters.
    pub fn executables(&self) -> &[PathBuf] {
        &self.executables
    }

    /// Checks that `uid`/`gid` can traverse to and execute every file the command needs.
    pub fn check_reachable(&self, uid: u32, gid: u32) -> Result<(), CommandError> {
        for exe in &self.executables {
            reachable(exe, uid, gid)?;
        }
        Ok(())
    }
}

fn find(program: &OsStr, search_path: Option<&OsStr>) -> Result<PathBuf, CommandError> {
    let as_path = Path::new(program);
    if as_path.as_os_str().as_encoded_bytes().contains(&b'/') {
        return Ok(as_path.to_owned());
    }
    let dirs = search_path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    std::env::split_paths(dirs)
        .map(|dir| dir.join(as_path))
        .find(|candidate| is_executable_file(candidate))
        .ok_or_else(|| CommandError::NotFound(program.to_string_lossy().into_owned()))
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn real(path: &Path) -> Result<PathBuf, CommandError> {
    let not_runnable = |reason: String| CommandError::NotRunnable {
        path: path.to_owned(),
        reason,
    };
    let real = std::fs::canonicalize(path).map_err(|e| not_runnable(e.to_string()))?;
    if !is_executable_file(&real) {
        return Err(not_runnable("not an executable regular file".into()));
    }
    Ok(real)
}

fn add_interpreters(path: &Path, out: &mut Vec<PathBuf>, depth: u8) -> Result<(), CommandError> {
    let header = read_header(path)?;
    let interpreter = if header.starts_with(b"#!") {
        if depth > 0 {
            return Err(CommandError::NotRunnable {
                path: path.to_owned(),
                reason: "a #! interpreter that is itself a script is not supported".into(),
            });
        }
        shebang_interpreter(path, &header)?
    } else {
        elf_interpreter(&header)
    };
    if let Some(interp) = interpreter {
        let interp = real(&interp)?;
        if !out.contains(&interp) {
            out.push(interp.clone());
            add_interpreters(&interp, out, depth + 1)?;
        }
    }
    Ok(())
}

fn read_header(path: &Path) -> Result<Vec<u8>, CommandError> {
    // `path` is real (canonical), so its last component is no symlink; a FIFO or device
    // swapped in since the regular-file check is refused instead of blocking.
    crate::untrusted_file::UntrustedFile::open(path)
        .and_then(|f| f.read_prefix(HEADER_BYTES))
        .map_err(|e| CommandError::NotRunnable {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

fn shebang_interpreter(path: &Path, header: &[u8]) -> Result<Option<PathBuf>, CommandError> {
    let line = header[2..]
        .split(|&b| b == b'\n')
        .next()
        .unwrap_or_default();
    let text = String::from_utf8_lossy(line);
    let interp = text.split_whitespace().next().unwrap_or_default();
    if !interp.starts_with('/') {
        return Err(CommandError::NotRunnable {
            path: path.to_owned(),
            reason: format!("#! interpreter {interp:?} is not an absolute path"),
        });
    }
    Ok(Some(PathBuf::from(interp)))
}

/// The `PT_INTERP` path of a 64-bit little-endian ELF file, if it has one.
fn elf_interpreter(header: &[u8]) -> Option<PathBuf> {
    if header.len() < 64 || &header[..4] != b"\x7fELF" || header[4] != 2 || header[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(header.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(header.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(header.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    (0..phnum).find_map(|i| {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            return None;
        }
        let offset = usize::try_from(u64_at(ph + 8)?).ok()?;
        let size = usize::try_from(u64_at(ph + 32)?).ok()?;
        let raw = header.get(offset..offset.checked_add(size)?)?;
        let raw = raw.split(|&b| b == 0).next()?;
        Some(PathBuf::from(OsStr::from_bytes(raw)))
    })
}

/// Checks that `uid`/`gid` can traverse to `dir` and list and read it (a plugin directory,
/// the SDK).
pub fn check_dir_reachable(dir: &Path, uid: u32, gid: u32) -> Result<(), CommandError> {
    let mut dirs: Vec<&Path> = dir.ancestors().skip(1).collect();
    dirs.reverse();
    for parent in dirs {
        check_mode(dir, parent, uid, gid, 0o1)?;
    }
    check_mode(dir, dir, uid, gid, 0o5)
}

/// Unix permission check of `path` for `uid`/`gid` (no supplementary groups: the sandbox
/// has none): every ancestor directory needs search (x), the file needs read and execute.
fn reachable(path: &Path, uid: u32, gid: u32) -> Result<(), CommandError> {
    let mut dirs: Vec<&Path> = path.ancestors().skip(1).collect();
    dirs.reverse();
    for dir in dirs {
        check_mode(path, dir, uid, gid, 0o1)?;
    }
    check_mode(path, path, uid, gid, 0o5)
}

fn check_mode(
    target: &Path,
    component: &Path,
    uid: u32,
    gid: u32,
    want: u32,
) -> Result<(), CommandError> {
    let meta = component
        .metadata()
        .map_err(|e| CommandError::NotRunnable {
            path: component.to_owned(),
            reason: e.to_string(),
        })?;
    let mode = meta.mode() & 0o7777;
    let bits = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid {
        mode >> 3
    } else {
        mode
    } & 0o7;
    if bits & want == want {
        Ok(())
    } else {
        Err(CommandError::Unreachable {
            path: target.to_owned(),
            uid,
            blocker: component.to_owned(),
            mode,
        })
    }
}
