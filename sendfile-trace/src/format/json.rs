//! The one JSON writer every JSON format goes through, so that how strings are escaped is decided
//! in one place.

use serde::Serialize;

/// Appends `value` as one line of JSON (no newline) to `out`.
pub fn write<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}
