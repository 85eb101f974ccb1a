//! State shared through the host (issue 9): kv state keyed by plugin identity rather than by
//! a name any manifest can claim (finding 5), `kv.list` answered from an index without reading
//! values (finding 11, kv half), and System V IPC objects removed before a uid is reused
//! (finding 8).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::Instance;
use plugbox::manifest::Grants;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

const KV_CAPABILITIES: &str = "[capabilities]\n\"kv.get\" = {}\n\"kv.set\" = {}\n\"kv.list\" = {}\n\"kv.delete\" = {}\n[limits]\ncall_burst = 100000\ncalls_per_second = 100000\ncall_timeout_ms = 120000\n";

const KV_MAIN: &str = r#"import plugbox, time
@plugbox.command
def put(k, v):
    return plugbox.host.call('kv.set', key=k, value=v)
@plugbox.command
def get(k):
    return plugbox.host.call('kv.get', key=k)
@plugbox.command
def delete(k):
    return plugbox.host.call('kv.delete', key=k)
@plugbox.command
def keys(prefix=''):
    return plugbox.host.call('kv.list', prefix=prefix)
@plugbox.command
def fill(n):
    for i in range(n):
        plugbox.host.call('kv.set', key='k%05d' % i, value={'i': i, 'pad': 'x' * 100})
    return n
