//! `plugbox audit verify --key PUB [--anchors FILE]`: after the chain verifies
//! ([`super::verify`]), a second streaming walk checks the signed checkpoints and, with
//! anchors, the records they name. It reports the first bad or missing checkpoint:
//! - every session's `open` record names a given key (`unsigned`, `wrong_key`);
//! - every checkpoint is well formed, signed by that key (`bad_signature`, `wrong_key`),
//!   belongs to this log and signs a head the log still has (`checkpoint_mismatch`);
//! - every `seal` directly follows its closing checkpoint, which signs the record right
//!   before it (`checkpoint_missing`, `unsigned`);
//! - every exported anchor of this log names a record the log holds, with the same hash
//!   (`anchor_mismatch`, `anchor_missing`).

use super::anchors::{self, signed_by_one_of, Anchors};
use super::chain;
use super::checkpoint::Checkpoint;
use super::keys::PublicKey;
use super::lines::{open_log, parse_head, Line, LineReader};
use super::signer::MAX_CHECKPOINT_LAG;
use super::verify::{broken, verify, Damage, Verdict};
use serde_json::Value;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};

/// What to check beyond the chain.
#[derive(Debug, Clone, Copy)]
pub struct Checks<'a> {
    /// Public keys any checkpoint may be signed with (at least one: checkpoints are checked).
    pub keys: &'a [PublicKey],
    /// An anchors file to check the log against.
    pub anchors: Option<&'a Path>,
}

/// Verifies `files` (in chain order) as [`verify`] does, then their checkpoints and anchors.
pub fn verify_signed(files: &[PathBuf], checks: Checks<'_>) -> std::io::Result<Verdict> {
    let mut verdict = verify(files)?;
    if verdict.broken.is_some() {
        return Ok(verdict);
    }
    let genesis = first_hash(files)?;
    let anchors = match checks.anchors {
        None => None,
        Some(path) => match anchors::read(path, &genesis, checks.keys)? {
            Ok(a) => Some(a),
            Err(why) => {
                let detail = format!("the anchors file {} is damaged: {why}", path.display());
                return Ok(broken(files, 0, 0, Damage::AnchorMissing, &detail, 0));
            }
        },
    };
    let mut walk = Walk {
        keys: checks.keys,
        genesis,
        anchors: anchors.as_ref(),
        recent: VecDeque::new(),
        session_key: None,
        closing: None,
        last_signed: None,
        checkpoints: 0,
        matched: 0,
        last_seq: 0,
    };
    for (fi, path) in files.iter().enumerate() {
        let mut lines = LineReader::new(open_log(path)?);
        while let Some((number, line)) = lines.next_line()? {
            let Line::Complete(line) = line else {
                continue; // the chain walk already refused these
            };
            if let Err((damage, why)) = walk.step(line) {
                return Ok(broken(files, fi, number, damage, &why, walk.last_seq));
            }
        }
    }
    let last = files.len().saturating_sub(1);
    if let Some((anchors, path)) = anchors.as_ref().zip(checks.anchors) {
        if let Err(why) = walk.all_anchored(anchors, path) {
            return Ok(broken(
                files,
                last,
                0,
                Damage::AnchorMissing,
                &why,
                walk.last_seq,
            ));
        }
        verdict.notes.push(format!(
            "{} exported anchor(s) match the log ({} of other logs skipped)",
            walk.matched, anchors.foreign
        ));
    }
    if !checks.keys.is_empty() {
        let names: Vec<&str> = checks.keys.iter().map(PublicKey::fingerprint).collect();
        verdict.notes.push(format!(
            "{} checkpoint(s) verified with key {}; every session signed and closed",
            walk.checkpoints,
            names.join(", ")
        ));
    }
    Ok(verdict)
}

type Failure = (Damage, String);

struct Walk<'a> {
    keys: &'a [PublicKey],
    genesis: String,
    anchors: Option<&'a Anchors>,
    /// The last [`MAX_CHECKPOINT_LAG`] (seq, hash), for the heads checkpoints sign.
    recent: VecDeque<(u64, String)>,
    session_key: Option<String>,
    /// The seq of a closing checkpoint waiting for its seal.
    closing: Option<u64>,
    last_signed: Option<u64>,
    checkpoints: u64,
    matched: u64,
    last_seq: u64,
}

