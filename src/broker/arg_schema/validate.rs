//! Checking a call's arguments against a compiled schema; the first mismatch is the error,
//! named by its path (`argument "points[2].x": expected integer, got string`).
//!
//! Each (schema node, value node) pair is visited at most once per path, and no more than
//! [`super::limits::MAX_FAN`] schema nodes reach one value node, so the work is linear in the
//! arguments' size.

use super::compile::{ty, Additional, Node, Scalar};
use serde_json::{Map, Number, Value};
use std::cmp::Ordering;

/// A call's arguments do not match its command's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgError {
    /// Where, as `name`, `name[3]`, `name.key` (empty: the arguments as a whole).
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

impl std::fmt::Display for ArgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.path.is_empty() {
            true => write!(f, "{}", self.problem),
            false => write!(f, "argument {}: {}", quoted(&self.path), self.problem),
        }
    }
}

type Checked = Result<(), ArgError>;

/// Where a value is, as a chain of steps from the arguments; rendered only for an error, so
/// a call that matches allocates nothing for paths.
#[derive(Clone, Copy)]
enum Path<'a> {
    Root,
    Key(&'a Path<'a>, &'a str),
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    fn render(&self, out: &mut String) {
        match self {
            Path::Root => {}
            Path::Key(Path::Root, key) => out.push_str(key),
            Path::Key(parent, key) => {
                parent.render(out);
                out.push('.');
                out.push_str(key);
            }
            Path::Index(parent, i) => {
                parent.render(out);
                out.push_str(&format!("[{i}]"));
            }
        }
    }
}

fn fail(path: &Path<'_>, problem: String) -> Checked {
    let mut rendered = String::new();
    path.render(&mut rendered);
    Err(ArgError {
        path: rendered,
        problem,
    })
}

/// The arguments as a whole: an object against `root`, with `body` (the binary body's
/// argument name) counted as present and checked as binary.
pub(super) fn check_args(
    root: &Node,
    args: &Map<String, Value>,
    body: Option<&str>,
    visits: &mut u64,
) -> Checked {
    if let Some(name) = body {
        let node = match root.properties.get(name) {
            Some(node) => Some(node),
            None => match &root.additional {
                Additional::Any => None,
                Additional::None => {
                    return fail(
                        &Path::Root,
                        format!("unexpected argument {} (the binary body)", quoted(name)),
                    )
                }
                Additional::Schema(node) => Some(&**node),
            },
        };
        if node.is_some_and(|n| !accepts_body(n)) {
            let at = Path::Key(&Path::Root, name);
            return fail(&at, "does not take the binary body".into());
        }
    }
    let mut walk = Walk { visits };
    walk.object(root, args, &Path::Root, body)
}

/// A node the binary body may fill: marked binary, or unconstrained, or an `anyOf` with such
/// a branch.
fn accepts_body(node: &Node) -> bool {
    !node.never
        && (node.binary
            || (node.types == ty::ALL
                && node.allowed.is_none()
                && (node.any_of.is_empty() || node.any_of.iter().any(accepts_body))))
}

struct Walk<'a> {
    visits: &'a mut u64,
}

