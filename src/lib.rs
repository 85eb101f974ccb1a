//! plugbox: run untrusted plugins as confined processes.
pub mod policy;
pub mod probe;
pub mod sys;
pub mod launcher;
pub mod sandbox;
