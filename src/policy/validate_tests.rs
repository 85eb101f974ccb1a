//! Unit tests of policy validation rules that tie fields together.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::policy::{Policy, PolicyError};

#[test]
fn zygote_is_off_by_default_and_allowed_alone() {
    let p = Policy::from_toml("schema = 1").unwrap();
    assert!(!p.process().zygote);
    let p = Policy::from_toml("schema = 1\n[process]\nzygote = true\ninstances = 4\n").unwrap();
    assert!(p.process().zygote && !p.process().subprocesses);
}

/// A zygote instance is not its own process group: its subprocesses could not be killed
/// without its siblings, so the two are refused together, naming both fields.
#[test]
fn zygote_with_subprocesses_is_refused_naming_both() {
    let e = Policy::from_toml("schema = 1\n[process]\nzygote = true\nsubprocesses = true\n")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "policy: process.zygote cannot be combined with process.subprocesses: a zygote \
         instance is not its own process group, so its subprocesses could not be killed \
         without its siblings"
    );
    match e {
        PolicyError::Conflict { field, other, .. } => {
            assert_eq!(
                (field.as_str(), other.as_str()),
                ("process.zygote", "process.subprocesses")
            )
        }
        other => panic!("{other:?}"),
    }
}
