//! Terminal-safe text: what the command line prints for a human (and the JSON it prints) never
//! carries a raw control, line-separator or bidirectional-formatting character from a manifest,
//! a plugin reply, an audit log or an error message.
//!
//! An escape sequence (`ESC [`, or the one-byte C1 `CSI`, U+009B) can move the cursor, erase
//! lines or retitle the terminal: a capability `reason` holding one could hide the lines that
//! follow it in `plugbox check`. Bidi controls (U+202E and friends) reorder what is shown, and
//! U+2028/U+2029 break lines in some viewers. Every such character is written as a visible
//! `\u{..}` escape in text, or as a `\uXXXX` escape inside JSON strings (which still decode to
//! the original string).

use std::borrow::Cow;

/// Is `c` unsafe to print raw: a C0 or C1 control or DEL (`char::is_control` is exactly the
/// Unicode `Cc` category: U+0000–U+001F, U+007F, U+0080–U+009F), a bidirectional-formatting
/// character (U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069) or a line or paragraph
/// separator (U+2028, U+2029)?
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` with every [`is_unsafe`] character (newlines included) written as `\u{..}`.
/// Nothing is truncated; text without such characters is returned as is.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_keeping(text, None)
}

/// Like [`escape`], but keeps `\n`: for text the tool itself splits into lines (an error
/// message of several lines). Use [`escape`] for a single field.
pub fn escape_lines(text: &str) -> Cow<'_, str> {
    escape_keeping(text, Some('\n'))
}

fn escape_keeping(text: &str, keep: Option<char>) -> Cow<'_, str> {
    if !text.chars().any(|c| is_unsafe(c) && Some(c) != keep) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) && Some(c) != keep {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `value` as compact JSON that is safe to print: valid JSON decoding to exactly `value`, with
/// every [`is_unsafe`] character written as a `\uXXXX` escape (serde_json escapes C0 only).
pub fn json(value: &impl serde::Serialize) -> String {
    json_text(&serde_json::to_string(value).unwrap_or_default())
}

/// Like [`json`], pretty-printed.
pub fn json_pretty(value: &impl serde::Serialize) -> String {
    json_text(&serde_json::to_string_pretty(value).unwrap_or_default())
}

/// Rewrites serde_json output: outside strings JSON is plain ASCII (a raw `\n` there is the
/// pretty printer's), and inside strings serde_json escapes `\n` and the rest of C0 but not
/// DEL, C1 or bidi: every other unsafe character sits inside a string, where `\uXXXX` stands
/// for the same character. All are in the Basic Multilingual Plane: one escape each suffices.
fn json_text(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    for c in encoded.chars() {
        if is_unsafe(c) && c != '\n' {
            out.push_str(&format!("\\u{:04x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_control_and_bidi_character_is_escaped() {
        for c in ('\0'..='\u{9f}').filter(|c| c.is_control()).chain([
            '\u{061c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
            '\u{2028}', '\u{2029}',
        ]) {
            let text = format!("a{c}b");
            let shown = escape(&text);
            assert!(!shown.contains(c), "{:x} left raw", u32::from(c));
            assert_eq!(shown, format!("a\\u{{{:x}}}b", u32::from(c)));
        }
        assert_eq!(escape("plain é ∩ —"), "plain é ∩ —");
        assert_eq!(escape_lines("one\ntwo\u{1b}"), "one\ntwo\\u{1b}");
    }

    #[test]
    fn json_round_trips_and_shows_no_raw_control() {
        let original = "x\u{1b}[2J\u{9b}31m\u{202e}\u{2028}\u{2029}\u{85}\n\"\\y";
        let value = serde_json::json!({ "k\u{202e}": [original] });
        let text = json(&value);
        assert!(!text.chars().any(is_unsafe), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
        let pretty = json_pretty(&value);
        assert!(!pretty.chars().any(|c| is_unsafe(c) && c != '\n'));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&pretty).unwrap(),
            value
        );
    }
}
