//! Creating, configuring and ending an embedded engine.

use super::callback::{CCallback, PlugboxCapabilityFn};
use super::{guard, need, put, text, PlugboxError};
use crate::c_host::{codes, HostEngine, HostError};
use std::ffi::{c_char, c_void};
use std::sync::Arc;

/// An engine embedded in this process, with its own runtime (opaque). Made by
/// [`plugbox_engine_new`], freed by [`plugbox_engine_free`]; every other function may be
/// called on it from any thread, concurrently.
pub struct PlugboxEngine {
    host: HostEngine,
}

impl PlugboxEngine {
    /// The safe core behind this handle (for Rust code, such as the `c_abi_calls` benchmark,
    /// that drives the same engine through the Rust API as well).
    pub fn host(&self) -> &HostEngine {
        &self.host
    }
}

/// Borrows the engine behind `engine`.
///
/// # Safety
/// `engine` is null or a live engine from [`plugbox_engine_new`], not freed during `'a`.
pub(super) unsafe fn borrow<'a>(engine: *const PlugboxEngine) -> Result<&'a HostEngine, HostError> {
    // SAFETY: the caller guarantees `engine` is null or live for 'a; `as_ref` handles null.
    match unsafe { engine.as_ref() } {
        Some(e) => Ok(&e.host),
        None => Err(HostError::new(codes::NULL_ARGUMENT, "engine is null")),
    }
}

static VERSION: &[u8] = concat!(env!("CARGO_PKG_VERSION"), "\0").as_bytes();

/// The library's version, such as `"0.1.0"` (static; never freed).
#[no_mangle]
pub extern "C" fn plugbox_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

/// Starts an engine from `config_json` (`docs/c-abi.md`: `audit_log` and `state_dir`
/// required; `durability`, `audit_key`, `audit_anchors`, `checkpoint_records`,
/// `checkpoint_seconds`, `clamp`, `allow_ungranted`, `worker_threads`) and stores it in
/// `*out_engine`. Returns null on success, else an error the caller frees.
///
/// # Safety
/// `config_json` is null or a NUL-terminated string; `out_engine` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_new(
    config_json: *const c_char,
    out_engine: *mut *mut PlugboxEngine,
) -> *mut PlugboxError {
    guard(|| {
        need(out_engine, "out_engine")?;
        // SAFETY: the caller guarantees a NUL-terminated string (or null) for this call.
        let config = unsafe { text(config_json, "config_json") }?;
        let host = HostEngine::new(config)?;
        let engine = Box::into_raw(Box::new(PlugboxEngine { host }));
        // SAFETY: checked non-null above; the caller guarantees it is writable.
        unsafe { out_engine.write(engine) };
        Ok(())
    })
}

/// Registers host capability `name` (`[a-z0-9._-]{1,64}`), answered by `callback` with
/// `user_data`. Register before loading the plugins that need it. `callback` runs on an
/// engine thread, possibly on several at once; `user_data` must stay valid, and usable from
/// those threads, until [`plugbox_engine_free`] returns.
///
/// # Safety
/// `engine` is null or live; `name` is null or a NUL-terminated string; `callback` is null
/// or a function safe to call from any thread, concurrently, with `user_data` until the
/// engine is freed.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_register(
    engine: *const PlugboxEngine,
    name: *const c_char,
    callback: PlugboxCapabilityFn,
    user_data: *mut c_void,
) -> *mut PlugboxError {
    guard(|| {
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        // SAFETY: the caller guarantees a NUL-terminated string (or null).
        let name = unsafe { text(name, "name") }?;
        let Some(func) = callback else {
            return Err(HostError::new(codes::NULL_ARGUMENT, "callback is null"));
        };
        host.register(name, Arc::new(CCallback::new(func, user_data)))
    })
}

/// Stores the audit log's path in `*out_path` (freed with `plugbox_string_free`).
///
/// # Safety
/// `engine` is null or live; `out_path` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_audit_path(
    engine: *const PlugboxEngine,
    out_path: *mut *mut c_char,
) -> *mut PlugboxError {
    guard(|| {
        need(out_path, "out_path")?;
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        // SAFETY: checked non-null; the caller guarantees it is writable.
        unsafe { put(out_path, host.audit_path()) };
        Ok(())
    })
}

/// Unloads every plugin (calls in flight get the shutdown grace) and seals the audit log.
/// Afterwards every function but event polling and freeing fails with `shut_down`.
///
/// # Safety
/// `engine` is null or live.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_shutdown(
    engine: *const PlugboxEngine,
) -> *mut PlugboxError {
    guard(|| {
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        unsafe { borrow(engine) }?.shutdown()
    })
}

/// Frees the engine (null: nothing), shutting it down first if the host did not. No other
/// call on it may be running or start; never call it from a capability callback.
///
/// # Safety
/// `engine` is null or an engine from [`plugbox_engine_new`], freed at most once, with no
/// call on it in progress.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_free(engine: *mut PlugboxEngine) {
    if engine.is_null() {
        return;
    }
    // SAFETY: non-null, made by `Box::into_raw` in `plugbox_engine_new`, freed once, and no
    // call borrows it any more (the caller's promise).
    let owned = unsafe { Box::from_raw(engine) };
    let error = guard(move || {
        drop(owned);
        Ok(())
    });
    // SAFETY: `error` is null or was just made by `guard`.
    unsafe { super::plugbox_error_free(error) };
}
