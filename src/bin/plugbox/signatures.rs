//! `plugbox check`'s list of a plugin's commands with their signatures, read statically from
//! the entry file: parsed with `ast`, never run, by Debian's interpreter inside the strictest
//! sandbox, as the syntax check compiles it ([`crate::syntax`]).
//!
//! It finds the top-level functions of the entry file decorated `@plugbox.command`,
//! `@command`, or either with `(name="...")`; commands registered any other way (in another
//! module, by a call, under an alias) run all the same but are not listed. The listing is
//! bounded (at most [`MAX_LISTED`] commands, each line cut) and escaped when printed.

use serde::Deserialize;
use std::path::Path;

/// Commands listed at most (the SDK's own cap on registered commands).
pub const MAX_LISTED: usize = 256;

/// Prints one JSON line per command found, then `{"more": N}` for those past the cap.
const LIST: &str = r#"import ast, json, sys
src = sys.stdin.buffer.read()
tree = ast.parse(src, sys.argv[1])
def cut(text, n):
    return text if len(text) <= n else text[: n - 3] + "..."
def command_of(func, deco):
    target = deco.func if isinstance(deco, ast.Call) else deco
    if ast.unparse(target) not in ("plugbox.command", "command"):
        return None
    for kw in deco.keywords if isinstance(deco, ast.Call) else ():
        if kw.arg == "name" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
            return kw.value.value
    return func.name
found = 0
for node in tree.body:
    if not isinstance(node, ast.FunctionDef):
        continue
    for deco in node.decorator_list:
        name = command_of(node, deco)
        if name is None:
            continue
        found += 1
        if found > 256:
            break
        sig = "(" + ast.unparse(node.args) + ")"
        if node.returns is not None:
            sig += " -> " + ast.unparse(node.returns)
        doc = (ast.get_docstring(node) or "").strip().split("\n")[0]
        print(json.dumps({"name": cut(name, 80), "signature": cut(sig, 300), "doc": cut(doc, 200)}))
        break
if found > 256:
    print(json.dumps({"more": found - 256}))
"#;

/// One command as listed.
#[derive(Debug, Deserialize)]
pub struct CommandSig {
    /// The command's name (the decorator's `name=`, else the function's).
    pub name: String,
    /// `(args) -> returns`, as written in the source.
    pub signature: String,
    /// The docstring's first line.
    pub doc: String,
}

/// The commands of `entry` found statically (and how many more past the cap), or why they
/// could not be listed.
pub fn list(entry: &Path, shown_as: &str) -> Result<(Vec<CommandSig>, u64), String> {
    let source = plugbox::untrusted_file::read(entry, crate::syntax::MAX_SOURCE_BYTES)
        .map_err(|e| format!("entry: {e}"))?;
    let policy = crate::syntax::write_default_policy()?;
    let out = crate::syntax::run_confined(&policy, LIST, &source, shown_as);
    let _ = std::fs::remove_file(&policy);
    let out = out.map_err(|e| format!("listing commands: {e}"))?;
    if !out.status.success() {
        return Err(format!("listing commands did not finish ({})", out.status));
    }
    let mut commands = Vec::new();
    let mut more = 0;
    for line in String::from_utf8_lossy(&out.stdout)
        .lines()
        .take(MAX_LISTED + 1)
    {
        if let Ok(command) = serde_json::from_str::<CommandSig>(line) {
            commands.push(command);
        } else if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            more = v["more"].as_u64().unwrap_or(0);
        }
    }
    Ok((commands, more))
}

/// Prints the `commands` section of `plugbox check` (never fails the check: the listing is
/// for the reader, and a command it misses still runs).
pub fn print(entry: &Path, shown_as: &str) {
    let say = |line: String| println!("{}", plugbox::display::escape_lines(&line));
    match list(entry, shown_as) {
        Ok((commands, _)) if commands.is_empty() => say(format!(
            "commands  none found in the entry file (read, not run; {} only)",
            "top-level functions decorated @plugbox.command"
        )),
        Ok((commands, more)) => {
            let total = commands.len() as u64 + more;
            say(format!(
                "commands  {total} in the entry file (read, not run)"
            ));
            for c in &commands {
                let doc = if c.doc.is_empty() {
                    String::new()
                } else {
                    format!("  {}", c.doc)
                };
                say(format!("  {}{}{doc}", c.name, c.signature));
            }
            if more > 0 {
                say(format!("  ... and {more} more"));
            }
        }
        Err(e) => say(format!("commands  not listed: {e}")),
    }
}
