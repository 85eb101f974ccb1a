//! `plugbox install DIR [--store ROOT]`: builds the Python environment a plugin declares
//! (`[python] requirements` / `wheels`) into the content-addressed store and prints its path.
//! Already installed: prints the path at once (the cache hit reads the inputs, nothing more).

use std::path::{Path, PathBuf};

/// Runs the install and prints the environment's path on stdout (what was done on stderr).
pub fn install(dir: &Path, store: Option<PathBuf>) -> Result<(), String> {
    let root = store.unwrap_or_else(plugbox::pyenv::store::default_root);
    let installed = plugbox::install::install(dir, &root).map_err(|e| e.to_string())?;
    let path = plugbox::display::escape(&installed.path.display().to_string()).into_owned();
    if installed.built {
        eprintln!("plugbox: installed environment {}", installed.key);
        for file in &installed.not_compiled {
            eprintln!(
                "plugbox: warning: {} did not byte-compile",
                plugbox::display::escape(&file.display().to_string())
            );
        }
    }
    println!("{path}");
    Ok(())
}
