//! A host→plugin call with options beyond its command and arguments: a raw body, and a tag
//! that follows the call to the plugin→host calls the plugin makes for it.

use super::plugin::Plugin;
use crate::capability::{CallError, Reply};
use serde_json::{Map, Value};

/// Options of one host→plugin call ([`Plugin::call_with`]).
#[derive(Debug, Clone, Default)]
pub struct CallOptions {
    /// An argument carried as raw bytes: its name and its bytes (a large one travels in a
    /// sealed memfd, within the plugin's body limit).
    pub body: Option<(String, Vec<u8>)>,
    /// The caller's tag for this call. A plugin→host call that the plugin makes while running
    /// this call, and says it makes for it, sees the tag in
    /// [`crate::capability::CallContext::cause`]; the broker accepts that claim only while
    /// this call waits for the plugin's reply, so a plugin cannot lend the tag to a call it
    /// is not serving.
    pub tag: Option<u64>,
}

impl Plugin {
    /// The largest raw body a call of this plugin may carry, and the largest binary result it
    /// may return: `min(limits.memory_mib, 1 GiB)` (a larger one is refused `too_large`
    /// before anything is sent).
    pub fn max_body_bytes(&self) -> u64 {
        let memory = self.m.validated().manifest.policy.limits().memory_bytes;
        crate::ipc::bulk::body_limit(memory)
    }

    /// Calls `command` with keyword arguments `args` and `options`, on a ready instance (as
    /// [`Plugin::call`]).
    pub async fn call_with(
        &self,
        command: &str,
        args: Map<String, Value>,
        options: CallOptions,
    ) -> Result<Reply, CallError> {
        let CallOptions { body, tag } = options;
        let reserved = self.m.pick().await?;
        reserved.invoke_tagged(command, args, body, tag).await
    }
}
