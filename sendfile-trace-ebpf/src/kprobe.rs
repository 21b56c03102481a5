//! kprobe + kretprobe on the syscall functions: the preferred hook: it taxes only sendfile.

use aya_ebpf::{
    macros::{kprobe, kretprobe},
    programs::{ProbeContext, RetProbeContext},
};
use sendfile_trace_common::Hook;

use crate::{arch, capture, regs};

/// Entry of the native syscall wrapper (`__x64_sys_sendfile64`, `__arm64_sys_sendfile64`): the
/// user's registers are behind the first argument.
#[kprobe]
pub fn sendfile_kprobe_native(ctx: ProbeContext) -> u32 {
    if let Some(r) = ctx.arg::<u64>(0).and_then(arch::read_regs) {
        capture::enter(arch::native_args(&r), Hook::Kprobe as u32);
    }
    0
}

/// Entry of the 32-bit compat entry points (`__ia32_compat_sys_sendfile`,
/// `__arm64_compat_sys_sendfile64`, …).
#[kprobe]
pub fn sendfile_kprobe_compat(ctx: ProbeContext) -> u32 {
    if let Some(r) = ctx.arg::<u64>(0).and_then(arch::read_regs) {
        capture::enter(arch::compat_args(&r), Hook::Kprobe as u32);
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
        regs::native(out_fd, in_fd, offset_ptr, count),
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
