//! Compiling one schema of the supported subset into a [`Node`], bounding it as it goes.
//!
//! The subset: `type` (a name or a list of names), `properties`, `required`,
//! `additionalProperties` (a boolean or a schema), `items` (one schema), `enum` and `const`
//! (scalars only), `minimum`/`maximum`, `minLength`/`maxLength`, `minItems`/`maxItems`,
//! `anyOf`, the boolean schemas `true`/`false`, and the annotations `description`, `title`,
//! `default`, `examples`, `$comment`, `deprecated`, `readOnly`, `writeOnly` and
//! `contentMediaType: "application/octet-stream"` (the call's binary body). Any other keyword
//! (`$ref`, `pattern`, `format`, `allOf`, ...) is refused, not ignored: a schema that says more
//! than the host checks would promise a check that never happens.

use super::limits::{Budget, MAX_ANY_OF, MAX_DEPTH, MAX_ENUM_ITEMS, MAX_PROPERTIES};
use super::SchemaError;
use serde_json::{Number, Value};
use std::collections::{HashMap, HashSet};

/// The `contentMediaType` that marks the argument carried as the call's binary body.
pub const BINARY: &str = "application/octet-stream";

/// JSON types as bits of [`Node::types`].
pub(super) mod ty {
    pub const NULL: u8 = 1;
    pub const BOOLEAN: u8 = 2;
    pub const INTEGER: u8 = 4;
    pub const NUMBER: u8 = 8;
    pub const STRING: u8 = 16;
    pub const ARRAY: u8 = 32;
    pub const OBJECT: u8 = 64;
    pub const ALL: u8 = 127;
    /// The names, in bit order.
    pub const NAMES: [(&str, u8); 7] = [
        ("null", NULL),
        ("boolean", BOOLEAN),
        ("integer", INTEGER),
        ("number", NUMBER),
        ("string", STRING),
        ("array", ARRAY),
        ("object", OBJECT),
    ];
}

/// An `enum` or `const` value, hashable: numbers compare by value (`1` equals `1.0`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Scalar {
    Null,
    Bool(bool),
    Int(i128),
    Float(u64),
    Str(String),
}

impl Scalar {
    /// The scalar `value` is, or `None` for an array or object.
    pub(super) fn of(value: &Value) -> Option<Scalar> {
        Some(match value {
            Value::Null => Scalar::Null,
            Value::Bool(b) => Scalar::Bool(*b),
            Value::Number(n) => number_key(n),
            Value::String(s) => Scalar::Str(s.clone()),
            Value::Array(_) | Value::Object(_) => return None,
        })
    }
}

