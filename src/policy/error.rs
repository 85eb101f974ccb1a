//! Errors of the policy stage: reading, parsing and validating a policy file.

use std::path::PathBuf;

/// Why a policy file could not become a [`super::Policy`].
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is larger than any policy has a reason to be.
    #[error("policy: {path} is {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        limit: u64,
    },
    /// The text is not valid TOML of the policy's shape (includes unknown fields).
    #[error("policy: {0}")]
    Parse(String),
    /// A field has a value the sandbox cannot or will not enforce.
    #[error("policy: {field}: {reason}")]
    Invalid {
        /// Dotted path of the field, such as `filesystem.read[1]`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PolicyError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
