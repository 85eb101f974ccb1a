//! A zygote template and the instances it forked die with their host: the host-death
//! watchdog holds the template's process group, which every forked instance stays in.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use common::zygote::{exits_within, group_members, UNASKED_FORK};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// `hold` keeps the GIL for ever (catastrophic backtracking in C), so the instance never reads
/// the end of its channel; at import, in the template, a process of its own sleeps for ever.
/// Neither goes away by itself when the host dies: only the watchdog's SIGKILL ends them.
const HOLDER: &str = r#"import plugbox, re
@plugbox.command
def hold():
    re.match(r'(a*)*$', 'a' * 40 + 'b')
"#;

async fn until<T>(what: &str, limit: Duration, probe: impl Fn() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The pids of the template's and the forked instance's spawn records, once both are written.
fn spawned(audit: &Path) -> Option<(i32, i32)> {
    let text = std::fs::read_to_string(audit).ok()?;
    let records: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|r: &Value| r["event"] == "spawn")
        .collect();
    let pid_of = |role: &str| {
        records
            .iter()
            .find(|r| r["detail"]["zygote"]["role"] == role)
            .and_then(|r| r["detail"]["pid"].as_i64())
            .map(|p| p as i32)
    };
    Some((pid_of("template")?, pid_of("instance")?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_and_its_instances_die_when_the_host_is_sigkilled() {
    let main = format!("{HOLDER}{UNASKED_FORK}");
    let p = TestPlugin::new("zholder", "[process]\nzygote = true\n", &main);
    let work = tempfile::tempdir().unwrap();
    let audit = work.path().join("audit.jsonl");
    let mut host = std::process::Command::new(common::plugbox())
        .arg("run")
        .arg(p.path())
        .arg("--audit")
        .arg(&audit)
        .arg("--state")
        .arg(work.path().join("state"))
        .args(["--call", "hold"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("plugbox run");
    let (template, instance) = until("both spawn records", Duration::from_secs(20), || {
        spawned(&audit)
    })
    .await;
    let group: Vec<i32> = group_members(template)
        .into_iter()
        .filter(|pid| *pid != template)
        .collect();
    assert!(group.contains(&instance), "{group:?}");
    assert_eq!(
        group.len(),
        2,
        "the instance and the template's own process: {group:?}"
    );
    host.kill().expect("SIGKILL the host");
    host.wait().expect("reap the host");
    for pid in group.into_iter().chain([template]) {
        assert!(
            exits_within(pid, Duration::from_secs(3)).await,
            "pid {pid} outlived its host"
        );
    }
}

/// Plants System V objects (a 0600 segment holding a secret under `key`, a queue, a
/// semaphore set) or reads the segment back.
const SYSV_MAIN: &str = r#"import ctypes, os, plugbox
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
@plugbox.command
def plant(key):
    shmid = libc.shmget(key, 4096, 0o1000 | 0o600)
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, b'the secret', 10)
    libc.shmdt(ctypes.c_void_p(addr))
    return [os.getuid(), shmid, libc.msgget(0, 0o1000 | 0o600), libc.semget(0, 1, 0o1000 | 0o600)]
@plugbox.command
def peek(key):
    addr = libc.shmat(libc.shmget(key, 0, 0), None, 0)
    return ctypes.string_at(addr, 10).decode()
"#;

/// Objects in `/proc/sysvipc/{shm,msg,sem}` owned or created by `uid`.
fn sysv_objects_of(uid: u64) -> usize {
    let mut count = 0;
    for kind in ["shm", "msg", "sem"] {
        let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let (u, c) = (col("uid"), col("cuid"));
        count += lines
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f[u].parse::<u64>().ok() == Some(uid) || f[c].parse::<u64>().ok() == Some(uid)
            })
            .count();
    }
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_v_objects_outlive_an_instance_but_not_the_zygote_group() {
    // A uid range of its own, so that engines of tests running in parallel stay out of it.
    let te = TestEngine::with(|c| {
        c.uid_base = Some(3_900_000_100);
        c.uid_count = 4;
    });
    let extra = "[syscalls]\nallow = [\"@ipc-sysv\"]\n[process]\nzygote = true\ninstances = 2\nmin_warm = 2\n";
    let p = TestPlugin::new("zsysv", extra, SYSV_MAIN);
    let plugin = te
        .engine
        .load(p.path(), &common::engine::all())
        .await
        .expect("load");
    let instances = plugin.instances();
    let (a, b) = (&instances[0], &instances[1]);
    let key = 0x5eb0_0010;
    let planted = match a.call("plant", json!({ "key": key })).await.unwrap() {
        plugbox::capability::Reply::Json(v) => v,
        other => panic!("{other:?}"),
    };
    let uid = planted[0].as_u64().unwrap();
    assert_eq!(sysv_objects_of(uid), 3, "{planted}");
    // Siblings share the template's uid: what one instance plants, another reads, and it is
    // still there after the planter is gone (docs/zygote.md).
    a.shutdown().await;
    let peeked = b.call("peek", json!({ "key": key })).await.unwrap();
    assert_eq!(
        peeked,
        plugbox::capability::Reply::Json(json!("the secret"))
    );
    assert_eq!(sysv_objects_of(uid), 3);
    // When the template's group ends (the plugin unloaded, every instance gone), they go.
    drop((instances, plugin));
    assert!(te.engine.unload("zsysv").await);
    until(
        "the uid's objects to be removed",
        Duration::from_secs(10),
        || (sysv_objects_of(uid) == 0).then_some(()),
    )
    .await;
}
