//! Errors of the manifest stage: loading, validating and granting a plugin.

use std::path::PathBuf;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The manifest or grant file could not be read.
    #[error("manifest: cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The manifest or grant file is not a regular file, is a symlink, is too large, or
    /// could not be read.
    #[error("manifest: {0}")]
    File(#[from] crate::untrusted_file::UntrustedFileError),
    /// The plugin directory could not be digested (a symlink or special file in it, or too
    /// large).
    #[error(transparent)]
    Digest(#[from] super::digest::DigestError),
    /// Not valid TOML of the manifest's shape.
    #[error("manifest: {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Where and what.
        message: String,
    },
    /// A grant file could not be read, is not valid TOML of a grant's shape, or has an
    /// unsupported schema.
    #[error("grant: {path}: {message}")]
    Grant {
        /// The grant file (`-` when built in memory).
        path: PathBuf,
        /// Where and what.
        message: String,
    },
    /// A field is invalid.
    #[error("manifest: {field}: {reason}")]
    Invalid {
        /// Dotted field path.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The sandbox sections are invalid.
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    /// The plugin targets another host API.
    #[error("manifest: plugin.api: {plugin} requires host API {required}, but this host provides {host}")]
    ApiMismatch {
        /// The plugin.
        plugin: String,
        /// The plugin's requirement.
        required: String,
        /// The host's version.
        host: String,
    },
    /// The plugin's code changed since its grant was approved.
    #[error("grant: {plugin}'s code digest {actual} differs from the approved {approved}; re-approve it")]
    DigestMismatch {
        /// The plugin.
        plugin: String,
        /// The pinned digest.
        approved: String,
        /// The digest of the files now.
        actual: String,
    },
    /// The manifest's sandbox sections ask for more than the grant allows.
    #[error("grant: {plugin} requests beyond the host's grant: {}", excess.join(", "))]
    BeyondCeiling {
        /// The plugin.
        plugin: String,
        /// Every excess, with its section, such as `filesystem.read "/etc"`.
        excess: Vec<String>,
    },
    /// Required capabilities were not granted.
    #[error("grant: {plugin} requires capabilities that are not granted: {}", missing.join(", "))]
    NotGranted {
        /// The plugin.
        plugin: String,
        /// Every missing capability.
        missing: Vec<String>,
    },
}

impl ManifestError {
    pub(crate) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}
