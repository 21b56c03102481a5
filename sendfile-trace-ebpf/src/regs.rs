//! The sendfile arguments as the user passed them, whatever the hook and architecture.
//!
//! Where they come from is architecture-specific (which saved registers, which syscall numbers,
//! how a 32-bit task is recognised): see [`crate::arch`].

use sendfile_trace_common::flags;

use crate::arch;

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

/// Arguments of the native 64-bit `sendfile` (kernel `sys_sendfile64`) from its four raw
/// values; the fds are C `int`s, so only their low 32 bits count.
#[inline(always)]
pub fn native(out_fd: u64, in_fd: u64, offset_ptr: u64, count: u64) -> Args {
    Args {
        out_fd: out_fd as i32,
        in_fd: in_fd as i32,
        offset_ptr,
        count,
        syscall_nr: arch::NR_SENDFILE64,
        flags: 0,
    }
}

/// Arguments of a 32-bit (compat) `sendfile` or `sendfile64` from its four raw register values
/// and syscall number. Every argument is 32 bits wide; syscall [`arch::NR_COMPAT_SENDFILE`] takes
/// a 32-bit `compat_off_t *`, [`arch::NR_COMPAT_SENDFILE64`] a 64-bit `loff_t *`.
#[inline(always)]
pub fn compat(syscall_nr: u32, out_fd: u64, in_fd: u64, offset_ptr: u64, count: u64) -> Args {
    let mut f = flags::COMPAT;
    if syscall_nr == arch::NR_COMPAT_SENDFILE {
        f |= flags::OFFSET_32BIT;
    }
    Args {
        out_fd: out_fd as u32 as i32,
        in_fd: in_fd as u32 as i32,
        offset_ptr: offset_ptr as u32 as u64,
        count: count as u32 as u64,
        syscall_nr,
        flags: f,
    }
}

/// Whether `nr` is one of the two compat sendfile syscall numbers.
#[inline(always)]
pub fn is_compat_sendfile(nr: u64) -> bool {
    nr == arch::NR_COMPAT_SENDFILE as u64 || nr == arch::NR_COMPAT_SENDFILE64 as u64
}
