//! The honest baseline of a warm call: a blocking Rust thread and a Python child doing a
//! length-prefixed JSON echo on a socketpair (`benches/raw_echo.py`). No sandbox, no SDK, no
//! async runtime, no broker, no audit: the floor a call through plugbox is measured against.

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

/// The baseline's Python end, running, and the Rust end of its socket.
pub struct BlockingPeer {
    child: Child,
    sock: UnixStream,
    buf: Vec<u8>,
    have: usize,
}

impl BlockingPeer {
    /// Starts `raw_echo.py` with one end of a socketpair as its fd 0.
    pub fn spawn(script: &Path) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let child = Command::new(super::PYTHON)
            .args(["-I", "-S"])
            .arg(script)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .expect("raw_echo.py");
        Self {
            child,
            sock: ours,
            buf: vec![0; 1 << 16],
            have: 0,
        }
    }

    fn send(&mut self, v: &Value) {
        let body = serde_json::to_vec(v).expect("json");
        let mut frame = Vec::with_capacity(4 + body.len());
        frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
        frame.extend_from_slice(&body);
        self.sock.write_all(&frame).expect("send");
    }

    fn recv(&mut self) -> Value {
        loop {
            if self.have >= 4 {
                let n = u32::from_be_bytes(self.buf[..4].try_into().expect("4")) as usize;
                if self.have >= 4 + n {
                    let v = serde_json::from_slice(&self.buf[4..4 + n]).expect("json");
                    self.buf.copy_within(4 + n..self.have, 0);
                    self.have -= 4 + n;
                    return v;
                }
                if self.buf.len() < 4 + n {
                    self.buf.resize(4 + n, 0);
                }
            }
            let got = self.sock.read(&mut self.buf[self.have..]).expect("recv");
            assert!(got > 0, "raw_echo.py closed its socket");
            self.have += got;
        }
    }

    /// Rust calls, Python echoes: `n` round trips, each timed here, in nanoseconds.
    pub fn rust_calls(&mut self, n: usize, payload: &str) -> Vec<u64> {
        (1..=n)
            .map(|id| {
                let t = Instant::now();
                self.send(&json!({"id": id, "x": payload}));
                let reply = self.recv();
                assert_eq!(reply["id"], id);
                t.elapsed().as_nanos() as u64
            })
            .collect()
    }

    /// Python calls, Rust echoes: `n` round trips, each timed by the Python side.
    pub fn python_calls(&mut self, n: usize, payload: &str) -> Vec<u64> {
        self.send(&json!({"loop": n, "x": payload}));
        loop {
            let msg = self.recv();
            if let Some(lat) = msg.get("lat") {
                return serde_json::from_value(lat.clone()).expect("latencies");
            }
            let reply = json!({"id": msg["id"], "x": msg["x"]});
            self.send(&reply);
        }
    }
}

/// The same echo peer, its Rust end driven by tokio instead of a blocking thread: what the
/// runtime alone costs (diagnosis rows, `cargo bench --bench plugin_calls -- tokio`).
pub struct AsyncPeer {
    _child: Child,
    reader: tokio::net::unix::OwnedReadHalf,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl AsyncPeer {
    /// Starts `raw_echo.py`; call inside the runtime.
    pub fn spawn(script: &Path) -> Self {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        let child = Command::new(super::PYTHON)
            .args(["-I", "-S"])
            .arg(script)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .spawn()
            .expect("raw_echo.py");
        ours.set_nonblocking(true).expect("nonblocking");
        let (reader, writer) = tokio::net::UnixStream::from_std(ours)
            .expect("tokio")
            .into_split();
        Self {
            _child: child,
            reader,
            writer,
        }
    }

    /// `n` calls from this task, each writing then reading the socket itself.
    pub async fn calls(&mut self, n: usize, payload: &str) -> Vec<u64> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buf = vec![0u8; 1 << 16];
        let mut out = Vec::with_capacity(n);
        for id in 1..=n {
            let t = Instant::now();
            let body = serde_json::to_vec(&json!({"id": id, "x": payload})).expect("json");
            let mut frame = (body.len() as u32).to_be_bytes().to_vec();
            frame.extend_from_slice(&body);
            self.writer.write_all(&frame).await.expect("send");
            let mut have = 0;
            loop {
                have += self.reader.read(&mut buf[have..]).await.expect("recv");
                if have >= 4
                    && have >= 4 + u32::from_be_bytes(buf[..4].try_into().expect("4")) as usize
                {
                    break;
                }
            }
            let _: Value = serde_json::from_slice(&buf[4..have]).expect("json");
            out.push(t.elapsed().as_nanos() as u64);
        }
        out
    }
}

impl Drop for BlockingPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        let _ = self.child.wait();
    }
}
