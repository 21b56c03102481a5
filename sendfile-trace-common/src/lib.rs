//! Records shared by the kernel side (`sendfile-trace-ebpf`) and the daemon (`sendfile-trace`).
//!
//! Everything here is `#[repr(C)]` plain data with explicit padding so both sides agree on the
//! layout byte for byte. Userspace-only helpers are behind the `user` feature.
#![no_std]

pub mod flow;

/// Length of a task's `comm` (including the NUL), as in the kernel's `TASK_COMM_LEN`.
pub const TASK_COMM_LEN: usize = 16;

/// x86_64 syscall number of `sendfile` (kernel function `sys_sendfile64`).
pub const NR_SENDFILE64_X86_64: u32 = 40;
/// arm64 syscall number of `sendfile` (asm-generic `__NR3264_sendfile`, kernel `sys_sendfile64`).
pub const NR_SENDFILE64_AARCH64: u32 = 71;
/// i386 syscall number of `sendfile` (32-bit `off_t` offset, `compat_sys_sendfile`).
pub const NR_SENDFILE_I386: u32 = 187;
/// i386 syscall number of `sendfile64` (64-bit `loff_t` offset). AArch32 EABI uses the same two
/// numbers (187 and 239) for the same two calls.
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
    /// (in flight) The entry record could not be written: the ring buffer was full.
    pub const ENTRY_LOST: u32 = 1 << 4;
    /// A call that should have been counted in a flow (`--mode flows`, or folded by the rate
    /// limit) but was traced as a single call: the flow table was full.
    pub const FLOW_FALLBACK: u32 = 1 << 5;
    /// (in flight) The call is counted in a flow: its exit adds its result to the flow slot
    /// [`crate::InFlight::flow_slot`] (whose hold it releases) and writes no record.
    pub const FLOW_CALL: u32 = 1 << 6;
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

/// Arguments saved at syscall entry, keyed by thread (`pid_tgid`) until the exit: of every
/// followed call, traced on its own or counted in a flow ([`flags::FLOW_CALL`]).
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
    /// With [`flags::FLOW_CALL`]: the flow slot the call adds to (it holds one `in_flight`
    /// count of it). Only `offset_ptr` and `flags` are set besides it then.
    pub flow_slot: u32,
    /// Zero.
    pub _pad: u32,
}

/// First u32 of every ring-buffer record: which record it is.
pub mod kind {
    /// [`crate::EntryRecord`]: descriptors and process context, written at syscall entry.
    pub const ENTRY: u32 = 1;
    /// [`crate::SendfileRecord`]: the completed call, written at syscall exit.
    pub const EXIT: u32 = 2;
    /// [`crate::DropRecord`]: the call was filtered out at exit; forget its entry record.
    pub const DROP: u32 = 3;
}

/// One completed sendfile call, as written to the ring buffer at syscall exit.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendfileRecord {
    /// [`kind::EXIT`].
    pub kind: u32,
    /// [`entry_status`]: whether an [`EntryRecord`] precedes this record.
    pub entry_status: u32,
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

/// Whether the entry record of a call was written ([`SendfileRecord::entry_status`]).
pub mod entry_status {
    /// The entry record was written just before the syscall ran.
    pub const WRITTEN: u32 = 0;
    /// The ring buffer was full at entry: no entry record (counted as `ring_buffer_full`).
    pub const RING_FULL: u32 = 1;
}

/// A call filtered out at exit (`--errors-only`, `--min-bytes`) after its entry record was
/// written: userspace drops the entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DropRecord {
    /// [`kind::DROP`].
    pub kind: u32,
    /// Padding.
    pub _pad: u32,
    /// Thread of the call.
    pub pid_tgid: u64,
    /// Entry time of the call (matches [`EntryRecord::start_ns`]).
    pub start_ns: u64,
}

/// A byte range of [`EntryRecord`]'s variable tail.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Seg {
    /// Offset from the start of the tail.
    pub off: u16,
    /// Length in bytes.
    pub len: u16,
}

