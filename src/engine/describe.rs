//! What a loaded plugin is, for a host that lists it: its identity, its description, the
//! capabilities it was granted, the commands it exports and their argument schemas
//! (`plugbox serve`'s `describe`).

use super::{Plugin, State};
use crate::capability::CallError;
use schemars::JsonSchema;
use serde::Serialize;

/// A loaded plugin, described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PluginDescription {
    /// Manifest name.
    pub name: String,
    /// Manifest version now loaded.
    pub version: String,
    /// Code digest now loaded.
    pub digest: String,
    /// `plugin.description`, if the manifest has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Lifecycle state.
    #[schemars(with = "String")]
    pub state: State,
    /// The capabilities the plugin may call (its grant, clamped by the host), sorted.
    pub capabilities: Vec<String>,
    /// The commands it exports, from a ready instance's handshake.
    pub commands: Vec<String>,
    /// Each command's `description` (its docstring's first paragraph), `args` (the JSON
    /// Schema its arguments are validated against before a call is sent) and `result`, by
    /// command, as its handshake sent them; a command without one is not validated
    /// (`docs/authoring.md`).
    pub schemas: serde_json::Map<String, serde_json::Value>,
}

impl Plugin {
    /// Its identity, grant, commands and their schemas. Waits for a ready instance (as a call
    /// does) to read the commands it exported.
    pub async fn describe(&self) -> Result<PluginDescription, CallError> {
        let (commands, schemas) = {
            let reserved = self.m.pick().await?;
            (reserved.0.commands().to_vec(), reserved.0.schemas().clone())
        };
        let v = self.m.validated();
        Ok(PluginDescription {
            name: v.manifest.name.clone(),
            version: v.manifest.version.to_string(),
            digest: v.digest.clone(),
            description: v.manifest.file.plugin.description.clone(),
            state: self.state(),
            capabilities: v.gate.names(),
            commands,
            schemas,
        })
    }
}
