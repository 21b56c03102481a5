//! arm64: `__arm64_sys_*` wrappers, AArch32 (EABI) compat tasks through `TIF_32BIT`.
//!
//! Every arm64 kernel has syscall wrappers (since 4.19): `__arm64_sys_sendfile64` (which also
//! serves AArch32 `sendfile64`, 239) and the compat entry points `__arm64_compat_sys_sendfile`
//! (187) / `__arm64_compat_sys_sendfile64` take one
//! `const struct pt_regs *`, whose `regs[0..3]` hold the user's arguments at entry (x0 is
//! overwritten with the return value only after the call). The layout of `struct pt_regs` up to
//! `syscallno` is the ptrace `user_pt_regs` plus `orig_x0`, part of the user ABI. An AArch32
//! task's r0–r7 are saved in `regs[0..7]`, its syscall number in `syscallno` too.

use aya_ebpf::helpers::bpf_probe_read_kernel;

use crate::{
    kernel::{current_task, load, off},
    regs::{self, Args},
};

/// arm64 `sendfile` (asm-generic `__NR3264_sendfile`, kernel `sys_sendfile64`).
pub const NR_SENDFILE64: u32 = sendfile_trace_common::NR_SENDFILE64_AARCH64;
/// AArch32 EABI `sendfile` (32-bit `compat_off_t *`): the same number as on i386.
pub const NR_COMPAT_SENDFILE: u32 = sendfile_trace_common::NR_SENDFILE_I386;
/// AArch32 EABI `sendfile64` (64-bit `loff_t *`): the same number as on i386.
pub const NR_COMPAT_SENDFILE64: u32 = sendfile_trace_common::NR_SENDFILE64_I386;

/// `TIF_32BIT` in arm64 `thread_info.flags`: the task runs AArch32 (`is_compat_task()`). On
/// arm64 a task's syscalls are all 32-bit or all 64-bit, so this is `in_compat_syscall()`.
const TIF_32BIT: u64 = 1 << 22;

/// `regs[0..4]` of arm64 `struct pt_regs` (offset 0): the four sendfile arguments.
#[repr(C)]
pub struct Regs {
    pub x: [u64; 4],
    /// `syscallno`, read separately (offset 280).
    pub syscallno: i32,
}

/// Byte offset of `syscallno` in arm64 `struct pt_regs` (`regs[31]`, `sp`, `pc`, `pstate`,
/// `orig_x0`, then `syscallno`).
const SYSCALLNO_OFFSET: usize = 280;

/// Reads the saved user registers behind a wrapper's `pt_regs` pointer.
#[inline(always)]
pub fn read_regs(regs: u64) -> Option<Regs> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields Err.
    let x = unsafe { bpf_probe_read_kernel(regs as *const [u64; 4]).ok()? };
    // SAFETY: as above.
    let syscallno =
        unsafe { bpf_probe_read_kernel((regs as usize + SYSCALLNO_OFFSET) as *const i32).ok()? };
    Some(Regs { x, syscallno })
}

/// The syscall number saved in the `pt_regs` at `regs` (`syscallno`).
#[inline(always)]
pub fn syscall_nr(regs: u64) -> Option<u64> {
    // SAFETY: checked kernel read.
    unsafe { bpf_probe_read_kernel((regs as usize + SYSCALLNO_OFFSET) as *const i32).ok() }
        .map(|n| n as u32 as u64)
}

/// Arguments of a call that reached the native wrapper `__arm64_sys_sendfile64`: a 64-bit
/// `sendfile` (x0–x3), or an AArch32 `sendfile64` (239), which arm64's compat syscall table
/// sends to this same function (its `loff_t *` needs no conversion), unlike x86, whose ia32
/// entry has a wrapper of its own. `TIF_32BIT` tells them apart.
#[inline(always)]
pub fn native_args(r: &Regs) -> Args {
    if in_compat_syscall() {
        compat_args(r)
    } else {
        regs::native(r.x[0], r.x[1], r.x[2], r.x[3])
    }
}

/// Arguments of an AArch32 `sendfile`/`sendfile64` from its saved registers (r0–r3; number in
/// r7, saved as `syscallno`).
#[inline(always)]
pub fn compat_args(r: &Regs) -> Args {
    regs::compat(r.syscallno as u32, r.x[0], r.x[1], r.x[2], r.x[3])
}

/// Whether the current task runs AArch32 (`TIF_32BIT`): one guarded load through the BTF-typed
/// task, cheap enough for every syscall.
#[inline(always)]
pub fn in_compat_syscall() -> bool {
    load::<u64>(current_task(), off!(task_compat_word)) & TIF_32BIT != 0
}
