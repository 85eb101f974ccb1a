//! plugbox: run untrusted plugins as confined processes.
pub mod audit;
pub mod ipc;
pub mod launcher;
pub mod policy;
pub mod probe;
pub mod sandbox;
pub mod sys;
