//! Grants are ceilings on every section (issue 10): a plugin's manifest asks, the host's grant
//! decides. Each test loads a real plugin in the real sandbox and asserts what the kernel
//! does (exact errno) or the typed refusal, and the audit record.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::LoadError;
use plugbox::manifest::{CapabilityGrant, CeilingMode, Grants, ManifestError};
use serde_json::{json, Value};
use std::net::TcpListener;

/// Commands that report the errno (0 on success) of what they try.
const PROBE: &str = r#"
import errno, os, resource, socket
import plugbox

def _errno(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

@plugbox.command
def read(path):
    def go():
        with open(path, "rb") as f:
            f.read(1)
    return _errno(go)

@plugbox.command
def connect(port):
    def go():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.connect(("127.0.0.1", port))
        finally:
            s.close()
    return _errno(go)

@plugbox.command
def fork():
    def go():
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    return _errno(go)

@plugbox.command
def ids():
    return [os.getuid(), os.getgid()]

@plugbox.command
def memory():
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    try:
        block = bytearray(200 * 1024 * 1024)
        return [soft, "allocated %d" % len(block)]
    except MemoryError:
        return [soft, "MemoryError"]
"#;

fn log_only() -> Grants {
    Grants::none().grant("log", CapabilityGrant::default())
}

fn text(reply: Reply) -> Value {
    match reply {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

/// The fsgreedy manifest of issue 10, with `port` instead of 443 (a local listener).
fn fsgreedy(port: u16) -> TestPlugin {
    let extra = format!(
        "[capabilities]\n\"log\" = {{}}\n[filesystem]\nread = [\"/etc\"]\n[network]\nconnect_tcp = [{port}]\n[process]\nsubprocesses = true\n"
    );
    TestPlugin::new("fsgreedy", &extra, PROBE)
}

fn excess_of(result: Result<plugbox::engine::Plugin, LoadError>) -> Vec<String> {
    match result {
        Err(LoadError::Manifest(ManifestError::BeyondCeiling { excess, .. })) => excess,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("loaded beyond its grant"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsgreedy_under_a_log_only_grant_is_refused_naming_every_excess() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let te = TestEngine::new();
    let p = fsgreedy(port);
    let excess = excess_of(te.engine.load(p.path(), &log_only()).await);
    assert_eq!(
        excess,
        [
            "filesystem.read \"/etc\"".to_owned(),
            format!("network.connect_tcp {port}"),
            "process.subprocesses".to_owned(),
        ]
    );
    let refused = te.events("load_refused");
    assert_eq!(refused.len(), 1, "{refused:#?}");
    let reason = refused[0]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("grant: fsgreedy requests beyond the host's grant")
            && reason.contains("filesystem.read")
            && reason.contains("network.connect_tcp")
            && reason.contains("process.subprocesses"),
        "{reason}"
    );
    assert!(te.events("spawn").is_empty(), "nothing ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fsgreedy_with_the_grant_gets_exactly_that_and_the_kernel_enforces_it() {
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = granted.local_addr().unwrap().port();
    let other_port = other.local_addr().unwrap().port();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::set_permissions(
        outside.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let te = TestEngine::new();
    let p = fsgreedy(port);
    // A trailing slash on the granted root does not matter: paths are compared resolved.
    let grants = log_only()
        .filesystem_read("/etc/")
        .connect_tcp(port)
        .subprocesses();
    let plugin = te.engine.load(p.path(), &grants).await.expect("load");
    let call = |cmd: &'static str, args: Value| {
        let plugin = plugin.clone();
        async move { text(plugin.call(cmd, args).await.unwrap()) }
    };
    assert_eq!(call("read", json!({"path": "/etc/passwd"})).await, "ok");
    let elsewhere = outside.path().to_str().unwrap();
    assert_eq!(call("read", json!({"path": elsewhere})).await, "EACCES");
    assert_eq!(call("connect", json!({"port": port})).await, "ok");
    assert_eq!(call("connect", json!({"port": other_port})).await, "EACCES");
    assert_eq!(call("fork", json!({})).await, "ok");
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_an_identity_runs_as_it_only_when_the_grant_names_it() {
    let te = TestEngine::new();
    let p = TestPlugin::new("picky", "[process]\nuid = 61010\ngid = 61011\n", PROBE);
    let excess = excess_of(te.engine.load(p.path(), &Grants::none()).await);
    assert_eq!(excess, ["process.uid 61010", "process.gid 61011"]);
    // Another identity in the grant is no better.
    let wrong = Grants::none().identity(61010, 42);
    let excess = excess_of(te.engine.load(p.path(), &wrong).await);
    assert_eq!(excess, ["process.gid 61011"]);
    let plugin = te
        .engine
        .load(p.path(), &Grants::none().identity(61010, 61011))
        .await
        .expect("load with the identity granted");
    assert_eq!(
        plugin.call("ids", json!({})).await.unwrap(),
        Reply::Json(json!([61010, 61011]))
    );
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_may_name_the_identity_itself() {
    let te = TestEngine::new();
    let p = TestPlugin::new("plain", "", PROBE);
    let grants = Grants::none().identity(61012, 61013);
    let plugin = te.engine.load(p.path(), &grants).await.expect("load");
    assert_eq!(
        plugin.call("ids", json!({})).await.unwrap(),
        Reply::Json(json!([61012, 61013]))
    );
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_proc_sys_and_dev_are_refused_even_when_granted() {
    let te = TestEngine::new();
    // `/proc` is refused earlier still, by the manifest's own validation.
    let p = TestPlugin::new("procfs", "[filesystem]\nread = [\"/proc\"]\n", PROBE);
    match te.engine.load(p.path(), &Grants::all_requested()).await {
        Err(LoadError::Manifest(ManifestError::Policy(e))) => {
            assert!(e.to_string().contains("/proc rules resolve"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    for (path, root) in [("/", "/"), ("/sys", "/sys"), ("/dev/shm", "/dev")] {
        let p = TestPlugin::new(
            "rooted",
            &format!("[filesystem]\nread = [\"{path}\"]\n"),
            PROBE,
        );
        for grants in [
            Grants::none().filesystem_read(root),
            Grants::all_requested(),
        ] {
            let excess = excess_of(te.engine.load(p.path(), &grants).await);
            assert_eq!(excess.len(), 1, "{excess:?}");
            assert!(
                excess[0].starts_with("filesystem.read") && excess[0].contains("never granted"),
                "{excess:?}"
            );
        }
    }
    assert!(te.events("spawn").is_empty(), "nothing ran");
}

/// The plugin directory refuses symlinks (the code digest), but a directory the plugin may
/// write does not: a plugin that planted `data/etc-link -> /etc` there and names it (or a
/// path through it, or with a trailing slash) under a grant of `data` gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_planted_symlink_beneath_a_granted_root_does_not_pass_the_ceiling() {
    let te = TestEngine::new();
    let data = tempfile::tempdir().unwrap();
    let data = data.path().canonicalize().unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc-link")).unwrap();
    std::fs::create_dir(data.join("real")).unwrap();
    let link = data.join("etc-link");
    let asked = [
        link.display().to_string(),
        format!("{}/", link.display()),
        format!("{}/passwd", link.display()),
        format!("{}/./real", data.display()),
    ];
    let list: Vec<String> = asked.iter().map(|a| format!("{a:?}")).collect();
    let extra = format!("[filesystem]\nread = [{}]\n", list.join(", "));
    let p = TestPlugin::new("linker", &extra, PROBE);
    let grants = Grants::none().filesystem_write(&data);
    let excess = excess_of(te.engine.load(p.path(), &grants).await);
    let expected: Vec<String> = asked[..3]
        .iter()
        .map(|a| format!("filesystem.read {a:?}"))
        .collect();
    assert_eq!(excess, expected, "the plain path beneath the root passed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_memory_ceiling_lowers_the_rlimit_and_is_audited() {
    let te = TestEngine::new();
    let p = TestPlugin::new("hungry", "[limits]\nmemory_mib = 512\n", PROBE);
    let plugin = te
        .engine
        .load(p.path(), &Grants::none().memory_mib(128))
        .await
        .expect("load");
    assert_eq!(
        plugin.call("memory", json!({})).await.unwrap(),
        Reply::Json(json!([128 * 1024 * 1024, "MemoryError"]))
    );
    let limits: Vec<Value> = te
        .events("limit")
        .into_iter()
        .filter(|r| r["rule"] == "grant.ceiling")
        .collect();
    assert_eq!(limits.len(), 1, "{limits:#?}");
    assert_eq!(
        limits[0]["detail"]["stricter"],
        json!([{"field": "limits.memory_mib", "requested": "512", "effective": "128"}])
    );
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_clamp_mode_the_excess_is_dropped_enforced_and_audited() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let te = TestEngine::with(|c| c.ceiling = CeilingMode::Clamp);
    let p = fsgreedy(port);
    let plugin = te
        .engine
        .load(p.path(), &log_only())
        .await
        .expect("clamped load");
    let call = |cmd: &'static str, args: Value| {
        let plugin = plugin.clone();
        async move { text(plugin.call(cmd, args).await.unwrap()) }
    };
    // (Not /etc/passwd: the sandbox's is a generated file it can always read.)
    assert_eq!(
        call("read", json!({"path": "/etc/ld.so.conf"})).await,
        "EACCES"
    );
    // No TCP port left at all: seccomp refuses the socket itself.
    assert_eq!(call("connect", json!({"port": port})).await, "EPERM");
    assert_eq!(call("fork", json!({})).await, "EPERM");
    let record = te
        .events("limit")
        .into_iter()
        .find(|r| r["rule"] == "grant.ceiling")
        .expect("the clamp is audited");
    let fields: Vec<&str> = record["detail"]["dropped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "filesystem.read",
            "network.connect_tcp",
            "process.subprocesses"
        ]
    );
    te.engine.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_names_an_identity_is_refused_as_an_escalation() {
    let te = TestEngine::new();
    let grants = Grants::none().identity(61014, 61014);
    let v1 = TestPlugin::new("shifty", "", PROBE);
    let _plugin = te.engine.load(v1.path(), &grants).await.expect("load v1");
    let v2 = TestPlugin::new("shifty", "[process]\nuid = 61014\ngid = 61014\n", PROBE);
    match te.engine.reload("shifty", v2.path(), &grants).await {
        Err(e @ LoadError::Escalates { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("process.uid") && text.contains("process.gid"),
                "{text}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("reloaded with a new identity"),
    }
    te.engine.shutdown().await.unwrap();
}

/// The ceiling approves resolved paths; if a symlink is put on one between the check and the
/// Landlock layer opening it, the rule is refused rather than moved.
#[test]
fn a_resolved_path_that_now_leads_elsewhere_is_refused_by_landlock() {
    common::require_root();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().canonicalize().unwrap().join("was-a-dir");
    std::os::unix::fs::symlink("/etc", &link).unwrap();
    let text = format!(
        "schema = 1\n[filesystem]\nread = [{:?}]\n",
        link.display().to_string()
    );
    let policy = plugbox::policy::Policy::from_toml(&text).unwrap();
    let python = std::ffi::OsStr::new(common::PYTHON);
    let plain = plugbox::sandbox::Prepared::new(policy.clone(), python, None);
    assert!(plain.is_ok(), "a host-written policy may name a symlink");
    match plugbox::sandbox::Prepared::new(policy.with_resolved_paths(), python, None) {
        Err(e) => assert!(e.to_string().contains("no longer leads"), "{e}"),
        Ok(_) => panic!("a moved path was prepared"),
    }
}

/// `plugbox serve` never grants everything silently: a load without `grant` is refused unless
/// serve was started with `--allow-ungranted`; with a grant file, the ceiling applies.
#[test]
fn serve_refuses_a_load_without_a_grant_unless_started_to_allow_it() {
    use std::io::{BufRead, Write};
    let p = TestPlugin::new("served", "[filesystem]\nread = [\"/etc\"]\n", PROBE);
    let work = tempfile::tempdir().unwrap();
    let grant = work.path().join("grant.toml");
    std::fs::write(
        &grant,
        "schema = 1\n[filesystem]\nread = [\"/usr/share\"]\n",
    )
    .unwrap();
    let answers = |flags: &[&str], requests: Vec<Value>| -> Vec<Value> {
        let mut child = std::process::Command::new(common::plugbox())
            .arg("serve")
            .arg("--audit")
            .arg(work.path().join(format!("audit{}.jsonl", flags.len())))
            .arg("--state")
            .arg(work.path().join("state"))
            .args(flags)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        for r in requests {
            writeln!(stdin, "{r}").unwrap();
        }
        drop(stdin);
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        let lines: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .filter(|line| line["op"] != "ready")
            .collect();
        assert!(child.wait().unwrap().success());
        lines
    };
    let dir = p.path();
    let got = answers(
        &[],
        vec![
            json!({"id": 1, "op": "load", "dir": dir}),
            json!({"id": 2, "op": "load", "dir": dir, "grant": grant}),
        ],
    );
    let by_id = |id: i64| got.iter().find(|a| a["id"] == id).unwrap().clone();
    assert_eq!(by_id(1)["error"]["code"], "invalid", "{got:?}");
    assert!(by_id(1)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no grant"));
    assert_eq!(by_id(2)["error"]["code"], "load_failed", "{got:?}");
    let message = by_id(2)["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("filesystem.read \"/etc\""), "{message}");
    let got = answers(
        &["--allow-ungranted"],
        vec![json!({"id": 1, "op": "load", "dir": dir})],
    );
    assert_eq!(got[0]["ok"], true, "{got:?}");
}

/// `plugbox check --grant` shows requested, granted and effective side by side, lists every
/// excess, and exits non-zero when the engine would refuse the load; 0 when it would not.
#[test]
fn check_with_a_grant_shows_the_three_columns_and_fails_when_the_load_would() {
    let p = TestPlugin::new(
        "checked",
        "[filesystem]\nread = [\"/etc\"]\n[limits]\nmemory_mib = 512\n",
        PROBE,
    );
    let work = tempfile::tempdir().unwrap();
    let check = |grant: &str| {
        let path = work.path().join("grant.toml");
        std::fs::write(&path, grant).unwrap();
        let out = std::process::Command::new(common::plugbox())
            .arg("check")
            .arg(p.path())
            .arg("--grant")
            .arg(&path)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (
            out.status.code(),
            stdout,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check("schema = 1\n[limits]\nmemory_mib = 128\n");
    assert_ne!(code, Some(0), "{stdout}");
    assert_eq!(
        row_of(&stdout, "limits.memory_mib"),
        "512 128 128",
        "{stdout}"
    );
    assert_eq!(
        row_of(&stdout, "filesystem.read"),
        "[\"/etc\"] [] []",
        "{stdout}"
    );
    assert!(
        stdout.contains("beyond the grant: filesystem.read \"/etc\""),
        "{stdout}"
    );
    assert!(
        stderr.contains("grant: checked requests beyond the host's grant"),
        "{stderr}"
    );
    let (code, stdout, stderr) = check("schema = 1\n[filesystem]\nread = [\"/etc\"]\n");
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert_eq!(
        row_of(&stdout, "filesystem.read"),
        "[\"/etc\"] [\"/etc\"] [\"/etc\"]"
    );
}

fn row_of(stdout: &str, field: &str) -> String {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(field))
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
