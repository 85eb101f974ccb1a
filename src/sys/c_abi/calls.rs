//! Loading, calling and unloading plugins, and taking the engine's events.

use super::engine::{borrow, PlugboxEngine};
use super::{guard, need, put, text, PlugboxError};
use std::ffi::c_char;
use std::time::Duration;

/// Loads the plugin in directory `dir` under `grant_json` (`{"file": "grant.toml"}`,
/// `{"grant": {...}}` or, with `allow_ungranted`, `{"all_requested": true}`). If
/// `out_description` is not null, stores the plugin's description there as JSON (name,
/// version, digest, state, ready instances; freed with `plugbox_string_free`).
///
/// # Safety
/// `engine` is null or live; `dir` and `grant_json` are null or NUL-terminated strings;
/// `out_description` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_load(
    engine: *const PlugboxEngine,
    dir: *const c_char,
    grant_json: *const c_char,
    out_description: *mut *mut c_char,
) -> *mut PlugboxError {
    guard(|| {
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        // SAFETY: the caller guarantees NUL-terminated strings (or null).
        let (dir, grant) = unsafe { (text(dir, "dir")?, text(grant_json, "grant_json")?) };
        let description = host.load(dir, grant)?;
        if !out_description.is_null() {
            // SAFETY: non-null; the caller guarantees it is writable.
            unsafe { put(out_description, description) };
        }
        Ok(())
    })
}

/// Calls `command` of loaded plugin `plugin` with `args_json` (a JSON object) and stores the
/// result, as JSON, in `*out_result` (freed with `plugbox_string_free`). Blocks the calling
/// thread until the plugin answers; any number of threads may call at once.
///
/// # Safety
/// `engine` is null or live; `plugin`, `command` and `args_json` are null or NUL-terminated
/// strings; `out_result` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_call(
    engine: *const PlugboxEngine,
    plugin: *const c_char,
    command: *const c_char,
    args_json: *const c_char,
    out_result: *mut *mut c_char,
) -> *mut PlugboxError {
    guard(|| {
        need(out_result, "out_result")?;
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        // SAFETY: the caller guarantees NUL-terminated strings (or null).
        let (plugin, command, args) = unsafe {
            (
                text(plugin, "plugin")?,
                text(command, "command")?,
                text(args_json, "args_json")?,
            )
        };
        let result = host.call(plugin, command, args)?;
        // SAFETY: checked non-null; the caller guarantees it is writable.
        unsafe { put(out_result, result) };
        Ok(())
    })
}

/// Unloads plugin `plugin`.
///
/// # Safety
/// `engine` is null or live; `plugin` is null or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_unload(
    engine: *const PlugboxEngine,
    plugin: *const c_char,
) -> *mut PlugboxError {
    guard(|| {
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        // SAFETY: the caller guarantees a NUL-terminated string (or null).
        host.unload(unsafe { text(plugin, "plugin") }?)
    })
}

/// Waits up to `timeout_ms` (0: does not wait) for the engine's next event and stores it, as
/// JSON, in `*out_event` (freed with `plugbox_string_free`), or null if none came. Events
/// are queued from the engine's start (the last 1024 kept; a `lagged` event counts those
/// lost). One poller at a time is served; others wait their turn.
///
/// # Safety
/// `engine` is null or live; `out_event` is null or writable.
#[no_mangle]
pub unsafe extern "C" fn plugbox_engine_next_event(
    engine: *const PlugboxEngine,
    timeout_ms: u32,
    out_event: *mut *mut c_char,
) -> *mut PlugboxError {
    guard(|| {
        need(out_event, "out_event")?;
        // SAFETY: the caller guarantees `engine` is null or live during this call.
        let host = unsafe { borrow(engine) }?;
        let event = host.next_event(Duration::from_millis(u64::from(timeout_ms)))?;
        match event {
            // SAFETY: checked non-null; the caller guarantees it is writable.
            Some(json) => unsafe { put(out_event, json) },
            // SAFETY: as above.
            None => unsafe { out_event.write(std::ptr::null_mut()) },
        }
        Ok(())
    })
}
