//! One zygote template: spawned confined like an instance (but for its seccomp program),
//! imports the plugin, then forks instances on request over its control socket.
//!
//! The exchange, one `SOCK_SEQPACKET` message each way:
//! - template → host, once: `{"ready": true}` after the import, or `{"error": TEXT}`;
//! - host → template: `{"instance": NAME, "filter_bytes": N}\n` followed by the instances'
//!   seccomp program (N bytes of `struct sock_filter`), with three descriptors (`SCM_RIGHTS`):
//!   the instance's end of its channel, its stdout and its stderr;
//! - template → host: `{"pid": PID}` or `{"error": TEXT}`.
//!
//! Descriptors only ever go host → template: a message from the template carrying any is
//! refused. The pid the template names is checked before it is believed
//! ([`super::verify::forked_child`]).

use super::group::TemplateGroup;
use crate::engine::output::Forwarders;
use crate::engine::uids::UidLease;
use crate::engine::validate::Validated;
use crate::engine::Inner;
use crate::sys::{self, SockFilter};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

/// Largest message the template may send.
const REPLY_MAX_BYTES: usize = 64 * 1024;

/// A running template.
pub(super) struct Template {
    control: AsyncFd<OwnedFd>,
    pidfd: OwnedFd,
    pub(super) group: Arc<TemplateGroup>,
    /// The instances' seccomp program as sent with every fork, encoded once.
    filter: Vec<u8>,
    /// The ids it (and every instance it forks) runs as, when not the policy's.
    pub(super) ids: Option<(u32, u32)>,
    // Its output, forwarded to the audit log as the `#zygote` instance's.
    _forwarders: Forwarders,
}

/// An instance forked by the template, checked to be our child in the template's group.
pub(crate) struct Forked {
    /// Its pid.
    pub(crate) pid: libc::pid_t,
    /// The host's end of its channel.
    pub(crate) channel: OwnedFd,
    /// The read ends of its stdout and stderr.
    pub(crate) stdout: OwnedFd,
    pub(crate) stderr: OwnedFd,
    /// The template's group, which it belongs to.
    pub(crate) group: Arc<TemplateGroup>,
    /// The ids it runs as, when not the policy's.
    pub(crate) ids: Option<(u32, u32)>,
}

impl Template {
    /// Spawns the template of `v` as `lease`'s uid and waits (within `timeout`) until it has
    /// imported the plugin.
    pub(super) async fn start(
        inner: &Inner,
        v: &Validated,
        lease: Option<UidLease>,
        timeout: Duration,
    ) -> Result<Self, String> {
        let ids = lease
            .as_ref()
            .filter(|l| l.is_pooled())
            .map(|l| (l.id(), l.id()));
        let (host_ctl, template_ctl) =
            sys::socketpair_seqpacket().map_err(|e| format!("socketpair: {e}"))?;
        let mut child = super::spawn::template(inner, v, &template_ctl, ids)?;
        drop(template_ctl);
        let pid = child.pid;
        if let Err(e) = inner.watchdog.register(pid) {
            let _ = crate::sandbox::tree::kill_tree(pid, pid);
            return Err(format!("host-death watchdog: {e}"));
        }
        // From here dropping the group kills the template and everything it forked.
        let group = Arc::new(TemplateGroup::new(pid, Arc::clone(&inner.watchdog), lease));
        let forwarders = super::spawn::forward_output(inner, v, &mut child)?;
        let pidfd = sys::pidfd_open(pid).map_err(|e| format!("pidfd: {e}"))?;
        // Both directions: every send and receive is MSG_DONTWAIT.
        let control = sys::async_owned_fd_rw(host_ctl).map_err(|e| format!("control: {e}"))?;
        let template = Self {
            control,
            pidfd,
            group,
            filter: encode_filter(v.prepared.instance_filter()),
            ids,
            _forwarders: forwarders,
        };
        let ready = tokio::time::timeout(timeout, template.receive())
            .await
            .map_err(|_| format!("no answer within {timeout:?} while importing the plugin"))??;
        match ready.get("ready") {
            Some(serde_json::Value::Bool(true)) => Ok(template),
            _ => Err(answer_error(&ready, "not ready")),
        }
    }

