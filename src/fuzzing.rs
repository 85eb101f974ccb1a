//! Entry points for the fuzz targets in `fuzz/` and for replaying their seeds in `cargo test`.
//!
//! Each takes arbitrary bytes and must never panic, hang or allocate beyond the limits it
//! enforces; the fuzz targets are one-line shims over these.

use crate::audit::lines::{parse_head, Line, LineReader};
use crate::ipc::frame::{self, FrameLimits};
use crate::ipc::Message;
use crate::manifest::{ceiling, CeilingMode, GrantFile, Grants, Manifest, ManifestFile};
use crate::policy::file::PolicyFile;
use crate::policy::Policy;

/// Decodes `data` as a stream of frames and each frame's header as a message.
pub fn frame_stream(data: &[u8]) {
    let limits = FrameLimits {
        max_frame_bytes: 1 << 20,
        max_header_bytes: 64 * 1024,
    };
    let mut rest = data;
    while let Ok((f, used)) = frame::decode(rest, &limits) {
        if let Ok(m) = Message::decode(&f.header) {
            // Re-encoding a decoded message must decode to the same message.
            let again = m.encode(&f.body);
            if let Ok((f2, _)) = frame::decode(&again, &FrameLimits::default()) {
                assert_eq!(Message::decode(&f2.header).ok(), Some(m));
            }
        }
        rest = &rest[used..];
    }
}

/// Decodes `data` as a message header.
pub fn message(data: &[u8]) {
    let _ = Message::decode(data);
}

/// Parses `data` as a `plugbox.toml` and validates it (against a directory that has no
/// entry file, so validation stops at the entry check or earlier).
pub fn manifest(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(file) = toml::from_str::<ManifestFile>(text) {
        let _ = Manifest::validate(std::path::PathBuf::from("/nonexistent-plugbox-fuzz"), file);
    }
}

/// What the `grant` target's manifest asks for: a little of every section, valid on its own.
pub const GRANT_FUZZ_REQUEST: &str = r#"schema = 1
[filesystem]
read = ["/usr/share", "/etc/ssl/"]
write = ["/tmp"]
execute = ["/usr/bin/"]
[network]
connect_tcp = [443, 80]
bind_tcp = [0]
[process]
subprocesses = true
uid = 1000
gid = 1000
instances = 4
min_warm = 2
[syscalls]
allow = ["@sync"]
[limits]
memory_mib = 512
calls_per_second = 1000
[supervision]
restart = "on-failure"
backoff_ms = 100
"#;

/// Parses `data` as a grant file, as `Grants::load` does, and intersects a fixed request
/// ([`GRANT_FUZZ_REQUEST`]) with it in both ceiling modes: whenever the intersection does not
/// refuse, the effective policy must validate (a valid request under a valid grant never
/// yields a policy the sandbox would reject).
pub fn grant(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(file) = toml::from_str::<GrantFile>(text) else {
        return;
    };
    let Ok(grants) = Grants::from_file(file) else {
        return;
    };
    let Ok(requested) = toml::from_str::<PolicyFile>(GRANT_FUZZ_REQUEST) else {
        panic!("the fuzz request parses");
    };
    let result = ceiling::intersect(&requested, &grants);
    for mode in [CeilingMode::Refuse, CeilingMode::Clamp] {
        if !result.refuses(mode) {
            if let Err(e) = Policy::from_file(result.effective.clone()) {
                panic!("granted but invalid: {e}");
            }
        }
    }
}

/// Reads `data` as an audit log with a small line cap, as `audit verify|show|summary` do: every
/// line must come out as splitting on newlines gives it (or be reported too long), and each
/// complete line goes through the hash check and the chain-member parser.
pub fn audit_line(data: &[u8]) {
    const CAP: usize = 512;
    let mut reader = LineReader::with_cap(data, CAP);
    let mut expected = data.split(|&b| b == b'\n');
    while let Ok(Some((_, line))) = reader.next_line() {
        let Some(want) = expected.next() else {
            panic!("more lines than the input holds");
        };
        match line {
            Line::Complete(got) | Line::Partial(got) => {
                assert_eq!(got, want);
                let _ = crate::audit::chain::check(got);
                let _ = parse_head(got);
            }
            Line::TooLong { bytes } => {
                assert!(want.len() > CAP);
                assert_eq!(bytes, want.len() as u64);
            }
        }
    }
}

