//! The plugin's side of the handshake, checked: its `hello` must come first, in time, name the
//! manifest's plugin and version, speak this protocol, and export valid, distinct commands
//! whose argument schemas, if it sends any, compile within their bounds.

use super::LoadError;
use crate::audit::escape_text;
use crate::broker::arg_schema::CommandSchemas;
use crate::ipc::message::{Message, PluginIdentity, PROTOCOL_VERSION};
use crate::manifest::Manifest;

pub(crate) type HelloResult =
    Result<Result<Option<crate::ipc::Frame>, crate::ipc::FrameError>, tokio::time::error::Elapsed>;

/// Validates the plugin's `hello`; returns its commands and their compiled argument schemas,
/// or the reason to refuse ([`LoadError::Handshake`], [`LoadError::ArgSchema`]).
pub(crate) fn check_hello(
    manifest: &Manifest,
    hello: HelloResult,
) -> Result<(Vec<String>, CommandSchemas), LoadError> {
    let (commands, schemas) = check_identity(manifest, hello).map_err(LoadError::Handshake)?;
    let schemas = CommandSchemas::compile(schemas.as_ref(), &commands)?;
    Ok((commands, schemas))
}

/// The text of a `refuse` (and of its audit record) for `e`, an error of [`check_hello`].
pub(crate) fn refusal(e: &LoadError) -> String {
    match e {
        LoadError::Handshake(why) => why.clone(),
        LoadError::ArgSchema(why) => why.to_string(),
        other => other.to_string(),
    }
}

type Schemas = Option<serde_json::Map<String, serde_json::Value>>;

/// Everything of `hello` but its schemas: first, in time, this plugin, this protocol, valid
/// command names.
fn check_identity(
    manifest: &Manifest,
    hello: HelloResult,
) -> Result<(Vec<String>, Schemas), String> {
    let frame = match hello {
        Err(_) => return Err("no hello before the handshake deadline".into()),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(None)) => return Err("the plugin closed the channel before hello".into()),
        Ok(Ok(Some(frame))) => frame,
    };
    let message = Message::decode(&frame.header).map_err(|e| e.to_string())?;
    let Message::Hello {
        protocol,
        plugin,
        commands,
        schemas,
    } = message
    else {
        return Err("the first message must be hello".into());
    };
    if protocol < PROTOCOL_VERSION {
        return Err(format!(
            "protocol {protocol} not supported; host speaks {PROTOCOL_VERSION}"
        ));
    }
    let expected = PluginIdentity {
        name: manifest.name.clone(),
        version: manifest.version.to_string(),
    };
    if plugin != expected {
        return Err(format!(
            "hello names {} {}, the manifest {} {}",
            escape_text(&plugin.name),
            escape_text(&plugin.version),
            expected.name,
            expected.version
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &commands {
        let valid = !c.is_empty()
            && c.len() <= 64
            && c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "_.-".contains(ch));
        if !valid || !seen.insert(c) {
            return Err(format!(
                "invalid or duplicate command name {}",
                escape_text(c)
            ));
        }
    }
    Ok((commands, schemas))
}
