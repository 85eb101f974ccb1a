//! The typed error every C ABI function reports: a stable code string and a message.

use crate::capability::CallError;

/// Codes of errors decided by the C host layer itself (the engine's own call codes, such as
/// `plugin_error` or `unavailable`, pass through unchanged).
pub mod codes {
    /// A required pointer argument was null.
    pub const NULL_ARGUMENT: &str = "null_argument";
    /// A string argument was not valid UTF-8.
    pub const NOT_UTF8: &str = "not_utf8";
    /// A JSON argument (configuration, grant, call arguments, reply) was malformed or not of
    /// the documented shape.
    pub const INVALID: &str = "invalid";
    /// The engine could not start (audit log, state directory, SDK, watchdog, signing key).
    pub const ENGINE_FAILED: &str = "engine_failed";
    /// A capability name is taken or malformed.
    pub const CAPABILITY: &str = "capability";
    /// A load was refused or failed (the message names the step).
    pub const LOAD_FAILED: &str = "load_failed";
    /// No plugin of that name is loaded.
    pub const NOT_LOADED: &str = "not_loaded";
    /// The engine was shut down; it accepts nothing more.
    pub const SHUT_DOWN: &str = "shut_down";
    /// Sealing the audit log at shutdown failed.
    pub const AUDIT: &str = "audit";
    /// The library panicked inside this call (a bug); the panic was caught at the boundary.
    pub const PANIC: &str = "panic";
}

/// A failed operation of the C host layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct HostError {
    /// The stable code ([`codes`], or an engine call code such as `plugin_error`).
    pub code: String,
    /// Human text.
    pub message: String,
}

impl HostError {
    /// An error with `code`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// `invalid`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(codes::INVALID, message)
    }
}

impl From<CallError> for HostError {
    fn from(e: CallError) -> Self {
        let message = match e.traceback {
            Some(tb) => format!("{}\n{tb}", e.message),
            None => e.message,
        };
        Self::new(e.code.as_str(), message)
    }
}