    /// Has it not exited?
    pub(super) fn alive(&self) -> bool {
        let mut fds = [libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        matches!(sys::poll(&mut fds, 0), Ok(0))
    }

    /// Asks for one instance named `instance`, which stacks the instances' seccomp program
    /// before it runs anything.
    pub(super) async fn fork(&self, instance: &str, timeout: Duration) -> Result<Forked, String> {
        let (channel, plugin_end) =
            crate::engine::start::channel().map_err(|e| e.summary().to_string())?;
        let (stdout, stdout_w) = sys::pipe_cloexec().map_err(|e| format!("pipe: {e}"))?;
        let (stderr, stderr_w) = sys::pipe_cloexec().map_err(|e| format!("pipe: {e}"))?;
        let message = request(instance, &self.filter);
        let fds = [
            plugin_end.as_raw_fd(),
            stdout_w.as_raw_fd(),
            stderr_w.as_raw_fd(),
        ];
        let exchange = async {
            self.send(&message, &fds).await?;
            drop((plugin_end, stdout_w, stderr_w));
            self.receive().await
        };
        let answer = tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| format!("no answer to a fork within {timeout:?}"))??;
        let pid = pid_in(&answer)?;
        super::verify::forked_child(pid, self.group.pgid())?;
        Ok(Forked {
            pid,
            channel,
            stdout,
            stderr,
            group: Arc::clone(&self.group),
            ids: self.ids,
        })
    }

    async fn send(&self, message: &[u8], fds: &[i32]) -> Result<(), String> {
        loop {
            let mut ready = self
                .control
                .writable()
                .await
                .map_err(|e| format!("control: {e}"))?;
            match ready.try_io(|fd| sys::send_with_fds(fd.as_raw_fd(), message, fds)) {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => return Err(format!("control: send: {e}")),
                Err(_would_block) => continue,
            }
        }
    }

    async fn receive(&self) -> Result<serde_json::Value, String> {
        let mut buf = vec![0u8; REPLY_MAX_BYTES];
        let received = loop {
            let mut ready = self
                .control
                .readable()
                .await
                .map_err(|e| format!("control: {e}"))?;
            match ready.try_io(|fd| sys::recv_checking_fds(fd.as_raw_fd(), &mut buf)) {
                Ok(Ok(r)) => break r,
                Ok(Err(e)) => return Err(format!("control: receive: {e}")),
                Err(_would_block) => continue,
            }
        };
        if received.passed_fds {
            return Err("the template sent file descriptors (refused)".into());
        }
        if received.bytes == 0 {
            return Err("the template closed its control socket (it exited)".into());
        }
        decode(buf.get(..received.bytes).unwrap_or_default())
    }
}

/// One answer of the template: a JSON value (at most [`REPLY_MAX_BYTES`], as received).
pub(super) fn decode(body: &[u8]) -> Result<serde_json::Value, String> {
    serde_json::from_slice(body).map_err(|e| format!("malformed answer: {e}"))
}

/// The pid a fork answer names, or the template's (escaped) error.
pub(super) fn pid_in(answer: &serde_json::Value) -> Result<libc::pid_t, String> {
    match answer.get("pid").and_then(serde_json::Value::as_i64) {
        Some(pid) => libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid}")),
        None => Err(answer_error(answer, "no pid")),
    }
}

/// The fork request: a JSON line, then the filter's instructions ([`encode_filter`]).
fn request(instance: &str, filter: &[u8]) -> Vec<u8> {
    let header = serde_json::json!({ "instance": instance, "filter_bytes": filter.len() });
    let mut out = header.to_string().into_bytes();
    out.push(b'\n');
    out.extend_from_slice(filter);
    out
}

/// A seccomp program as the kernel takes it: `struct sock_filter` after `struct sock_filter`.
fn encode_filter(filter: &[SockFilter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(std::mem::size_of_val(filter));
    for ins in filter {
        out.extend_from_slice(&ins.code.to_ne_bytes());
        out.extend_from_slice(&[ins.jt, ins.jf]);
        out.extend_from_slice(&ins.k.to_ne_bytes());
    }
    out
}

/// The template's `error` text (escaped, bounded), or `otherwise`.
fn answer_error(answer: &serde_json::Value, otherwise: &str) -> String {
    let text = answer
        .get("error")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(otherwise);
    let cut: String = text.chars().take(2000).collect();
    crate::audit::escape_text(&cut)
}
