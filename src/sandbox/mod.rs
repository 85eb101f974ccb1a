//! Sandbox: preparing confinement in the parent and applying it in the child.
//!
//! Parent side: [`command`], [`landlock`], [`seccomp`], [`rlimits`], [`private_view`] and
//! [`prepare`] build everything once per policy; [`spawn()`] forks; [`tree`] tears a process tree down;
//! [`watchdog`] kills every plugin's tree if the host itself dies; [`sysv`] removes the System
//! V IPC objects a plugin's uid left behind.
//! Child side: [`child`] holds the ordered steps run between fork and exec.

pub mod bpf_tree;
pub mod child;
pub mod command;
pub mod env;
pub mod file_mode_rules;
pub mod landlock;
pub mod prepare;
pub mod private_view;
pub mod report;
pub mod rlimits;
pub mod seccomp;
pub mod spawn;
pub mod sysv;
pub mod tree;
pub mod userdb;
pub mod watchdog;
pub mod zygote_rules;

pub use env::Environment;
pub use prepare::{PrepareError, Prepared};
pub use spawn::{spawn, spawn_template, Sandboxed, SpawnError, SpawnRequest};
pub use watchdog::Watchdog;
