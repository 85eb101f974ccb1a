//! The writer's own tests: numbering, chaining, sealing, failing closed.

use super::*;

fn subject() -> Subject {
    Subject {
        name: "p".into(),
        version: "1.0.0".into(),
        instance: "p#1".into(),
        digest: None,
    }
}

#[test]
fn records_are_numbered_chained_lines_ending_in_a_seal() {
    let dir = tempfile::tempdir().expect("tmp");
    let log = AuditLog::open(&dir.path().join("audit.jsonl")).expect("open");
    for _ in 0..3 {
        log.write(&Record::new(EventKind::Spawn, subject()))
            .expect("write");
    }
    let path = log.path().to_owned();
    // Seal explicitly: the group-commit thread may briefly hold the last reference, so a
    // seal left to Drop could land after this test reads the file.
    log.seal().expect("seal");
    drop(log);
    let text = std::fs::read_to_string(path).expect("read");
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let seqs: Vec<u64> = records
        .iter()
        .map(|r| r["seq"].as_u64().expect("seq"))
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    assert_eq!(records[0]["event"], "open");
    assert_eq!(records[4]["event"], "seal");
    for pair in records.windows(2) {
        assert_eq!(pair[1]["prev"], pair[0]["hash"]);
    }
}

#[test]
fn a_full_device_fails_closed_for_good() {
    assert!(matches!(
        AuditLog::open(Path::new("/dev/full")),
        Err(AuditError::Write { seq: 1, .. })
    ));
}
