//! Signed checkpoints on the command line: `plugbox audit keygen --out DIR`, the signing
//! options of `run` and `serve` (`--audit-key`, `--audit-anchors`, `--checkpoint-records`,
//! `--checkpoint-seconds`), and `plugbox audit verify LOG --key PUB [--anchors FILE]`.

use plugbox::audit::rotated::chain_order;
use plugbox::audit::signed::{verify_signed, Checks};
use plugbox::audit::{AuditKey, PublicKey};
use plugbox::engine::EngineConfig;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

/// Checkpoint signing options of `run` and `serve`.
#[derive(clap::Args, Debug, Clone)]
pub struct SigningArgs {
    /// Sign audit checkpoints with this secret key (`plugbox audit keygen`; mode 0600).
    #[arg(long, value_name = "FILE")]
    pub audit_key: Option<PathBuf>,
    /// Also append every checkpoint to this file (keep it on another volume or host).
    #[arg(long, value_name = "FILE", requires = "audit_key")]
    pub audit_anchors: Option<PathBuf>,
    /// Records between checkpoints.
    #[arg(long, value_name = "N", default_value_t = plugbox::audit::DEFAULT_CHECKPOINT_RECORDS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub checkpoint_records: u64,
    /// Longest time, in seconds, a record waits for a checkpoint.
    #[arg(long, value_name = "SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub checkpoint_seconds: u64,
}

impl SigningArgs {
    /// Puts the options into an engine configuration (the key is read by `Engine::new`).
    pub fn apply(&self, config: &mut EngineConfig) {
        config.audit_key = self.audit_key.clone();
        config.audit.anchors = self.audit_anchors.clone();
        config.audit.checkpoint_records = self.checkpoint_records;
        config.audit.checkpoint_interval = Duration::from_secs(self.checkpoint_seconds);
    }
}

/// `audit keygen --out DIR`: writes DIR/audit.key (0600) and DIR/audit.pub.
pub fn keygen(out: &Path) -> Result<ExitCode, String> {
    let key = AuditKey::generate().map_err(|e| e.to_string())?;
    let (secret, public) = key.write_pair(out).map_err(|e| e.to_string())?;
    let shown = |p: &Path| plugbox::display::escape(&p.display().to_string()).into_owned();
    println!(
        "secret key: {} (mode 0600; keep it on this host only)",
        shown(&secret)
    );
    println!("public key: {} (give it to auditors)", shown(&public));
    println!("fingerprint: {}", key.fingerprint());
    Ok(ExitCode::SUCCESS)
}

/// `audit verify FILE... --key PUB [--anchors FILE]`: exit 0 intact, sealed and every
/// checkpoint good; 1 broken; 125 unreadable (a key or anchors file included).
pub fn verify_cmd(
    files: &[PathBuf],
    keys: &[PathBuf],
    anchors: Option<&Path>,
    json: bool,
) -> Result<ExitCode, String> {
    let keys = keys
        .iter()
        .map(|k| PublicKey::load(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if keys.is_empty() && anchors.is_none() {
        return Err("audit: verify needs --key or --anchors here".into());
    }
    let ordered = chain_order(files).map_err(|e| format!("audit: {e}"))?;
    let checks = Checks {
        keys: &keys,
        anchors,
    };
    let verdict = verify_signed(&ordered, checks).map_err(|e| format!("audit: {e}"))?;
    Ok(super::audit::print_verdict(&verdict, json))
}