/// What a descriptor refers to ([`FdRecord::kind`]).
pub mod fd_kind {
    /// Not resolved: see [`FdRecord::reason`](super::FdRecord::reason).
    pub const UNKNOWN: u32 = 0;
    /// Regular file or directory.
    pub const FILE: u32 = 1;
    /// Character device.
    pub const CHARDEV: u32 = 2;
    /// Pipe or FIFO.
    pub const PIPE: u32 = 3;
    /// Socket.
    pub const SOCKET: u32 = 4;
    /// Anonymous inode (no file type bits in `i_mode`).
    pub const ANON_INODE: u32 = 5;
    /// Block device or anything else with a path.
    pub const OTHER: u32 = 6;
}

/// Why a descriptor could not be resolved ([`FdRecord::reason`]).
pub mod fd_reason {
    /// Resolved.
    pub const NONE: u32 = 0;
    /// Negative, or beyond the fd table.
    pub const OUT_OF_RANGE: u32 = 1;
    /// No open file at that number.
    pub const NOT_OPEN: u32 = 2;
    /// A kernel read failed (the task's fd table was changing or torn down).
    pub const READ_FAILED: u32 = 3;
    /// Names of the reasons, indexed by value.
    pub const NAMES: [&str; 4] = ["", "fd out of range", "not open", "kernel read failed"];
}

/// Bits of [`FdRecord::flags`] and [`EntryRecord::flags`].
pub mod fd_flags {
    /// The path walk hit its bound before the root.
    pub const PATH_TRUNCATED: u32 = 1 << 0;
    /// The file's dentry is unlinked.
    pub const DELETED: u32 = 1 << 1;
    /// (EntryRecord) the executable path walk hit its bound.
    pub const EXE_TRUNCATED: u32 = 1 << 2;
    /// (EntryRecord) the task has no executable (kernel thread, exiting task).
    pub const NO_EXE: u32 = 1 << 3;
    /// (EntryRecord) the per-process part (`ns_tgid`, `ns_ppid`, `host_ppid`, namespaces,
    /// executable, cgroup names) is left out: it is unchanged since this process's last full
    /// record, which userspace keeps.
    pub const PROC_CACHED: u32 = 1 << 4;
    /// The file is in no mounted file system (its dentry is the root of nothing the caller can
    /// reach: memfd, SysV shm, ...): the path holds its one name, which userspace renders as the
    /// kernel's `d_dname` does (`/memfd:NAME (deleted)`).
    pub const PSEUDO: u32 = 1 << 5;
    /// The walk ended at the root of a mount that is not the root of the caller's mount
    /// namespace (a lazily unmounted tree, or another namespace's): the path is from that
    /// mount's root and may name a different file in the caller's tree.
    pub const DETACHED: u32 = 1 << 6;
    /// The walk reached the root without passing the caller's root directory (chroot,
    /// pivot_root): the file is outside what the caller sees as `/`.
    pub const OUTSIDE_ROOT: u32 = 1 << 7;
    /// (EntryRecord) [`PSEUDO`] for the executable.
    pub const EXE_PSEUDO: u32 = 1 << 8;
    /// (EntryRecord) [`DETACHED`] for the executable.
    pub const EXE_DETACHED: u32 = 1 << 9;
}

/// Processes whose last full entry record the kernel side remembers (LRU).
pub const PROC_CACHE_SIZE: u32 = 8192;

