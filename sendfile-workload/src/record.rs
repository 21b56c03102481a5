//! The JSON lines the workload prints: one per sendfile call, or one summary in loop mode.

use std::io::{self, Write};

use serde::Serialize;

use crate::facts::{FdInfo, ProcessFacts};
use crate::sys::{self, SendfileCall};

/// One sendfile call: what the workload passed, what the kernel returned, what was expected.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// Case name, with the ABI suffix on 32-bit builds.
    pub case: String,
    /// Process id.
    pub pid: i32,
    /// Id of the thread that made the call.
    pub tid: i32,
    /// Syscall number used (40 on x86_64; 187 or 239 on i386).
    pub syscall_nr: i64,
    /// Whether the call was a 32-bit syscall.
    pub compat: bool,
    /// `out_fd` argument.
    pub out_fd: i32,
    /// `in_fd` argument.
    pub in_fd: i32,
    /// Offset pointer as an address, 0 for NULL.
    pub offset_ptr: u64,
    /// Pointed-to offset before the call; null for NULL or an invalid pointer.
    pub offset_before: Option<i64>,
    /// Pointed-to offset after the call; null for NULL or an invalid pointer.
    pub offset_after: Option<i64>,
    /// `count` argument, all bits.
    pub count: u64,
    /// Raw kernel result: bytes (>= 0) or -errno.
    pub ret: i64,
    /// Symbolic errno of a failed call, null on success.
    pub errno: Option<String>,
    /// Errno the man page predicts, null when the call should succeed.
    pub expect_errno: Option<String>,
    /// `in_fd` as the tracer should resolve it, captured right before the call.
    pub in_fd_info: FdInfo,
    /// `out_fd` as the tracer should resolve it, captured right before the call.
    pub out_fd_info: FdInfo,
    /// Wall-clock ns since the epoch when the calling thread started (clock-tick precision).
    pub thread_start_time: u64,
    /// ppid, exe, namespaces, uid, gid, cgroup.
    #[serde(flatten)]
    pub process: ProcessFacts,
}

impl CallRecord {
    /// Builds the record of `call` (see [`Captured`]), made by case `case`, expected to fail with
    /// `expect_errno`.
    pub fn new(case: &str, c: &Captured, expect_errno: Option<i32>) -> Self {
        let call = &c.call;
        CallRecord {
            case: case.to_owned(),
            pid: sys::getpid(),
            tid: call.tid,
            syscall_nr: sys::long_to_i64(call.abi.nr),
            compat: call.abi.compat,
            out_fd: call.out_fd,
            in_fd: call.in_fd,
            offset_ptr: call.offset_ptr,
            offset_before: call.offset_before,
            offset_after: call.offset_after,
            count: call.count,
            ret: call.ret,
            errno: call.errno().map(sys::errno_name),
            expect_errno: expect_errno.map(sys::errno_name),
            in_fd_info: c.in_fd.clone(),
            out_fd_info: c.out_fd.clone(),
            thread_start_time: c.thread_start_time,
            process: c.process.clone(),
        }
    }
}

/// A call with what the workload knew right before it.
#[derive(Clone, Debug)]
pub struct Captured {
    /// The call.
    pub call: SendfileCall,
    /// `in_fd` described before the call.
    pub in_fd: FdInfo,
    /// `out_fd` described before the call.
    pub out_fd: FdInfo,
    /// Start time of the calling thread.
    pub thread_start_time: u64,
    /// Process facts before the call.
    pub process: ProcessFacts,
}

/// The lines of `--hold`: `{"hold":"ready","pid":N}` before the calls, `{"hold":"done",...}`
/// with the process facts after them.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldLine {
    /// "ready" or "done".
    pub hold: &'static str,
    /// Process id.
    pub pid: i32,
    /// Process facts, on the "done" line.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessFacts>,
}

/// Summary line of the loop (bench) mode.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LoopSummary {
    /// "loop" (sendfile) or "getpid-loop".
    pub case: &'static str,
    /// Total calls made, over all threads.
    pub calls: u64,
    /// Wall-clock time of all calls, in nanoseconds.
    pub elapsed_ns: u64,
    /// `elapsed_ns / calls`.
    pub ns_per_call: f64,
    /// CPU time the calling threads used (user + system, `CLOCK_THREAD_CPUTIME_ID`), per
    /// call: what a tracer's probes add shows here even when the loop is paced.
    pub cpu_ns_per_call: f64,
}

/// Prints `value` as one JSON line on stdout and flushes it.
pub fn emit<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}
