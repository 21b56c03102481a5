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

/// Appends `value` as one line of JSON (no newline) to `out`: the bytes serde_json's compact
/// serializer with [`SafeFormatter`] writes (see [`Line`]), written faster.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    let start = out.len();
    let r = value.serialize(Line(out));
    if r.is_err() {
        out.truncate(start);
    }
    r
}

/// Appends `value` through serde_json itself (compact, [`SafeFormatter`]): the reference
/// [`write`](fn@write) matches byte for byte, and what [`Line`] hands over for the rare types.
pub fn write_reference<T: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    value: &T,
) -> serde_json::Result<()> {
    value.serialize(&mut Serializer::with_formatter(out, SafeFormatter))
}

/// Appends `s` as a JSON string, escaped as serde_json escapes it (`\"`, `\\`, the short
/// escapes, other C0 controls as `\u00xx`) plus [`is_deceptive`] characters as `\u` escapes.
/// Strings with nothing to escape (the usual case) are checked eight bytes a step and copied in
/// one go.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    out.reserve(s.len() + 2);
    out.push(b'"');
    if plain(s.as_bytes()) {
        out.extend_from_slice(s.as_bytes());
    } else {
        write_escaped(out, s);
    }
    out.push(b'"');
}

/// [`write_str`]'s contents for a string with something to escape.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let short: &[u8] = match c {
            '"' => b"\\\"",
            '\\' => b"\\\\",
            '\u{8}' => b"\\b",
            '\u{c}' => b"\\f",
            '\n' => b"\\n",
            '\r' => b"\\r",
            '\t' => b"\\t",
            c if is_deceptive(c) => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            let mut esc = *b"\\u0000";
            let hex = b"0123456789abcdef";
            let n = c as u32;
            for (k, slot) in esc[2..].iter_mut().enumerate() {
                *slot = hex[((n >> (12 - 4 * k)) & 0xf) as usize];
            }
            out.extend_from_slice(&esc);
        } else {
            out.extend_from_slice(short);
        }
        start = i + c.len_utf8();
    }
    out.extend_from_slice(&bytes[start..]);
}

/// Whether no byte needs escaping: none below 0x20, none from 0x7f up, no `"` or `\\`; eight
/// bytes a step (a zero byte of `w ^ (b * ONES)` finds `b`; see [`all_below_del`] for the rest).
#[inline]
fn plain(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const TOPS: u64 = 0x8080_8080_8080_8080;
    // Flags (top bit) the bytes of `w` below `n` (`n` at most 0x80), for bytes below 0x80.
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & TOPS;
    let has = |w: u64, b: u64| below(w ^ (ONES * b), 1);
    let (words, rest) = bytes.as_chunks::<8>();
    for c in words {
        let w = u64::from_le_bytes(*c);
        if (w | w.wrapping_add(ONES)) & TOPS != 0
            || below(w, 0x20) != 0
            || has(w, u64::from(b'"')) != 0
            || has(w, u64::from(b'\\')) != 0
        {
            return false;
        }
    }
    rest.iter()
        .all(|&b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
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

/// A compact JSON serializer into a `Vec<u8>` that writes exactly what serde_json's
/// `Serializer::with_formatter(out, SafeFormatter)` writes, without its per-byte string scan:
/// keys and strings go through [`write_str`], integers through `itoa` (as serde_json), and the
/// types no record uses on its hot path (floats, byte strings, 128-bit integers) through
/// serde_json itself. `json::tests` compares the two on every kind of value.
pub struct Line<'a>(pub &'a mut Vec<u8>);

/// A JSON array or object being written by [`Line`].
pub struct Compound<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
    /// What closes it (`]`, `}`, or `}}` for a variant's).
    close: &'static [u8],
}