fn number_key(n: &Number) -> Scalar {
    if let Some(i) = n.as_i64() {
        return Scalar::Int(i.into());
    }
    if let Some(u) = n.as_u64() {
        return Scalar::Int(u.into());
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    // An integral float within i64 is that integer (`1.0` is `1`).
    if f.fract() == 0.0 && f.abs() < 9.0e18 {
        return Scalar::Int(f as i128);
    }
    Scalar::Float(f.to_bits())
}

/// What `additionalProperties` allows.
#[derive(Debug)]
pub(super) enum Additional {
    Any,
    None,
    Schema(Box<Node>),
}

/// One compiled schema.
#[derive(Debug)]
pub(super) struct Node {
    /// The `false` schema: nothing matches.
    pub never: bool,
    /// Allowed JSON types ([`ty`] bits).
    pub types: u8,
    pub properties: HashMap<String, Node>,
    pub required: Vec<String>,
    pub additional: Additional,
    pub items: Option<Box<Node>>,
    pub allowed: Option<HashSet<Scalar>>,
    pub minimum: Option<Number>,
    pub maximum: Option<Number>,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_items: Option<u64>,
    pub max_items: Option<u64>,
    pub any_of: Vec<Node>,
    /// `contentMediaType: application/octet-stream`: the call's binary body.
    pub binary: bool,
}

impl Node {
    fn any() -> Node {
        Node {
            never: false,
            types: ty::ALL,
            properties: HashMap::new(),
            required: Vec::new(),
            additional: Additional::Any,
            items: None,
            allowed: None,
            minimum: None,
            maximum: None,
            min_length: None,
            max_length: None,
            min_items: None,
            max_items: None,
            any_of: Vec::new(),
            binary: false,
        }
    }

    /// The nodes that apply to one value node, at most: this one and its `anyOf` branches
    /// (recursively), or their sum over one level down, whichever is larger. Validation visits
    /// each value node at most this many times.
    pub(super) fn fan(&self) -> u64 {
        let here = 1 + self.any_of.iter().map(Node::here).sum::<u64>();
        here.max(self.down())
    }

    fn here(&self) -> u64 {
        1u64.saturating_add(self.any_of.iter().map(Node::here).sum())
    }

    fn down(&self) -> u64 {
        let own = self.properties.values().map(Node::fan);
        let own = own.chain(self.items.iter().map(|n| n.fan()));
        let own = own.chain(match &self.additional {
            Additional::Schema(n) => Some(n.fan()),
            _ => None,
        });
        let branches: u64 = self.any_of.iter().map(Node::down).sum();
        own.max().unwrap_or(0).saturating_add(branches)
    }
}

/// Compiles `schema` at nesting `depth`, charging `budget`; `at` names it in errors.
pub(super) fn compile(
    schema: &Value,
    depth: usize,
    budget: &mut Budget,
    at: &str,
) -> Result<Node, SchemaError> {
    budget.node(at)?;
    if depth > MAX_DEPTH {
        return Err(SchemaError::TooDeep { at: at.to_owned() });
    }
    let object = match schema {
        Value::Bool(true) => return Ok(Node::any()),
        Value::Bool(false) => {
            return Ok(Node {
                never: true,
                ..Node::any()
            })
        }
        Value::Object(object) => object,
        _ => return Err(malformed(at, "a schema is an object or a boolean")),
    };
    let mut node = Node::any();
    for (key, value) in object {
        keyword(&mut node, key, value, depth, budget, at)?;
    }
    for name in &node.required {
        if !node.properties.contains_key(name) && matches!(node.additional, Additional::None) {
            return Err(malformed(
                at,
                &format!("required {name:?} can never be given"),
            ));
        }
    }
    Ok(node)
}

fn keyword(
    node: &mut Node,
    key: &str,
    value: &Value,
    depth: usize,
    budget: &mut Budget,
    at: &str,
) -> Result<(), SchemaError> {
    let sub = |suffix: &str| format!("{at}{suffix}");
    match key {
        "type" => node.types = types(value, at)?,
        "properties" => node.properties = properties(value, depth, budget, at)?,
        "required" => node.required = required(value, at)?,
        "additionalProperties" => {
            node.additional = match value {
                Value::Bool(true) => Additional::Any,
                Value::Bool(false) => Additional::None,
                _ => Additional::Schema(Box::new(compile(value, depth + 1, budget, &sub(".*"))?)),
            }
        }
        "items" => node.items = Some(Box::new(compile(value, depth + 1, budget, &sub("[]"))?)),
        "enum" => {
            node.allowed = Some(intersect(
                node.allowed.take(),
                enumeration(value, budget, at)?,
            ))
        }
        "const" => {
            let set = HashSet::from([scalar(value, at, budget)?]);
            node.allowed = Some(intersect(node.allowed.take(), set));
        }
        "minimum" => node.minimum = Some(number(value, key, at)?),
        "maximum" => node.maximum = Some(number(value, key, at)?),
        "minLength" => node.min_length = Some(count(value, key, at)?),
        "maxLength" => node.max_length = Some(count(value, key, at)?),
        "minItems" => node.min_items = Some(count(value, key, at)?),
        "maxItems" => node.max_items = Some(count(value, key, at)?),
        "anyOf" => node.any_of = any_of(value, depth, budget, at)?,
        "contentMediaType" if value.as_str() == Some(BINARY) => node.binary = true,
        "description" | "title" | "$comment" => {
            let text = value
                .as_str()
                .ok_or_else(|| malformed(at, &format!("{key} is a string")))?;
            budget.text(text.chars().count(), at)?;
        }
        "default" | "examples" | "deprecated" | "readOnly" | "writeOnly" => {}
        _ => {
            return Err(SchemaError::Unsupported {
                at: at.to_owned(),
                keyword: crate::audit::escape_text(key),
            })
        }
    }
    Ok(())
}

fn too_many(at: &str, what: &'static str, limit: usize) -> SchemaError {
    SchemaError::TooMany {
        at: at.to_owned(),
        what,
        limit,
    }
}

fn properties(
    value: &Value,
    depth: usize,
    budget: &mut Budget,
    at: &str,
) -> Result<HashMap<String, Node>, SchemaError> {
    let props = value
        .as_object()
        .ok_or_else(|| malformed(at, "properties is an object"))?;
    if props.len() > MAX_PROPERTIES {
        return Err(too_many(at, "properties", MAX_PROPERTIES));
    }
    let mut out = HashMap::with_capacity(props.len());
    for (name, schema) in props {
        budget.text(name.chars().count(), at)?;
        let here = format!("{at}.{}", crate::audit::escape_text(name));
        out.insert(name.clone(), compile(schema, depth + 1, budget, &here)?);
    }
    Ok(out)
}

fn enumeration(
    value: &Value,
    budget: &mut Budget,
    at: &str,
) -> Result<HashSet<Scalar>, SchemaError> {
    let items = value
        .as_array()
        .ok_or_else(|| malformed(at, "enum is an array"))?;
    if items.len() > MAX_ENUM_ITEMS {
        return Err(too_many(at, "enum items", MAX_ENUM_ITEMS));
    }
    items.iter().map(|item| scalar(item, at, budget)).collect()
}

fn any_of(
    value: &Value,
    depth: usize,
    budget: &mut Budget,
    at: &str,
) -> Result<Vec<Node>, SchemaError> {
    let branches = value.as_array().filter(|b| !b.is_empty());
    let branches = branches.ok_or_else(|| malformed(at, "anyOf is a non-empty array"))?;
    if branches.len() > MAX_ANY_OF {
        return Err(too_many(at, "anyOf branches", MAX_ANY_OF));
    }
    let branch = |(i, b): (usize, &Value)| compile(b, depth + 1, budget, &format!("{at}/anyOf{i}"));
    branches.iter().enumerate().map(branch).collect()
}

fn malformed(at: &str, why: &str) -> SchemaError {
    SchemaError::Malformed {
        at: at.to_owned(),
        why: why.to_owned(),
    }
}

fn types(value: &Value, at: &str) -> Result<u8, SchemaError> {
    let one = |v: &Value| -> Result<u8, SchemaError> {
        let name = v.as_str().unwrap_or("");
        let bit = ty::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bit)| *bit);
        bit.ok_or_else(|| {
            malformed(
                at,
                "type names one of null, boolean, integer, number, string, array, object",
            )
        })
    };
    match value {
        Value::Array(names) if !names.is_empty() && names.len() <= ty::NAMES.len() => {
            names.iter().try_fold(0, |bits, name| Ok(bits | one(name)?))
        }
        Value::Array(_) => Err(malformed(at, "a type list holds 1 to 7 names")),
        name => one(name),
    }
}

