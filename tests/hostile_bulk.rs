//! Hostile plugins against bulk bodies (issue 13 item 4): a plugin that lies about a bulk
//! length, asks for buffers it may not have, tries to write, resize or unseal the memfds the
//! host passes, or passes a descriptor itself. Each gets a typed error and an audit record;
//! the host neither crashes, hangs nor allocates what the plugin asks; only the descriptor
//! cuts the plugin off, as it always did.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;
use common::plugins::{TestEngine, TestPlugin};
use plugbox::capability::Reply;
use plugbox::engine::Instance;
use plugbox::ipc::ErrorCode;
use plugbox::manifest::Grants;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// A raw-wire plugin that receives descriptors (recvmsg), with `ask_buffer` and a serve loop
/// that answers pings and hands each host call to `handle(header, body, fd)`.
const WIRE: &str = r#"import json, os, socket, struct, mmap, fcntl, errno
FD = int(os.environ["PLUGBOX_FD"])
S = socket.socket(fileno=os.dup(FD))
buf, fds, held, ids = b"", [], [], [1000]
def send(h, body=b"", fd=None):
    raw = json.dumps(h, separators=(",", ":")).encode()
    data = struct.pack(">II", 4 + len(raw) + len(body), len(raw)) + raw + body
    if fd is None:
        S.sendall(data)
    else:
        S.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, struct.pack("i", fd))])
