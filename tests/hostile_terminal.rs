//! Terminal injection into the review tools (issue 9, finding 9): a manifest, a plugin
//! directory's name or a plugin's result holding ESC/CSI sequences, C1 controls (U+009B is a
//! one-byte CSI), bidi overrides or line separators must never reach the reviewer's terminal
//! raw from `plugbox check`, `run`, `list`, `diff`, `audit show` or an error message.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::plugins::TestPlugin;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

/// Every kind of dangerous character, as a TOML basic-string body.
const HOSTILE_TOML: &str =
    r"x\u001b[2J\u001b]0;owned\u0007\u009b31m\u0085\u202e\u2066\u061c\u2028\u2029\u000dy";
/// The same text, decoded.
const HOSTILE: &str =
    "x\u{1b}[2J\u{1b}]0;owned\u{7}\u{9b}31m\u{85}\u{202e}\u{2066}\u{61c}\u{2028}\u{2029}\ry";
/// A file-name-safe subset (no `/`, no NUL) for directory and file names.
const HOSTILE_NAME: &str = "p\u{1b}[2J\u{9b}K\u{202e}\u{2028}\u{85}q";

/// Is `c` unsafe on a terminal? Written independently of the code under test: C0, DEL and
/// C1 (`Cc`), bidi formatting characters, line and paragraph separators.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}

/// Asserts that stdout and stderr hold no unsafe character except the newlines ending lines.
fn assert_clean(what: &str, out: &Output) {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = std::str::from_utf8(bytes).expect("output is UTF-8");
        for (i, c) in text.char_indices() {
            assert!(
                c == '\n' || !unsafe_char(c),
                "{what}: raw U+{:04X} at byte {i} of {stream}: {text:?}",
                u32::from(c)
            );
        }
    }
}

fn plugbox(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(common::plugbox())
        .args(args)
        .output()
        .expect("plugbox")
}

/// A plugin directory named [`HOSTILE_NAME`] under a fresh parent, with a manifest whose
/// reason, runtime, roots, policy paths and entry file name carry hostile text.
struct HostileDir {
    parent: tempfile::TempDir,
}

