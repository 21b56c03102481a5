//! Records shared by the kernel side (`sendfile-trace-ebpf`) and the daemon (`sendfile-trace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding so both sides agree on the
//! layout byte for byte. Userspace-only helpers are behind the `user` feature.
#![no_std]

/// Length of a task's `comm` (including the NUL), as in the kernel's `TASK_COMM_LEN`.
pub const TASK_COMM_LEN: usize = 16;

/// x86_64 syscall number of `sendfile` (kernel function `sys_sendfile64`).
pub const NR_SENDFILE64_X86_64: u32 = 40;
/// i386 syscall number of `sendfile` (32-bit `off_t` offset, `compat_sys_sendfile`).
pub const NR_SENDFILE_I386: u32 = 187;
/// i386 syscall number of `sendfile64` (64-bit `loff_t` offset).
pub const NR_SENDFILE64_I386: u32 = 239;

/// Bits of [`SendfileRecord::flags`] and [`InFlight::flags`].
pub mod flags {
    /// The call was made through the 32-bit (ia32 compat) syscall entry.
    pub const COMPAT: u32 = 1 << 0;
    /// `offset_before` holds the value read from the user's offset pointer at entry.
    pub const OFFSET_BEFORE_VALID: u32 = 1 << 1;
    /// `offset_after` holds the value read from the user's offset pointer at exit.
    pub const OFFSET_AFTER_VALID: u32 = 1 << 2;
    /// The offset pointer points to a 32-bit `compat_off_t` (i386 `sendfile`, 187).
    pub const OFFSET_32BIT: u32 = 1 << 3;
}

/// Which kernel hook produced a record.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// kprobe + kretprobe on the syscall function.
    Kprobe = 1,
    /// fentry + fexit on the syscall function.
    Fentry = 2,
    /// Syscall tracepoints (and raw `sys_enter`/`sys_exit` for compat tasks).
    Tracepoint = 3,
}

impl Hook {
    /// The hook for a raw value from a record, if it is one we know.
    pub fn from_u32(v: u32) -> Option<Hook> {
        match v {
            1 => Some(Hook::Kprobe),
            2 => Some(Hook::Fentry),
            3 => Some(Hook::Tracepoint),
            _ => None,
        }
    }

    /// The name used on the command line and in events.
    pub fn name(self) -> &'static str {
        match self {
            Hook::Kprobe => "kprobe",
            Hook::Fentry => "fentry",
            Hook::Tracepoint => "tracepoint",
        }
    }
}

/// Arguments saved at syscall entry, keyed by thread (`pid_tgid`) until the exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// `bpf_ktime_get_boot_ns()` at entry.
    pub start_ns: u64,
    /// The user's offset pointer (0 for NULL).
    pub offset_ptr: u64,
    /// The value the offset pointer pointed to at entry (valid if `OFFSET_BEFORE_VALID`).
    pub offset_before: i64,
    /// The count argument, all 64 bits.
    pub count: u64,
    /// The out_fd argument.
    pub out_fd: i32,
    /// The in_fd argument.
    pub in_fd: i32,
    /// CPU the call entered on.
    pub cpu: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// Syscall number (40, 187 or 239).
    pub syscall_nr: u32,
    /// [`Hook`] as u32.
    pub hook: u32,
}

