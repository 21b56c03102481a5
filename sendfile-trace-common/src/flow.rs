//! Flows (`--mode flows`, and calls folded by `--max-events-per-process`): the records and maps
//! the kernel side and the daemon share to aggregate sendfile calls in the kernel.
//!
//! A flow is keyed by the calling process and the two open file descriptions (`struct file`) of
//! in_fd and out_fd, guarded by the super block and inode number of each ([`FlowKey`]). Its
//! counters live in one slot of an mmapable array ([`FlowSlot`]) that the daemon reads and resets
//! with atomic exchanges; `docs/flows.md` explains why no increment is lost.

use crate::TASK_COMM_LEN;

/// Slots in the flow table (flows open at once).
pub const SLOTS: u32 = 8192;

/// Bits of the `FLOW_MODE` global.
pub mod mode {
    /// `--mode flows`: every call is counted in a flow.
    pub const FLOWS: u32 = 1 << 0;
    /// `--max-events-per-process`: calls beyond the limit are folded into flows.
    pub const RATE_LIMIT: u32 = 1 << 1;
}

/// Ring-buffer record kinds of this module (the first u32 of each record).
pub mod kind {
    /// [`crate::flow::FlowOpenRecord`]: a flow was created; follows its call's entry record.
    pub const OPEN: u32 = 0x10;
    /// [`crate::flow::FlowAbortRecord`]: a flow announced by an open record was not created.
    pub const ABORT: u32 = 0x11;
    /// [`crate::flow::ThrottledRecord`]: a process went past `--max-events-per-process`.
    pub const THROTTLED: u32 = 0x12;
}

/// Whether a ring-buffer record kind is one of this module's.
pub fn is_flow_kind(kind: u32) -> bool {
    (kind::OPEN..=kind::THROTTLED).contains(&kind)
}

/// Bits of [`FlowSlot::flags`] and [`FlowOpenRecord::flags`].
pub mod slot_flags {
    /// Some call of the flow was made through the 32-bit (ia32) syscall entry.
    pub const COMPAT: u64 = 1 << 0;
    /// The flow was created by a call folded by the per-process rate limit (calls mode).
    pub const THROTTLED: u64 = 1 << 1;
}

/// Errnos counted one by one in [`FlowSlot::errnos`]; the last bucket counts all others.
pub const ERRNOS: [u32; ERRNO_BUCKETS - 1] = [
    11,  // EAGAIN
    9,   // EBADF
    14,  // EFAULT
    22,  // EINVAL
    5,   // EIO
    12,  // ENOMEM
    75,  // EOVERFLOW
    29,  // ESPIPE
    32,  // EPIPE
    104, // ECONNRESET
    4,   // EINTR
    107, // ENOTCONN
    110, // ETIMEDOUT
    105, // ENOBUFS
    512, // ERESTARTSYS
];

/// Buckets of [`FlowSlot::errnos`].
pub const ERRNO_BUCKETS: usize = 16;

/// The bucket of an errno (a positive number) in [`FlowSlot::errnos`].
#[inline(always)]
pub fn errno_bucket(errno: u32) -> usize {
    match errno {
        11 => 0,
        9 => 1,
        14 => 2,
        22 => 3,
        5 => 4,
        12 => 5,
        75 => 6,
        29 => 7,
        32 => 8,
        104 => 9,
        4 => 10,
        107 => 11,
        110 => 12,
        105 => 13,
        512 => 14,
        _ => ERRNO_BUCKETS - 1,
    }
}

/// What identifies a flow: the process and both open file descriptions, each guarded by the
/// super block and inode number of its inode (a freed `struct file` reused for another file
/// gives another key). A descriptor that is not open has its `fd_reason` as `*_file` and zeros.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Thread group id (host).
    pub tgid: u32,
    /// Padding.
    pub _pad: u32,
    /// `struct file *` of in_fd.
    pub in_file: u64,
    /// `struct file *` of out_fd.
    pub out_file: u64,
    /// `inode.i_sb` of in_fd.
    pub in_sb: u64,
    /// `inode.i_sb` of out_fd.
    pub out_sb: u64,
    /// `inode.i_ino` of in_fd.
    pub in_ino: u64,
    /// `inode.i_ino` of out_fd.
    pub out_ino: u64,
}

