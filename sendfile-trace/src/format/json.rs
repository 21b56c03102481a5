//! The one JSON writer every JSON format goes through, so that how strings are escaped is decided
//! in one place.
//!
//! Beyond what JSON requires (`"`, `\` and C0 controls, which serde_json escapes), strings are
//! written with the characters that mislead line readers and terminals as `\u` sequences: DEL and
//! the C1 controls (U+007F..U+009F, which some terminals obey), the line and paragraph separators
//! U+2028/U+2029 (which JavaScript-era line readers split on), the bidirectional marks, embeddings,
//! overrides and isolates (which reorder what a terminal or a web UI shows), and U+FEFF. The output
//! stays valid JSON and decodes to exactly the same string.

use std::io;

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, Serializer};

/// Appends `value` as one line of JSON (no newline) to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    value.serialize(&mut Serializer::with_formatter(out, SafeFormatter))
}

/// Whether `c` reorders, hides or breaks what a reader of the line sees: the C0 and C1 controls
/// and DEL, U+2028/U+2029, the bidirectional formatting characters (U+061C, U+200E, U+200F,
/// U+202A..U+202E, U+2066..U+2069) and U+FEFF. Shared by the JSON writer and the text format.
pub fn is_deceptive(c: char) -> bool {
    matches!(c as u32,
        0x00..=0x1f | 0x7f..=0x9f | 0x061c | 0x200e | 0x200f | 0x2028 | 0x2029
        | 0x202a..=0x202e | 0x2066..=0x2069 | 0xfeff)
}

/// serde_json's compact formatter, with [`is_deceptive`] characters in strings written as `\u`
/// escapes. serde_json hands string contents over in fragments that need no JSON escaping; the
/// check for the rare characters is one scan of each fragment (eight bytes a step), and
/// a fragment without them is copied as it is, with no allocation.
#[derive(Clone, Copy, Debug, Default)]
pub struct SafeFormatter;

impl Formatter for SafeFormatter {
    #[inline(always)]
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        // ASCII without DEL holds none of them (serde_json escapes the C0 controls itself).
        if all_below_del(bytes) {
            return writer.write_all(bytes);
        }
        escape_slow(writer, fragment)
    }
}

/// [`SafeFormatter::write_string_fragment`] for a fragment with bytes from 0x7f up: walks it by
/// character. Kept out of line so that the common case stays small.
#[inline(never)]
fn escape_slow<W: ?Sized + io::Write>(writer: &mut W, fragment: &str) -> io::Result<()> {
    let bytes = fragment.as_bytes();
    {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if is_deceptive(c) {
                writer.write_all(&bytes[start..i])?;
                let mut esc = *b"\\u0000";
                let hex = b"0123456789abcdef";
                let n = c as u32;
                for (k, slot) in esc[2..].iter_mut().enumerate() {
                    *slot = hex[((n >> (12 - 4 * k)) & 0xf) as usize];
                }
                writer.write_all(&esc)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&bytes[start..])
    }
}

/// Whether every byte is below 0x7f, eight at a time: a byte `b` is 0x7f or more exactly when
/// `b | (b + 1)` has its top bit set, and adding 1 to each byte of a word carries out of a byte
/// only if it is 0xff (itself flagged), so the word test has no false negatives.
#[inline]
fn all_below_del(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    let (words, rest) = bytes.as_chunks::<8>();
    for c in words {
        let w = u64::from_le_bytes(*c);
        if (w | w.wrapping_add(ONES)) & TOPS != 0 {
            return false;
        }
    }
    rest.iter().all(|&b| b < 0x7f)
}

// The other methods are serde_json's compact ones.
const _: CompactFormatter = CompactFormatter;

#[cfg(test)]
mod tests {
    use super::*;

    fn line<T: Serialize + ?Sized>(v: &T) -> String {
        let mut out = Vec::new();
        write(&mut out, v).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn line_breakers_controls_and_bidi_are_escaped_and_round_trip() {
        let s = "a\u{2028}b\u{2029}c\u{85}d\u{9b}[31me\u{7f}\u{202e}gnp.exe\u{2066}x\u{61c}\u{feff}\
                 \u{200f}é€😀\n\"\\";
        let l = line(s);
        assert_eq!(
            l,
            "\"a\\u2028b\\u2029c\\u0085d\\u009b[31me\\u007f\\u202egnp.exe\\u2066x\\u061c\\ufeff\
             \\u200fé€😀\\n\\\"\\\\\""
        );
        assert!(l.chars().all(|c| !is_deceptive(c)), "{l}");
        let back: String = serde_json::from_str(&l).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn the_word_test_flags_exactly_the_bytes_from_del_up() {
        for b in 0..=255u8 {
            for pos in 0..11 {
                let mut v = vec![b'a'; 11];
                v[pos] = b;
                assert_eq!(all_below_del(&v), b < 0x7f, "{b:#x} at {pos}");
            }
        }
        assert!(all_below_del(&[0x7e; 16]) && all_below_del(b""));
    }

    #[test]
    fn keys_are_escaped_too_and_plain_strings_are_unchanged() {
        let mut m = std::collections::BTreeMap::new();
        m.insert("k\u{2028}", "plain ascii / text");
        assert_eq!(line(&m), r#"{"k\u2028":"plain ascii / text"}"#);
        assert_eq!(
            line(&serde_json::json!({"a": [1, -2, 3.5, null, true]})),
            r#"{"a":[1,-2,3.5,null,true]}"#
        );
    }
}