def fill(n):
    global buf
    while len(buf) < n:
        data, anc, flags, _ = S.recvmsg(1 << 16, socket.CMSG_SPACE(64))
        if not data:
            os._exit(0)
        for lvl, typ, d in anc:
            if lvl == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                fds.extend(struct.unpack("%di" % (len(d) // 4), d[: len(d) // 4 * 4]))
        buf += data
def recv():
    global buf
    fill(8)
    length, hl = struct.unpack(">II", buf[:8])
    fill(4 + length)
    h = json.loads(buf[8 : 8 + hl]); body = buf[8 + hl : 4 + length]; buf = buf[4 + length :]
    return h, body, (fds.pop(0) if "bulk" in h else None)
def answer(h, **fields):
    send(dict({"type": "result", "id": h["id"]}, **fields))
def next_reply(want):
    while True:
        h, body, fd = recv()
        if h["type"] in ("result", "error") and h["id"] == want:
            return h, fd
        if h["type"] == "call" and h["method"] == "plugbox.ping":
            answer(h, result="pong")
        elif h["type"] == "shutdown":
            os._exit(0)
        else:
            held.append((h, body, fd))
def ask_buffer(call_id, n):
    ids[0] += 1
    send({"type": "call", "id": ids[0], "method": "plugbox.buffer", "args": {"call": call_id, "len": n}})
    return next_reply(ids[0])
def serve(handle, commands):
    send({"type": "hello", "protocol": 1, "plugin": {"name": os.environ["PLUGBOX_PLUGIN_NAME"],
          "version": os.environ["PLUGBOX_PLUGIN_VERSION"]}, "commands": commands})
    recv()
    while True:
        h, body, fd = held.pop(0) if held else recv()
        if h["type"] == "call" and h["method"] == "plugbox.ping":
            answer(h, result="pong")
        elif h["type"] == "call":
            handle(h, body, fd)
        elif h["type"] == "shutdown":
            os._exit(0)
"#;

/// The liar: one command per lie, and `ok`.
const LIAR: &str = r#"
def handle(h, body, fd):
    m, cid = h["method"], h["id"]
    if m == "no_buffer":
        answer(h, body=True, bulk=100)
    elif m == "past_buffer":
        ask_buffer(cid, 10)
        answer(h, body=True, bulk=1000)
    elif m == "huge_buffer":
        r, _ = ask_buffer(cid, 1 << 40)
        send({"type": "error", "id": cid, "error": r["error"]})
    elif m == "other_call":
        r, _ = ask_buffer(999999, 10)
        answer(h, result=r["error"]["code"])
    elif m == "twice":
        ask_buffer(cid, 10)
        r, _ = ask_buffer(cid, 10)
        answer(h, result=r["error"]["code"])
    elif m == "bulk_call":
        send({"type": "call", "id": 7, "method": "log", "args": {}, "body": "data", "bulk": 5})
        r, _ = next_reply(7)
        answer(h, result=r["error"]["code"])
    elif m == "pass_fd":
        r, buffer_fd = ask_buffer(cid, 10)
        send({"type": "result", "id": cid, "body": True, "bulk": 10}, fd=buffer_fd)
    else:
        answer(h, result="fine")
serve(handle, ["no_buffer", "past_buffer", "huge_buffer", "other_call", "twice", "bulk_call", "pass_fd", "ok"])
"#;

async fn liar(te: &TestEngine) -> (TestPlugin, Instance) {
    let p = TestPlugin::new("liar", "", &format!("{WIRE}{LIAR}"));
    let instance = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    (p, instance)
}

async fn call(instance: &Instance, command: &str) -> Result<Reply, plugbox::capability::CallError> {
    tokio::time::timeout(Duration::from_secs(30), instance.call(command, json!({})))
        .await
        .expect("no hang")
}

/// The instance still serves, on the same process.
async fn serves_on(instance: &Instance) {
    assert_eq!(
        call(instance, "ok").await.expect("ok"),
        Reply::Json(json!("fine"))
    );
    assert!(instance.exited().is_none());
}

fn violation_with(te: &TestEngine, text: &str) -> Value {
    te.events("protocol_violation")
        .into_iter()
        .find(|r| r["reason"].as_str().unwrap_or("").contains(text))
        .unwrap_or_else(|| panic!("no violation mentioning {text:?}: {:#?}", te.records()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_result_without_a_buffer_is_a_protocol_error() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let e = call(&liar, "no_buffer").await.expect_err("lie");
    assert_eq!(e.code, ErrorCode::Protocol, "{e:?}");
    violation_with(&te, "given no buffer");
    serves_on(&liar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_length_past_its_buffer_is_a_protocol_error() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let e = call(&liar, "past_buffer").await.expect_err("lie");
    assert_eq!(e.code, ErrorCode::Protocol, "{e:?}");
    assert!(e.message.contains("1000 bytes in a buffer of 10"), "{e:?}");
    violation_with(&te, "1000 bytes in a buffer of 10");
    serves_on(&liar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buffer_past_the_limit_is_too_large_with_a_limit_record_and_nothing_allocated() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let e = call(&liar, "huge_buffer").await.expect_err("refused");
    assert_eq!(e.code, ErrorCode::TooLarge, "{e:?}");
    assert!(e.message.contains("limits.memory_mib"), "{e:?}");
    let limit = te
        .events("limit")
        .into_iter()
        .find(|r| r["rule"] == "limits.memory_mib")
        .expect("a limit record");
    assert!(limit["reason"].as_str().unwrap().contains("1099511627776"));
    assert!(te.events("protocol_violation").is_empty());
    serves_on(&liar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffers_for_a_call_not_waiting_or_twice_for_one_call_are_violations() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let other = call(&liar, "other_call").await.expect("answered");
    assert_eq!(other, Reply::Json(json!("protocol")));
    violation_with(&te, "call 999999, which is not waiting");
    let twice = call(&liar, "twice").await.expect("answered");
    assert_eq!(twice, Reply::Json(json!("protocol")));
    serves_on(&liar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_never_sends_a_bulk_call() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let refused = call(&liar, "bulk_call").await.expect("answered");
    assert_eq!(refused, Reply::Json(json!("protocol")));
    violation_with(&te, "passes no bulk body");
    serves_on(&liar).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_passes_back_its_buffer_is_cut_off_with_a_record() {
    let te = TestEngine::new();
    let (_p, liar) = liar(&te).await;
    let e = call(&liar, "pass_fd").await.expect_err("cut off");
    assert_eq!(e.code, ErrorCode::Protocol, "{e:?}");
    let cut = violation_with(&te, "passed file descriptors");
    assert_eq!(cut["decision"], "cut_off");
}

/// Inside the sandbox, on the memfds the host passes: what a plugin can do to them.
const PROBE: &str = r#"
def errno_of(f):
    try:
        f()
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def handle(h, body, fd):
    cid = h["id"]
    r, buf = ask_buffer(cid, 1 << 20)
    out = {
        "body_write": errno_of(lambda: os.pwrite(fd, b"x", 0)),
        "body_shrink": errno_of(lambda: os.ftruncate(fd, 1)),
        "body_grow": errno_of(lambda: os.ftruncate(fd, os.fstat(fd).st_size + 4096)),
        "body_map_writable": errno_of(lambda: mmap.mmap(fd, 4096, flags=mmap.MAP_SHARED, prot=mmap.PROT_WRITE)),
        "body_unseal": errno_of(lambda: fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 0)),
        "body_seals": fcntl.fcntl(fd, fcntl.F_GET_SEALS),
        "body_mode": os.fstat(fd).st_mode & 0o7777,
        "buffer_shrink": errno_of(lambda: os.ftruncate(buf, 1)),
        "buffer_grow": errno_of(lambda: os.ftruncate(buf, 4 << 20)),
        "buffer_write_past_end": errno_of(lambda: os.pwrite(buf, b"x", 1 << 20)),
        "buffer_write": errno_of(lambda: os.pwrite(buf, b"x", 0)),
        "buffer_seals": fcntl.fcntl(buf, fcntl.F_GET_SEALS),
        "memfd_create": errno_of(lambda: os.memfd_create("mine")),
    }
    answer(h, result=out)
serve(handle, ["probe"])
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_cannot_write_resize_unseal_or_make_the_memfds_executable() {
    let te = TestEngine::new();
    let p = TestPlugin::new("prober", "", &format!("{WIRE}{PROBE}"));
    let instance = te
        .engine
        .spawn_instance(p.path(), &Grants::all_requested())
        .await
        .expect("load");
    // Just over the threshold, so it goes by memfd; growing it by a page stays under
    // RLIMIT_FSIZE (16 MiB), so that the seal, not the limit, refuses.
    let body = vec![7u8; plugbox::ipc::bulk::BULK_THRESHOLD + 1];
    let reply = tokio::time::timeout(
        Duration::from_secs(30),
        instance.call_with_body("probe", Map::new(), "data", body),
    )
    .await
    .expect("no hang")
    .expect("probe");
    let Reply::Json(out) = reply else {
        panic!("{reply:?}")
    };
    // F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE, and F_SEAL_EXEC (0x20) from
    // MFD_NOEXEC_SEAL; the buffer has all but F_SEAL_WRITE.
    let fixed = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_EXEC;
    assert_eq!(
        out,
        json!({
            "body_write": "EPERM",
            "body_shrink": "EPERM",
            "body_grow": "EPERM",
            "body_map_writable": "EPERM",
            "body_unseal": "EPERM",
            "body_seals": fixed | libc::F_SEAL_WRITE,
            "body_mode": 0o666,
            "buffer_shrink": "EPERM",
            "buffer_grow": "EPERM",
            "buffer_write_past_end": "EPERM",
            "buffer_write": "ok",
            "buffer_seals": fixed,
            "memfd_create": "EPERM",
        })
    );
    assert!(instance.exited().is_none());
}
