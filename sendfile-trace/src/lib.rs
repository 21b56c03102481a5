//! sendfile-trace: an eBPF tracer of sendfile(2).
//!
//! The pipeline runs in one direction, one module per stage:
//! [`cli`] parses flags and the config file; [`kernel`] loads and attaches the kernel programs
//! (BTF offsets, filters, system facts); [`daemon`] reads the ring buffer; [`event`] decodes each
//! record, joins entry to exit and enriches it; [`format`](mod@format) renders it (tracee, ECS, OCSF, text);
//! [`output`] queues it for each sink and counts what it writes.

pub mod cli;
pub mod daemon;
pub mod error;
pub mod event;
pub mod format;
pub mod kernel;
pub mod output;

/// Version of the JSON event contract (`schemaVersion` in every record).
pub const SCHEMA_VERSION: u32 = 2;
