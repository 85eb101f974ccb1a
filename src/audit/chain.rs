//! The hash chain: how a record line is sealed and checked.
//!
//! A line is the record's JSON object with a last member `"hash"`: the sha256 of the exact
//! bytes of the line *without* that member (that is, of the object ending `..."prev":"P"}`).
//! Each record's `prev` is the previous record's `hash`, so editing, deleting, inserting or
//! reordering a line breaks a link. The first record of a log has `prev` = [`GENESIS`]; after a
//! rotation, the first record of the new file continues from the last `hash` of the old one.

use sha2::{Digest, Sha256};

/// `prev` of the very first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
const SUFFIX_LEN: usize = r#","hash":""}"#.len() + 64;

/// Lowercase hex of a sha256.
pub fn hex(digest: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(digest.len() * 2);
    for b in digest {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// Appends the `hash` member to `object` (a serialised JSON object ending in `}`), in place;
/// returns the hash.
pub fn seal(object: &mut Vec<u8>) -> String {
    let hash = hex(&Sha256::digest(&object[..]));
    object.pop();
    object.extend_from_slice(br#","hash":""#);
    object.extend_from_slice(hash.as_bytes());
    object.extend_from_slice(br#""}"#);
    hash
}

/// Checks a line's own hash; returns it, or `None` if the line was altered.
pub fn check(line: &[u8]) -> Option<String> {
    if line.len() < SUFFIX_LEN + 2 {
        return None;
    }
    let (body, suffix) = line.split_at(line.len() - SUFFIX_LEN);
    let claimed = suffix
        .strip_prefix(br#","hash":""#)?
        .strip_suffix(br#""}"#)?;
    let mut object = body.to_vec();
    object.push(b'}');
    let actual = hex(&Sha256::digest(&object));
    (actual.as_bytes() == claimed).then_some(actual)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_lines_check_and_edits_do_not() {
        let mut line = br#"{"seq":1,"prev":"00"}"#.to_vec();
        let hash = seal(&mut line);
        assert_eq!(check(&line), Some(hash));
        let edited = String::from_utf8(line)
            .unwrap()
            .replace("\"seq\":1", "\"seq\":2");
        assert_eq!(check(edited.as_bytes()), None);
        assert_eq!(check(b"{}"), None);
    }
}