/// The value of a key in the `FLOWS` map: which slot counts the flow, and the slot's generation
/// when the flow was created (a call that finds another generation in the slot lost a race with
/// the flow's retirement and starts a new flow).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowRef {
    /// Index into `FLOW_SLOTS`.
    pub slot: u32,
    /// Padding.
    pub _pad: u32,
    /// [`FlowSlot::generation`] at creation.
    pub generation: u64,
}

/// The counters of one flow, in the mmapable `FLOW_SLOTS` array. The kernel side changes them
/// only with atomic operations (or before the slot is published); the daemon reads and resets
/// them with atomic exchanges.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowSlot {
    /// Bumped by the daemon when it retires the flow (before it waits for `in_flight` to drain).
    pub generation: u64,
    /// Calls that entered and have not yet added their result (each holds the slot).
    pub in_flight: u64,
    /// Completed calls since the daemon last took them.
    pub calls: u64,
    /// Sum of positive returns since the daemon last took them.
    pub bytes: u64,
    /// Failed calls since the daemon last took them.
    pub failed: u64,
    /// Boot-clock ns at the exit of the latest call.
    pub last_ns: u64,
    /// Value at the offset pointer after the latest call.
    pub offset_last: i64,
    /// 1 if `offset_last` is valid (the latest call had a readable offset pointer).
    pub offset_last_valid: u64,
    /// [`slot_flags`].
    pub flags: u64,
    /// The first errno seen in the flow (0: none yet).
    pub first_errno: u64,
    /// The latest errno seen in the flow (0: none yet).
    pub last_errno: u64,
    /// Failed calls by errno bucket ([`errno_bucket`]) since the daemon last took them.
    pub errnos: [u64; ERRNO_BUCKETS],
}

/// Indices (in u64 words) of the fields of [`FlowSlot`], for atomic access through the mmap.
pub mod word {
    /// [`super::FlowSlot::generation`].
    pub const GENERATION: usize = 0;
    /// [`super::FlowSlot::in_flight`].
    pub const IN_FLIGHT: usize = 1;
    /// [`super::FlowSlot::calls`].
    pub const CALLS: usize = 2;
    /// [`super::FlowSlot::bytes`].
    pub const BYTES: usize = 3;
    /// [`super::FlowSlot::failed`].
    pub const FAILED: usize = 4;
    /// [`super::FlowSlot::last_ns`].
    pub const LAST_NS: usize = 5;
    /// [`super::FlowSlot::offset_last`].
    pub const OFFSET_LAST: usize = 6;
    /// [`super::FlowSlot::offset_last_valid`].
    pub const OFFSET_LAST_VALID: usize = 7;
    /// [`super::FlowSlot::flags`].
    pub const FLAGS: usize = 8;
    /// [`super::FlowSlot::first_errno`].
    pub const FIRST_ERRNO: usize = 9;
    /// [`super::FlowSlot::last_errno`].
    pub const LAST_ERRNO: usize = 10;
    /// [`super::FlowSlot::errnos`] (first bucket).
    pub const ERRNOS: usize = 11;
    /// Words in a slot.
    pub const COUNT: usize = 11 + super::ERRNO_BUCKETS;
}

/// A flow was created by this call (written right after the call's entry record, which holds
/// the descriptors and the process as in calls mode).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowOpenRecord {
    /// [`kind::OPEN`].
    pub kind: u32,
    /// The slot counting the flow.
    pub slot: u32,
    /// The slot's generation (see [`FlowRef`]).
    pub generation: u64,
    /// The flow's key (the daemon deletes it to retire the flow).
    pub key: FlowKey,
    /// The creating call's thread (matches its entry record).
    pub pid_tgid: u64,
    /// Entry time of the creating call (matches its entry record).
    pub start_ns: u64,
    /// `bpf_get_current_uid_gid()` of the creating call.
    pub uid_gid: u64,
    /// cgroup v2 id of the creating call.
    pub cgroup_id: u64,
    /// Offset pointer of the creating call (0 for NULL).
    pub offset_ptr: u64,
    /// Value at the offset pointer before the first call (valid if `OFFSET_BEFORE_VALID`).
    pub offset_before: i64,
    /// out_fd of the creating call.
    pub out_fd: i32,
    /// in_fd of the creating call.
    pub in_fd: i32,
    /// CPU of the creating call.
    pub cpu: u32,
    /// [`crate::flags`] of the creating call.
    pub flags: u32,
    /// Syscall number of the creating call.
    pub syscall_nr: u32,
    /// [`crate::Hook`] as u32.
    pub hook: u32,
    /// [`slot_flags`] known at creation (`THROTTLED`).
    pub slot_flags: u32,
    /// Padding.
    pub _pad: u32,
    /// The creating thread's comm.
    pub comm: [u8; TASK_COMM_LEN],
}