/// One descriptor as resolved at syscall entry.
///
/// `path` is encoded leaf first: for each component, one length byte then its bytes; userspace
/// reverses it. `local`/`remote` of a UNIX socket are raw `sun_path` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdRecord {
    /// [`fd_kind`].
    pub kind: u32,
    /// [`fd_reason`] when `kind` is `UNKNOWN`.
    pub reason: u32,
    /// Inode number.
    pub ino: u64,
    /// Kernel `dev_t` of the inode's super block (`MKDEV`: major << 20 | minor).
    pub dev: u32,
    /// [`fd_flags`].
    pub flags: u32,
    /// `i_mode`.
    pub mode: u32,
    /// Socket family (`AF_*`).
    pub family: u16,
    /// Socket protocol (`IPPROTO_*`).
    pub protocol: u16,
    /// Socket type (`SOCK_*`).
    pub sock_type: u16,
    /// Local port (host order).
    pub local_port: u16,
    /// Remote port (host order).
    pub remote_port: u16,
    /// Padding.
    pub _pad: u16,
    /// Local address (IPv4 in the first 4 bytes).
    pub local_addr: [u8; 16],
    /// Remote address (IPv4 in the first 4 bytes).
    pub remote_addr: [u8; 16],
    /// Path components in the tail.
    pub path: Seg,
    /// UNIX socket: this end's `sun_path` in the tail.
    pub local_path: Seg,
    /// UNIX socket: the peer's `sun_path` in the tail.
    pub remote_path: Seg,
    /// `s_magic` of the file's super block, read only for [`fd_flags::PSEUDO`] files (it says
    /// how the kernel names them); 0 otherwise.
    pub fs_magic: u32,
}

/// Size of [`EntryRecord`]'s variable tail (a power of two: indices into it are masked).
pub const TAIL_SIZE: usize = 16384;
/// Bytes allotted to one path in the tail.
pub const PATH_BUDGET: u32 = 4096;
/// Path components (and mount crossings) walked before a path is called truncated.
pub const PATH_DEPTH: u32 = 32;
/// Room after the tail so a masked write of one component (≤ 255 bytes) stays in bounds.
pub const TAIL_SLACK: usize = 512;

/// Descriptors and process context of a call, written at syscall entry. Followed in the ring by
/// `tail_len` bytes of tail (paths, names).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EntryRecord {
    /// [`kind::ENTRY`].
    pub kind: u32,
    /// [`fd_flags`] bits about the process (`EXE_TRUNCATED`, `NO_EXE`).
    pub flags: u32,
    /// `bpf_get_current_pid_tgid()` (host ids).
    pub pid_tgid: u64,
    /// Entry time; matches the exit record's `start_ns`.
    pub start_ns: u64,
    /// The thread's `start_boottime` (ns since boot, boot clock).
    pub thread_start_ns: u64,
    /// Thread group id in the task's pid namespace.
    pub ns_tgid: u32,
    /// Thread id in the task's pid namespace.
    pub ns_tid: u32,
    /// Parent's tgid in the task's pid namespace (0 if the parent is outside it).
    pub ns_ppid: u32,
    /// Parent's tgid in the host pid namespace.
    pub host_ppid: u32,
    /// Mount namespace inode number.
    pub mnt_ns: u32,
    /// Pid namespace inode number.
    pub pid_ns: u32,
    /// Executable path components in the tail.
    pub exe: Seg,
    /// Name of the task's cgroup (v2) in the tail.
    pub cgroup_name: Seg,
    /// Name of that cgroup's parent in the tail.
    pub cgroup_parent: Seg,
    /// Bytes of tail that follow.
    pub tail_len: u16,
    /// Padding.
    pub _pad: u16,
    /// in_fd.
    pub in_fd: FdRecord,
    /// out_fd.
    pub out_fd: FdRecord,
}

