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
    /// The file is not a regular file, is a symlink, or is not UTF-8.
    #[error("policy: {0}")]
    File(crate::untrusted_file::UntrustedFileError),
    /// The file is larger than any policy has a reason to be.
    #[error("policy: {} is too large: over the {limit}-byte limit", crate::audit::escape_text(&path.display().to_string()))]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Bytes read before the read stopped (`limit + 1`: its reported size is not trusted).
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
    /// Two fields each valid alone but refused together, such as `process.zygote` with
    /// `process.subprocesses`.
    #[error("policy: {field} cannot be combined with {other}: {reason}")]
    Conflict {
        /// Dotted path of the field refused, such as `process.zygote`.
        field: String,
        /// Dotted path of the field it conflicts with, such as `process.subprocesses`.
        other: String,
        /// Why the two cannot hold together.
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
