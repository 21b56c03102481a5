//! Syscall tracepoints: the last fallback, available wherever ftrace syscalls are.
//!
//! `syscalls:sys_{enter,exit}_sendfile64` do not fire for 32-bit tasks (x86 and arm64 both
//! define `ARCH_TRACE_IGNORE_COMPAT_SYSCALLS`), so raw `sys_enter`/`sys_exit` programs catch
//! compat numbers 187 and 239 (the same on i386 and AArch32 EABI) made by 32-bit tasks.

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sendfile_trace_common::Hook;

use crate::{arch, capture, regs};

/// `sys_enter_sendfile64`: out_fd @16, in_fd @24, offset @32, count @40.
#[tracepoint(category = "syscalls", name = "sys_enter_sendfile64")]
pub fn sendfile_tp_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file, identical on every 64-bit kernel.
    let read = |o| unsafe { ctx.read_at::<u64>(o) }.ok();
    if let (Some(out_fd), Some(in_fd), Some(offset_ptr), Some(count)) =
        (read(16), read(24), read(32), read(40))
    {
        capture::enter(
            regs::native(out_fd, in_fd, offset_ptr, count),
            Hook::Tracepoint as u32,
        );
    }
    0
}

/// `sys_exit_sendfile64`: ret @16.
#[tracepoint(category = "syscalls", name = "sys_exit_sendfile64")]
pub fn sendfile_tp_exit(ctx: TracePointContext) -> u32 {
    // SAFETY: offset from the tracepoint's format file.
    if let Ok(ret) = unsafe { ctx.read_at::<i64>(16) } {
        capture::exit(ret);
    }
    0
}

/// Raw `sys_enter(regs, id)`: compat sendfile (187) and sendfile64 (239) from 32-bit tasks.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sendfile_raw_enter(ctx: RawTracePointContext) -> u32 {
    let id = ctx.arg::<u64>(1);
    if regs::is_compat_sendfile(id)
        && arch::in_compat_syscall()
        && let Some(r) = arch::read_regs(ctx.arg::<u64>(0))
    {
        capture::enter(arch::compat_args(&r), Hook::Tracepoint as u32);
    }
    0
}

/// Raw `sys_exit(regs, ret)`: pairs with [`sendfile_raw_enter`] (exit finds no entry otherwise).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sendfile_raw_exit(ctx: RawTracePointContext) -> u32 {
    // The cheap test first: almost no syscall is a 32-bit one.
    if !arch::in_compat_syscall() {
        return 0;
    }
    if arch::syscall_nr(ctx.arg::<u64>(0)).is_some_and(regs::is_compat_sendfile) {
        capture::exit(ctx.arg::<i64>(1));
    }
    0
}
