//! sendfile-trace: an eBPF tracer of sendfile(2).
//!
//! The pipeline runs in one direction: [`probes`] loads and attaches the kernel programs,
//! [`daemon`] reads the ring buffer, [`event`] decodes and encodes each record, [`output`]
//! writes JSON Lines; [`lifecycle`] records frame the stream.

pub mod btf;
pub mod cli;
pub mod daemon;
pub mod error;
pub mod event;
pub mod filter;
pub mod lifecycle;
pub mod output;
pub mod probes;
pub mod system;

/// Version of the JSON event contract (`schemaVersion` in every record).
pub const SCHEMA_VERSION: u32 = 2;