impl Walk<'_> {
    fn value(&mut self, node: &Node, value: &Value, path: &Path<'_>) -> Checked {
        *self.visits += 1;
        if node.never {
            return fail(path, "no value is allowed here".into());
        }
        if node.binary {
            return fail(
                path,
                format!("expected the binary body, got {}", kind(value)),
            );
        }
        if node.types & kind_bit(value) == 0 {
            return fail(
                path,
                format!("expected {}, got {}", expected(node.types), kind(value)),
            );
        }
        if let Some(allowed) = &node.allowed {
            if !Scalar::of(value).is_some_and(|s| allowed.contains(&s)) {
                return fail(
                    path,
                    format!("not one of the {} allowed values", allowed.len()),
                );
            }
        }
        match value {
            Value::Number(n) => bounds(node, n, path)?,
            Value::String(s) => lengths(
                node.min_length,
                node.max_length,
                s.chars().count(),
                "characters",
                path,
            )?,
            Value::Array(items) => self.array(node, items, path)?,
            Value::Object(map) => self.object(node, map, path, None)?,
            Value::Null | Value::Bool(_) => {}
        }
        self.any_of(node, value, path)
    }

    fn any_of(&mut self, node: &Node, value: &Value, path: &Path<'_>) -> Checked {
        if node.any_of.is_empty() {
            return Ok(());
        }
        let mut first = None;
        for branch in &node.any_of {
            match self.value(branch, value, path) {
                Ok(()) => return Ok(()),
                Err(e) => first = first.or(Some(e.problem)),
            }
        }
        let n = node.any_of.len();
        fail(
            path,
            format!(
                "matches none of its {n} alternatives (the first: {})",
                first.unwrap_or_default()
            ),
        )
    }

    fn array(&mut self, node: &Node, items: &[Value], path: &Path<'_>) -> Checked {
        lengths(node.min_items, node.max_items, items.len(), "items", path)?;
        if let Some(item) = &node.items {
            for (i, v) in items.iter().enumerate() {
                self.value(item, v, &Path::Index(path, i))?;
            }
        }
        Ok(())
    }

    fn object(
        &mut self,
        node: &Node,
        map: &Map<String, Value>,
        path: &Path<'_>,
        body: Option<&str>,
    ) -> Checked {
        let what = match path {
            Path::Root => "argument",
            _ => "property",
        };
        for name in &node.required {
            if !map.contains_key(name) && body != Some(name.as_str()) {
                return fail(path, format!("missing required {what} {}", quoted(name)));
            }
        }
        for (key, v) in map {
            let child = Path::Key(path, key);
            match (node.properties.get(key), &node.additional) {
                (Some(n), _) => self.value(n, v, &child)?,
                (None, Additional::Schema(n)) => self.value(n, v, &child)?,
                (None, Additional::Any) => {}
                (None, Additional::None) => {
                    return fail(path, format!("unexpected {what} {}", quoted(key)))
                }
            }
        }
        Ok(())
    }
}

/// `text` in double quotes, control characters escaped (it may come from either side).
fn quoted(text: &str) -> String {
    format!("\"{}\"", crate::audit::escape_text(text))
}

fn bounds(node: &Node, n: &Number, path: &Path<'_>) -> Checked {
    if let Some(min) = &node.minimum {
        if compare(n, min) == Ordering::Less {
            return fail(path, format!("{n} is less than the minimum {min}"));
        }
    }
    if let Some(max) = &node.maximum {
        if compare(n, max) == Ordering::Greater {
            return fail(path, format!("{n} is more than the maximum {max}"));
        }
    }
    Ok(())
}

fn lengths(min: Option<u64>, max: Option<u64>, len: usize, unit: &str, path: &Path<'_>) -> Checked {
    let len = len as u64;
    if min.is_some_and(|m| len < m) {
        return fail(
            path,
            format!("{len} {unit}, at least {} expected", min.unwrap_or(0)),
        );
    }
    if max.is_some_and(|m| len > m) {
        return fail(
            path,
            format!("{len} {unit}, at most {} allowed", max.unwrap_or(0)),
        );
    }
    Ok(())
}

/// Two JSON numbers by value: exactly when both are integers, else as floats.
fn compare(a: &Number, b: &Number) -> Ordering {
    let int = |n: &Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    match (int(a), int(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        _ => {
            let (x, y) = (
                a.as_f64().unwrap_or(f64::NAN),
                b.as_f64().unwrap_or(f64::NAN),
            );
            x.partial_cmp(&y).unwrap_or(Ordering::Equal)
        }
    }
}

/// `integer` is a number written without a fraction or exponent (Python receives an `int`).
fn kind_bit(value: &Value) -> u8 {
    match value {
        Value::Null => ty::NULL,
        Value::Bool(_) => ty::BOOLEAN,
        Value::Number(n) if n.is_i64() || n.is_u64() => ty::INTEGER | ty::NUMBER,
        Value::Number(_) => ty::NUMBER,
        Value::String(_) => ty::STRING,
        Value::Array(_) => ty::ARRAY,
        Value::Object(_) => ty::OBJECT,
    }
}

fn kind(value: &Value) -> &'static str {
    match kind_bit(value) {
        ty::NULL => "null",
        ty::BOOLEAN => "boolean",
        ty::NUMBER => "number",
        ty::STRING => "string",
        ty::ARRAY => "array",
        ty::OBJECT => "object",
        _ => "integer",
    }
}

fn expected(types: u8) -> String {
    let names: Vec<&str> = ty::NAMES
        .iter()
        .filter(|(_, bit)| types & bit != 0)
        .map(|(n, _)| *n)
        .collect();
    names.join(" or ")
}
