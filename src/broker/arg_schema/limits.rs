//! The bounds on a plugin's schemas: checked while compiling, before anything is kept.

use super::SchemaError;

/// Most bytes of a `hello`'s whole `schemas` object, as JSON.
pub const MAX_SCHEMAS_BYTES: usize = 256 * 1024;
/// Most schema nodes (every subschema, property and enum item) over all commands: bounds the
/// compiled form's memory (a few MB at most) whatever the JSON looks like.
pub const MAX_NODES: usize = 16 * 1024;
/// Deepest nesting of subschemas in one schema.
pub const MAX_DEPTH: usize = 16;
/// Most `properties` (and `required` names) of one object schema.
pub const MAX_PROPERTIES: usize = 256;
/// Most `enum` items of one schema.
pub const MAX_ENUM_ITEMS: usize = 1024;
/// Most `anyOf` branches of one schema.
pub const MAX_ANY_OF: usize = 16;
/// Most schema nodes that may apply to one value node (`Node::fan` in `compile.rs`): the
/// validator's work per argument value is at most this many node visits, so validating
/// arguments is linear in their size, whatever `anyOf` nests.
pub const MAX_FAN: u64 = 64;
/// Longest string (description, property name, enum string) in a schema, in characters.
pub const MAX_TEXT_CHARS: usize = 4096;

/// What compiling has spent so far (nodes, over every command of one `hello`).
#[derive(Debug, Default)]
pub(super) struct Budget {
    nodes: usize,
}

impl Budget {
    /// Charges one node.
    pub(super) fn node(&mut self, at: &str) -> Result<(), SchemaError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(SchemaError::TooMany {
                at: at.to_owned(),
                what: "schema nodes in all",
                limit: MAX_NODES,
            });
        }
        Ok(())
    }

    /// Checks one string of `chars` characters (and charges it as a node).
    pub(super) fn text(&mut self, chars: usize, at: &str) -> Result<(), SchemaError> {
        if chars > MAX_TEXT_CHARS {
            return Err(SchemaError::TooMany {
                at: at.to_owned(),
                what: "characters in one string",
                limit: MAX_TEXT_CHARS,
            });
        }
        self.node(at)
    }
}
