//! sendfile-trace: an eBPF tracer of sendfile(2).
//!
//! The pipeline runs in one direction: [`probes`] loads and attaches the kernel programs,
//! [`daemon`] reads the ring buffer, [`event`] decodes each record, [`format`] renders it (tracee,
//! ECS, OCSF, text), [`output`] queues it for each [`sink`]; [`lifecycle`] records frame the stream.

pub mod btf;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod docs;
pub mod error;
pub mod event;
pub mod filter;
pub mod format;
pub mod lifecycle;
pub mod metrics;
pub mod output;
pub mod probes;
pub mod sink;
pub mod system;

/// Version of the JSON event contract (`schemaVersion` in every record).
pub const SCHEMA_VERSION: u32 = 2;
