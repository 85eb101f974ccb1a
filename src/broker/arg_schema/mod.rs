//! Argument schemas of a plugin's commands: read from its `hello` (untrusted: bounded and
//! restricted to a subset of JSON Schema, `compile.rs`), compiled once per handshake, and used
//! to refuse a host→plugin call whose arguments do not match before anything is sent
//! (`validate.rs`).
//!
//! Hand-written rather than a general JSON Schema crate: the subset is small, every keyword
//! the host accepts is one it enforces, there is no `$ref`, regex or remote fetch to disable,
//! and the cost of validation is bounded by construction ([`limits::MAX_FAN`]).

mod compile;
pub mod limits;
mod validate;

pub use compile::BINARY;
pub use validate::ArgError;

use compile::Node;
use limits::{Budget, MAX_SCHEMAS_BYTES};
use serde_json::{Map, Value};
use std::collections::HashMap;

/// Why a plugin's schemas were refused (the handshake is refused with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The `schemas` object is larger than [`limits::MAX_SCHEMAS_BYTES`].
    #[error("argument schemas: {bytes} bytes of schemas, at most {limit}")]
    TooLarge {
        /// Its size as JSON.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Subschemas nest deeper than [`limits::MAX_DEPTH`].
    #[error(
        "argument schemas: {at}: nested deeper than {} levels",
        limits::MAX_DEPTH
    )]
    TooDeep {
        /// Where.
        at: String,
    },
    /// Over a count limit (properties, enum items, anyOf branches, nodes, characters).
    #[error("argument schemas: {at}: more than {limit} {what}")]
    TooMany {
        /// Where.
        at: String,
        /// What was counted.
        what: &'static str,
        /// The limit.
        limit: usize,
    },
    /// `anyOf` nests so that more than [`limits::MAX_FAN`] schemas would apply to one value.
    #[error("argument schemas: {at}: up to {fan} schemas apply to one value (anyOf nesting), at most {}", limits::MAX_FAN)]
    TooCostly {
        /// Where.
        at: String,
        /// The bound computed.
        fan: u64,
    },
    /// A keyword outside the supported subset (`$ref`, `pattern`, `format`, ...).
    #[error("argument schemas: {at}: keyword {keyword:?} is not supported (docs/authoring.md lists the subset)")]
    Unsupported {
        /// Where.
        at: String,
        /// The keyword (escaped).
        keyword: String,
    },
    /// Not a schema of the subset: a wrong type or value.
    #[error("argument schemas: {at}: {why}")]
    Malformed {
        /// Where.
        at: String,
        /// What is wrong.
        why: String,
    },
}

/// One command's compiled schemas.
#[derive(Debug)]
pub struct CommandSchema {
    args: Node,
}

impl CommandSchema {
    /// Checks a call's `args` (and the name of its binary-body argument, if any).
    pub fn check(&self, args: &Map<String, Value>, body: Option<&str>) -> Result<(), ArgError> {
        validate::check_args(&self.args, args, body, &mut 0)
    }

    /// As [`CommandSchema::check`], also returning how many (schema, value) visits it made:
    /// for tests of the cost bound.
    pub fn check_counting(
        &self,
        args: &Map<String, Value>,
        body: Option<&str>,
    ) -> (Result<(), ArgError>, u64) {
        let mut visits = 0;
        let result = validate::check_args(&self.args, args, body, &mut visits);
        (result, visits)
    }
}

/// Every command's schemas from one `hello`, compiled, and as the plugin sent them (for
/// `describe`). Commands without a schema are not validated.
#[derive(Debug, Default)]
pub struct CommandSchemas {
    compiled: HashMap<String, CommandSchema>,
    sent: Map<String, Value>,
}

impl CommandSchemas {
    /// Reads and compiles `hello.schemas` for the exported `commands`, within the limits.
    pub fn compile(
        schemas: Option<&Map<String, Value>>,
        commands: &[String],
    ) -> Result<Self, SchemaError> {
        let Some(schemas) = schemas else {
            return Ok(Self::default());
        };
        let bytes = serde_json::to_vec(schemas)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if bytes > MAX_SCHEMAS_BYTES {
            return Err(SchemaError::TooLarge {
                bytes,
                limit: MAX_SCHEMAS_BYTES,
            });
        }
        let mut budget = Budget::default();
        let mut compiled = HashMap::new();
        for (command, entry) in schemas {
            let at = crate::audit::escape_text(command);
            if !commands.iter().any(|c| c == command) {
                let why = "a schema for a command the plugin does not export".to_owned();
                return Err(SchemaError::Malformed { at, why });
            }
            compiled.insert(command.clone(), command_schema(entry, &at, &mut budget)?);
        }
        Ok(Self {
            compiled,
            sent: schemas.clone(),
        })
    }

    /// The compiled schema of `command`, if it has one.
    pub fn get(&self, command: &str) -> Option<&CommandSchema> {
        self.compiled.get(command)
    }

    /// The schemas as the plugin sent them (and as they were accepted), by command.
    pub fn sent(&self) -> &Map<String, Value> {
        &self.sent
    }
}

/// One `{"description", "args", "result"}` entry.
fn command_schema(
    entry: &Value,
    at: &str,
    budget: &mut Budget,
) -> Result<CommandSchema, SchemaError> {
    let malformed = |why: &str| SchemaError::Malformed {
        at: at.to_owned(),
        why: why.to_owned(),
    };
    let entry = entry
        .as_object()
        .ok_or_else(|| malformed("an entry is an object"))?;
    let mut args = None;
    for (key, value) in entry {
        match key.as_str() {
            "description" => {
                let text = value
                    .as_str()
                    .ok_or_else(|| malformed("description is a string"))?;
                budget.text(text.chars().count(), at)?;
            }
            "args" => args = Some(checked(value, &format!("{at}.args"), budget)?),
            // Described, not validated: the result is the plugin's to give.
            "result" => drop(checked(value, &format!("{at}.result"), budget)?),
            other => {
                let keyword = crate::audit::escape_text(other);
                return Err(SchemaError::Unsupported {
                    at: at.to_owned(),
                    keyword,
                });
            }
        }
    }
    let args = args.ok_or_else(|| malformed("an entry has \"args\""))?;
    Ok(CommandSchema { args })
}

/// Compiles one schema and checks its validation cost bound.
fn checked(schema: &Value, at: &str, budget: &mut Budget) -> Result<Node, SchemaError> {
    let node = compile::compile(schema, 0, budget, at)?;
    let fan = node.fan();
    if fan > limits::MAX_FAN {
        return Err(SchemaError::TooCostly {
            at: at.to_owned(),
            fan,
        });
    }
    Ok(node)
}

#[cfg(test)]
mod tests;
