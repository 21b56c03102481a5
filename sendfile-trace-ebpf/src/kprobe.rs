//! kprobe + kretprobe on the syscall functions: the preferred hook: it taxes only sendfile.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sendfile_trace_common::Hook;

use crate::{capture, regs};

/// Entry of `__x64_sys_sendfile64`: the user's registers are behind the first argument.
#[kprobe]
pub fn sendfile_kprobe_x64(ctx: ProbeContext) -> u32 {
    if let Some(r) = ctx.arg::<u64>(0).and_then(regs::read_regs) {
        capture::enter(regs::x64_args(&r), Hook::Kprobe as u32);
    }
    0
}

/// Entry of the ia32 entry points (`__ia32_compat_sys_sendfile`, `__ia32_sys_sendfile64`, …).
#[kprobe]
pub fn sendfile_kprobe_ia32(ctx: ProbeContext) -> u32 {
    if let Some(r) = ctx.arg::<u64>(0).and_then(regs::read_regs) {
        capture::enter(regs::ia32_args(&r), Hook::Kprobe as u32);
    }
    0
}

/// Entry of `sys_sendfile64` on kernels without syscall wrappers: plain C arguments.
#[kprobe]
pub fn sendfile_kprobe_nowrap(ctx: ProbeContext) -> u32 {
    let (Some(out_fd), Some(in_fd), Some(offset_ptr), Some(count)) = (
        ctx.arg::<u64>(0),
        ctx.arg::<u64>(1),
        ctx.arg::<u64>(2),
        ctx.arg::<u64>(3),
    ) else {
        return 0;
    };
    capture::enter(
        regs::x64(out_fd, in_fd, offset_ptr, count),
        Hook::Kprobe as u32,
    );
    0
}

/// Return of any of the functions above.
#[kretprobe]
pub fn sendfile_kretprobe(ctx: RetProbeContext) -> u32 {
    capture::exit(ctx.ret::<i64>());
    0
}
