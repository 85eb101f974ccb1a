//! Signed checkpoints: an Ed25519 signature over the chain head (a record's `seq` and
//! `hash`), the log it belongs to, the key's fingerprint and the time, written into the log as
//! a `checkpoint` record every N records or T seconds and right before each `seal`, and
//! exported as an anchor ([`super::anchors`]).
//!
//! The signed message is fixed text (version 1), one `name=value` per line:
//!
//! ```text
//! plugbox-audit-checkpoint-v1
//! log=<hash of the log's first record: 64 hex>
//! seq=<decimal>
//! hash=<the hash of record seq: 64 hex>
//! key=<fingerprint: 32 hex>
//! time=<RFC 3339 UTC>
//! before_seal=<0 or 1>
//! ```
//!
//! `before_seal` = 1 says "the next record is this session's seal": a log cut at an earlier
//! checkpoint cannot be made to look sealed, because that checkpoint says 0.

use super::keys::{unhex, AuditKey, PublicKey};
use serde::{Deserialize, Serialize};

/// Version of the checkpoint format.
pub const CHECKPOINT_VERSION: u32 = 1;

/// One signed checkpoint, as written in a `checkpoint` record's `detail`, as an anchor line,
/// and as handed to [`super::AuditOptions::on_checkpoint`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    /// Format version (1).
    pub v: u32,
    /// The log: the hash of its first record (seq 1, the genesis `open`).
    pub log: String,
    /// The signed head's sequence number.
    pub seq: u64,
    /// The signed head's `hash`.
    pub hash: String,
    /// Fingerprint of the signing key.
    pub key: String,
    /// When it was signed (RFC 3339 UTC).
    pub time: String,
    /// The next record is this session's `seal`.
    pub before_seal: bool,
    /// Ed25519 signature of [`Checkpoint::message`], 128 hex digits.
    pub sig: String,
}

/// What is wrong with a checkpoint, in words an auditor reads.
pub type Problem = String;

impl Checkpoint {
    /// Signs the head `(seq, hash)` of log `log` with `key`.
    pub fn sign(key: &AuditKey, log: &str, seq: u64, hash: &str, before_seal: bool) -> Self {
        let mut c = Self {
            v: CHECKPOINT_VERSION,
            log: log.to_owned(),
            seq,
            hash: hash.to_owned(),
            key: key.fingerprint().to_owned(),
            time: super::clock::rfc3339_now(),
            before_seal,
            sig: String::new(),
        };
        c.sig = super::chain::hex(&key.sign(&c.message()));
        c
    }

    /// The bytes the signature covers.
    pub fn message(&self) -> Vec<u8> {
        format!(
            "plugbox-audit-checkpoint-v{}\nlog={}\nseq={}\nhash={}\nkey={}\ntime={}\nbefore_seal={}\n",
            self.v,
            self.log,
            self.seq,
            self.hash,
            self.key,
            self.time,
            u8::from(self.before_seal)
        )
        .into_bytes()
    }

    /// Parses a checkpoint from JSON (a record's `detail`, an anchor line) and checks its
    /// form: every field in its one canonical spelling, so the message is unambiguous.
    pub fn parse(json: &[u8]) -> Result<Self, Problem> {
        let c: Self = serde_json::from_slice(json).map_err(|e| format!("not a checkpoint: {e}"))?;
        c.check_form()?;
        Ok(c)
    }

    /// Checks the form of each field (not the signature).
    pub fn check_form(&self) -> Result<(), Problem> {
        let hex_of = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        let time_ok = self.time.len() <= 40
            && self
                .time
                .bytes()
                .all(|b| b.is_ascii_digit() || b"-:.TZ".contains(&b));
        match () {
            () if self.v != CHECKPOINT_VERSION => Err(format!("unknown version {}", self.v)),
            () if !hex_of(&self.log, 64) => Err("log is not 64 hex digits".into()),
            () if !hex_of(&self.hash, 64) => Err("hash is not 64 hex digits".into()),
            () if !hex_of(&self.key, 32) => Err("key is not a 32-hex-digit fingerprint".into()),
            () if !hex_of(&self.sig, 128) => Err("sig is not 128 hex digits".into()),
            () if !time_ok => Err("time is not an RFC 3339 time".into()),
            () => Ok(()),
        }
    }

    /// Checks the signature with `key` (whose fingerprint must be the one named).
    pub fn check_signature(&self, key: &PublicKey) -> Result<(), Problem> {
        if self.key != key.fingerprint() {
            return Err(format!(
                "signed by key {}, not by the given key {}",
                self.key,
                key.fingerprint()
            ));
        }
        let sig = unhex::<64>(&self.sig).ok_or("sig is not 128 hex digits")?;
        if key.verifies(&self.message(), &sig) {
            Ok(())
        } else {
            Err(format!(
                "its signature does not verify with key {}: the checkpoint was altered, or \
                 forged by another key named like it",
                self.key
            ))
        }
    }
}

/// When the writer signs: every `records` records or every `interval`, whichever comes
/// first (and always right before a seal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    /// Records between checkpoints.
    pub records: u64,
    /// Time between checkpoints (while records are written).
    pub interval: std::time::Duration,
}

/// The writer's checkpoint bookkeeping (kept under the writer's lock).
#[derive(Debug)]
pub(crate) struct Marks {
    /// Records written since the last checkpoint's head was taken.
    pub(crate) since: u64,
    /// When the last head was taken.
    pub(crate) at: std::time::Instant,
    /// A head was taken and is being signed outside the lock.
    pub(crate) signing: bool,
    /// The log's first record's hash (empty until known).
    pub(crate) log: String,
    /// The timer sleeps until woken (it saw nothing unsigned): the next record wakes it.
    pub(crate) timer_idle: bool,
}

impl Marks {
    /// Fresh marks for a log whose first record has hash `log` (empty: not yet written).
    pub(crate) fn new(log: String) -> Self {
        Self {
            since: 0,
            at: std::time::Instant::now(),
            signing: false,
            log,
            timer_idle: false,
        }
    }

    /// After a record: whether a checkpoint is due by count now (and if so, marks it taken).
    /// The time trigger is the timer thread's: no clock is read per record.
    pub(crate) fn due(&mut self, every: &Interval) -> bool {
        self.since += 1;
        let due = !self.signing && self.since >= every.records;
        if due {
            self.taken();
        }
        due
    }

    /// A head was taken for signing.
    pub(crate) fn taken(&mut self) {
        self.since = 0;
        self.at = std::time::Instant::now();
        self.signing = true;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_any_edit_breaks_it() {
        let key = AuditKey::generate().unwrap();
        let c = Checkpoint::sign(&key, &"a".repeat(64), 7, &"b".repeat(64), false);
        let json = serde_json::to_vec(&c).unwrap();
        let back = Checkpoint::parse(&json).unwrap();
        assert_eq!(back, c);
        back.check_signature(&key.public()).unwrap();
        let mut edited = back.clone();
        edited.seq = 8;
        assert!(edited.check_signature(&key.public()).is_err());
        edited = back.clone();
        edited.before_seal = true;
        assert!(edited.check_signature(&key.public()).is_err());
        let other = AuditKey::generate().unwrap();
        let err = back.check_signature(&other.public()).unwrap_err();
        assert!(err.contains("not by the given key"), "{err}");
        let bad = String::from_utf8(json)
            .unwrap()
            .replace("\"v\":1", "\"v\":1,\"x\":1");
        assert!(Checkpoint::parse(bad.as_bytes()).is_err());
    }
}