/// Parses each line of `data` as an exported anchor (a checkpoint, as `verify --anchors` and
/// `verify --key` read them): a line that parses re-encodes to an equal checkpoint, its signed
/// text is exactly seven lines (no field can smuggle a line break into it), and checking its
/// signature against a fixed key answers without panicking.
pub fn checkpoint_line(data: &[u8]) {
    use crate::audit::Checkpoint;
    use std::sync::OnceLock;
    static KEY: OnceLock<Option<crate::audit::PublicKey>> = OnceLock::new();
    let key = KEY.get_or_init(|| crate::audit::keys::public_from_bytes(&[7u8; 32]));
    for line in data.split(|&b| b == b'\n') {
        let Ok(c) = Checkpoint::parse(line) else {
            continue;
        };
        let again = serde_json::to_vec(&c).unwrap_or_default();
        assert_eq!(Checkpoint::parse(&again).ok().as_ref(), Some(&c));
        let message = c.message();
        assert_eq!(message.iter().filter(|&&b| b == b'\n').count(), 7);
        if let Some(key) = key {
            let _ = c.check_signature(key);
        }
    }
}

/// Parses `data` as a requirements lock, as `plugbox install` does. Whenever the check passes,
/// the lock it renders for pip must parse again to the same requirements (pip reads nothing
/// the check did not see), and carry no option but `--hash`.
pub fn lock(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(requirements) = crate::install::lock::parse(text) else {
        return;
    };
    let rendered = crate::install::lock::render(&requirements);
    let again = match crate::install::lock::parse(&rendered) {
        Ok(again) => again,
        Err(e) => panic!("the rendered lock does not parse: {e}: {rendered:?}"),
    };
    let key = |r: &crate::install::lock::Requirement| {
        (
            r.name.clone(),
            r.version.clone(),
            r.spec.clone(),
            r.hashes.clone(),
        )
    };
    let first: Vec<_> = requirements.iter().map(key).collect();
    let second: Vec<_> = again.iter().map(key).collect();
    assert_eq!(first, second, "render changed the lock: {rendered:?}");
    for line in rendered.lines() {
        for word in line.split_whitespace().filter(|w| w.starts_with('-')) {
            assert!(
                word.starts_with("--hash="),
                "option {word:?} in {rendered:?}"
            );
        }
    }
}

/// Parses each line of `data` as a `plugbox serve` request, as serve's request loop does: a
/// line is either a typed request with its `id` or a typed failure, and its answer line (built
/// from the failure, or from the request echoed back as a result) is one JSON line that parses
/// again with the same `id`.
pub fn serve_request(data: &[u8]) {
    for line in data.split(|&b| b == b'\n') {
        let (id, result) = match crate::serve::parse(line) {
            Ok((id, request)) => (id, Ok(serde_json::Value::String(format!("{request:?}")))),
            Err((id, failure)) => (id, Err(failure)),
        };
        let text = crate::serve::answer(id.clone(), result).to_string();
        assert!(!text.contains('\n'), "an answer is one line");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back["id"], id);
    }
}

/// Compiles the first line of `data` as a command's argument schema (strict JSON, within a
/// `hello`'s bounds) and, if it compiles, validates the rest as its arguments, with and
/// without a binary body.
pub fn arg_schema(data: &[u8]) {
    use crate::broker::arg_schema::CommandSchemas;
    let (schema, args) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b"{}"[..]),
    };
    let (Ok(schema), Ok(serde_json::Value::Object(args))) = (
        crate::ipc::strict_json::parse(schema),
        crate::ipc::strict_json::parse(args),
    ) else {
        return;
    };
    let mut sent = serde_json::Map::new();
    sent.insert("f".into(), serde_json::json!({ "args": schema }));
    let Ok(schemas) = CommandSchemas::compile(Some(&sent), &["f".to_owned()]) else {
        return;
    };
    if let Some(command) = schemas.get("f") {
        let (first, visits) = command.check_counting(&args, None);
        assert_eq!(
            first,
            command.check(&args, None),
            "validation is deterministic"
        );
        let values = args.values().map(value_nodes).sum::<u64>() + 1;
        let bound = crate::broker::arg_schema::limits::MAX_FAN * values;
        assert!(visits <= bound, "{visits} visits for {values} values");
        let _ = command.check(&args, Some("data"));
    }
}

fn value_nodes(value: &serde_json::Value) -> u64 {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(value_nodes).sum::<u64>(),
        serde_json::Value::Object(map) => 1 + map.values().map(value_nodes).sum::<u64>(),
        _ => 1,
    }
}

/// Decodes `data` as a zygote template's answer to a fork (JSON naming a pid, or an error the
/// host shows escaped) and as a forked process's `/proc/PID/stat` line.
pub fn zygote_answer(data: &[u8]) {
    crate::engine::fuzz_zygote_answer(data);
}
