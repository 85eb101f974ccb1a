//! Host capabilities answered by C: the function-pointer type, the reply a callback fills,
//! and the [`HostHandler`] that calls it.

use super::text;
use crate::c_host::{codes, HostCall, HostError, HostHandler};
use std::ffi::{c_char, c_void, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// A host capability callback: answers one call of `capability` by `plugin` with arguments
/// `args_json` (a JSON object) by calling [`plugbox_reply_ok`] or [`plugbox_reply_error`] on
/// `reply` before it returns. The strings and `reply` are valid only during the call. Runs
/// on an engine thread (never the thread that called `plugbox_engine_call`), possibly on
/// several at once: it must be thread-safe. It must not unwind (C++: catch every exception).
/// Null is refused by `plugbox_engine_register`.
pub type PlugboxCapabilityFn = Option<
    unsafe extern "C" fn(
        user_data: *mut c_void,
        capability: *const c_char,
        plugin: *const c_char,
        args_json: *const c_char,
        reply: *mut PlugboxReply,
    ),
>;

/// The function behind a non-null [`PlugboxCapabilityFn`].
type CapabilityFn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    *const c_char,
    *const c_char,
    *mut PlugboxReply,
);

/// The answer a callback gives (opaque), through [`plugbox_reply_ok`] or
/// [`plugbox_reply_error`]; the last one called wins.
#[derive(Default)]
pub struct PlugboxReply {
    outcome: Option<Result<String, HostError>>,
}

/// A registered C callback and its user data.
pub(super) struct CCallback {
    func: CapabilityFn,
    user_data: *mut c_void,
}

impl CCallback {
    pub(super) fn new(func: CapabilityFn, user_data: *mut c_void) -> Self {
        Self { func, user_data }
    }
}

// SAFETY: `plugbox_engine_register`'s contract: the callback is safe to call from any
// thread, concurrently, with this `user_data`, until the engine is freed; this struct only
// passes the pointer back to that callback and never dereferences it.
unsafe impl Send for CCallback {}
// SAFETY: as for `Send`: shared use is concurrent calls of the thread-safe callback.
unsafe impl Sync for CCallback {}

impl HostHandler for CCallback {
    fn handle(&self, call: HostCall<'_>) -> Result<String, HostError> {
        let c = |s: &str| {
            CString::new(s).map_err(|_| HostError::invalid("a call string holds a NUL byte"))
        };
        let (capability, plugin, args) = (c(call.capability)?, c(call.plugin)?, c(call.args_json)?);
        let mut reply = PlugboxReply::default();
        // SAFETY: the registration contract makes `func` safe to call with `user_data` on
        // this thread; the strings and `reply` outlive the call, which must not keep them.
        unsafe {
            (self.func)(
                self.user_data,
                capability.as_ptr(),
                plugin.as_ptr(),
                args.as_ptr(),
                &mut reply,
            )
        };
        reply.outcome.unwrap_or_else(|| {
            Err(HostError::new(
                "host_error",
                "the host callback returned without a reply",
            ))
        })
    }
}

/// Answers the call with `result_json` (copied; validated as strict JSON when the callback
/// returns). A null or non-UTF-8 `result_json` answers with an error instead.
///
/// # Safety
/// `reply` is null or the reply passed to the running callback; `result_json` is null or a
/// NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn plugbox_reply_ok(reply: *mut PlugboxReply, result_json: *const c_char) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `reply` is null or the live reply of this callback.
        let Some(reply) = (unsafe { reply.as_mut() }) else {
            return;
        };
        // SAFETY: the caller guarantees a NUL-terminated string (or null).
        let result = unsafe { text(result_json, "result_json") };
        reply.outcome = Some(result.map(str::to_owned));
    }));
}

/// Answers the call with an error: `code` is a wire error code (`denied`, `invalid`,
/// `too_large`, `rate_limited`, `timeout`, `host_error`; any other is sent as `host_error`),
/// `message` human text. Both are copied; null `message` is allowed.
///
/// # Safety
/// `reply` is null or the reply passed to the running callback; `code` and `message` are null
/// or NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn plugbox_reply_error(
    reply: *mut PlugboxReply,
    code: *const c_char,
    message: *const c_char,
) {
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the caller guarantees `reply` is null or the live reply of this callback.
        let Some(reply) = (unsafe { reply.as_mut() }) else {
            return;
        };
        // SAFETY: the caller guarantees NUL-terminated strings (or null).
        let (code, message) = unsafe { (text(code, "code"), text(message, "message")) };
        let error = match (code, message) {
            (Ok(code), Ok(message)) => HostError::new(code, message),
            (Ok(code), Err(_)) => HostError::new(code, "the host refused the call"),
            (Err(e), _) => HostError::new(codes::INVALID, format!("reply error: {}", e.message)),
        };
        reply.outcome = Some(Err(error));
    }));
}