fn required(value: &Value, at: &str) -> Result<Vec<String>, SchemaError> {
    let names = value
        .as_array()
        .ok_or_else(|| malformed(at, "required is an array"))?;
    if names.len() > MAX_PROPERTIES {
        return Err(SchemaError::TooMany {
            at: at.to_owned(),
            what: "required names",
            limit: MAX_PROPERTIES,
        });
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name
            .as_str()
            .ok_or_else(|| malformed(at, "required holds strings"))?;
        if !seen.insert(name) {
            return Err(malformed(at, "required names are distinct"));
        }
        out.push(name.to_owned());
    }
    Ok(out)
}

fn scalar(value: &Value, at: &str, budget: &mut Budget) -> Result<Scalar, SchemaError> {
    if let Value::String(s) = value {
        budget.text(s.chars().count(), at)?;
    }
    Scalar::of(value).ok_or_else(|| {
        malformed(
            at,
            "enum and const values are scalars (null, boolean, number, string)",
        )
    })
}

fn intersect(old: Option<HashSet<Scalar>>, new: HashSet<Scalar>) -> HashSet<Scalar> {
    match old {
        Some(old) => old.intersection(&new).cloned().collect(),
        None => new,
    }
}

fn number(value: &Value, key: &str, at: &str) -> Result<Number, SchemaError> {
    match value {
        Value::Number(n) => Ok(n.clone()),
        _ => Err(malformed(at, &format!("{key} is a number"))),
    }
}

fn count(value: &Value, key: &str, at: &str) -> Result<u64, SchemaError> {
    value
        .as_u64()
        .ok_or_else(|| malformed(at, &format!("{key} is a non-negative integer")))
}
