//! Syscall tracepoints: the last fallback, available wherever ftrace syscalls are.
//!
//! `syscalls:sys_{enter,exit}_sendfile64` do not fire for 32-bit tasks on x86, so raw
//! `sys_enter`/`sys_exit` programs catch i386 numbers 187 and 239 made in compat mode.

use aya_ebpf::{
    helpers::bpf_probe_read_kernel,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use sendfile_trace_common::{Hook, NR_SENDFILE_I386, NR_SENDFILE64_I386};

use crate::{capture, regs};

/// `TS_COMPAT` in x86 `thread_info.status`: a 32-bit syscall is active.
const TS_COMPAT: u32 = 0x0002;

/// `sys_enter_sendfile64`: out_fd @16, in_fd @24, offset @32, count @40.
#[tracepoint(category = "syscalls", name = "sys_enter_sendfile64")]
pub fn sendfile_tp_enter(ctx: TracePointContext) -> u32 {
    // SAFETY: offsets from the tracepoint's format file, identical on every 64-bit kernel.
    let read = |o| unsafe { ctx.read_at::<u64>(o) }.ok();
    if let (Some(out_fd), Some(in_fd), Some(offset_ptr), Some(count)) =
        (read(16), read(24), read(32), read(40))
    {
        capture::enter(
            regs::x64(out_fd, in_fd, offset_ptr, count),
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

/// Whether the current task is in a 32-bit syscall (`TS_COMPAT`), as `in_ia32_syscall()` says:
/// one guarded load through the BTF-typed task, cheap enough for every syscall.
#[inline(always)]
fn in_compat_syscall() -> bool {
    let task = crate::kernel::current_task();
    crate::kernel::load::<u32>(task, crate::kernel::off!(task_ti_status)) & TS_COMPAT != 0
}

/// Raw `sys_enter(regs, id)`: i386 sendfile (187) and sendfile64 (239) from compat tasks.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sendfile_raw_enter(ctx: RawTracePointContext) -> u32 {
    let id = ctx.arg::<u64>(1);
    if (id == NR_SENDFILE_I386 as u64 || id == NR_SENDFILE64_I386 as u64)
        && in_compat_syscall()
        && let Some(r) = regs::read_regs(ctx.arg::<u64>(0))
    {
        capture::enter(regs::ia32_args(&r), Hook::Tracepoint as u32);
    }
    0
}

/// Raw `sys_exit(regs, ret)`: pairs with [`sendfile_raw_enter`] (exit finds no entry otherwise).
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sendfile_raw_exit(ctx: RawTracePointContext) -> u32 {
    // The cheap test first: almost no syscall is a 32-bit one.
    if !in_compat_syscall() {
        return 0;
    }
    let regs_ptr = ctx.arg::<u64>(0);
    // SAFETY: checked kernel read of the saved orig_ax (pt_regs offset 120).
    let nr = unsafe { bpf_probe_read_kernel((regs_ptr as usize + 120) as *const u64) };
    if let Ok(nr) = nr
        && (nr == NR_SENDFILE_I386 as u64 || nr == NR_SENDFILE64_I386 as u64)
    {
        capture::exit(ctx.arg::<i64>(1));
    }
    0
}
