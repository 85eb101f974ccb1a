//! A per-plugin zygote (`[process] zygote = true`): instances forked from a template that
//! imported the plugin. They must be confined exactly like an instance spawned the usual way,
//! kept apart from each other and from the template, and killable one by one.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::alive;
use common::engine::*;
use common::plugins::{TestEngine, TestPlugin};
use common::zygote::{group_members, UNASKED_FORK};
use plugbox::capability::Reply;
use serde_json::{json, Value};

const ZYGOTE: &str = "[process]\nzygote = true\ninstances = 2\nmin_warm = 2\n";

fn json_of(reply: Reply) -> Value {
    match reply {
        Reply::Json(v) => v,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_forked_from_one_template_and_serve() {
    let te = TestEngine::new();
    let p = TestPlugin::new("zyg", ZYGOTE, ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(plugin.instances().len(), 2);
    let spawns = te.events("spawn");
    let template: Vec<&Value> = spawns
        .iter()
        .filter(|r| r["detail"]["zygote"]["role"] == "template")
        .collect();
    assert_eq!(template.len(), 1, "{spawns:#?}");
    assert_eq!(template[0]["plugin"]["instance"], "zyg#zygote");
    let template_pid = template[0]["detail"]["pid"].as_i64().unwrap();
    let forked: Vec<&Value> = spawns
        .iter()
        .filter(|r| r["detail"]["zygote"]["role"] == "instance")
        .collect();
    assert_eq!(forked.len(), 2, "{spawns:#?}");
    for instance in plugin.instances() {
        let reply = json_of(instance.call("pid", json!({})).await.unwrap());
        assert_eq!(reply, json!(instance.pid()));
        assert_ne!(i64::from(instance.pid()), template_pid);
        let status = std::fs::read_to_string(format!("/proc/{}/stat", instance.pid())).unwrap();
        let after = &status[status.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        assert_eq!(
            fields[1].parse::<u32>().unwrap(),
            std::process::id(),
            "parent is the host"
        );
        assert_eq!(
            fields[2].parse::<i64>().unwrap(),
            template_pid,
            "in the template's group"
        );
    }
    assert_eq!(
        json_of(plugin.call("echo", json!({"x": [1, "two"]})).await.unwrap()),
        json!([1, "two"])
    );
}

/// Every outcome the sandbox decides, seen from inside an instance: `others` are pids it
/// must not reach (siblings, the template, another plugin's instance).
const PROBE: &str = r#"import plugbox, os, ctypes, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def errno_of(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
def raw(*args):
    r = libc.syscall(*[ctypes.c_long(a) for a in args])
    if r == 0 and args[0] == 56:
        os._exit(0)
    return ctypes.get_errno() if r < 0 else 0
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return line.split(":", 1)[1].strip()
@plugbox.command
def probe(others):
    here = os.path.dirname(__file__)
    return {
        "uid": os.getuid(),
        "fork": errno_of(os.fork),
        "clone_parent": raw(56, 0x8011, 0, 0, 0, 0),
        "landlock_create_ruleset": raw(444, 0, 0, 1),
        "seccomp": raw(317, 1, 0, 0),
        "setsid": errno_of(os.setsid),
        "read_shadow": errno_of(lambda: open("/etc/shadow").read()),
        "write_plugin_dir": errno_of(lambda: open(os.path.join(here, "x"), "w")),
        "tcp_socket": errno_of(lambda: socket.socket(socket.AF_INET)),
        "no_new_privs": status("NoNewPrivs"),
        "cap_eff": status("CapEff"),
        "cap_bnd": status("CapBnd"),
        "seccomp_mode": status("Seccomp"),
        "seccomp_filters": status("Seccomp_filters"),
        "kill": [errno_of(lambda: os.kill(pid, 0)) for pid in others],
    }
"#;

async fn probe(instance: &plugbox::engine::Instance, others: &[i32]) -> Value {
    json_of(
        instance
            .call("probe", json!({ "others": others }))
            .await
            .unwrap(),
    )
}

fn template_pid(te: &TestEngine) -> i32 {
    let spawns = te.events("spawn");
    let t = spawns
        .iter()
        .find(|r| r["detail"]["zygote"]["role"] == "template")
        .expect("a template spawn record");
    t["detail"]["pid"].as_i64().unwrap() as i32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forked_instance_is_confined_exactly_like_a_spawned_one_and_reaches_no_sibling() {
    let te = TestEngine::new();
    let zygote = TestPlugin::new("zconf", ZYGOTE, PROBE);
    let plain = TestPlugin::new("pconf", "", PROBE);
    let z = te
        .engine
        .load(zygote.path(), &all())
        .await
        .expect("load zygote");
    let p = te
        .engine
        .load(plain.path(), &all())
        .await
        .expect("load plain");
    let template = template_pid(&te);
    let forked = z.instances();
    let spawned = p.instances();
    let (a, b, c) = (&forked[0], &forked[1], &spawned[0]);
    let seen_a = probe(a, &[b.pid(), template, c.pid()]).await;
    let seen_b = probe(b, &[a.pid(), template, c.pid()]).await;
    let seen_c = probe(c, &[a.pid(), template]).await;
    // Every layer decides the same for a forked and a spawned instance.
    for key in [
        "fork",
        "clone_parent",
        "landlock_create_ruleset",
        "seccomp",
        "setsid",
        "read_shadow",
        "write_plugin_dir",
        "tcp_socket",
        "no_new_privs",
        "cap_eff",
        "cap_bnd",
        "seccomp_mode",
    ] {
        assert_eq!(seen_a[key], seen_c[key], "{key}: {seen_a:#} vs {seen_c:#}");
        assert_eq!(seen_b[key], seen_c[key], "{key}");
    }
    let eperm = json!(libc::EPERM);
    for key in [
        "fork",
        "clone_parent",
        "landlock_create_ruleset",
        "seccomp",
        "setsid",
    ] {
        assert_eq!(seen_a[key], eperm, "{key}: {seen_a:#}");
    }
    assert_eq!(seen_a["read_shadow"], json!(libc::EACCES));
    assert_eq!(seen_a["write_plugin_dir"], json!(libc::EACCES));
    assert_eq!(seen_a["no_new_privs"], "1");
    assert_eq!(seen_a["cap_eff"], "0000000000000000");
    assert_eq!(seen_a["seccomp_mode"], "2");
    // The forked instance runs the template's filter and, stacked on it, the instances' own.
    assert_eq!(seen_a["seccomp_filters"], "2");
    assert_eq!(seen_c["seccomp_filters"], "1");
    // Signals reach neither a sibling, nor the template, nor another plugin.
    assert_eq!(
        seen_a["kill"],
        json!([libc::EPERM, libc::EPERM, libc::EPERM])
    );
    assert_eq!(
        seen_b["kill"],
        json!([libc::EPERM, libc::EPERM, libc::EPERM])
    );
    assert_eq!(seen_c["kill"], json!([libc::EPERM, libc::EPERM]));
    // Siblings share the template's uid, never root's.
    assert_eq!(seen_a["uid"], seen_b["uid"]);
    assert_ne!(seen_a["uid"], json!(0));
}

/// A zygote plugin of two instances, each of which exits with status 3 when told to `die`,
/// restarted 50 ms after; and its template's pid.
async fn load_mortal(te: &TestEngine, name: &str) -> (TestPlugin, plugbox::engine::Plugin, i32) {
    let main = format!("{ECHO}@plugbox.command\ndef die():\n    os._exit(3)\n");
    let extra = format!("{ZYGOTE}[supervision]\nbackoff_ms = 50\n");
    let p = TestPlugin::new(name, &extra, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let template = template_pid(te);
    (p, plugin, template)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_instance_is_reaped_with_its_status_and_forked_again_leaving_its_sibling() {
    let te = TestEngine::new();
    let (_p, plugin, template) = load_mortal(&te, "zcrash").await;
    let instances = plugin.instances();
    let (a, b) = (&instances[0], &instances[1]);
    let (dead, kept) = (a.pid(), b.pid());
    assert!(a.call("die", json!({})).await.is_err());
    let exit = te
        .wait_for("exit", |r| {
            r["event"] == "exit" && r["detail"]["pid"] == json!(dead)
        })
        .await;
    // The host reaps a forked instance itself and reads its exit status.
    assert_eq!(exit["detail"]["exit_code"], 3, "{exit:#}");
    te.wait_for("a third forked instance", |r| {
        r["event"] == "spawn" && r["detail"]["zygote"]["role"] == "instance" && {
            let pid = r["detail"]["pid"].as_i64().unwrap() as i32;
            pid != dead && pid != kept
        }
    })
    .await;
    assert_eq!(
        json_of(b.call("pid", json!({})).await.unwrap()),
        json!(kept),
        "the sibling kept serving"
    );
    assert!(alive(template), "the template outlived the crash");
    assert!(!group_members(template).contains(&dead));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_the_template_forks_unasked_dies_with_the_plugin() {
    let te = TestEngine::new();
    // While it is imported in the template, the plugin forks a process of its own that
    // sleeps for ever: it is the host's child, in the template's group, and nobody asked.
    let main = format!("{ECHO}{UNASKED_FORK}");
    let p = TestPlugin::new("zhidden", ZYGOTE, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let template = template_pid(&te);
    let instances: Vec<i32> = plugin.instances().iter().map(|i| i.pid()).collect();
    let hidden: Vec<i32> = group_members(template)
        .into_iter()
        .filter(|p| *p != template && !instances.contains(p))
        .collect();
    assert_eq!(hidden.len(), 1, "the unasked process exists: {hidden:?}");
    drop(plugin);
    assert!(te.engine.unload("zhidden").await);
    for pid in hidden.iter().chain(&instances).chain([&template]) {
        assert!(
            reaped_within(*pid, std::time::Duration::from_secs(10)).await,
            "pid {pid} outlived the unload, or was left a zombie"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_that_names_a_pid_it_did_not_fork_is_given_up() {
    let te = TestEngine::new();
    // The plugin's import-time code replaces the SDK's fork with one that names the host.
    let main = format!(
        "{ECHO}import sys\nif 'plugbox._zygote' in sys.modules:\n    sys.modules['plugbox._zygote']._fork = os.getppid\n"
    );
    let p = TestPlugin::new("zliar", ZYGOTE, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    let spawns = te.events("spawn");
    let instances: Vec<&Value> = spawns
        .iter()
        .filter(|r| r["plugin"]["instance"] != "zliar#zygote")
        .collect();
    assert_eq!(instances.len(), 2);
    let why = instances[0]["detail"]["zygote"]["unavailable"]
        .as_str()
        .unwrap();
    assert!(why.contains("whose parent is"), "{why}");
    // Given up for the activation: the second instance did not ask again, and both were
    // spawned the usual way, each leading its own group.
    assert_eq!(instances[1]["detail"]["zygote"]["unavailable"], json!(why));
    for instance in plugin.instances() {
        assert_eq!(
            json_of(instance.call("pid", json!({})).await.unwrap()),
            json!(instance.pid())
        );
        assert_eq!(group_members(instance.pid()), vec![instance.pid()]);
    }
    assert!(alive(std::process::id() as i32));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_starts_a_thread_at_import_is_spawned_instead() {
    let te = TestEngine::new();
    let main = format!(
        "{ECHO}import threading\nthreading.Thread(target=time.sleep, args=(1000,), daemon=True).start()\n"
    );
    let p = TestPlugin::new("zthread", ZYGOTE, &main);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(plugin.instances().len(), 2);
    let spawn = te
        .wait_for("an instance spawn", |r| {
            r["event"] == "spawn" && r["plugin"]["instance"] == "zthread#1"
        })
        .await;
    let why = spawn["detail"]["zygote"]["unavailable"].as_str().unwrap();
    assert!(
        why.contains("started a thread while it was imported"),
        "{why}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_template_holds_no_channel_only_its_control_socket() {
    let te = TestEngine::new();
    let p = TestPlugin::new("zfds", ZYGOTE, ECHO);
    let plugin = te.engine.load(p.path(), &all()).await.expect("load");
    assert_eq!(plugin.instances().len(), 2);
    let template = template_pid(&te);
    let sockets: Vec<String> = std::fs::read_dir(format!("/proc/{template}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with("socket:"))
        .collect();
    // One socket: the control socket. No instance's channel stayed open in the template.
    assert_eq!(sockets.len(), 1, "{sockets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_template_is_replaced_at_the_next_start_and_its_instances_serve_on() {
    let te = TestEngine::new();
    let (_p, plugin, first_template) = load_mortal(&te, "zdead").await;
    let instances = plugin.instances();
    let (a, b) = (&instances[0], &instances[1]);
    let (dead, kept) = (a.pid(), b.pid());
    assert_eq!(unsafe_free_kill(first_template), 0, "SIGKILL the template");
    assert!(a.call("die", json!({})).await.is_err());
    let spawn = te
        .wait_for("a new template", |r| {
            r["event"] == "spawn"
                && r["detail"]["zygote"]["role"] == "template"
                && r["detail"]["pid"] != json!(first_template)
        })
        .await;
    let second_template = spawn["detail"]["pid"].as_i64().unwrap() as i32;
    te.wait_for("an instance forked from it", |r| {
        r["event"] == "spawn" && r["detail"]["zygote"]["template"] == json!(second_template)
    })
    .await;
    assert_eq!(
        json_of(b.call("pid", json!({})).await.unwrap()),
        json!(kept)
    );
    assert_ne!(dead, kept);
    drop((instances, plugin));
    assert!(te.engine.unload("zdead").await);
    for pid in [first_template, second_template, kept] {
        assert!(
            reaped_within(pid, std::time::Duration::from_secs(10)).await,
            "pid {pid} outlived the unload, or was left a zombie"
        );
    }
}

/// Waits (bounded) until `pid` is not only dead but reaped: no zombie left behind.
async fn reaped_within(pid: i32, limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    true
}

/// `kill -KILL PID` through the `kill` command (tests keep `unsafe` out).
fn unsafe_free_kill(pid: i32) -> i32 {
    std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .code()
        .unwrap()
}