impl<'a> Line<'a> {
    fn begin(self, open: &[u8], close: &'static [u8], empty: bool) -> Compound<'a> {
        self.0.extend_from_slice(open);
        if empty {
            // serde_json closes an empty array or object at once and writes nothing at the end.
            self.0.extend_from_slice(close);
            return Compound {
                out: self.0,
                first: true,
                close: b"",
            };
        }
        Compound {
            out: self.0,
            first: true,
            close,
        }
    }

    fn reference<T: Serialize + ?Sized>(self, v: &T) -> serde_json::Result<()> {
        write_reference(self.0, v)
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

impl<'a> serde::Serializer for Line<'a> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = Compound<'a>;
    type SerializeTuple = Compound<'a>;
    type SerializeTupleStruct = Compound<'a>;
    type SerializeTupleVariant = Compound<'a>;
    type SerializeMap = Compound<'a>;
    type SerializeStruct = Compound<'a>;
    type SerializeStructVariant = Compound<'a>;

    fn serialize_bool(self, v: bool) -> serde_json::Result<()> {
        self.0.extend_from_slice(if v { b"true" } else { b"false" });
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_i16(self, v: i16) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_i128(self, v: i128) -> serde_json::Result<()> {
        self.reference(&v)
    }
    fn serialize_u8(self, v: u8) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_u16(self, v: u16) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        int(self.0, v);
        Ok(())
    }
    fn serialize_u128(self, v: u128) -> serde_json::Result<()> {
        self.reference(&v)
    }
    fn serialize_f32(self, v: f32) -> serde_json::Result<()> {
        self.reference(&v)
    }
    fn serialize_f64(self, v: f64) -> serde_json::Result<()> {
        self.reference(&v)
    }
    fn serialize_char(self, v: char) -> serde_json::Result<()> {
        write_str(self.0, v.encode_utf8(&mut [0; 4]));
        Ok(())
    }
    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_str(self.0, v);
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> serde_json::Result<()> {
        self.reference(&serde_bytes_ref(v))
    }
    fn serialize_none(self) -> serde_json::Result<()> {
        self.serialize_unit()
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        self.0.extend_from_slice(b"null");
        Ok(())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.0.push(b'{');
        write_str(self.0, variant);
        self.0.push(b':');
        value.serialize(Line(&mut *self.0))?;
        self.0.push(b'}');
        Ok(())
    }
    fn serialize_seq(self, len: Option<usize>) -> serde_json::Result<Compound<'a>> {
        Ok(self.begin(b"[", b"]", len == Some(0)))
    }
    fn serialize_tuple(self, len: usize) -> serde_json::Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'a>> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'a>> {
        self.0.push(b'{');
        write_str(self.0, variant);
        self.0.push(b':');
        let mut c = self.begin(b"[", b"]", len == 0);
        // The variant's object closes after the array.
        c.close = if len == 0 { b"}" } else { b"]}" };
        if len == 0 {
            c.first = true;
        }
        Ok(c)
    }
    fn serialize_map(self, len: Option<usize>) -> serde_json::Result<Compound<'a>> {
        Ok(self.begin(b"{", b"}", len == Some(0)))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> serde_json::Result<Compound<'a>> {
        self.serialize_map(Some(len))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> serde_json::Result<Compound<'a>> {
        self.0.push(b'{');
        write_str(self.0, variant);
        self.0.push(b':');
        let mut c = self.begin(b"{", b"}", len == 0);
        c.close = if len == 0 { b"}" } else { b"}}" };
        Ok(c)
    }
    fn collect_str<T: std::fmt::Display + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        self.serialize_str(&value.to_string())
    }
}

/// Byte strings as serde_json writes them (an array of numbers).
fn serde_bytes_ref(v: &[u8]) -> impl Serialize + '_ {
    struct B<'b>(&'b [u8]);
    impl Serialize for B<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }
    B(v)
}

impl Compound<'_> {
    fn comma(&mut self) {
        if self.first {
            self.first = false;
        } else {
            self.out.push(b',');
        }
    }
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.comma();
        value.serialize(Line(&mut *self.out))
    }
    fn key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        self.comma();
        key.serialize(KeyLine(&mut *self.out))?;
        self.out.push(b':');
        Ok(())
    }
    fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) -> serde_json::Result<()> {
        self.comma();
        write_str(self.out, key);
        self.out.push(b':');
        value.serialize(Line(&mut *self.out))
    }
    fn close(self) -> serde_json::Result<()> {
        self.out.extend_from_slice(self.close);
        Ok(())
    }
}

