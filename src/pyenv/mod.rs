//! Python environments a plugin runs in, found and read without running any of their code:
//! virtual environments (`venv`), recognised by their `pyvenv.cfg` as CPython's own startup
//! recognises them.

pub mod compile;
pub mod key_memo;
pub mod store;
pub mod venv;

pub use venv::{EnvReport, Venv, VenvError};