@plugbox.command
def time_list(n):
    took = []
    for _ in range(n):
        t = time.perf_counter()
        count = len(plugbox.host.call('kv.list'))
        took.append(time.perf_counter() - t)
    took.sort()
    return [count, took[len(took) // 2]]
"#;

fn kv_plugin(name: &str) -> TestPlugin {
    TestPlugin::new(name, KV_CAPABILITIES, KV_MAIN)
}

async fn start(te: &TestEngine, p: &TestPlugin) -> Instance {
    te.engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load")
}

async fn call(i: &Instance, command: &str, args: Value) -> Value {
    match i.call(command, args).await.expect(command) {
        Reply::Json(v) => v,
        other => panic!("{command}: {other:?}"),
    }
}

/// The kv directories under the engine's state directory.
fn kv_dirs(state: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(state)
        .map(|d| d.map(|e| e.unwrap().path().join("kv")).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    dirs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_directory_claiming_the_same_name_gets_its_own_store() {
    let state = tempfile::tempdir().unwrap();
    let te = TestEngine::with(|c| c.state_dir = state.path().to_owned());
    let (real, impostor) = (kv_plugin("notes"), kv_plugin("notes"));
    let a = start(&te, &real).await;
    call(&a, "put", json!({"k": "secret", "v": "real notes"})).await;
    let b = start(&te, &impostor).await;
    assert_eq!(call(&b, "get", json!({"k": "secret"})).await, Value::Null);
    assert_eq!(call(&b, "keys", json!({})).await, json!([]));
    assert_eq!(
        call(&b, "delete", json!({"k": "secret"})).await,
        json!(false)
    );
    call(&b, "put", json!({"k": "secret", "v": "overwritten"})).await;
    assert_eq!(
        call(&b, "get", json!({"k": "secret"})).await,
        json!("overwritten")
    );
    // The real plugin's value is untouched, also after a restart of the real plugin.
    assert_eq!(
        call(&a, "get", json!({"k": "secret"})).await,
        json!("real notes")
    );
    a.shutdown().await;
    let again = start(&te, &real).await;
    assert_eq!(
        call(&again, "get", json!({"k": "secret"})).await,
        json!("real notes")
    );
    assert_eq!(kv_dirs(state.path()).len(), 2, "one store per directory");
    again.shutdown().await;
    a.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_sets_overwrites_and_deletes_across_instances() {
    let state = tempfile::tempdir().unwrap();
    let te = TestEngine::with(|c| c.state_dir = state.path().to_owned());
    let p = kv_plugin("lister");
    let (a, b) = (start(&te, &p).await, start(&te, &p).await);
    for k in ["apple", "apricot", "banana"] {
        call(&a, "put", json!({"k": k, "v": 1})).await;
    }
    assert_eq!(
        call(&b, "keys", json!({})).await,
        json!(["apple", "apricot", "banana"])
    );
    call(&b, "put", json!({"k": "apple", "v": 2})).await;
    call(&b, "put", json!({"k": "cherry", "v": 3})).await;
    assert_eq!(
        call(&a, "delete", json!({"k": "apricot"})).await,
        json!(true)
    );
    assert_eq!(
        call(&b, "delete", json!({"k": "apricot"})).await,
        json!(false)
    );
    assert_eq!(
        call(&a, "keys", json!({})).await,
        json!(["apple", "banana", "cherry"])
    );
    assert_eq!(
        call(&b, "keys", json!({"prefix": "ap"})).await,
        json!(["apple"])
    );
    assert_eq!(call(&a, "get", json!({"k": "apple"})).await, json!(2));
    a.shutdown().await;
    b.shutdown().await;
    // A fresh engine over the same state loads the same keys from disk.
    let te2 = TestEngine::with(|c| c.state_dir = state.path().to_owned());
    let c = start(&te2, &p).await;
    assert_eq!(
        call(&c, "keys", json!({})).await,
        json!(["apple", "banana", "cherry"])
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_reads_no_values_once_the_index_is_loaded() {
    let state = tempfile::tempdir().unwrap();
    let te = TestEngine::with(|c| c.state_dir = state.path().to_owned());
    let p = kv_plugin("indexed");
    let a = start(&te, &p).await;
    call(&a, "put", json!({"k": "one", "v": 1})).await;
    call(&a, "put", json!({"k": "two", "v": 2})).await;
    assert_eq!(call(&a, "keys", json!({})).await, json!(["one", "two"]));
    // Behind the store's back, every value file becomes garbage.
    let [dir] = &kv_dirs(state.path())[..] else {
        panic!("one store")
    };
    for entry in std::fs::read_dir(dir).unwrap() {
        std::fs::write(entry.unwrap().path(), b"\xff not an entry").unwrap();
    }
    // kv.list answers from the index; kv.get reads the value and reports the corruption.
    assert_eq!(call(&a, "keys", json!({})).await, json!(["one", "two"]));
    assert_eq!(
        call(&a, "keys", json!({"prefix": "t"})).await,
        json!(["two"])
    );
    let got = a.call("get", json!({"k": "one"})).await;
    assert!(
        matches!(&got, Err(e) if e.message.contains("corrupt entry")),
        "{got:?}"
    );
    a.shutdown().await;
}

/// Not an assertion: prints the median `kv.list` round trip at 3000 keys, as seen by the
/// plugin. `cargo test --test hostile_state -- --ignored --nocapture kv_list_cost`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn kv_list_cost_at_3000_keys() {
    let te = TestEngine::new();
    let p = kv_plugin("bench");
    let a = start(&te, &p).await;
    assert_eq!(call(&a, "fill", json!({"n": 3000})).await, json!(3000));
    let out = call(&a, "time_list", json!({"n": 50})).await;
    println!(
        "kv.list at {} keys: median {:.3} ms over 50 calls",
        out[0],
        out[1].as_f64().unwrap() * 1e3
    );
    a.shutdown().await;
}

const SYSV_KEY: i64 = 0x5eb0_0009;

/// Creates a 0600 shared-memory segment (key [`SYSV_KEY`]) holding a secret, a message queue
/// and a semaphore set; `peek` tries to open the segment again.
const SYSV_MAIN: &str = r#"import ctypes, os, plugbox
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
libc.shmat.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
IPC_CREAT, IPC_PRIVATE = 0o1000, 0
@plugbox.command
def plant(key):
    shmid = libc.shmget(key, 4096, IPC_CREAT | 0o600)
    if shmid < 0:
        return ['shmget', ctypes.get_errno()]
    addr = libc.shmat(shmid, None, 0)
    ctypes.memmove(addr, b'the secret', 10)
    libc.shmdt(ctypes.c_void_p(addr))
    msq = libc.msgget(IPC_PRIVATE, IPC_CREAT | 0o600)
    sem = libc.semget(IPC_PRIVATE, 1, IPC_CREAT | 0o600)
    return [os.getuid(), shmid, msq, sem]
@plugbox.command
def peek(key):
    shmid = libc.shmget(key, 0, 0)
    if shmid < 0:
        return [os.getuid(), 'errno', ctypes.get_errno()]
    addr = libc.shmat(shmid, None, 0)
    return [os.getuid(), 'read', ctypes.string_at(addr, 10).decode()]
"#;

/// `(id, uid, cuid)` of every object in one `/proc/sysvipc` listing.
fn sysv_objects(kind: &str) -> Vec<(i64, u32, u32)> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{kind}")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (id, uid, cuid) = (
        col(&format!("{kind}id").replace("msgid", "msqid")),
        col("uid"),
        col("cuid"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[id].parse().unwrap(),
                f[uid].parse().unwrap(),
                f[cuid].parse().unwrap(),
            )
        })
        .collect()
}

/// A uid no other test's engine hands out.
const SYSV_TEST_UID: u32 = 3_900_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sysv_objects_of_a_uid_are_removed_before_the_uid_is_reused() {
    // One uid in the pool, so the second plugin certainly gets the first one's uid; a range
    // of its own, so that engines of tests running in parallel stay out of it.
    let te = TestEngine::with(|c| {
        c.max_plugins = 1;
        c.uid_base = Some(SYSV_TEST_UID);
        c.uid_count = 1;
    });
    // Never forked from a zygote (not even under PLUGBOX_TEST_ZYGOTE=1): a zygote's instances
    // share the template's uid, whose objects are removed when the template's group ends
    // (`docs/zygote.md`), not at each instance's exit as this test checks.
    let extra = "[syscalls]\nallow = [\"@ipc-sysv\"]\n[process]\nzygote = false\n";
    let (first, second) = (
        TestPlugin::new("planter", extra, SYSV_MAIN),
        TestPlugin::new("reader", extra, SYSV_MAIN),
    );
    let a = start(&te, &first).await;
    let planted = call(&a, "plant", json!({"key": SYSV_KEY})).await;
    let uid = planted[0].as_u64().expect("plant failed") as u32;
    let (shmid, msqid, semid) = (
        planted[1].as_i64().unwrap(),
        planted[2].as_i64().unwrap(),
        planted[3].as_i64().unwrap(),
    );
    assert!(msqid >= 0 && semid >= 0, "{planted}");
    assert!(sysv_objects("shm").contains(&(shmid, uid, uid)), "planted");
    // shutdown() returns once the teardown is complete and the exit record written.
    a.shutdown().await;
    let ends: Vec<Value> = te
        .records()
        .into_iter()
        .filter(|r| r["event"] == "exit" || r["event"] == "kill")
        .collect();
    let [exit] = &ends[..] else {
        panic!("one end record: {ends:?}")
    };
    for kind in ["shm", "msg", "sem"] {
        let left: Vec<_> = sysv_objects(kind)
            .into_iter()
            .filter(|&(_, u, c)| u == uid || c == uid)
            .collect();
        assert!(
            left.is_empty(),
            "{kind} objects of uid {uid} left: {left:?}"
        );
    }
    assert_eq!(
        exit["detail"]["sysv_removed"],
        json!({"shm": 1, "msg": 1, "sem": 1, "failed": 0}),
        "{exit}"
    );
    let b = start(&te, &second).await;
    let peeked = call(&b, "peek", json!({"key": SYSV_KEY})).await;
    assert_eq!(
        peeked,
        json!([uid, "errno", libc::ENOENT]),
        "same uid, no segment"
    );
    b.shutdown().await;
}
