//! Reading a virtual environment's `.pth` files and editable finders on the host, without
//! running them: which directories they would put on `sys.path`. Bounded (file count and
//! size), and a `.pth` file is never followed through a symlink (`site` would follow it, so
//! one is refused). Also: which installed packages lack byte-code.
//!
//! `site` (CPython 3.11) treats each line of a `.pth` file as: `#...` a comment, blank
//! skipped, `import ...` executed (here: inside the sandbox, with the plugin's rights, so not
//! inspected), anything else a directory joined to the site directory and normalised
//! lexically (`os.path.abspath`), added when it exists. setuptools' editable installs
//! (PEP 660) add a `__editable___NAME_finder.py` whose `MAPPING` and `NAMESPACES` name the
//! source directories it imports from; those are read the same way.

use super::python_env::PythonEnvError;
use crate::pyenv::Venv;
use crate::untrusted_file::UntrustedFileError;
use std::path::{Component, Path, PathBuf};

/// Largest `.pth` file or editable finder read.
const MAX_FILE_BYTES: u64 = 256 * 1024;
/// Most directory entries looked at in one site directory.
const MAX_ENTRIES: usize = 65_536;
/// Most packages named in the "without byte-code" list.
const MAX_NAMED: usize = 16;

/// One directory a `.pth` file or editable finder puts on `sys.path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PthFinding {
    /// The `.pth` file or finder.
    pub(crate) file: PathBuf,
    /// 1-based line.
    pub(crate) line: usize,
    /// The directory, absolute and normalised as `site` does (not resolved).
    pub(crate) path: PathBuf,
}

/// The site directories `site` processes for this environment (Debian's layout included:
/// `local/lib/pythonX.Y/dist-packages`, `lib/python3/dist-packages`).
fn site_dirs(venv: &Venv) -> Vec<PathBuf> {
    let (major, minor) = venv.version;
    let root = &venv.root;
    vec![
        venv.site_packages.clone(),
        root.join(format!("local/lib/python{major}.{minor}/dist-packages")),
        root.join(format!("lib/python{major}/dist-packages")),
        root.join(format!("lib/python{major}.{minor}/dist-packages")),
    ]
}

/// Every directory the environment's `.pth` files and editable finders name.
pub(crate) fn scan(venv: &Venv) -> Result<Vec<PthFinding>, PythonEnvError> {
    let mut found = Vec::new();
    for dir in site_dirs(venv) {
        for name in names(&dir)? {
            let path = dir.join(&name);
            if name.ends_with(".pth") {
                pth_lines(&dir, &path, &mut found)?;
            } else if name.starts_with("__editable__") && name.ends_with("_finder.py") {
                finder_paths(&path, &mut found)?;
            }
        }
    }
    Ok(found)
}

/// The entry names of a site directory (none if it does not exist), bounded.
fn names(dir: &Path) -> Result<Vec<String>, PythonEnvError> {
    let unreadable = |reason: String| PythonEnvError::PthUnreadable {
        path: dir.to_owned(),
        reason,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(unreadable(e.to_string())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(e.to_string()))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
        if names.len() > MAX_ENTRIES {
            return Err(unreadable(format!("more than {MAX_ENTRIES} entries")));
        }
    }
    names.sort();
    Ok(names)
}

/// Reads an untrusted file: regular, not through a symlink, bounded.
fn read(path: &Path) -> Result<String, PythonEnvError> {
    crate::untrusted_file::read(path, MAX_FILE_BYTES)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .map_err(|e| PythonEnvError::PthUnreadable {
            path: path.to_owned(),
            reason: match e {
                UntrustedFileError::Symlink { .. } => {
                    "is a symbolic link (site would follow it; refused)".into()
                }
                other => other.to_string(),
            },
        })
}

/// The path lines of one `.pth` file.
fn pth_lines(site: &Path, file: &Path, out: &mut Vec<PthFinding>) -> Result<(), PythonEnvError> {
    let text = read(file)?;
    for (i, line) in text.lines().enumerate() {
        if line.starts_with('#')
            || line.trim().is_empty()
            || line.starts_with("import ")
            || line.starts_with("import\t")
        {
            continue;
        }
        out.push(PthFinding {
            file: file.to_owned(),
            line: i + 1,
            path: lexical(&site.join(line.trim_end())),
        });
    }
    Ok(())
}

/// The absolute paths quoted on the `MAPPING` and `NAMESPACES` lines of an editable finder.
fn finder_paths(file: &Path, out: &mut Vec<PthFinding>) -> Result<(), PythonEnvError> {
    let text = read(file)?;
    for (i, line) in text.lines().enumerate() {
        if !(line.starts_with("MAPPING") || line.starts_with("NAMESPACES")) {
            continue;
        }
        for literal in quoted(line).into_iter().filter(|s| s.starts_with('/')) {
            out.push(PthFinding {
                file: file.to_owned(),
                line: i + 1,
                path: lexical(Path::new(&literal)),
            });
        }
    }
    Ok(())
}

/// The contents of the `'...'` and `"..."` literals on a line (`repr` of a dict of str: a
/// backslash escapes the next character).
fn quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '\'' && c != '"' {
            continue;
        }
        let mut literal = String::new();
        while let Some(d) = chars.next() {
            match d {
                '\\' => literal.extend(chars.next()),
                d if d == c => break,
                d => literal.push(d),
            }
        }
        out.push(literal);
    }
    out
}

/// `os.path.abspath` of an absolute path: `.` dropped, `..` removes the previous component.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(c) => out.push(c),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Packages (directories with `__init__.py`) in `site_packages` without `__pycache__`: each
/// is compiled in memory at every start, since the sandbox cannot write byte-code. At most
/// [`MAX_NAMED`] names; symlinks are not followed.
pub(crate) fn without_bytecode(site_packages: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(site_packages) else {
        return Vec::new();
    };
    let mut missing = Vec::new();
    for entry in entries.take(MAX_ENTRIES).flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let package = dir.join("__init__.py").symlink_metadata().is_ok();
        if package && dir.join("__pycache__").symlink_metadata().is_err() {
            missing.push(entry.file_name().to_string_lossy().into_owned());
            if missing.len() >= MAX_NAMED {
                break;
            }
        }
    }
    missing.sort();
    missing
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_read_as_site_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let site = tmp.path().join("site");
        std::fs::create_dir(&site).unwrap();
        let pth = site.join("a.pth");
        std::fs::write(&pth, "# c\n\nimport os\nsub\n../../../../x/y \n/abs/./z\n").unwrap();
        let mut found = Vec::new();
        pth_lines(&site, &pth, &mut found).unwrap();
        let paths: Vec<_> = found.iter().map(|f| (f.line, f.path.clone())).collect();
        assert_eq!(
            paths,
            vec![
                (4, site.join("sub")),
                (5, PathBuf::from("/x/y")),
                (6, PathBuf::from("/abs/z")),
            ]
        );
    }

    #[test]
    fn editable_finder_mappings_are_paths() {
        let line = r#"MAPPING: dict[str, str] = {'pkg': '/src/pkg', "o'k": "/src/it\'s"}"#;
        assert_eq!(quoted(line), ["pkg", "/src/pkg", "o'k", "/src/it's"]);
    }

    #[test]
    fn a_symlinked_pth_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("real"), "/etc\n").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("real"), tmp.path().join("l.pth")).unwrap();
        let e = pth_lines(tmp.path(), &tmp.path().join("l.pth"), &mut Vec::new()).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }
}