/// A flow announced by an open record was not created (another CPU created the same flow
/// first): the daemon frees its slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowAbortRecord {
    /// [`kind::ABORT`].
    pub kind: u32,
    /// The slot.
    pub slot: u32,
    /// Its generation in the open record.
    pub generation: u64,
}

/// A process went past `--max-events-per-process`: its calls are folded into flows until its
/// token bucket has filled up again.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThrottledRecord {
    /// [`kind::THROTTLED`].
    pub kind: u32,
    /// Padding.
    pub _pad: u32,
    /// The thread whose call was the first folded one.
    pub pid_tgid: u64,
    /// Boot-clock ns of that call.
    pub time_ns: u64,
    /// Its `bpf_get_current_uid_gid()`.
    pub uid_gid: u64,
    /// The limit (calls per second).
    pub limit: u64,
    /// Its comm.
    pub comm: [u8; TASK_COMM_LEN],
}

/// Per-process state of the rate limit (`RATE`), by tgid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Boot-clock ns of the process's previous call.
    pub last_ns: u64,
    /// The token bucket's credit, in ns: an event costs 10⁹ / limit ns; the bucket holds at
    /// most a tenth of a second of credit (or one event's, if that is more).
    pub credit_ns: u64,
    /// 1 while the process is throttled (a throttled record was written).
    pub throttled: u64,
}

/// Names of this module's maps and globals in the BPF object.
pub mod names {
    /// Hash of [`super::FlowKey`] → [`super::FlowRef`].
    pub const FLOWS: &str = "FLOWS";
    /// Mmapable array of [`super::FlowSlot`].
    pub const FLOW_SLOTS: &str = "FLOW_SLOTS";
    /// Queue of free slot indices (the daemon fills it and returns retired slots to it).
    pub const FLOW_FREE: &str = "FLOW_FREE";
    /// Global (rodata) u32: [`super::mode`] bits.
    pub const FLOW_MODE: &str = "FLOW_MODE";
    /// Global (rodata) u64: `--max-events-per-process` (calls per second; 0: off).
    pub const RATE_LIMIT: &str = "RATE_LIMIT";
}

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain #[repr(C)] data with explicit padding.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowRef {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowSlot {}

    fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() != core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: the length matches and every bit pattern is valid for these plain records.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    impl FlowOpenRecord {
        /// Decodes an open record; `None` if the size is wrong.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            read(bytes)
        }
    }

    impl FlowAbortRecord {
        /// Decodes an abort record; `None` if the size is wrong.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            read(bytes)
        }
    }

    impl ThrottledRecord {
        /// Decodes a throttled record; `None` if the size is wrong.
        pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
            read(bytes)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<FlowKey>(), 56);
        assert_eq!(core::mem::size_of::<FlowSlot>(), word::COUNT * 8);
        assert_eq!(
            core::mem::size_of::<FlowOpenRecord>(),
            16 + 56 + 6 * 8 + 8 * 4 + TASK_COMM_LEN
        );
        assert_eq!(core::mem::size_of::<ThrottledRecord>(), 40 + TASK_COMM_LEN);
    }

    #[test]
    fn every_counted_errno_has_its_bucket() {
        for (i, e) in ERRNOS.iter().enumerate() {
            assert_eq!(errno_bucket(*e), i);
        }
        assert_eq!(errno_bucket(1), ERRNO_BUCKETS - 1);
    }
}
