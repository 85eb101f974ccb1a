//! Shared harness for the confinement suites: a workspace of files with known owners, a
//! policy builder, and a runner that executes `probe.py` under `plugbox exec`.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod engine;
pub mod plugins;
pub mod zygote;

use std::os::unix::fs::{chown, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The sandbox uid and gid used by every policy here (the default).
pub const NOBODY: u32 = 65534;
/// The Python the probes run on: Debian's, a real ELF binary every uid can execute.
pub const PYTHON: &str = "/usr/bin/python3";

/// The plugbox binary under test.
pub fn plugbox() -> &'static str {
    env!("CARGO_BIN_EXE_plugbox")
}

/// These suites switch to an unprivileged uid, so they need root, as CI has.
pub fn require_root() {
    assert_eq!(
        plugbox::sys::geteuid(),
        0,
        "the confinement suites must run as root (as CI does): they check the uid switch"
    );
}

/// A directory every uid can traverse, holding a copy of the probe.
pub fn probes_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("plugbox-probes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create probes dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/probes/probe.py");
        std::fs::copy(src, dir.join("probe.py")).expect("copy probe.py");
        dir
    })
}

/// Temporary files laid out for the probes:
/// `ro/` (granted read-only, files world-writable so only Landlock can refuse),
/// `rw/` (granted write, owned by the sandbox uid),
/// `outside/` (owned by the sandbox uid, not granted: only Landlock can refuse).
pub struct Workspace {
    root: tempfile::TempDir,
}

impl Workspace {
    /// Creates the layout with one file in each directory.
    pub fn new() -> Self {
        require_root();
        let root = tempfile::Builder::new()
            .prefix("plugbox-ws-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let ws = Self { root };
        for (dir, mode) in [("ro", 0o777), ("rw", 0o755), ("outside", 0o755)] {
            let d = ws.path(dir);
            std::fs::create_dir(&d).expect("mkdir");
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).expect("chmod");
            let f = d.join("file");
            std::fs::write(&f, b"data\n").expect("write");
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
            if dir != "ro" {
                chown(&d, Some(NOBODY), Some(NOBODY)).expect("chown");
                chown(&f, Some(NOBODY), Some(NOBODY)).expect("chown");
            }
        }
        ws
    }

    /// `root/rel` as a string.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.path().join(rel)
    }

    /// `root/rel` as a `String`, for probe arguments.
    pub fn p(&self, rel: &str) -> String {
        self.path(rel).display().to_string()
    }

    /// A policy granting `ro/` read and `rw/` write, plus `extra` TOML sections.
    pub fn policy(&self, extra: &str) -> PolicyFile {
        PolicyFile::new(&[&self.p("ro")], &[&self.p("rw")], extra)
    }
}

/// A policy file on disk.
pub struct PolicyFile {
    file: tempfile::NamedTempFile,
}

impl PolicyFile {
    /// Grants the probes dir and `read` read-only, `write` read-write; appends `extra`.
    pub fn new(read: &[&str], write: &[&str], extra: &str) -> Self {
        let mut read: Vec<String> = read.iter().map(|s| format!("{s:?}")).collect();
        read.push(format!("{:?}", probes_dir().display().to_string()));
        let write: Vec<String> = write.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "schema = 1\n[filesystem]\nread = [{}]\nwrite = [{}]\n{extra}\n",
            read.join(", "),
            write.join(", ")
        );
        Self::raw(&text)
    }

    /// A policy file with exactly `text`.
    pub fn raw(text: &str) -> Self {
        let file = tempfile::Builder::new()
            .suffix(".toml")
            .tempfile()
            .expect("policy tempfile");
        std::fs::write(file.path(), text).expect("write policy");
        Self { file }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }
}

/// What a run produced.
#[derive(Debug)]
pub struct Run {
    /// Exit code of `plugbox exec` (the command's, 128+N, or 125).
    pub code: i32,
    /// stdout, lossily decoded.
    pub stdout: String,
    /// stderr, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// The last line of stdout, trimmed: the probe's verdict.
    pub fn verdict(&self) -> &str {
        self.stdout.trim_end().lines().last().unwrap_or("")
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `plugbox exec --policy POLICY -- python3 -I -S probe.py ARGS...`
pub fn probe(policy: &PolicyFile, args: &[&str]) -> Run {
    let probe = probes_dir().join("probe.py");
    let mut cmd = Command::new(plugbox());
    cmd.arg("exec").arg("--policy").arg(policy.path()).arg("--");
    cmd.arg(PYTHON).args(["-I", "-S"]).arg(probe).args(args);
    cmd.stdin(Stdio::null());
    cmd.output().expect("run plugbox").into()
}

/// Runs a probe and asserts its verdict and a clean exit.
#[track_caller]
pub fn assert_probe(policy: &PolicyFile, args: &[&str], expected: &str) {
    let run = probe(policy, args);
    assert_eq!(run.verdict(), expected, "probe {args:?}: {run:?}");
    assert_eq!(run.code, 0, "probe {args:?} exit: {run:?}");
}

/// Is `pid` still a live (non-zombie) process?
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .and_then(|s| s.split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// A memory counter (`VmRSS:`, `VmHWM:`, ...) of process `pid` (or `"self"`) from
/// `/proc/PID/status`, bytes.
pub fn status_bytes(pid: &str, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("a number of kB");
    kib * 1024
}
