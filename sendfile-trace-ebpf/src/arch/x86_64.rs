//! x86_64: `__x64_sys_*` wrappers, i386 compat through `TS_COMPAT`.
//!
//! With `CONFIG_ARCH_HAS_SYSCALL_WRAPPER` (every x86_64 kernel since 4.17) the syscall function
//! `__x64_sys_sendfile64` takes one `const struct pt_regs *`, the registers saved at syscall
//! entry. The x86_64 `pt_regs` layout is part of the kernel's user ABI (ptrace), so fixed offsets
//! are safe here.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::{
    kernel::{current_task, load, off},
    regs::{self, Args},
};

/// x86_64 `sendfile` (kernel `sys_sendfile64`).
pub const NR_SENDFILE64: u32 = sendfile_trace_common::NR_SENDFILE64_X86_64;
/// i386 `sendfile` (32-bit `compat_off_t *`).
pub const NR_COMPAT_SENDFILE: u32 = sendfile_trace_common::NR_SENDFILE_I386;
/// i386 `sendfile64` (64-bit `loff_t *`).
pub const NR_COMPAT_SENDFILE64: u32 = sendfile_trace_common::NR_SENDFILE64_I386;

/// `TS_COMPAT` in x86 `thread_info.status`: a 32-bit syscall is active.
const TS_COMPAT: u32 = 0x0002;

/// The slice of x86_64 `struct pt_regs` from `bx` (offset 40) to `orig_ax` (offset 120).
#[repr(C)]
pub struct Regs {
    pub bx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub ax: u64,
    pub cx: u64,
    pub dx: u64,
    pub si: u64,
    pub di: u64,
    pub orig_ax: u64,
}

/// Byte offset of `bx` in x86_64 `struct pt_regs`.
const BX_OFFSET: usize = 40;
/// Byte offset of `orig_ax` (the syscall number) in x86_64 `struct pt_regs`.
const ORIG_AX_OFFSET: usize = 120;

/// Reads the saved user registers behind a wrapper's `pt_regs` pointer.
#[inline(always)]
pub fn read_regs(regs: u64) -> Option<Regs> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields Err.
    unsafe { bpf_probe_read_kernel((regs as usize + BX_OFFSET) as *const Regs).ok() }
}

/// The syscall number saved in the `pt_regs` at `regs` (`orig_ax`).
#[inline(always)]
pub fn syscall_nr(regs: u64) -> Option<u64> {
    // SAFETY: checked kernel read.
    unsafe { bpf_probe_read_kernel((regs as usize + ORIG_AX_OFFSET) as *const u64).ok() }
}

/// Arguments of a 64-bit `sendfile64` from its saved registers (rdi, rsi, rdx, r10).
#[inline(always)]
pub fn native_args(r: &Regs) -> Args {
    regs::native(r.di, r.si, r.dx, r.r10)
}

/// Arguments of a 32-bit (ia32) `sendfile`/`sendfile64` from its saved registers (ebx, ecx,
/// edx, esi; number in eax).
#[inline(always)]
pub fn compat_args(r: &Regs) -> Args {
    regs::compat(r.orig_ax as u32, r.bx, r.cx, r.dx, r.si)
}

/// Whether the current task is in a 32-bit syscall (`TS_COMPAT`), as `in_ia32_syscall()` says:
/// one guarded load through the BTF-typed task, cheap enough for every syscall.
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    load::<u32>(current_task(), off!(task_compat_word)) & TS_COMPAT != 0
}