/// One completed sendfile call, as written to the ring buffer at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendfileRecord {
    /// `bpf_ktime_get_boot_ns()` at entry.
    pub start_ns: u64,
    /// `bpf_ktime_get_boot_ns()` at exit.
    pub end_ns: u64,
    /// `bpf_get_current_pid_tgid()`: tgid in the high 32 bits, tid in the low.
    pub pid_tgid: u64,
    /// `bpf_get_current_uid_gid()`: gid in the high 32 bits, uid in the low.
    pub uid_gid: u64,
    /// `bpf_get_current_cgroup_id()` (cgroup v2).
    pub cgroup_id: u64,
    /// The user's offset pointer (0 for NULL).
    pub offset_ptr: u64,
    /// Value at the offset pointer at entry (valid if `OFFSET_BEFORE_VALID`).
    pub offset_before: i64,
    /// Value at the offset pointer at exit (valid if `OFFSET_AFTER_VALID`).
    pub offset_after: i64,
    /// The count argument, all 64 bits.
    pub count: u64,
    /// The syscall's return value: bytes moved, or -errno.
    pub ret: i64,
    /// The out_fd argument.
    pub out_fd: i32,
    /// The in_fd argument.
    pub in_fd: i32,
    /// CPU the call entered on.
    pub cpu: u32,
    /// [`flags`] bits.
    pub flags: u32,
    /// Syscall number (40, 187 or 239).
    pub syscall_nr: u32,
    /// [`Hook`] as u32.
    pub hook: u32,
    /// The calling thread's `comm`, NUL-padded.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Indices of the per-CPU loss counters (`LOST` map).
pub mod lost {
    /// `bpf_ringbuf_reserve` failed: the ring buffer was full.
    pub const RING_BUFFER_FULL: u32 = 0;
    /// The in-flight map was full at entry, so the call could not be followed.
    pub const IN_FLIGHT_FULL: u32 = 1;
    /// An entry found its thread's previous entry still in flight: that call's exit was never
    /// seen (e.g. a kretprobe instance shortage), so its event is lost.
    pub const MISSED_EXIT: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
    /// Name of each counter, as used in `events_lost` records.
    pub const NAMES: [&str; COUNT as usize] = ["ring_buffer_full", "in_flight_full", "missed_exit"];
}

/// Names of the maps and globals in the BPF object, shared so both sides spell them alike.
pub mod names {
    /// Ring buffer of [`crate::SendfileRecord`]s.
    pub const EVENTS: &str = "EVENTS";
    /// Per-CPU array of u64 loss counters, indexed by [`crate::lost`].
    pub const LOST: &str = "LOST";
    /// Hash map of [`crate::InFlight`] by `pid_tgid`.
    pub const IN_FLIGHT: &str = "IN_FLIGHT";
    /// Global (rodata) u32: the tracer's own tgid, whose calls are ignored.
    pub const TRACER_TGID: &str = "TRACER_TGID";
    /// Global (rodata) u32: byte offset of `thread_info.status` in `task_struct` (x86_64: 16).
    pub const TI_STATUS_OFFSET: &str = "TI_STATUS_OFFSET";
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain #[repr(C)] data with no padding holes read as anything but bytes.
    unsafe impl aya::Pod for InFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SendfileRecord {}

    impl SendfileRecord {
        /// Size of a record in the ring buffer.
        pub const SIZE: usize = core::mem::size_of::<SendfileRecord>();

        /// Decodes a record from ring-buffer bytes; `None` if the slice has the wrong size.
        pub fn from_bytes(bytes: &[u8]) -> Option<SendfileRecord> {
            if bytes.len() != Self::SIZE {
                return None;
            }
            // SAFETY: the length matches and every bit pattern is a valid SendfileRecord.
            Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<SendfileRecord>()) })
        }

        /// The record's bytes, as the kernel side writes them (for tests and benches).
        pub fn as_bytes(&self) -> &[u8] {
            // SAFETY: repr(C) plain data without implicit padding (checked by a test).
            unsafe { core::slice::from_raw_parts((self as *const Self).cast::<u8>(), Self::SIZE) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<InFlight>(), 4 * 8 + 6 * 4);
        assert_eq!(
            core::mem::size_of::<SendfileRecord>(),
            10 * 8 + 6 * 4 + TASK_COMM_LEN
        );
        assert_eq!(core::mem::align_of::<SendfileRecord>(), 8);
    }

    #[test]
    fn hook_round_trips() {
        for h in [Hook::Kprobe, Hook::Fentry, Hook::Tracepoint] {
            assert_eq!(Hook::from_u32(h as u32), Some(h));
        }
        assert_eq!(Hook::from_u32(0), None);
    }
}