/// Kernel struct offsets the BPF programs need, computed by userspace from the running kernel's
/// BTF and set as a global at load time: one object runs on every kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// The `thread_info` word holding the architecture's compat bit: `task_struct.thread_info.status`
    /// on x86 (`TS_COMPAT`), `task_struct.thread_info.flags` on arm64 (`TIF_32BIT`).
    pub task_compat_word: u32,
    /// `task_struct.tgid`.
    pub task_tgid: u32,
    /// `task_struct.real_parent`.
    pub task_real_parent: u32,
    /// `task_struct.group_leader`.
    pub task_group_leader: u32,
    /// `task_struct.thread_pid`.
    pub task_thread_pid: u32,
    /// `task_struct.start_boottime`.
    pub task_start_boottime: u32,
    /// `task_struct.files`.
    pub task_files: u32,
    /// `task_struct.mm`.
    pub task_mm: u32,
    /// `task_struct.nsproxy`.
    pub task_nsproxy: u32,
    /// `task_struct.cgroups`.
    pub task_cgroups: u32,
    /// `pid.level`.
    pub pid_level: u32,
    /// `pid.numbers`.
    pub pid_numbers: u32,
    /// `sizeof(struct upid)`.
    pub upid_size: u32,
    /// `upid.nr`.
    pub upid_nr: u32,
    /// `upid.ns`.
    pub upid_ns: u32,
    /// `pid_namespace.ns.inum`.
    pub pid_ns_inum: u32,
    /// `nsproxy.mnt_ns`.
    pub nsproxy_mnt_ns: u32,
    /// `mnt_namespace.ns.inum`.
    pub mnt_ns_inum: u32,
    /// `mm_struct.exe_file`.
    pub mm_exe_file: u32,
    /// `files_struct.fdt`.
    pub files_fdt: u32,
    /// `fdtable.max_fds`.
    pub fdt_max_fds: u32,
    /// `fdtable.fd`.
    pub fdt_fd: u32,
    /// `file.f_path.mnt`.
    pub file_path_mnt: u32,
    /// `file.f_path.dentry`.
    pub file_path_dentry: u32,
    /// `file.f_inode`.
    pub file_inode: u32,
    /// `file.private_data`.
    pub file_private_data: u32,
    /// `inode.i_mode`.
    pub inode_mode: u32,
    /// `inode.i_ino`.
    pub inode_ino: u32,
    /// `inode.i_sb`.
    pub inode_sb: u32,
    /// `super_block.s_dev`.
    pub sb_dev: u32,
    /// `dentry.d_parent`.
    pub dentry_parent: u32,
    /// `dentry.d_name.len`.
    pub dentry_name_len: u32,
    /// `dentry.d_name.name`.
    pub dentry_name: u32,
    /// `dentry.d_hash.pprev` (NULL when the dentry is unhashed).
    pub dentry_hash_pprev: u32,
    /// `mount.mnt` (the embedded `vfsmount`).
    pub mount_mnt: u32,
    /// `mount.mnt_parent`.
    pub mount_parent: u32,
    /// `mount.mnt_mountpoint`.
    pub mount_mountpoint: u32,
    /// `vfsmount.mnt_root`.
    pub vfsmount_root: u32,
    /// `socket.sk`.
    pub socket_sk: u32,
    /// `sock.__sk_common.skc_family`.
    pub sk_family: u32,
    /// `sock.sk_protocol`.
    pub sk_protocol: u32,
    /// `sock.sk_type`.
    pub sk_type: u32,
    /// `sock.__sk_common.skc_rcv_saddr`.
    pub sk_rcv_saddr: u32,
    /// `sock.__sk_common.skc_daddr`.
    pub sk_daddr: u32,
    /// `sock.__sk_common.skc_num`.
    pub sk_num: u32,
    /// `sock.__sk_common.skc_dport`.
    pub sk_dport: u32,
    /// `sock.__sk_common.skc_v6_rcv_saddr`.
    pub sk_v6_rcv_saddr: u32,
    /// `sock.__sk_common.skc_v6_daddr`.
    pub sk_v6_daddr: u32,
    /// `unix_sock.addr`.
    pub unix_addr: u32,
    /// `unix_sock.peer`.
    pub unix_peer: u32,
    /// `unix_address.len`.
    pub unix_address_len: u32,
    /// `unix_address.name` (a `sockaddr_un`).
    pub unix_address_name: u32,
    /// `css_set.dfl_cgrp`.
    pub css_set_dfl_cgrp: u32,
    /// `cgroup.kn`.
    pub cgroup_kn: u32,
    /// `kernfs_node.name`.
    pub kn_name: u32,
    /// `kernfs_node.parent` (`__parent` since 6.15).
    pub kn_parent: u32,
    /// Start of the one read that fetches `file.f_inode` and `file.f_path` together: the lower
    /// of their offsets (set by userspace, which checks that both fit in [`FILE_WINDOW`] bytes).
    pub file_window: u32,
    /// `task_struct.fs`.
    pub task_fs: u32,
    /// `fs_struct.root` (a `struct path`: mnt, then dentry).
    pub fs_root: u32,
    /// `mnt_namespace.root`.
    pub mnt_ns_root: u32,
    /// `super_block.s_magic`.
    pub sb_magic: u32,
    /// Not an offset: 1 if the kernel has the `bpf_loop` helper (its BTF names
    /// `BPF_FUNC_loop`), so that path walks run as a `bpf_loop` callback, verified once,
    /// instead of an unrolled loop verified once per iteration.
    pub bpf_loop: u32,
}

