//! Bulk bytes (issue 13 item 4): one 64 MiB call host→plugin→host (the plugin returns what it
//! got) through the engine's Rust API, against the simplest real alternatives measured in the
//! same run, interleaved in blocks:
//! - `memcpy`: 64 MiB copied once between two buffers already faulted in (the memory floor);
//! - `socket`: 64 MiB written by Rust to a blocking `socketpair` and echoed back by a plain
//!   Python peer that reads into one reused buffer (the raw-socket floor for Rust↔Python).
//!
//! GB/s counts one direction: 64 MiB divided by the round trip. Then a sweep of sizes around
//! the bulk threshold (`ipc::bulk::BULK_THRESHOLD`), where bodies switch from the frame to a
//! memfd.
//!
//! Run: `cargo bench --bench bulk` (`cargo test` runs it as a short smoke test).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use plugbox::capability::Reply;
use plugbox::manifest::Grants;
use serde_json::Map;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
const TARGET_GBPS: f64 = 3.0;

/// The Python peer of the socket baseline: reads `length | bytes` into one buffer, echoes them.
const PEER: &str = r#"
import os, socket, struct
s = socket.socket(fileno=0)
buf = bytearray(0)
while True:
    head = s.recv(8, socket.MSG_WAITALL)
    if len(head) < 8:
        break
    (n,) = struct.unpack(">Q", head)
    if len(buf) < n:
        buf = bytearray(n)
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        got += s.recv_into(view[got:])
    s.sendall(view)
"#;

struct Peer {
    child: Child,
    sock: UnixStream,
}

impl Peer {
    fn start() -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        // The peer's end is its stdin (inherited, unlike the close-on-exec original).
        let child = Command::new("/usr/bin/python3")
            .args(["-I", "-S", "-c", PEER])
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .expect("python peer");
        Self { child, sock: ours }
    }

    fn round_trip(&mut self, body: &[u8], back: &mut [u8]) {
        self.sock
            .write_all(&(body.len() as u64).to_be_bytes())
            .expect("len");
        self.sock.write_all(body).expect("body");
        self.sock.read_exact(back).expect("echo");
    }
}

/// Nanosecond samples → (p50, p99) in GB/s for `bytes` per sample.
fn gbps(samples: &mut [Duration], bytes: usize) -> (f64, f64) {
    samples.sort_unstable();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / 1e9;
    (rate(at(0.5)), rate(at(0.99)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let (rounds, block, size) = if benching {
        (12, 4, 64 * MIB)
    } else {
        (1, 2, 4 * MIB)
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let work = tempfile::tempdir().expect("tmp");
    let engine = common::echo_engine(work.path());
    let plugin = engine
        .spawn_instance(&root.join("benches/plugins/echo"), &Grants::all_requested())
        .await
        .expect("load");
    let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let mut copy = vec![1u8; size];
    let mut back = vec![2u8; size];
    let mut peer = Peer::start();

    let (mut t_copy, mut t_sock, mut t_box) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        for _ in 0..block {
            let t = Instant::now();
            copy.copy_from_slice(&body);
            t_copy.push(t.elapsed());
            std::hint::black_box(&copy);
        }
        for _ in 0..block {
            let t = Instant::now();
            peer.round_trip(&body, &mut back);
            t_sock.push(t.elapsed());
        }
        assert_eq!(back, body);
        for _ in 0..block {
            let arg = body.clone(); // the caller's vector, given to the call: not timed
            let t = Instant::now();
            let reply = plugin
                .call_with_body("echo_bytes", Map::new(), "data", arg)
                .await
                .expect("bulk call");
            t_box.push(t.elapsed());
            let Reply::Bytes(got) = reply else {
                panic!("{reply:?}")
            };
            assert_eq!(got.len(), size);
        }
    }
    let n = rounds * block;
    let (copy50, copy99) = gbps(&mut t_copy, size);
    let (sock50, sock99) = gbps(&mut t_sock, size);
    let (box50, box99) = gbps(&mut t_box, size);
    println!(
        "one {} MiB call host→plugin→host, GB/s one direction ({n} each, blocks of {block}):",
        size / MIB
    );
    println!("  memcpy (floor)              p50 {copy50:>6.2}   p99 {copy99:>6.2}");
    println!("  socketpair ↔ python echo    p50 {sock50:>6.2}   p99 {sock99:>6.2}");
    println!("  plugbox call_with_body      p50 {box50:>6.2}   p99 {box99:>6.2}");
    println!(
        "  plugbox / socket: {:.2}× at p50, {:.2}× at p99; plugbox / memcpy: {:.2}× at p50",
        box50 / sock50,
        box99 / sock99,
        box50 / copy50
    );
    let verdict = if box50 >= TARGET_GBPS {
        "met"
    } else {
        "MISSED"
    };
    println!("  target p50 >= {TARGET_GBPS} GB/s: {verdict} ({box50:.2})");

    println!("sizes around the bulk threshold (plugbox round trip, p50 of {n}):");
    for kib in [256usize, 1024, 4096, 8192, 14336, 14337, 16384] {
        let len = kib * 1024;
        let mut samples = Vec::new();
        for _ in 0..n {
            let arg = body[..len.min(size)].to_vec();
            let t = Instant::now();
            plugin
                .call_with_body("echo_bytes", Map::new(), "data", arg)
                .await
                .expect("call");
            samples.push(t.elapsed());
        }
        let (p50, _) = gbps(&mut samples, len.min(size));
        samples.sort_unstable();
        println!(
            "  {kib:>5} KiB  {:>8.1} µs  {p50:>6.2} GB/s",
            samples[samples.len() / 2].as_secs_f64() * 1e6
        );
    }
    drop(peer.sock);
    let _ = peer.child.wait();
    plugin.shutdown().await;
}
