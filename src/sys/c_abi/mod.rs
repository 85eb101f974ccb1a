//! The C ABI (`libplugbox.so`, `include/plugbox.h`): thin `extern "C"` shims over the safe
//! core in [`crate::c_host`]. This folder holds the only unsafe code of the C ABI: reading
//! C strings, writing out-pointers, owning boxed handles and calling the host's function
//! pointers. `docs/c-abi.md` states the ownership and threading rules.
//!
//! Every function catches panics (`guard`) so that none unwinds into C (under
//! `panic = "abort"` a panic aborts the process instead), and answers a null pointer or a
//! string that is not UTF-8 with a typed error.

mod callback;
mod calls;
mod engine;
mod strings;

pub use callback::{plugbox_reply_error, plugbox_reply_ok, PlugboxCapabilityFn, PlugboxReply};
pub use calls::{
    plugbox_engine_call, plugbox_engine_load, plugbox_engine_next_event, plugbox_engine_unload,
};
pub use engine::{
    plugbox_engine_audit_path, plugbox_engine_free, plugbox_engine_new, plugbox_engine_register,
    plugbox_engine_shutdown, plugbox_version, PlugboxEngine,
};
pub use strings::{
    plugbox_error_code, plugbox_error_free, plugbox_error_message, plugbox_string_free,
    PlugboxError,
};

use crate::c_host::{codes, HostError};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`, turning its error or a panic into an owned [`PlugboxError`] (null: success).
fn guard(f: impl FnOnce() -> Result<(), HostError>) -> *mut PlugboxError {
    let outcome = catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|panic| Err(panicked(&panic)));
    match outcome {
        Ok(()) => std::ptr::null_mut(),
        Err(e) => Box::into_raw(Box::new(PlugboxError::from(e))),
    }
}

/// The error a caught panic becomes.
fn panicked(payload: &Box<dyn std::any::Any + Send>) -> HostError {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    HostError::new(codes::PANIC, format!("plugbox panicked (a bug): {what}"))
}

/// Borrows the C string `ptr` (argument `what`) as UTF-8.
///
/// # Safety
/// `ptr` is null or points to a NUL-terminated string that stays valid and unchanged for
/// `'a` (the duration of the C call).
unsafe fn text<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, HostError> {
    if ptr.is_null() {
        return Err(HostError::new(
            codes::NULL_ARGUMENT,
            format!("{what} is null"),
        ));
    }
    // SAFETY: non-null, and the caller guarantees a NUL-terminated string valid for 'a.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|e| HostError::new(codes::NOT_UTF8, format!("{what} is not UTF-8: {e}")))
}

/// Checks that out-pointer `out` (argument `what`) is not null, before any work is done.
fn need<T>(out: *mut T, what: &str) -> Result<(), HostError> {
    if out.is_null() {
        Err(HostError::new(
            codes::NULL_ARGUMENT,
            format!("{what} is null"),
        ))
    } else {
        Ok(())
    }
}

/// Hands `s` to C as a string it frees with `plugbox_string_free`.
fn owned(s: String) -> *mut c_char {
    // JSON text and paths escaped here hold no NUL; any other NUL is shown, not cut at.
    let s = if s.contains('\0') {
        s.replace('\0', "\\0")
    } else {
        s
    };
    CString::new(s).map_or(std::ptr::null_mut(), CString::into_raw)
}

/// Stores `s` (owned by the caller from now on) in `*out`.
///
/// # Safety
/// `out` is non-null, aligned and writable (checked non-null by [`need`] beforehand).
unsafe fn put(out: *mut *mut c_char, s: String) {
    // SAFETY: the caller guarantees `out` is a valid, writable `char **`.
    unsafe { out.write(owned(s)) };
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The code of `error`, which is then freed.
    fn code_of(error: *mut PlugboxError) -> String {
        assert!(!error.is_null());
        // SAFETY: `error` is a live error just made by `guard`; the code is read before the
        // error is freed, once.
        unsafe {
            let code = CStr::from_ptr(plugbox_error_code(error))
                .to_str()
                .unwrap()
                .to_owned();
            plugbox_error_free(error);
            code
        }
    }

    #[test]
    fn a_panic_inside_a_call_is_caught_and_becomes_a_panic_error() {
        let error = guard(|| panic!("boom"));
        assert_eq!(code_of(error), "panic");
        assert!(guard(|| Ok(())).is_null());
    }

    #[test]
    fn null_and_non_utf8_strings_are_typed_errors() {
        // SAFETY: null is allowed; the literal is NUL-terminated and lives for the call.
        let (null, bad) = unsafe { (text(std::ptr::null(), "x"), text(c"\xff".as_ptr(), "x")) };
        assert_eq!(null.unwrap_err().code, "null_argument");
        assert_eq!(bad.unwrap_err().code, "not_utf8");
        // SAFETY: a null engine is allowed and refused.
        let error = unsafe { plugbox_engine_shutdown(std::ptr::null()) };
        assert_eq!(code_of(error), "null_argument");
    }
}