impl HostileDir {
    fn new(name: &str, capabilities: &str) -> Self {
        common::require_root();
        let parent = tempfile::tempdir().unwrap();
        std::fs::set_permissions(parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = parent.path().join(HOSTILE_NAME);
        std::fs::create_dir(&dir).unwrap();
        let entry = format!("m{HOSTILE_NAME}.py");
        std::fs::write(dir.join(&entry), "").unwrap();
        let manifest = format!(
            "schema = 1\n[plugin]\nname = \"{name}\"\nversion = \"1.0.0\"\napi = \"^1\"\n\
             entry = \"m{}.py\"\nruntime = \"python3{HOSTILE_TOML}\"\n\
             [capabilities]\n{capabilities}\n\
             [filesystem]\nread = [\"/tmp/{HOSTILE_TOML}\"]\nwrite = [\"/tmp/w{HOSTILE_TOML}\"]\n",
            toml_name()
        );
        std::fs::write(dir.join("plugbox.toml"), manifest).unwrap();
        Self { parent }
    }

    fn path(&self) -> PathBuf {
        self.parent.path().join(HOSTILE_NAME)
    }
}

/// [`HOSTILE_NAME`] as a TOML basic-string body.
fn toml_name() -> String {
    HOSTILE_NAME
        .chars()
        .map(|c| {
            if c.is_ascii() && !c.is_control() {
                c.to_string()
            } else {
                format!("\\u{:04x}", u32::from(c))
            }
        })
        .collect()
}

fn hostile_capabilities() -> String {
    format!(
        "\"fs.read\" = {{ paths = [\"d{HOSTILE_TOML}\"], reason = \"harmless{HOSTILE_TOML}\" }}\n\
         \"kv.get\" = {{ reason = \"{HOSTILE_TOML}\" }}\n"
    )
}

#[test]
fn check_escapes_reason_runtime_paths_and_entry() {
    let dir = HostileDir::new("evil", &hostile_capabilities());
    let out = plugbox(&["check".as_ref(), dir.path().as_os_str()]);
    assert!(out.status.success(), "{out:?}");
    assert_clean("check", &out);
    let text = String::from_utf8(out.stdout).unwrap();
    // The dangerous content is still shown, escaped, so the reviewer sees it.
    assert!(text.contains("harmlessx\\u{1b}[2J"), "{text}");
    assert!(text.contains("\\u{9b}31m\\u{85}\\u{202e}"), "{text}");
    assert!(text.contains("runtime   python3x\\u{1b}"), "{text}");
}

#[test]
fn check_escapes_error_messages_that_quote_the_manifest() {
    let dir = HostileDir::new("evil", "");
    // A raw ESC and CSI in a comment is a TOML error whose message quotes the line.
    let raw = "schema = 1 # \u{1b}[2J\u{9b}2K\u{202e}\u{2028}\n[plugin\n";
    std::fs::write(dir.path().join("plugbox.toml"), raw).unwrap();
    let out = plugbox(&["check".as_ref(), dir.path().as_os_str()]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert!(!out.stderr.is_empty());
    assert_clean("check (error)", &out);
    // A missing directory whose path is hostile: the error names the path.
    let out = plugbox(&["check".as_ref(), dir.path().join(HOSTILE_NAME).as_os_str()]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_clean("check (missing path)", &out);
    let tmp = tempfile::tempdir().unwrap();
    let (audit, state) = (tmp.path().join("audit.jsonl"), tmp.path().join("state"));
    let missing = dir.path().join(HOSTILE_NAME);
    let out = plugbox(&[
        "run".as_ref(),
        missing.as_os_str(),
        "--audit".as_ref(),
        audit.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
    ]);
    assert_eq!(out.status.code(), Some(125), "{out:?}");
    assert_clean("run (missing path)", &out);
}

#[test]
fn list_escapes_locations_names_and_errors_in_table_and_json() {
    let good = HostileDir::new("evil", &hostile_capabilities());
    // A second, invalid manifest beside it: its error text quotes hostile values.
    let bad = good.parent.path().join(format!("b{HOSTILE_NAME}"));
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(
        bad.join("plugbox.toml"),
        format!("schema = 1\n[plugin]\nname = \"{HOSTILE_TOML}\"\nversion = \"{HOSTILE_TOML}\"\napi = \"^1\"\nentry = \"m.py\"\n"),
    )
    .unwrap();
    let parent = good.parent.path().as_os_str();
    let out = plugbox(&["list".as_ref(), "--path".as_ref(), parent]);
    assert!(out.status.success(), "{out:?}");
    assert_clean("list", &out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\\u{1b}[2J"));
    let out = plugbox(&[
        "list".as_ref(),
        "--json".as_ref(),
        "--path".as_ref(),
        parent,
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_clean("list --json", &out);
    // The JSON still decodes to the real, hostile location.
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let locations: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["location"].as_str().unwrap())
        .collect();
    assert!(
        locations.iter().any(|l| l.ends_with(HOSTILE_NAME)),
        "{locations:?}"
    );
}

#[test]
fn diff_escapes_every_field_in_text_and_json() {
    let old = HostileDir::new("evil", "\"fs.read\" = { paths = [\"a\"] }\n");
    let new = HostileDir::new("evil", &hostile_capabilities());
    for json in [false, true] {
        let mut args: Vec<&std::ffi::OsStr> = vec!["diff".as_ref()];
        if json {
            args.push("--json".as_ref());
        }
        let (o, n) = (old.path(), new.path());
        args.extend([o.as_os_str(), n.as_os_str()]);
        let out = plugbox(&args);
        assert_eq!(out.status.code(), Some(1), "escalates: {out:?}");
        assert_clean(if json { "diff --json" } else { "diff" }, &out);
        if json {
            let changes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert!(changes.to_string().contains("owned"), "{changes}");
        }
    }
}

/// A plugin whose command returns (or raises with) [`HOSTILE`].
fn evil_plugin() -> TestPlugin {
    let main = format!(
        "import plugbox\nEVIL = {}\n@plugbox.command\ndef evil():\n    return {{'text': EVIL, EVIL: [EVIL]}}\n\
         @plugbox.command\ndef fail():\n    raise ValueError(EVIL)\n",
        serde_json::to_string(HOSTILE).unwrap()
    );
    TestPlugin::new("evil", "", &main)
}

#[test]
fn run_prints_results_as_json_that_decodes_back_and_shows_nothing_raw() {
    let plugin = evil_plugin();
    let tmp = tempfile::tempdir().unwrap();
    let (audit, state) = (tmp.path().join("audit.jsonl"), tmp.path().join("state"));
    let out = plugbox(&[
        "run".as_ref(),
        plugin.path().as_os_str(),
        "--audit".as_ref(),
        audit.as_os_str(),
        "--state".as_ref(),
        state.as_os_str(),
        "--call".as_ref(),
        "evil".as_ref(),
        "--call".as_ref(),
        "fail".as_ref(),
    ]);
    assert_eq!(out.status.code(), Some(1), "one call fails: {out:?}");
    assert_clean("run", &out);
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines[0]["result"]["text"], HOSTILE);
    assert_eq!(lines[0]["result"][HOSTILE][0], HOSTILE);
    let message = lines[1]["error"]["message"].as_str().unwrap();
    assert!(message.contains(HOSTILE), "{message:?}");
    // The audit reader shows the same records without a raw control either.
    for extra in [None, Some("--json")] {
        let mut args: Vec<&std::ffi::OsStr> = vec!["audit".as_ref(), "show".as_ref()];
        args.extend(extra.map(std::ffi::OsStr::new));
        args.push(audit.as_os_str());
        let out = plugbox(&args);
        assert!(out.status.success(), "{out:?}");
        assert_clean("audit show", &out);
    }
    let out = plugbox(&["audit".as_ref(), "summary".as_ref(), audit.as_os_str()]);
    assert_clean("audit summary", &out);
}
