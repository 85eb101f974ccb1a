//! The entry-point group and namespace package discovery searches: plugbox's own by default,
//! or an application's (`myapp.plugins`), validated strictly as dotted Python identifiers.

use std::path::{Path, PathBuf};

/// Longest group or namespace accepted, bytes.
const MAX_NAME_BYTES: usize = 200;

/// An entry-point group and a namespace package to search site directories for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    group: String,
    namespace: Vec<String>,
}

/// A group or namespace that is not a dotted identifier (`a.b_c.d`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be a dotted identifier (letters, digits, `_`; parts joined by `.`; at most {MAX_NAME_BYTES} bytes): {escaped}")]
pub struct InvalidName {
    /// `group` or `namespace`.
    pub what: &'static str,
    /// The refused value, control characters escaped.
    pub escaped: String,
}

impl Default for Names {
    /// plugbox's own: the group `plugbox.plugins` and the namespace `plugbox_plugins`.
    fn default() -> Self {
        Self {
            group: "plugbox.plugins".to_owned(),
            namespace: vec!["plugbox_plugins".to_owned()],
        }
    }
}

impl Names {
    /// The group `group` (`[group]` in `entry_points.txt`) and the namespace package
    /// `namespace` (`SITE/<namespace with . as />/<name>/plugbox.toml`), each a dotted
    /// identifier.
    pub fn new(group: &str, namespace: &str) -> Result<Self, InvalidName> {
        let group = dotted("group", group)?.join(".");
        let namespace = dotted("namespace", namespace)?;
        Ok(Self { group, namespace })
    }

    /// The entry-point group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The namespace package's directory in `site`.
    pub fn namespace_dir(&self, site: &Path) -> PathBuf {
        let mut dir = site.to_owned();
        dir.extend(&self.namespace);
        dir
    }
}

/// The parts of a dotted identifier, or why it is not one. ASCII only: every part starts with
/// a letter or `_`, so no part is empty, `.` or `..`, and none holds a `/`.
fn dotted(what: &'static str, value: &str) -> Result<Vec<String>, InvalidName> {
    let bad = || InvalidName {
        what,
        escaped: crate::audit::escape_text(value),
    };
    if value.is_empty() || value.len() > MAX_NAME_BYTES {
        return Err(bad());
    }
    let parts: Vec<String> = value.split('.').map(str::to_owned).collect();
    let identifier = |p: &String| {
        let mut chars = p.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    };
    if parts.iter().all(identifier) {
        Ok(parts)
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_identifiers_only() {
        let n = Names::new("myapp.plugins", "myapp.plugins").unwrap_or_default();
        assert_eq!(n.group(), "myapp.plugins");
        assert_eq!(
            n.namespace_dir(Path::new("/s")),
            PathBuf::from("/s/myapp/plugins")
        );
        for bad in [
            "", ".", "a.", ".a", "a..b", "../x", "a/b", "1a", "a-b", "a b", "é", "a.\n", "[x]",
        ] {
            assert!(Names::new(bad, "ok").is_err(), "group {bad:?}");
            assert!(Names::new("ok", bad).is_err(), "namespace {bad:?}");
        }
        assert!(Names::new(&"a".repeat(201), "ok").is_err());
        assert!(Names::new("_a.b2._", "A.b").is_ok());
    }
}
