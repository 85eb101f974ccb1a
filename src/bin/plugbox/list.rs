//! `plugbox list`: plugins found in directories and Python site directories (plugbox's
//! entry-point group and namespace, or an application's own), without running any plugin
//! code, with the Python environment each runs in and whether it is installed.

use std::path::PathBuf;

/// Finds and prints the plugins (a table, or JSON).
pub fn list(
    paths: &[PathBuf],
    python: Option<PathBuf>,
    mut sites: Vec<PathBuf>,
    json: bool,
    store: Option<PathBuf>,
    names: &plugbox::discovery::Names,
) -> Result<(), String> {
    if let Some(py) = python {
        let dirs = plugbox::discovery::site_dirs(&py).map_err(|e| format!("discovery: {e}"))?;
        sites.extend(dirs);
    }
    let mut all = plugbox::discovery::in_directories(paths);
    all.extend(plugbox::discovery::in_site_dirs_named(&sites, names));
    let store = store.unwrap_or_else(plugbox::pyenv::store::default_root);
    plugbox::discovery::describe_environments(&mut all, &store);
    if json {
        println!("{}", plugbox::display::json_pretty(&all));
        return Ok(());
    }
    for f in &all {
        let what = match (&f.name, &f.error) {
            // Every field comes from a file in a directory anyone may have written: escaped
            // in full below.
            (Some(n), _) => format!(
                "{n} {}  [{}]  environment: {}",
                f.version.as_deref().unwrap_or(""),
                f.capabilities.join(", "),
                f.environment.as_ref().map(|e| e.line()).unwrap_or_default()
            ),
            (None, Some(e)) => format!("INVALID: {e}"),
            (None, None) => String::new(),
        };
        let line = format!(
            "{:<12} {:<50} {what}",
            f.route,
            f.location.display().to_string()
        );
        println!("{}", plugbox::display::escape(&line));
    }
    Ok(())
}