impl Walk<'_> {
    fn step(&mut self, line: &[u8]) -> Result<(), Failure> {
        let (Some(head), Some(hash)) = (parse_head(line), chain::check(line)) else {
            return Err((Damage::Corrupt, "not an intact record".into()));
        };
        let seq = head.seq;
        if let Some(c) = self.closing.filter(|_| head.event != "seal") {
            return Err((
                Damage::Unsigned,
                format!(
                    "record seq {seq} follows the closing checkpoint (seq {c}) but is not the \
                     seal: records were added after the last checkpoint"
                ),
            ));
        }
        match &*head.event {
            _ if self.keys.is_empty() => {} // anchors only
            "open" => self.open(seq, line)?,
            "checkpoint" => self.checkpoint(seq, line)?,
            "seal" => self.seal(seq)?,
            _ => {}
        }
        if let Some((want, anchor_line)) = self.anchors.and_then(|a| a.by_seq.get(&seq)) {
            if chain::hex(want) != hash {
                return Err((
                    Damage::AnchorMismatch,
                    format!(
                        "record seq {seq} does not match the anchor exported for it (anchors \
                         line {anchor_line}): the log was rewritten after the export"
                    ),
                ));
            }
            self.matched += 1;
        }
        if self.recent.len() as u64 >= MAX_CHECKPOINT_LAG {
            self.recent.pop_front();
        }
        self.recent.push_back((seq, hash));
        self.last_seq = seq;
        Ok(())
    }

    fn open(&mut self, seq: u64, line: &[u8]) -> Result<(), Failure> {
        let detail = detail_of(line);
        let Some(key) = detail["checkpoint_key"].as_str() else {
            return Err((
                Damage::Unsigned,
                format!(
                    "the session opened at seq {seq} names no checkpoint key: it was written \
                     without signing"
                ),
            ));
        };
        if !self.keys.iter().any(|k| k.fingerprint() == key) {
            return Err((
                Damage::WrongKey,
                format!(
                    "the session opened at seq {seq} is signed by key {}, not by the given key",
                    super::escape_text(key)
                ),
            ));
        }
        self.session_key = Some(key.to_owned());
        Ok(())
    }

    fn checkpoint(&mut self, seq: u64, line: &[u8]) -> Result<(), Failure> {
        let at = format!("the checkpoint at seq {seq}");
        let raw = serde_json::to_vec(&detail_of(line)).unwrap_or_default();
        let c = Checkpoint::parse(&raw)
            .map_err(|why| (Damage::BadSignature, format!("{at}: {why}")))?;
        if self.session_key.as_deref() != Some(c.key.as_str()) {
            let why = format!("{at} is signed by key {}, not the session's key", c.key);
            return Err((Damage::WrongKey, why));
        }
        signed_by_one_of(&c, self.keys)
            .map_err(|why| (Damage::BadSignature, format!("{at}: {why}")))?;
        let mismatch = |why: String| Err((Damage::CheckpointMismatch, format!("{at} {why}")));
        if c.log != self.genesis {
            return mismatch("belongs to another log (its first record differs)".into());
        }
        if c.seq >= seq || self.last_signed.is_some_and(|s| c.seq < s) {
            return mismatch(format!("signs seq {}, out of order", c.seq));
        }
        match self.recent.iter().rev().find(|(s, _)| *s == c.seq) {
            None => return mismatch(format!("signs seq {}, too far back", c.seq)),
            Some((_, h)) if *h != c.hash => {
                return mismatch(format!(
                    "signs seq {} with hash {}, but the log's record {} has hash {}: the log \
                     was rewritten and re-chained after it was signed",
                    c.seq, c.hash, c.seq, h
                ))
            }
            Some(_) => {}
        }
        if c.before_seal {
            if c.seq + 1 != seq {
                return mismatch(format!("closes the session but signs seq {}", c.seq));
            }
            self.closing = Some(seq);
        }
        self.last_signed = Some(c.seq);
        self.checkpoints += 1;
        Ok(())
    }

    fn seal(&mut self, seq: u64) -> Result<(), Failure> {
        if self.closing.take().is_none() {
            let covered = self.last_signed.map_or("no record is".to_owned(), |s| {
                format!("only records up to seq {s} are")
            });
            return Err((
                Damage::CheckpointMissing,
                format!(
                    "the seal at seq {seq} does not follow a closing checkpoint; {covered} \
                     signed: the log was cut and re-sealed, or records were added after its \
                     last checkpoint"
                ),
            ));
        }
        self.session_key = None;
        Ok(())
    }

    /// Every anchor of this log names a record the walk saw (and matched).
    fn all_anchored(&self, anchors: &Anchors, path: &Path) -> Result<(), String> {
        if anchors.by_seq.is_empty() {
            return Err(format!(
                "no anchor in {} belongs to this log (first record {}); {} belong to other logs",
                path.display(),
                self.genesis,
                anchors.foreign
            ));
        }
        let beyond = anchors
            .by_seq
            .iter()
            .filter(|(seq, _)| **seq > self.last_seq)
            .min_by_key(|(seq, _)| **seq);
        match beyond {
            None => Ok(()),
            Some((seq, (_, line))) => Err(format!(
                "the anchor at {} line {line} names seq {seq}, but the log ends at seq {}: \
                 records were cut after the export",
                path.display(),
                self.last_seq
            )),
        }
    }
}

/// The `detail` of a record line (`Null` if it has none or the line is not JSON).
fn detail_of(line: &[u8]) -> Value {
    #[derive(serde::Deserialize)]
    struct Detail {
        #[serde(default)]
        detail: Value,
    }
    serde_json::from_slice::<Detail>(line)
        .map(|d| d.detail)
        .unwrap_or(Value::Null)
}

/// The hash of the first record of the first file (the chain walk checked it is seq 1).
fn first_hash(files: &[PathBuf]) -> std::io::Result<String> {
    let Some(first) = files.first() else {
        return Ok(String::new());
    };
    let mut lines = LineReader::new(open_log(first)?);
    Ok(match lines.next_line()? {
        Some((_, Line::Complete(line))) => chain::check(line).unwrap_or_default(),
        _ => String::new(),
    })
}
