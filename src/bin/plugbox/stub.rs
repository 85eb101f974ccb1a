//! `plugbox run --stub CAP=JSON`: a host capability answered with a fixed JSON value, for a
//! plugin author who has no host at hand.
//!
//! A stub answers; it never permits. It is registered as the host capability CAP, so a call of
//! it goes through the gate like any other: the grant decides (without `--grant`, what the
//! manifest asks), the `call` record is written before the stub runs, the `call_outcome` after.
//! The stub itself writes a `stub` record in between, so that a log shows which answers came
//! from a stub and not from a host. A stub for a capability the manifest does not request, or
//! for a built-in one (`log`, `fs.*`, `kv.*`, which the engine answers itself), is refused
//! before the plugin starts: it could never be called.

use plugbox::audit::{EventKind, Record};
use plugbox::capability::{BoxFuture, CallContext, CallError, CallRequest, Capability, Reply};
use plugbox::engine::Engine;
use plugbox::manifest::Manifest;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// One `--stub CAP=JSON`.
#[derive(Debug, Clone)]
pub struct StubSpec {
    /// The capability it answers.
    pub capability: String,
    /// The answer to every call.
    pub value: Value,
}

/// Parses `CAP=JSON` (clap's value parser: an error is a usage error naming `--stub`). The
/// JSON is decoded strictly, as the wire would (no duplicate keys, no NaN).
pub fn parse(text: &str) -> Result<StubSpec, String> {
    let Some((capability, json)) = text.split_once('=') else {
        return Err("expected CAP=JSON, such as app.user='\"Ada\"'".into());
    };
    if capability.is_empty() {
        return Err("the capability name before '=' is empty".into());
    }
    let value = plugbox::ipc::strict_json::parse(json.as_bytes())
        .map_err(|e| format!("the value of {capability} is not JSON: {e}"))?;
    Ok(StubSpec {
        capability: capability.to_owned(),
        value,
    })
}

/// The engine the stubs write their records to, until [`AuditSlot::clear`] (the engine holds
/// the stubs, so a stub holding the engine would keep both alive).
#[derive(Default)]
pub struct AuditSlot(Mutex<Option<Engine>>);

impl AuditSlot {
    /// Stops auditing (and so answering) stub calls, releasing the engine.
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn engine(&self) -> Option<Engine> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Registers `stubs` as host capabilities of `engine`, after checking each against the
/// manifest of the plugin in `dir`. Returns the slot to clear once the engine is shut down.
pub fn install(
    engine: &Engine,
    dir: &std::path::Path,
    stubs: &[StubSpec],
) -> Result<Arc<AuditSlot>, String> {
    let slot = Arc::new(AuditSlot(Mutex::new(Some(engine.clone()))));
    if stubs.is_empty() {
        return Ok(slot);
    }
    let manifest = Manifest::load(dir).map_err(|e| e.to_string())?;
    let mut seen = BTreeSet::new();
    for stub in stubs {
        let name = &stub.capability;
        if !seen.insert(name.as_str()) {
            return Err(format!("cli: --stub {name}: given twice"));
        }
        check_requested(&manifest, name)?;
        let capability = Arc::new(Stub {
            value_sha256: value_sha256(&stub.value),
            value: stub.value.clone(),
            slot: Arc::clone(&slot),
        });
        engine.register(name, capability).map_err(|_| {
            format!(
                "cli: --stub {name}: a built-in capability, answered by the engine itself \
                 (only host capabilities can be stubbed)"
            )
        })?;
    }
    Ok(slot)
}

fn check_requested(manifest: &Manifest, name: &str) -> Result<(), String> {
    if manifest.requested.contains_key(name) {
        return Ok(());
    }
    let requested: Vec<&str> = manifest.requested.keys().map(String::as_str).collect();
    Err(format!(
        "cli: --stub {name}: the manifest of {} does not request {name:?} (it requests {requested:?}); \
         a stub answers only what the plugin asks for and the grant allows",
        manifest.name
    ))
}

fn value_sha256(value: &Value) -> String {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    plugbox::audit::chain::hex(&Sha256::digest(bytes))
}

/// A capability that answers every allowed call with the same value, and records that it did.
struct Stub {
    value: Value,
    value_sha256: String,
    slot: Arc<AuditSlot>,
}

impl Capability for Stub {
    fn call(&self, ctx: CallContext, _request: CallRequest) -> BoxFuture<Result<Reply, CallError>> {
        let mut r = Record::new(EventKind::Stub, ctx.plugin.subject());
        r.capability = Some(ctx.grant.name.clone());
        r.detail = Some(json!({ "stub": true, "value_sha256": self.value_sha256 }));
        // Fail closed: an answer whose record cannot be written is not given.
        let written = self
            .slot
            .engine()
            .is_some_and(|engine| engine.audit().write(&r).is_ok());
        let value = self.value.clone();
        Box::pin(async move {
            if written {
                Ok(Reply::Json(value))
            } else {
                Err(CallError::host(
                    "audit log unavailable: the stub did not answer",
                ))
            }
        })
    }
}
