//! Capabilities: what a plugin may ask its host to do.
//!
//! A capability handler knows nothing about framing or the gate: it receives validated
//! arguments for one call of one plugin and returns a reply. Hosts add their own through
//! [`Capability`] or the typed closure adapter [`typed`]; the engine serves the built-ins
//! (`log`, `fs.*`, `kv.*`).

pub mod fs;
pub mod kv;
pub mod kv_store;
pub mod log;

use crate::ipc::ErrorCode;
use crate::manifest::EffectiveCapability;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use std::future::Future;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Who is calling: the plugin instance.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Manifest name.
    pub name: String,
    /// Manifest version.
    pub version: String,
    /// Instance id, unique in this engine.
    pub instance: String,
    /// The plugin directory.
    pub dir: PathBuf,
    /// This plugin's private state directory, the host's (mode 0700): one per plugin
    /// directory, shared by its instances and versions, never by another directory that
    /// claims the same name. The kv store lives in `kv/`, the `fs.*` data in `data/`
    /// ([`PluginInfo::data_dir`]); a host capability keeps its own per-plugin files in a
    /// subdirectory named for it (for example `state_dir.join("host-myapp")`).
    pub state_dir: PathBuf,
    /// The plugin's data directory, `state_dir/data`: where the built-in `fs.*` resolve their
    /// roots. Its contents are the plugin's to choose (through `fs.write`), so a host handler
    /// reading them treats them as untrusted input.
    pub data_dir: PathBuf,
    /// sha256 over the plugin's files, computed at load.
    pub digest: String,
    /// The data directory as opened once at load (the built-in `fs.*` work beneath it), with
    /// the activation's `fs` slots, file size limit and quota.
    pub fs: Arc<fs::PluginFs>,
}

impl PluginInfo {
    /// The audit subject for records about this plugin.
    pub fn subject(&self) -> crate::audit::Subject {
        crate::audit::Subject {
            name: self.name.clone(),
            version: self.version.clone(),
            instance: self.instance.clone(),
            digest: Some(self.digest.clone()),
        }
    }
}

/// The context of one call.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The calling plugin.
    pub plugin: Arc<PluginInfo>,
    /// The plugin's effective grant for this capability (scope, size limit).
    pub grant: Arc<EffectiveCapability>,
    /// Largest payload the reply may carry, bytes.
    pub max_bytes: u64,
    /// The tag its caller gave the host→plugin call this call was made for
    /// ([`crate::engine::CallOptions::tag`]), when the plugin said it makes the call for one
    /// and the broker accepted that: only a call waiting for this instance's reply is
    /// accepted. `None`: no such call, or one without a tag.
    pub cause: Option<u64>,
}

/// One call's arguments.
#[derive(Debug, Clone, Default)]
pub struct CallRequest {
    /// Keyword arguments (strictly decoded JSON).
    pub args: Map<String, Value>,
    /// The frame body, when the call names a body argument.
    pub body: Option<(String, Vec<u8>)>,
}

/// A successful reply.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A JSON value.
    Json(Value),
    /// Raw bytes, sent as the frame body.
    Bytes(Vec<u8>),
}

impl Reply {
    /// Bytes this reply adds to a frame (JSON text length, or body length).
    pub fn size(&self) -> usize {
        match self {
            Reply::Json(v) => serde_json::to_vec(v).map(|b| b.len()).unwrap_or(0),
            Reply::Bytes(b) => b.len(),
        }
    }

    /// The reply as one JSON value, for a host that has no binary channel: JSON as it is;
    /// bytes as `{"bytes_utf8": TEXT}` when they are UTF-8, else `{"bytes_len": N}`.
    pub fn into_json(self) -> Value {
        match self {
            Reply::Json(v) => v,
            Reply::Bytes(b) => match String::from_utf8(b) {
                Ok(text) => serde_json::json!({ "bytes_utf8": text }),
                Err(e) => serde_json::json!({ "bytes_len": e.as_bytes().len() }),
            },
        }
    }
}

/// A failed call, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct CallError {
    /// The code sent on the wire.
    pub code: ErrorCode,
    /// Human text.
    pub message: String,
    /// For `plugin_error`: the plugin's traceback text.
    pub traceback: Option<String>,
}

impl CallError {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            traceback: None,
        }
    }
    /// `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Invalid, message)
    }
    /// `denied`.
    pub fn denied(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Denied, message)
    }
    /// `host_error`.
    pub fn host(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::HostError, message)
    }
    /// `too_large`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
}

/// A host capability.
pub trait Capability: Send + Sync + 'static {
    /// The gate's scope check, run before the decision is recorded: an error here is a
    /// *denied* call (recorded with rule `capability.scope`), never dispatched. Must be cheap
    /// and must not block.
    fn check(&self, _ctx: &CallContext, _request: &CallRequest) -> Result<(), CallError> {
        Ok(())
    }

    /// Serves one call. Arguments are strictly decoded but otherwise unchecked.
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>>;
}

struct Typed<F, A, R, Fut> {
    handler: Arc<F>,
    types: PhantomData<fn(A) -> (R, Fut)>,
}

impl<A, R, F, Fut> Capability for Typed<F, A, R, Fut>
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, CallError>> + Send + 'static,
{
    fn call(&self, ctx: CallContext, request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let handler = Arc::clone(&self.handler);
        Box::pin(async move {
            if request.body.is_some() {
                return Err(CallError::invalid("this capability takes no binary body"));
            }
            let args: A = serde_json::from_value(Value::Object(request.args))
                .map_err(|e| CallError::invalid(format!("arguments: {e}")))?;
            let result = handler(ctx, args).await?;
            serde_json::to_value(result)
                .map(Reply::Json)
                .map_err(|e| CallError::host(format!("result is not JSON: {e}")))
        })
    }
}

/// Wraps an async closure taking typed arguments (checked by serde: a wrong type or an
/// unknown field, with `#[serde(deny_unknown_fields)]`, is an `invalid` error) as a capability.
///
/// ```
/// use plugbox::capability::{typed, CallContext, CallError};
/// #[derive(serde::Deserialize)]
/// #[serde(deny_unknown_fields)]
/// struct GetText { doc_id: u32 }
/// let cap = typed(|_ctx: CallContext, args: GetText| async move {
///     Ok::<_, CallError>(format!("document {}", args.doc_id))
/// });
/// # let _ = cap;
/// ```
pub fn typed<A, R, F, Fut>(handler: F) -> Arc<dyn Capability>
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + Send + 'static,
    F: Fn(CallContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, CallError>> + Send + 'static,
{
    Arc::new(Typed {
        handler: Arc::new(handler),
        types: PhantomData,
    })
}

/// Deserialises the arguments of a built-in capability, naming the capability on error.
pub(crate) fn args<A: DeserializeOwned>(name: &str, request: &CallRequest) -> Result<A, CallError> {
    serde_json::from_value(Value::Object(request.args.clone()))
        .map_err(|e| CallError::invalid(format!("{name}: arguments: {e}")))
}
