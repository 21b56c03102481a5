//! The tracee JSON contract: each record's own `Serialize` (field names as Tracee's events).

use super::{Record, json};

/// Appends the record in the tracee contract.
pub(super) fn write(rec: Record<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match rec {
        Record::Sendfile(e) => json::write(out, e),
        Record::Start(s) => json::write(out, s),
        Record::Lost(l) => json::write(out, l),
        Record::Stop(s) => json::write(out, s),
        Record::Flow(f) => json::write(out, f),
        Record::Throttled(t) => json::write(out, t),
    }
}