/// Bytes of `struct file` read at [`Offsets::file_window`].
pub const FILE_WINDOW: u32 = 48;
/// Bytes of `struct inode` read at `i_mode` to get `i_mode`, `i_sb` and `i_ino` in one go.
pub const INODE_WINDOW: u32 = 80;

/// Kernel-side filters, set as a global at load time. A call is traced only if it passes every
/// enabled filter; the sets (pids, comms, uids, cgroups) live in maps.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// [`filter`] bits: which filters are on.
    pub enabled: u32,
    /// `--out-type`: bit `1 << fd_kind` for each admitted kind.
    pub out_kinds: u32,
    /// `--min-bytes`: minimum return value.
    pub min_bytes: u64,
    /// Number of valid entries in `cgroups`.
    pub cgroup_count: u32,
    /// Padding.
    pub _pad: u32,
    /// `--cgroup`/`--container`: (ancestor level, cgroup id) pairs; a call matches if its
    /// cgroup's ancestor at that level has that id.
    pub cgroups: [[u64; 2]; MAX_CGROUP_FILTERS],
}

/// The tracer itself, as the kernel side recognises it to skip its own calls: its pid namespace
/// (the nsfs device and inode of `/proc/self/ns/pid`) and its tgid in that namespace. A tgid
/// alone is not enough: in a container without the host's pid namespace `getpid()` is not the
/// tgid the kernel reports, and would name another process of the host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracerNs {
    /// nsfs device, in the kernel's `dev_t` encoding (major << 20 | minor); 0: unknown.
    pub dev: u64,
    /// Inode of the pid namespace; 0: unknown (then [`names::TRACER_TGID`] alone is compared).
    pub ino: u64,
    /// The tracer's tgid in that namespace.
    pub tgid: u32,
    /// Padding.
    pub _pad: u32,
}

/// Most cgroups `--cgroup`/`--container` can name together.
pub const MAX_CGROUP_FILTERS: usize = 16;
/// Most values of `--pid`, `--comm` or `--uid` each.
pub const MAX_FILTER_VALUES: u32 = 1024;

/// Bits of [`Filters::enabled`].
pub mod filter {
    /// `--pid`: the tgid must be in the `FILTER_PIDS` map.
    pub const PID: u32 = 1 << 0;
    /// `--comm`: the comm must be in the `FILTER_COMMS` map.
    pub const COMM: u32 = 1 << 1;
    /// `--uid`: the uid must be in the `FILTER_UIDS` map.
    pub const UID: u32 = 1 << 2;
    /// `--cgroup`/`--container`.
    pub const CGROUP: u32 = 1 << 3;
    /// `--out-type`.
    pub const OUT_TYPE: u32 = 1 << 4;
    /// `--errors-only`.
    pub const ERRORS_ONLY: u32 = 1 << 5;
    /// `--min-bytes`.
    pub const MIN_BYTES: u32 = 1 << 6;
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
    /// Global (rodata) u32: the tracer's own tgid as the kernel reports it (in the initial pid
    /// namespace), whose calls are ignored; 0 when not known (see [`TRACER_NS`]).
    pub const TRACER_TGID: &str = "TRACER_TGID";
    /// Global (rodata) [`crate::TracerNs`]: the tracer's pid namespace and tgid there.
    pub const TRACER_NS: &str = "TRACER_NS";
    /// Global (rodata) [`crate::Offsets`], from the running kernel's BTF.
    pub const OFFSETS: &str = "OFFSETS";
    /// Global (rodata) u64: bytes waiting in the ring before a write wakes the reader.
    pub const WAKEUP_BYTES: &str = "WAKEUP_BYTES";
    /// Global (rodata) [`crate::Filters`].
    pub const FILTERS: &str = "FILTERS";
    /// Hash set of admitted tgids (`--pid`).
    pub const FILTER_PIDS: &str = "FILTER_PIDS";
    /// Hash set of admitted comms (`--comm`), NUL-padded to 16 bytes.
    pub const FILTER_COMMS: &str = "FILTER_COMMS";
    /// Hash set of admitted uids (`--uid`).
    pub const FILTER_UIDS: &str = "FILTER_UIDS";
    /// LRU hash of the process keys whose full records userspace has, by tgid.
    pub const PROC_CACHE: &str = "PROC_CACHE";
}