impl serde::ser::SerializeSeq for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeTuple for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeTupleStruct for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeTupleVariant for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        self.element(value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeMap for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> serde_json::Result<()> {
        self.key(key)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> serde_json::Result<()> {
        value.serialize(Line(&mut *self.out))
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeStruct for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.field(key, value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}
impl serde::ser::SerializeStructVariant for Compound<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        self.field(key, value)
    }
    fn end(self) -> serde_json::Result<()> {
        self.close()
    }
}

/// A map key: a string, or what serde_json writes as one; anything else is refused (as serde_json
/// refuses it), through serde_json itself so that the error is the same.
struct KeyLine<'a>(&'a mut Vec<u8>);

impl KeyLine<'_> {
    fn quoted(self, n: impl itoa::Integer) -> serde_json::Result<()> {
        self.0.push(b'"');
        int(self.0, n);
        self.0.push(b'"');
        Ok(())
    }
    fn reference<T: Serialize + ?Sized>(self, key: &T) -> serde_json::Result<()> {
        // serde_json's own key rules, on a one-entry map whose braces and colon are cut off.
        let mut tmp = Vec::new();
        let mut m = std::collections::BTreeMap::new();
        m.insert(KeyRef(key), ());
        write_reference(&mut tmp, &m)?;
        let end = tmp.len() - b":null}".len();
        self.0.extend_from_slice(&tmp[1..end]);
        Ok(())
    }
}

/// A borrowed key for [`KeyLine::reference`].
struct KeyRef<'k, T: ?Sized>(&'k T);
impl<T: ?Sized> PartialEq for KeyRef<'_, T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T: ?Sized> Eq for KeyRef<'_, T> {}
impl<T: ?Sized> PartialOrd for KeyRef<'_, T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<T: ?Sized> Ord for KeyRef<'_, T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}
impl<T: Serialize + ?Sized> Serialize for KeyRef<'_, T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

macro_rules! key_via_reference {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> serde_json::Result<()> {
            self.reference(&v)
        }
    )*};
}

