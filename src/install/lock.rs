//! A requirements lock, checked before pip sees it: every requirement is `name==version`
//! (extras and an environment marker allowed) with at least one `--hash`, and nothing else.
//!
//! pip reads options from a requirements file too (`-r other.txt`, `-e path`,
//! `--index-url`, `--find-links`, `-c`, `--no-binary`): each would read a file the key does
//! not cover, or change where or how packages come from. None is accepted; the command line
//! plugbox builds is the only place options come from.

use std::fmt;

/// Hash algorithms pip accepts in `--require-hashes` mode, with their hex lengths.
const ALGORITHMS: &[(&str, usize)] = &[("sha256", 64), ("sha384", 96), ("sha512", 128)];

/// One requirement of the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// The project name, normalised (PEP 503: lowercase, runs of `-_.` as `-`).
    pub name: String,
    /// The pinned version.
    pub version: String,
    /// The requirement as written (`name[extras]==version ; marker`), without its options.
    pub spec: String,
    /// `algorithm:hex` digests, as written.
    pub hashes: Vec<String>,
    /// The line it starts on (1-based).
    pub line: usize,
}

/// Why a lock is refused: the line and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct LockError {
    /// 1-based line number.
    pub line: usize,
    /// The logical line (continuations joined), as written.
    pub text: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses and checks a lock's text.
pub fn parse(text: &str) -> Result<Vec<Requirement>, LockError> {
    let mut out = Vec::new();
    for (line, logical) in logical_lines(text) {
        let content = strip_comment(&logical).trim();
        if content.is_empty() {
            continue;
        }
        let error = |reason: &str| LockError {
            line,
            text: logical.trim().to_owned(),
            reason: reason.to_owned(),
        };
        out.push(requirement(content, line).map_err(|r| error(&r))?);
    }
    Ok(out)
}

/// Lines with `\` continuations joined, each with the number of the line it starts on.
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out: Vec<(usize, String)> = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        match raw.strip_suffix('\\') {
            Some(head) => {
                acc.push_str(head);
                acc.push(' ');
                pending = Some((start, acc));
            }
            None => {
                acc.push_str(raw);
                out.push((start, acc));
            }
        }
    }
    out.extend(pending);
    out
}

/// pip's rule: `#` starts a comment at the line's start or after whitespace.
fn strip_comment(line: &str) -> &str {
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()) {
            return &line[..i];
        }
    }
    line
}

fn requirement(content: &str, line: usize) -> Result<Requirement, String> {
    // The specifier (and its marker) is everything before the first option.
    let (spec, options) = match content.find(" --").or_else(|| content.find("\t--")) {
        Some(at) => (content[..at].trim(), &content[at..]),
        None => (content, ""),
    };
    // pip takes every word from the first one starting with `-` as options.
    if spec.split_whitespace().any(|w| w.starts_with('-')) {
        return Err("options are not allowed in a lock (only `name==version --hash=...`)".into());
    }
    let hashes = hashes(options)?;
    let (name, version) = pinned(spec)?;
    if hashes.is_empty() {
        return Err("no --hash (every requirement needs one: pip hash FILE)".into());
    }
    Ok(Requirement {
        name,
        version,
        spec: spec.to_owned(),
        hashes,
        line,
    })
}

/// The `--hash=alg:hex` (or `--hash alg:hex`) options; any other option is refused.
fn hashes(options: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut words = options.split_whitespace();
    while let Some(word) = words.next() {
        let value = match word.strip_prefix("--hash") {
            Some("") => words.next().unwrap_or(""),
            Some(rest) => rest.strip_prefix('=').unwrap_or(""),
            None => return Err(format!("option {word:?} is not allowed in a lock")),
        };
        let valid = value.split_once(':').is_some_and(|(alg, hex)| {
            ALGORITHMS.iter().any(|(a, n)| *a == alg && hex.len() == *n)
                && hex.bytes().all(|b| b.is_ascii_hexdigit())
        });
        if !valid {
            return Err(format!(
                "--hash {value:?} is not sha256/sha384/sha512:<hex digest>"
            ));
        }
        out.push(value.to_owned());
    }
    Ok(out)
}

/// `name[extras]==version [; marker]` → normalised name and version.
fn pinned(spec: &str) -> Result<(String, String), String> {
    let requirement = spec.split(';').next().unwrap_or("").trim();
    let refuse =
        || format!("{requirement:?} is not pinned as name==version (no URL, path, range or `@`)");
    let (name_part, version) = requirement.split_once("==").ok_or_else(refuse)?;
    let version = version.trim().strip_prefix('=').unwrap_or(version.trim());
    let name = name_part.split('[').next().unwrap_or("").trim().to_owned();
    let extras_ok = name_part
        .trim()
        .strip_prefix(name.as_str())
        .is_some_and(|e| {
            e.is_empty()
                || (e.starts_with('[')
                    && e.ends_with(']')
                    && e[1..e.len() - 1]
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ",-_. ".contains(c)))
        });
    let name_ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let version_ok = !version.is_empty()
        && version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+!-".contains(c));
    if !(name_ok && extras_ok && version_ok) {
        return Err(refuse());
    }
    Ok((normalise(&name), version.to_owned()))
}

/// PEP 503 normalisation: lowercase, every run of `-`, `_`, `.` as one `-`.
pub fn normalise(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if "-_.".contains(c) {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

/// The lock pip reads: one line per checked requirement, written from what was parsed (so
/// pip reads nothing the check did not see).
pub fn render(requirements: &[Requirement]) -> String {
    let mut out = String::new();
    for r in requirements {
        out.push_str(&r.spec);
        for hash in &r.hashes {
            out.push_str(" --hash=");
            out.push_str(hash);
        }
        out.push('\n');
    }
    out
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}=={}", self.name, self.version)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const H: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn pinned_lines_with_hashes_continuations_and_markers_pass() {
        let text = format!(
            "# lock\nHumanize==4.9.0 \\\n    --hash={H}\n\nfoo[bar]==1.0 ; python_version >= \"3.8\" --hash {H} # c\n"
        );
        let reqs = parse(&text).unwrap();
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].name.as_str(), reqs[0].line), ("humanize", 2));
        assert_eq!(reqs[1].to_string(), "foo==1.0");
        assert_eq!(reqs[1].hashes, vec![H.to_owned()]);
    }

    #[test]
    fn a_line_without_a_hash_is_refused_naming_the_line() {
        let text = format!("a==1 --hash={H}\nhumanize==4.9.0\n");
        let e = parse(&text).unwrap_err();
        assert_eq!((e.line, e.text.as_str()), (2, "humanize==4.9.0"));
        assert!(e.to_string().contains("no --hash"), "{e}");
    }

    #[test]
    fn options_urls_ranges_and_bad_hashes_are_refused() {
        for bad in [
            "-r other.txt".to_owned(),
            "-e ../src".to_owned(),
            "--index-url https://example.invalid/simple".to_owned(),
            format!("a==1 --hash={H} --no-binary=:none:"),
            format!("a>=1 --hash={H}"),
            format!("a @ file:///etc/passwd --hash={H}"),
            format!("./local.whl --hash={H}"),
            "a==1 --hash=md5:0123".to_owned(),
            format!("a==1 ; python_version > \"3\" -r x.txt --hash={H}"),
        ] {
            assert!(parse(&bad).is_err(), "accepted {bad:?}");
        }
    }
}
