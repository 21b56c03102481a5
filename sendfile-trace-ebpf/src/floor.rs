//! Empty programs on the tracepoint hook's exact attach set, for `cargo xtask bench`: what the
//! hooks cost before any work is done (the floor any tracer on these hooks pays).

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

/// Empty program on `syscalls:sys_enter_sendfile64`.
#[tracepoint(category = "syscalls", name = "sys_enter_sendfile64")]
pub fn floor_tp_enter(_ctx: TracePointContext) -> u32 {
    0
}

/// Empty program on `syscalls:sys_exit_sendfile64`.
#[tracepoint(category = "syscalls", name = "sys_exit_sendfile64")]
pub fn floor_tp_exit(_ctx: TracePointContext) -> u32 {
    0
}

/// Empty program on raw `sys_enter`.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn floor_raw_enter(_ctx: RawTracePointContext) -> u32 {
    0
}

/// Empty program on raw `sys_exit`.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn floor_raw_exit(_ctx: RawTracePointContext) -> u32 {
    0
}
