//! What a loaded plugin is, for a host that lists it: its identity, its description, the
//! capabilities it was granted and the commands it exports (`plugbox serve`'s `describe`).

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
}

impl Plugin {
    /// Its identity, grant and commands. Waits for a ready instance (as a call does) to read
    /// the commands it exported.
    pub async fn describe(&self) -> Result<PluginDescription, CallError> {
        let commands = self.commands().await?;
        let v = self.m.validated();
        Ok(PluginDescription {
            name: v.manifest.name.clone(),
            version: v.manifest.version.to_string(),
            digest: v.digest.clone(),
            description: v.manifest.file.plugin.description.clone(),
            state: self.state(),
            capabilities: v.gate.names(),
            commands,
        })
    }
}
