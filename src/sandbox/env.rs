//! The clean environment a confined command starts with.
//!
//! Nothing from the host passes unless it is on [`PASSED_THROUGH`]; [`FIXED`] values are set
//! for every command; `--env KEY=VALUE` (or [`Environment::set`]) adds or overrides.

use std::ffi::{OsStr, OsString};

/// Set for every command.
pub const FIXED: &[(&str, &str)] = &[
    ("PATH", "/usr/local/bin:/usr/bin:/bin"),
    // No home directory is granted; a path that cannot exist avoids surprises.
    ("HOME", "/nonexistent"),
    // glibc's default of 8 arenas per core makes threads reserve address space quickly
    // under RLIMIT_AS; two arenas keep thread-heavy programs within memory_mib.
    ("MALLOC_ARENA_MAX", "2"),
    // Python must not try to write .pyc files next to read-only code.
    ("PYTHONDONTWRITEBYTECODE", "1"),
    // Python block-buffers stdout into a pipe: a crash would lose what it printed, and lines
    // would arrive late. Unbuffered, each write reaches the host at once.
    ("PYTHONUNBUFFERED", "1"),
];

/// Copied from the host when set there: terminal and locale only.
pub const PASSED_THROUGH: &[&str] = &["TERM", "LANG", "LC_ALL", "LC_CTYPE", "TZ"];

/// An environment under construction.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: Vec<(OsString, OsString)>,
}

impl Environment {
    /// The fixed variables plus the pass-through ones the host has.
    pub fn clean() -> Self {
        let mut env = Self::default();
        for (k, v) in FIXED {
            env.set(OsStr::new(k), OsStr::new(v));
        }
        for k in PASSED_THROUGH {
            if let Some(v) = std::env::var_os(k) {
                env.set(OsStr::new(k), &v);
            }
        }
        env
    }

    /// Sets (or replaces) one variable.
    pub fn set(&mut self, key: &OsStr, value: &OsStr) {
        match self.vars.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value.to_owned(),
            None => self.vars.push((key.to_owned(), value.to_owned())),
        }
    }

    /// The variables, in insertion order.
    pub fn vars(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.as_os_str(), v.as_os_str()))
    }

    /// The names, for reports.
    pub fn names(&self) -> Vec<String> {
        self.vars
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect()
    }
}
