//! The JSON an embedding host gives: the engine's configuration (the options of
//! `plugbox serve`) and a plugin's grant. Parsed strictly (duplicate keys, unknown fields,
//! NaN and deep nesting refused); a grant given inline is the grant file's own serde mirror,
//! checked by the same validation as a grant file.

use super::error::HostError;
use crate::audit::Durability;
use crate::engine::EngineConfig;
use crate::manifest::{CeilingMode, GrantFile, Grants};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// Most worker threads an engine's runtime may be given.
pub const MAX_WORKER_THREADS: usize = 64;

/// The engine configuration (`plugbox_engine_new`), mirroring `plugbox serve`'s options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    /// The audit log (JSON Lines, appended).
    pub audit_log: PathBuf,
    /// Per-plugin state (kv stores, data directories).
    pub state_dir: PathBuf,
    /// `fsync`, `group` (default) or `os` (`--durability`).
    #[serde(default)]
    pub durability: Option<String>,
    /// Sign checkpoints with this secret key (`--audit-key`).
    #[serde(default)]
    pub audit_key: Option<PathBuf>,
    /// Also append every checkpoint here (`--audit-anchors`; needs `audit_key`).
    #[serde(default)]
    pub audit_anchors: Option<PathBuf>,
    /// Records between checkpoints (`--checkpoint-records`).
    #[serde(default)]
    pub checkpoint_records: Option<u64>,
    /// Longest wait of a record for a checkpoint, seconds (`--checkpoint-seconds`).
    #[serde(default)]
    pub checkpoint_seconds: Option<u64>,
    /// Drop a manifest's requests beyond its grant (audited) instead of refusing (`--clamp`).
    #[serde(default)]
    pub clamp: bool,
    /// Accept `{"all_requested": true}` grants (`--allow-ungranted`; development only).
    #[serde(default)]
    pub allow_ungranted: bool,
    /// Worker threads of the engine's own runtime (default 2).
    #[serde(default)]
    pub worker_threads: Option<usize>,
}

impl HostConfig {
    /// Parses the configuration JSON.
    pub fn parse(json: &str) -> Result<Self, HostError> {
        let config: Self = strict("configuration", json)?;
        let key_needed = config.audit_anchors.is_some() && config.audit_key.is_none();
        if key_needed {
            return Err(HostError::invalid(
                "configuration: audit_anchors needs audit_key",
            ));
        }
        if config.checkpoint_records == Some(0) {
            return Err(HostError::invalid(
                "configuration: checkpoint_records must be at least 1",
            ));
        }
        if config
            .checkpoint_seconds
            .is_some_and(|s| !(1..=86_400).contains(&s))
        {
            return Err(HostError::invalid(
                "configuration: checkpoint_seconds must be 1 to 86400",
            ));
        }
        if config
            .worker_threads
            .is_some_and(|n| !(1..=MAX_WORKER_THREADS).contains(&n))
        {
            return Err(HostError::invalid(format!(
                "configuration: worker_threads must be 1 to {MAX_WORKER_THREADS}"
            )));
        }
        Ok(config)
    }

    /// The engine configuration this describes.
    pub fn engine_config(&self) -> Result<EngineConfig, HostError> {
        let mut config = EngineConfig::new(&self.audit_log, &self.state_dir);
        if let Some(d) = &self.durability {
            config.audit.durability = d
                .parse::<Durability>()
                .map_err(|e| HostError::invalid(format!("configuration: durability: {e}")))?;
        }
        config.audit_key = self.audit_key.clone();
        config.audit.anchors = self.audit_anchors.clone();
        if let Some(n) = self.checkpoint_records {
            config.audit.checkpoint_records = n;
        }
        if let Some(s) = self.checkpoint_seconds {
            config.audit.checkpoint_interval = Duration::from_secs(s);
        }
        if self.clamp {
            config.ceiling = CeilingMode::Clamp;
        }
        Ok(config)
    }
}

/// How a plugin is granted (`plugbox_engine_load`): exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantSpec {
    /// A grant file (TOML), read as `plugbox serve` reads `"grant"`.
    #[serde(default)]
    file: Option<PathBuf>,
    /// The grant file's contents as JSON (the same fields and checks).
    #[serde(default)]
    grant: Option<GrantFile>,
    /// Everything the manifest asks: only with `allow_ungranted`.
    #[serde(default)]
    all_requested: bool,
}

/// Parses a grant JSON into the grants a load gets.
pub fn grants(json: &str, allow_ungranted: bool) -> Result<Grants, HostError> {
    let spec: GrantSpec = strict("grant", json)?;
    match (spec.file, spec.grant, spec.all_requested) {
        (Some(path), None, false) => {
            Grants::load(&path).map_err(|e| HostError::invalid(e.to_string()))
        }
        (None, Some(file), false) => {
            Grants::from_file(file).map_err(|e| HostError::invalid(e.to_string()))
        }
        (None, None, true) if allow_ungranted => Ok(Grants::all_requested()),
        (None, None, true) => Err(HostError::invalid(
            "grant: all_requested needs an engine configured with allow_ungranted \
             (development only); name a grant file or give the grant inline",
        )),
        _ => Err(HostError::invalid(
            "grant: give exactly one of \"file\", \"grant\" or \"all_requested\": true",
        )),
    }
}

/// Parses strict JSON (see [`crate::ipc::strict_json`]) into `T`.
pub fn strict<T: DeserializeOwned>(what: &str, json: &str) -> Result<T, HostError> {
    let value = crate::ipc::strict_json::parse(json.as_bytes())
        .map_err(|e| HostError::invalid(format!("{what}: {e}")))?;
    serde_json::from_value(value).map_err(|e| HostError::invalid(format!("{what}: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn configurations_are_read_strictly() {
        let ok = HostConfig::parse(r#"{"audit_log": "a", "state_dir": "s", "clamp": true}"#);
        assert!(ok.unwrap().clamp);
        for bad in [
            r#"{"audit_log": "a"}"#,
            r#"{"audit_log": "a", "state_dir": "s", "extra": 1}"#,
            r#"{"audit_log": "a", "audit_log": "b", "state_dir": "s"}"#,
            r#"{"audit_log": "a", "state_dir": "s", "worker_threads": 0}"#,
            r#"{"audit_log": "a", "state_dir": "s", "audit_anchors": "x"}"#,
            "[]",
            "",
        ] {
            assert_eq!(HostConfig::parse(bad).unwrap_err().code, "invalid", "{bad}");
        }
        let durability = r#"{"audit_log": "a", "state_dir": "s", "durability": "never"}"#;
        let config = HostConfig::parse(durability).unwrap();
        assert_eq!(config.engine_config().unwrap_err().code, "invalid");
    }

    #[test]
    fn a_grant_is_exactly_one_of_file_inline_or_all_requested() {
        let inline = r#"{"grant": {"schema": 1, "capabilities": {"log": {}}}}"#;
        assert!(grants(inline, false)
            .unwrap()
            .capabilities()
            .contains_key("log"));
        assert!(grants(r#"{"all_requested": true}"#, true)
            .unwrap()
            .is_all_requested());
        for bad in [
            r#"{"all_requested": true}"#,
            r#"{}"#,
            r#"{"file": "x", "all_requested": true}"#,
            r#"{"grant": {"schema": 2}}"#,
            r#"{"grant": {"schema": 1, "bogus": 1}}"#,
            r#"{"file": "/nonexistent/grant.toml"}"#,
        ] {
            assert_eq!(grants(bad, false).unwrap_err().code, "invalid", "{bad}");
        }
    }
}
