//! Reading kernel structs at offsets userspace computed from the running kernel's BTF.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel,
    generated::{bpf_get_current_task_btf, bpf_probe_read_kernel as read_raw},
};
use sendfile_trace_common::Offsets;

/// Struct offsets of the running kernel, set by userspace at load (`names::OFFSETS`).
#[unsafe(no_mangle)]
pub static OFFSETS: Offsets = Offsets {
    task_compat_word: 16,
    ..zero_offsets()
};

const fn zero_offsets() -> Offsets {
    // SAFETY: Offsets is plain u32 fields; all-zero is valid.
    unsafe { core::mem::zeroed() }
}

/// One offset, read through a volatile load so the compiler cannot fold the load-time value.
macro_rules! off {
    ($field:ident) => {
        // SAFETY: a read-only global that userspace sets before load.
        (unsafe { core::ptr::read_volatile(&$crate::kernel::OFFSETS.$field) } as u64)
    };
}
pub(crate) use off;

/// The current task as a BTF-typed pointer. Loads through it with [`load`] are plain memory
/// loads that the verifier checks against the kernel's BTF and the JIT guards against faults:
/// about a nanosecond each, against tens for a `bpf_probe_read_kernel` call.
#[inline(always)]
pub fn current_task() -> u64 {
    // SAFETY: helper without preconditions.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// Loads a `T` at `base + off`, where `base` is BTF-typed ([`current_task`], or a pointer member
/// loaded from one) and `off` an [`off!`] value, which the verifier sees as a constant because
/// `OFFSETS` lives in a frozen read-only map. The member at `off` must be a `T` (checked by the
/// verifier). A NULL or bad `base` yields 0, not a fault.
#[inline(always)]
pub fn load<T: Copy>(base: u64, off: u64) -> T {
    // SAFETY: the verifier turns this into a fault-guarded load (BPF_PROBE_MEM).
    unsafe { core::ptr::read_volatile(base.wrapping_add(off) as *const T) }
}

/// Reads a `T` at kernel address `base + off`; `None` if the read faults.
#[inline(always)]
pub fn read<T: Copy>(base: u64, off: u64) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address and fails cleanly.
    unsafe { bpf_probe_read_kernel((base.wrapping_add(off)) as *const T).ok() }
}

/// Reads a kernel pointer at `base + off`; `None` if the read faults or the pointer is NULL.
#[inline(always)]
pub fn ptr(base: u64, off: u64) -> Option<u64> {
    read::<u64>(base, off).filter(|&p| p != 0)
}

/// Copies `len` bytes from kernel address `src` to `dst`; false if the read faults.
///
/// # Safety
/// `dst` must be valid for `len` bytes of writes.
#[inline(always)]
pub unsafe fn copy(dst: *mut u8, len: u32, src: u64) -> bool {
    // SAFETY: the caller guarantees dst; the kernel checks src.
    unsafe { read_raw(dst.cast(), len, src as *const _) == 0 }
}

/// The current thread's comm, or zeros if the helper fails. Unlike aya-ebpf's
/// `bpf_get_current_comm`, the buffer is two u64 words, so zeroing it is two stores rather than a
/// call of the byte-wise `memset` (16 loop turns) on every entry and exit.
#[inline(always)]
pub fn current_comm() -> [u8; 16] {
    let mut buf = [0u64; 2];
    // SAFETY: `buf` is 16 writable bytes on this program's stack.
    let r =
        unsafe { aya_ebpf::helpers::generated::bpf_get_current_comm(buf.as_mut_ptr().cast(), 16) };
    if r != 0 {
        buf = [0; 2];
    }
    // SAFETY: both are 16 plain bytes; every bit pattern is a valid [u8; 16].
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(buf) }
}
