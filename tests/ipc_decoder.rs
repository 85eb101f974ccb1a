//! The strict decoder against the JSONTestSuite corpus, and frame/message decoding edge cases.

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use plugbox::ipc::frame::{self, FrameLimits, MAX_FRAME_BYTES};
use plugbox::ipc::strict_json;
use plugbox::ipc::Message;
use std::path::PathBuf;

fn corpus(prefix: &str) -> Vec<(String, Vec<u8>)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/JSONTestSuite/test_parsing");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .expect("corpus")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).expect("read"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_n_file_is_rejected() {
    let files = corpus("n_");
    assert_eq!(files.len(), 188);
    let accepted: Vec<&String> = files
        .iter()
        .filter(|(_, b)| strict_json::parse(b).is_ok())
        .map(|(n, _)| n)
        .collect();
    assert!(accepted.is_empty(), "accepted invalid JSON: {accepted:?}");
    for (name, bytes) in &files {
        assert!(
            Message::decode(bytes).is_err(),
            "{name} decoded as a message"
        );
    }
}

#[test]
fn every_y_file_is_accepted_except_duplicate_keys() {
    let files = corpus("y_");
    assert_eq!(files.len(), 95);
    for (name, bytes) in &files {
        let result = strict_json::parse(bytes);
        if name.starts_with("y_object_duplicated_key") {
            assert!(result.is_err(), "{name}: duplicate keys must be refused");
        } else {
            assert!(result.is_ok(), "{name}: {result:?}");
        }
    }
}

#[test]
fn i_files_never_panic() {
    for (_, bytes) in corpus("i_") {
        let _ = strict_json::parse(&bytes);
        let _ = Message::decode(&bytes);
    }
}

#[test]
fn frame_of_exactly_the_cap_is_accepted_and_one_more_rejected() {
    let header = br#"{"type":"cancel","id":1}"#;
    let at_cap = frame::encode(
        header,
        &vec![0u8; MAX_FRAME_BYTES as usize - 4 - header.len()],
    );
    let (f, used) = frame::decode(&at_cap, &FrameLimits::default()).expect("cap accepted");
    assert_eq!(used, at_cap.len());
    assert!(Message::decode(&f.header).is_ok());
    let over = frame::encode(
        header,
        &vec![0u8; MAX_FRAME_BYTES as usize - 3 - header.len()],
    );
    assert!(matches!(
        frame::decode(&over, &FrameLimits::default()),
        Err(frame::FrameError::TooLarge { length, .. }) if length == MAX_FRAME_BYTES + 1
    ));
}
