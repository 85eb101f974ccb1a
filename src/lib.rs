//! plugbox: run untrusted plugins as confined processes.
pub mod audit;
pub mod broker;
pub mod capability;
pub mod default_paths;
pub mod discovery;
pub mod display;
pub mod engine;
pub mod fuzzing;
pub mod ipc;
pub mod launcher;
pub mod manifest;
mod nofollow_dir;
pub mod policy;
pub mod probe;
pub mod sandbox;
pub mod sdk;
pub mod sys;
pub mod untrusted_file;