#[cfg(feature = "user")]
extern crate alloc;

#[cfg(feature = "user")]
pub use user::{encode_path, record_kind};

#[cfg(feature = "user")]
mod user {
    use super::*;

    // SAFETY: plain #[repr(C)] data with no padding holes read as anything but bytes.
    unsafe impl aya::Pod for InFlight {}
    // SAFETY: as above.
    unsafe impl aya::Pod for SendfileRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Offsets {}
    // SAFETY: as above.
    unsafe impl aya::Pod for Filters {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TracerNs {}

    /// Reads a `#[repr(C)]` plain record from the start of ring-buffer bytes, if they are long
    /// enough.
    fn read_prefix<T: Copy>(bytes: &[u8]) -> Option<T> {
        if bytes.len() < core::mem::size_of::<T>() {
            return None;
        }
        // SAFETY: long enough, and every bit pattern is valid for these plain records.
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }

    impl EntryRecord {
        /// Size of the fixed part.
        pub const SIZE: usize = core::mem::size_of::<EntryRecord>();

        /// Decodes an entry record and its tail; `None` if the bytes are too short.
        pub fn from_bytes(bytes: &[u8]) -> Option<(EntryRecord, &[u8])> {
            let r: EntryRecord = read_prefix(bytes)?;
            let tail = bytes.get(Self::SIZE..Self::SIZE + r.tail_len as usize)?;
            Some((r, tail))
        }
    }

    impl DropRecord {
        /// Decodes a drop record; `None` if the size is wrong.
        pub fn from_bytes(bytes: &[u8]) -> Option<DropRecord> {
            (bytes.len() == core::mem::size_of::<DropRecord>()).then(|| read_prefix(bytes))?
        }
    }

    /// Appends `path` to an entry record's tail the way the kernel side writes paths
    /// (components leaf first, each a length byte and its bytes) and returns its segment; for
    /// tests and benches that build records by hand.
    pub fn encode_path(tail: &mut alloc::vec::Vec<u8>, path: &[u8]) -> Seg {
        let off = tail.len() as u16;
        for comp in path.split(|&b| b == b'/').filter(|c| !c.is_empty()).rev() {
            tail.push(comp.len() as u8);
            tail.extend_from_slice(comp);
        }
        Seg {
            off,
            len: tail.len() as u16 - off,
        }
    }

    /// The kind of a ring-buffer record (its first u32), if it has one.
    pub fn record_kind(bytes: &[u8]) -> Option<u32> {
        read_prefix(bytes)
    }

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
        assert_eq!(core::mem::size_of::<InFlight>(), 4 * 8 + 8 * 4);
        assert_eq!(
            core::mem::size_of::<SendfileRecord>(),
            10 * 8 + 8 * 4 + TASK_COMM_LEN
        );
        assert_eq!(core::mem::size_of::<FdRecord>(), 8 + 8 + 12 + 12 + 32 + 16);
        assert_eq!(
            core::mem::size_of::<EntryRecord>(),
            8 + 3 * 8 + 6 * 4 + 4 * 4 + 2 * 88
        );
        assert_eq!(
            core::mem::size_of::<Filters>(),
            24 + 16 * MAX_CGROUP_FILTERS
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
