//! In-band records that frame the event stream: `tracer_start`, `events_lost`, `tracer_stop`.

use serde::Serialize;

use crate::SCHEMA_VERSION;

/// Written once every program is attached.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracerStart<'a> {
    /// Always "tracer_start".
    pub event_name: &'static str,
    /// Wall-clock ns.
    pub timestamp: u64,
    /// Host name.
    pub host_name: &'a str,
    /// The tracer's pid.
    pub process_id: u32,
    /// The hook in use.
    pub hook: &'static str,
    /// What the hook attached to.
    pub attached: &'a [String],
    /// Hooks tried first and why they could not attach.
    pub fallbacks: Vec<Fallback<'a>>,
    /// `uname -r`.
    pub kernel_release: &'a str,
    /// The tracer's version.
    pub version: &'static str,
    /// Ring buffer size, bytes.
    pub ring_buffer_bytes: u32,
    /// Contract version.
    pub schema_version: u32,
}

/// A hook that could not attach, and why.
#[derive(Debug, Serialize)]
pub struct Fallback<'a> {
    /// The hook.
    pub hook: &'static str,
    /// The kernel's reason.
    pub reason: &'a str,
}

/// Written within a second of any loss: how many events were lost since the last report.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventsLost {
    /// Always "events_lost".
    pub event_name: &'static str,
    /// Wall-clock ns.
    pub timestamp: u64,
    /// Events lost since the previous report, for this reason.
    pub lost: u64,
    /// Why: `ring_buffer_full`, `in_flight_full`, `missed_exit`, `sink` (an output's queue
    /// was full or its write failed), `unfinished` (calls in flight when the tracer stopped), or
    /// `malformed` (ring-buffer records the daemon could not decode).
    pub reason: &'static str,
    /// With reason `sink`: which output dropped them (as given to `--output`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sink: Option<String>,
    /// With reason `sink`: the records dropped because they could not be sent whole even cut
    /// (a datagram too small), named by who they are about (at most 16 per report).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub records: Vec<LostRecord>,
    /// Contract version.
    pub schema_version: u32,
}

/// A record a sink dropped, named by who it is about rather than by its content (which may be
/// what made it undeliverable).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LostRecord {
    /// Its `eventName`.
    pub event_name: &'static str,
    /// Its `timestamp` (wall-clock ns).
    pub timestamp: u64,
    /// The caller's process id (host namespace), for `sendfile` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_process_id: Option<u32>,
    /// The caller's thread id (host namespace), for `sendfile` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_thread_id: Option<u32>,
    /// The rendered record's size, bytes.
    pub bytes: usize,
}

/// Written at exit with the totals.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TracerStop<'a> {
    /// Always "tracer_stop".
    pub event_name: &'static str,
    /// Wall-clock ns.
    pub timestamp: u64,
    /// Why the tracer stopped (e.g. "SIGINT").
    pub reason: &'a str,
    /// sendfile events written.
    pub events: u64,
    /// Events lost, all reasons.
    pub lost: u64,
    /// Events lost by reason.
    pub lost_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Events written without descriptors and process context: the ring buffer was full at
    /// syscall entry (each such event says so in `inFd`/`outFd`).
    pub incomplete: u64,
    /// (flows) `sendfile_flow` records written; absent in calls mode without a rate limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_records: Option<u64>,
    /// (rate limit) calls counted in flow records instead of events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub folded_calls: Option<u64>,
    /// Contract version.
    pub schema_version: u32,
}

impl EventsLost {
    /// A loss report.
    pub fn new(timestamp: u64, lost: u64, reason: &'static str) -> Self {
        EventsLost {
            event_name: "events_lost",
            timestamp,
            lost,
            reason,
            sink: None,
            records: Vec::new(),
            schema_version: SCHEMA_VERSION,
        }
    }
}
