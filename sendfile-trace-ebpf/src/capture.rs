//! The work shared by every hook: save the arguments at entry, emit one record at exit.

use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_user,
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use sendfile_trace_common::{InFlight, SendfileRecord, flags, lost};

use crate::regs::Args;

/// Completed calls for userspace. Userspace sets the real size at load (`--ring-buffer-size`).
#[map(name = "EVENTS")]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Calls between entry and exit, by thread. Bounded: a full map is counted, never silent.
#[map(name = "IN_FLIGHT")]
static IN_FLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(16384, 0);

/// Per-CPU loss counters, indexed by [`lost`].
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// The tracer's own tgid (set at load): its own calls are not traced.
#[unsafe(no_mangle)]
static TRACER_TGID: u32 = 0;

const EEXIST: i32 = 17;

#[inline(always)]
fn count_lost(reason: u32) {
    if let Some(p) = LOST.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: nothing else on this CPU writes it concurrently with us.
        unsafe { *p += 1 };
    }
}

/// Reads the offset the user's pointer points to; `None` if the pointer is unreadable.
#[inline(always)]
fn read_offset(ptr: u64, f: u32) -> Option<i64> {
    // SAFETY: bpf_probe_read_user validates the user address and fails cleanly.
    unsafe {
        if f & flags::OFFSET_32BIT != 0 {
            bpf_probe_read_user(ptr as *const i32).ok().map(i64::from)
        } else {
            bpf_probe_read_user(ptr as *const i64).ok()
        }
    }
}

/// Syscall entry: save the arguments and the offset's current value for this thread.
#[inline(always)]
pub fn enter(args: Args, hook: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: a read-only global that userspace sets before load.
    if (pid_tgid >> 32) as u32 == unsafe { core::ptr::read_volatile(&TRACER_TGID) } {
        return;
    }
    let mut f = args.flags;
    let mut offset_before = 0;
    if args.offset_ptr != 0
        && let Some(v) = read_offset(args.offset_ptr, f)
    {
        offset_before = v;
        f |= flags::OFFSET_BEFORE_VALID;
    }
    let entry = InFlight {
        // SAFETY: helper calls without preconditions.
        start_ns: unsafe { bpf_ktime_get_boot_ns() },
        offset_ptr: args.offset_ptr,
        offset_before,
        count: args.count,
        out_fd: args.out_fd,
        in_fd: args.in_fd,
        cpu: unsafe { bpf_get_smp_processor_id() },
        flags: f,
        syscall_nr: args.syscall_nr,
        hook,
    };
    match IN_FLIGHT.insert(&pid_tgid, &entry, BPF_NOEXIST.into()) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            // This thread's previous call never reached our exit program: its event is lost.
            count_lost(lost::MISSED_EXIT);
            let _ = IN_FLIGHT.insert(&pid_tgid, &entry, BPF_ANY.into());
        }
        Err(_) => count_lost(lost::IN_FLIGHT_FULL),
    }
}

/// Syscall exit: pair with the saved entry and emit one record.
#[inline(always)]
pub fn exit(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(entry) = (unsafe { IN_FLIGHT.get(&pid_tgid) }).copied() else {
        // Not followed: started before we attached, or its loss is already counted.
        return;
    };
    let _ = IN_FLIGHT.remove(&pid_tgid);

    let mut f = entry.flags;
    let mut offset_after = 0;
    if entry.offset_ptr != 0
        && let Some(v) = read_offset(entry.offset_ptr, f)
    {
        offset_after = v;
        f |= flags::OFFSET_AFTER_VALID;
    }
    let Some(mut slot) = EVENTS.reserve::<SendfileRecord>(0) else {
        count_lost(lost::RING_BUFFER_FULL);
        return;
    };
    slot.write(SendfileRecord {
        start_ns: entry.start_ns,
        // SAFETY: helper calls without preconditions.
        end_ns: unsafe { bpf_ktime_get_boot_ns() },
        pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        offset_ptr: entry.offset_ptr,
        offset_before: entry.offset_before,
        offset_after,
        count: entry.count,
        ret,
        out_fd: entry.out_fd,
        in_fd: entry.in_fd,
        cpu: entry.cpu,
        flags: f,
        syscall_nr: entry.syscall_nr,
        hook: entry.hook,
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    });
    slot.submit(0);
}
