//! What the C ABI hands out and takes back: errors (code and message) and strings.

use super::owned;
use crate::c_host::HostError;
use std::ffi::{c_char, CString};

/// An error from a `plugbox_*` function: a stable code (`docs/c-abi.md`) and a message. Owned
/// by the caller, freed with [`plugbox_error_free`].
pub struct PlugboxError {
    code: CString,
    message: CString,
}

impl From<HostError> for PlugboxError {
    fn from(e: HostError) -> Self {
        let c = |s: String| {
            let p = owned(s);
            if p.is_null() {
                CString::default()
            } else {
                // SAFETY: `p` was just made by `CString::into_raw` in `owned` and is taken
                // back exactly once, here.
                unsafe { CString::from_raw(p) }
            }
        };
        Self {
            code: c(e.code),
            message: c(e.message),
        }
    }
}

static NULL_CODE: &[u8] = b"null_argument\0";
static NULL_MESSAGE: &[u8] = b"the error pointer is null\0";

/// The error's code, such as `"plugin_error"` or `"null_argument"`. Borrowed: valid until the
/// error is freed. A null `error` gives `"null_argument"`.
///
/// # Safety
/// `error` is null or a live error returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn plugbox_error_code(error: *const PlugboxError) -> *const c_char {
    // SAFETY: the caller guarantees `error` is null or live; `as_ref` handles null.
    match unsafe { error.as_ref() } {
        Some(e) => e.code.as_ptr(),
        None => NULL_CODE.as_ptr().cast(),
    }
}

/// The error's message. Borrowed: valid until the error is freed.
///
/// # Safety
/// `error` is null or a live error returned by this library and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn plugbox_error_message(error: *const PlugboxError) -> *const c_char {
    // SAFETY: the caller guarantees `error` is null or live; `as_ref` handles null.
    match unsafe { error.as_ref() } {
        Some(e) => e.message.as_ptr(),
        None => NULL_MESSAGE.as_ptr().cast(),
    }
}

/// Frees an error (null: nothing).
///
/// # Safety
/// `error` is null or an error returned by this library, freed at most once.
#[no_mangle]
pub unsafe extern "C" fn plugbox_error_free(error: *mut PlugboxError) {
    if !error.is_null() {
        // SAFETY: non-null, made by `Box::into_raw` in `guard`, and freed once (the caller's
        // promise).
        drop(unsafe { Box::from_raw(error) });
    }
}

/// Frees a string this library returned (null: nothing).
///
/// # Safety
/// `s` is null or a string returned by this library through an out-pointer, freed at most
/// once.
#[no_mangle]
pub unsafe extern "C" fn plugbox_string_free(s: *mut c_char) {
    if !s.is_null() {
        // SAFETY: non-null, made by `CString::into_raw` in `owned`, freed once.
        drop(unsafe { CString::from_raw(s) });
    }
}
