//! Reading the user's syscall arguments from the `struct pt_regs` the syscall wrappers receive.
//!
//! With `CONFIG_ARCH_HAS_SYSCALL_WRAPPER` (every x86_64 kernel since 4.17) the syscall function
//! `__x64_sys_sendfile64` takes one `const struct pt_regs *`, the registers saved at syscall
//! entry. The x86_64 `pt_regs` layout is part of the kernel's user ABI (ptrace), so fixed offsets
//! are safe here.

use aya_ebpf::helpers::bpf_probe_read_kernel;
use sendfile_trace_common::{NR_SENDFILE_I386, NR_SENDFILE64_X86_64, flags};

/// The slice of x86_64 `struct pt_regs` from `bx` (offset 40) to `orig_ax` (offset 120).
#[repr(C)]
pub struct RegsSlice {
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

/// The sendfile arguments as the user passed them.
pub struct Args {
    pub out_fd: i32,
    pub in_fd: i32,
    pub offset_ptr: u64,
    pub count: u64,
    pub syscall_nr: u32,
    /// [`flags::COMPAT`] and [`flags::OFFSET_32BIT`] as they apply.
    pub flags: u32,
}

/// Reads the saved user registers behind a wrapper's `pt_regs` pointer.
#[inline(always)]
pub fn read_regs(regs: u64) -> Option<RegsSlice> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one yields Err.
    unsafe { bpf_probe_read_kernel((regs as usize + BX_OFFSET) as *const RegsSlice).ok() }
}

/// Arguments of a 64-bit `sendfile64` (x86_64 syscall 40) from its four raw values; the fds
/// are C `int`s, so only their low 32 bits count.
#[inline(always)]
pub fn x64(out_fd: u64, in_fd: u64, offset_ptr: u64, count: u64) -> Args {
    Args {
        out_fd: out_fd as i32,
        in_fd: in_fd as i32,
        offset_ptr,
        count,
        syscall_nr: NR_SENDFILE64_X86_64,
        flags: 0,
    }
}

/// Arguments of a 64-bit `sendfile64` from its saved registers (rdi, rsi, rdx, r10).
#[inline(always)]
pub fn x64_args(r: &RegsSlice) -> Args {
    x64(r.di, r.si, r.dx, r.r10)
}

/// Arguments of a 32-bit (ia32) `sendfile`/`sendfile64` from its saved registers (ebx, ecx,
/// edx, esi). Syscall 187 takes a 32-bit `compat_off_t *`, 239 a 64-bit `loff_t *`.
#[inline(always)]
pub fn ia32_args(r: &RegsSlice) -> Args {
    let syscall_nr = r.orig_ax as u32;
    let mut f = flags::COMPAT;
    if syscall_nr == NR_SENDFILE_I386 {
        f |= flags::OFFSET_32BIT;
    }
    Args {
        out_fd: r.bx as u32 as i32,
        in_fd: r.cx as u32 as i32,
        offset_ptr: r.dx as u32 as u64,
        count: r.si as u32 as u64,
        syscall_nr,
        flags: f,
    }
}
