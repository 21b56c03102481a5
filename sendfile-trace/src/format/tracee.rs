//! The tracee JSON contract: each record's own `Serialize` (field names as Tracee's events).

use super::Record;

/// Appends the record in the tracee contract.
pub(super) fn write(rec: Record<'_>, out: &mut Vec<u8>) -> serde_json::Result<()> {
    match rec {
        Record::Sendfile(e) => serde_json::to_writer(out, e),
        Record::Start(s) => serde_json::to_writer(out, s),
        Record::Lost(l) => serde_json::to_writer(out, l),
        Record::Stop(s) => serde_json::to_writer(out, s),
    }
}