impl serde::Serializer for KeyLine<'_> {
    type Ok = ();
    type Error = serde_json::Error;
    type SerializeSeq = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeTuple = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeTupleStruct = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeTupleVariant = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeMap = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeStruct = serde::ser::Impossible<(), serde_json::Error>;
    type SerializeStructVariant = serde::ser::Impossible<(), serde_json::Error>;

    fn serialize_str(self, v: &str) -> serde_json::Result<()> {
        write_str(self.0, v);
        Ok(())
    }
    fn serialize_u32(self, v: u32) -> serde_json::Result<()> {
        self.quoted(v)
    }
    fn serialize_u64(self, v: u64) -> serde_json::Result<()> {
        self.quoted(v)
    }
    fn serialize_i32(self, v: i32) -> serde_json::Result<()> {
        self.quoted(v)
    }
    fn serialize_i64(self, v: i64) -> serde_json::Result<()> {
        self.quoted(v)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> serde_json::Result<()> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> serde_json::Result<()> {
        value.serialize(self)
    }
    key_via_reference!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16,
        serialize_i128: i128, serialize_u8: u8, serialize_u16: u16, serialize_u128: u128,
        serialize_f32: f32, serialize_f64: f64, serialize_char: char, serialize_bytes: &[u8]);
    fn serialize_none(self) -> serde_json::Result<()> {
        self.reference(&None::<()>)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> serde_json::Result<()> {
        self.reference(&Some(KeyRef(value)))
    }
    fn serialize_unit(self) -> serde_json::Result<()> {
        self.reference(&())
    }
    fn serialize_unit_struct(self, _name: &'static str) -> serde_json::Result<()> {
        self.reference(&())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> serde_json::Result<()> {
        Err(key_error())
    }
    fn serialize_seq(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeSeq> {
        Err(key_error())
    }
    fn serialize_tuple(self, _len: usize) -> serde_json::Result<Self::SerializeTuple> {
        Err(key_error())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleStruct> {
        Err(key_error())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeTupleVariant> {
        Err(key_error())
    }
    fn serialize_map(self, _len: Option<usize>) -> serde_json::Result<Self::SerializeMap> {
        Err(key_error())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStruct> {
        Err(key_error())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> serde_json::Result<Self::SerializeStructVariant> {
        Err(key_error())
    }
}

fn key_error() -> serde_json::Error {
    serde::ser::Error::custom("key must be a string")
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
    fn the_plain_test_flags_exactly_the_bytes_to_escape() {
        for b in 0..=255u8 {
            for pos in 0..11 {
                let mut v = vec![b'a'; 11];
                v[pos] = b;
                let expected = (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\';
                assert_eq!(plain(&v), expected, "{b:#x} at {pos}");
            }
        }
    }

    #[test]
    fn the_fast_writer_matches_serde_json_on_every_kind_of_value() {
        use serde_json::json;
        fn same<T: Serialize + ?Sized>(v: &T) {
            let (mut fast, mut reference) = (Vec::new(), Vec::new());
            let a = write(&mut fast, v).map_err(|e| e.to_string());
            let b = write_reference(&mut reference, v).map_err(|e| e.to_string());
            assert_eq!(a, b);
            if b.is_ok() {
                assert_eq!(
                    String::from_utf8(fast).unwrap(),
                    String::from_utf8(reference).unwrap()
                );
            }
        }
        #[derive(Serialize)]
        enum E {
            Unit,
            Newtype(u8),
            Tuple(i32, &'static str),
            EmptyTuple(),
            Struct { a: Option<u64>, b: f64 },
            EmptyStruct {},
        }
        #[derive(Serialize)]
        struct Unit;
        #[derive(Serialize)]
        struct Empty {}
        #[derive(Serialize)]
        struct Tuple(u16, bool);
        #[derive(Serialize)]
        #[serde(tag = "type", rename_all = "camelCase")]
        enum Tagged {
            A { x: i8 },
            B(Inner),
        }
        #[derive(Serialize)]
        struct Inner {
            y: i16,
            #[serde(flatten)]
            z: std::collections::BTreeMap<String, u32>,
        }
        let mut strings: Vec<String> = (0u32..0x300)
            .chain([
                0x061c, 0x200e, 0x2028, 0x2029, 0x202e, 0x2066, 0xfeff, 0x1f600,
            ])
            .filter_map(char::from_u32)
            .map(|c| format!("ab{c}cdefghij{c}"))
            .collect();
        strings.push(String::new());
        strings.push("plain ascii text, long enough for words".into());
        for s in &strings {
            same(s);
            same(&json!({ s.as_str(): s }));
        }
        same(&[
            E::Unit,
            E::Newtype(7),
            E::Tuple(-3, "x\"y"),
            E::EmptyTuple(),
        ]);
        same(&E::Struct { a: None, b: 0.1 });
        same(&E::Struct {
            a: Some(u64::MAX),
            b: f64::NAN,
        });
        same(&E::EmptyStruct {});
        same(&(Unit, Empty {}, Tuple(1, false), (), 'é', '\u{2028}'));
        same(&[
            Tagged::A { x: -1 },
            Tagged::B(Inner {
                y: 2,
                z: [("k\n".into(), 3)].into(),
            }),
        ]);
        same(&(
            i64::MIN,
            u128::MAX,
            i128::MIN,
            1.5f32,
            -0.0f64,
            f64::INFINITY,
            1e300,
        ));
        same(&serde_bytes_ref(b"\x00\xff"));
        same(&Vec::<u8>::new());
        same(&std::collections::BTreeMap::<u8, u8>::new());
        struct OneKey<K>(K);
        impl<K: Serialize> Serialize for OneKey<K> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(&self.0, &1)?;
                m.end()
            }
        }
        fn keys<K: Serialize>(k: K) -> OneKey<K> {
            OneKey(k)
        }
        same(&keys(-5i64));
        same(&keys(7u32));
        same(&[keys(true)]);
        same(&keys('c'));
        same(&keys(2.5f64));
        same(&keys(f64::NAN));
        same(&keys(()));
        same(&keys(vec![1]));
        same(&json!({"a": [1, -2, 3.5, null, true, {}, []], "b": {"c": "d"}}));
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
