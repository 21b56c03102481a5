//! The work shared by every hook: filter, resolve the descriptors and the process and write an
//! entry record at syscall entry; emit one exit record at syscall exit.

use aya_ebpf::{
    Global,
    bindings::{
        BPF_ANY, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP,
        bpf_pidns_info,
    },
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_uid_gid, bpf_get_smp_processor_id, bpf_ktime_get_boot_ns,
        bpf_probe_read_user,
        generated::{bpf_get_ns_current_pid_tgid, bpf_ringbuf_output},
    },
    macros::map,
    maps::{HashMap, PerCpuArray, RingBuf},
};
use aya_log_ebpf::warn;
use sendfile_trace_common::{
    DropRecord, EntryRecord, Filters, InFlight, MAX_CGROUP_FILTERS, MAX_FILTER_VALUES,
    SendfileRecord, TAIL_SIZE, TAIL_SLACK, TracerNs, entry_status, fd_kind, filter, flags, kind,
    lost,
};

use crate::{fd, flow, regs::Args, task};

/// Records for userspace. Userspace sets the real size at load (`--ring-buffer-size`).
#[map(name = "EVENTS")]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Calls between entry and exit, by thread. Bounded: a full map is counted, never silent.
#[map(name = "IN_FLIGHT")]
static IN_FLIGHT: HashMap<u64, InFlight> = HashMap::with_max_entries(16384, 0);

/// Per-CPU loss counters, indexed by [`lost`].
#[map(name = "LOST")]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(lost::COUNT, 0);

/// `--pid` values.
#[map(name = "FILTER_PIDS")]
static FILTER_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_VALUES, 0);

/// `--comm` values, NUL-padded.
#[map(name = "FILTER_COMMS")]
static FILTER_COMMS: HashMap<[u8; 16], u8> = HashMap::with_max_entries(MAX_FILTER_VALUES, 0);

/// `--uid` values.
#[map(name = "FILTER_UIDS")]
static FILTER_UIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_FILTER_VALUES, 0);

/// An entry record under construction: too big for the 512-byte BPF stack.
#[repr(C)]
pub struct Scratch {
    /// The fixed part, written to the ring together with the used part of `tail`.
    rec: EntryRecord,
    /// Directly after `rec`, as in the ring.
    tail: [u8; TAIL_SIZE + TAIL_SLACK],
    /// Bytes of `tail` used (see [`fd::Tail`]).
    pos: u32,
    /// The caller's root mount, root dentry and namespace root mount ([`fd::caller_roots`]).
    roots: [u64; 3],
    /// Kernel struct windows read while describing a descriptor ([`fd::Tail::window`]).
    window: [u64; fd::WINDOW_WORDS],
    /// The path walk under way ([`fd::Tail::walk`]).
    walk: fd::Walk,
    /// The call's flow decision across [`write_entry`]: the slot taken ([`NO_SLOT`]: none),
    /// whether the rate limit folded the call, and the call's flags (see [`enter`]).
    flow_slot: u32,
    flow_throttled: u32,
    flow_flags: u32,
}

/// No flow slot was taken.
const NO_SLOT: u32 = u32::MAX;

/// One [`Scratch`] per CPU.
#[map(name = "SCRATCH")]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The tracer's own tgid in the initial pid namespace (set at load when the tracer runs there,
/// else 0): its own calls are not traced.
#[unsafe(no_mangle)]
static TRACER_TGID: Global<u32> = Global::new(0);

/// The tracer's pid namespace and tgid there (set at load): how its own calls are recognised
/// when it runs in another pid namespace (a container without `hostPID`), where its `getpid()`
/// is not the tgid the kernel reports.
#[unsafe(no_mangle)]
static TRACER_NS: TracerNs = TracerNs {
    dev: 0,
    ino: 0,
    tgid: 0,
    _pad: 0,
};

/// The filters (set at load).
#[unsafe(no_mangle)]
static FILTERS: Filters = Filters {
    enabled: 0,
    out_kinds: 0,
    min_bytes: 0,
    cgroup_count: 0,
    _pad: 0,
    cgroups: [[0; 2]; MAX_CGROUP_FILTERS],
};

/// Wake the reader only once this many bytes wait in the ring (set at load); below it the
/// reader polls on its own timer. One wakeup per record would cost more than the record.
#[unsafe(no_mangle)]
static WAKEUP_BYTES: Global<u64> = Global::new(1 << 20);

const EEXIST: i32 = 17;

/// One field of a struct global (`FILTERS`), read alone: `Global::load` would copy the whole
/// struct, cgroup table included, onto the BPF stack. Scalars are `Global`s.
macro_rules! global {
    ($e:expr) => {
        // SAFETY: read-only globals that userspace sets before load.
        unsafe { core::ptr::read_volatile(&$e) }
    };
}

/// Counts a loss; the first one of each reason on a CPU is also logged (aya-log, shown with
/// `-v`). The log level is a frozen load-time global, so without `-v` the verifier sees the log
/// branch as dead and neither verifies nor runs it: the counting path costs what it did.
#[inline(always)]
pub(crate) fn count_lost(reason: u32) {
    if let Some(p) = LOST.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot: nothing else on this CPU writes it concurrently with us.
        let n = unsafe {
            *p += 1;
            *p
        };
        if n == 1 {
            // `reason` is a constant at every call site, so one branch remains.
            match reason {
                lost::RING_BUFFER_FULL => warn!(
                    &(),
                    "ring buffer full: records lost (counted in events_lost; first on this CPU)"
                ),
                lost::IN_FLIGHT_FULL => warn!(
                    &(),
                    "in-flight map full: a call not followed (counted; first on this CPU)"
                ),
                _ => warn!(
                    &(),
                    "an exit was never seen: a call lost (counted as missed_exit; first on this CPU)"
                ),
            }
        }
    }
}

/// Wakeup flag for a ring-buffer write of `size` bytes: wake the reader only when this write
/// makes the waiting bytes cross `WAKEUP_BYTES`, once, not on every write above it (each wakeup
/// is an interrupt on this CPU). Below it, and above it until the reader drains, the reader's own
/// timer picks the records up. `reserved`: the write is already counted in the ring's data.
#[inline(always)]
pub(crate) fn wakeup(size: u64, reserved: bool) -> u64 {
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let (before, after) = if reserved {
        (avail.saturating_sub(size), avail)
    } else {
        (avail, avail + size)
    };
    let threshold = WAKEUP_BYTES.load();
    if before < threshold && after >= threshold {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Reads the offset the user's pointer points to; `None` if the pointer is unreadable.
#[inline(always)]
pub(crate) fn read_offset(ptr: u64, f: u32) -> Option<i64> {
    // SAFETY: bpf_probe_read_user validates the user address and fails cleanly.
    unsafe {
        if f & flags::OFFSET_32BIT != 0 {
            bpf_probe_read_user(ptr as *const i32).ok().map(i64::from)
        } else {
            bpf_probe_read_user(ptr as *const i64).ok()
        }
    }
}

/// The filters that need nothing but helpers, cheapest first.
#[inline(always)]
fn admitted(enabled: u32, pid_tgid: u64) -> bool {
    if enabled & filter::PID != 0 {
        let tgid = (pid_tgid >> 32) as u32;
        // SAFETY: the value is only tested for presence.
        if unsafe { FILTER_PIDS.get(&tgid) }.is_none() {
            return false;
        }
    }
    if enabled & filter::UID != 0 {
        let uid = bpf_get_current_uid_gid() as u32;
        // SAFETY: as above.
        if unsafe { FILTER_UIDS.get(&uid) }.is_none() {
            return false;
        }
    }
    if enabled & filter::COMM != 0 {
        let comm = crate::kernel::current_comm();
        // SAFETY: as above.
        if unsafe { FILTER_COMMS.get(&comm) }.is_none() {
            return false;
        }
    }
    if enabled & filter::CGROUP != 0 {
        let n = global!(FILTERS.cgroup_count) as usize;
        let mut hit = false;
        for i in 0..MAX_CGROUP_FILTERS {
            if i >= n {
                break;
            }
            let [level, id] = global!(FILTERS.cgroups[i]);
            // SAFETY: helper without preconditions.
            if unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) } == id {
                hit = true;
                break;
            }
        }
        if !hit {
            return false;
        }
    }
    true
}

/// Whether the caller is the tracer itself.
#[inline(always)]
fn is_tracer(pid_tgid: u64) -> bool {
    let host = TRACER_TGID.load();
    if host != 0 {
        // In the initial pid namespace: the tgid the kernel reports is the tracer's getpid().
        return (pid_tgid >> 32) as u32 == host;
    }
    let ns = global!(TRACER_NS);
    if ns.ino == 0 {
        return false;
    }
    let mut info = bpf_pidns_info { pid: 0, tgid: 0 };
    // SAFETY: `info` is a stack struct of the size passed. The helper answers only for a caller
    // whose own pid namespace is (dev, ino), and fails (non-zero) for every other caller, which
    // is then not the tracer.
    let r = unsafe {
        bpf_get_ns_current_pid_tgid(
            ns.dev,
            ns.ino,
            &mut info,
            size_of::<bpf_pidns_info>() as u32,
        )
    };
    r == 0 && info.tgid == ns.tgid
}

/// Syscall entry: filter, save the arguments, and write the entry record.
#[inline(always)]
pub fn enter(args: Args, hook: u32) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if is_tracer(pid_tgid) {
        return;
    }
    let task = crate::kernel::current_task();
    let table = fd::table(task);
    let out = fd::lookup(table, args.out_fd);
    // Flows: a call of an open flow is only counted (filters applied when the flow was created).
    let mode = flow::mode();
    let mut flow_key = None;
    if mode & sendfile_trace_common::flow::mode::FLOWS != 0
        && let Some(key) = flow::key(pid_tgid, table, &args, out)
    {
        if flow::count(key, pid_tgid, &args) {
            return;
        }
        flow_key = Some(key);
    }
    let enabled = global!(FILTERS.enabled);
    if enabled != 0 && !admitted(enabled, pid_tgid) {
        return;
    }
    if enabled & filter::OUT_TYPE != 0 {
        let mut k = fd_kind::UNKNOWN;
        if fd::is_file(out)
            && let Some(kind) = fd::kind_of(out)
        {
            k = kind;
        }
        if global!(FILTERS.out_kinds) & (1u32 << (k & 31)) == 0 {
            return;
        }
    }

    let mut f = args.flags;
    let mut offset_before = 0;
    if args.offset_ptr != 0
        && let Some(v) = read_offset(args.offset_ptr, f)
    {
        offset_before = v;
        f |= flags::OFFSET_BEFORE_VALID;
    }
    // SAFETY: helper calls without preconditions.
    let start_ns = unsafe { bpf_ktime_get_boot_ns() };
    // Calls mode with a rate limit: calls beyond it are folded into flows.
    let mut throttled = false;
    if flow_key.is_none()
        && mode & sendfile_trace_common::flow::mode::RATE_LIMIT != 0
        && flow::over_limit(pid_tgid, start_ns)
        && let Some(key) = flow::key(pid_tgid, table, &args, out)
    {
        if flow::count(key, pid_tgid, &args) {
            return;
        }
        flow_key = Some(key);
        throttled = true;
    }
    // A new flow needs a free slot; without one the call is traced on its own, marked.
    let slot = match flow_key {
        Some(_) => {
            let s = flow::take_slot();
            if s.is_none() {
                f |= flags::FLOW_FALLBACK;
            }
            s
        }
        None => None,
    };
    // The flow decision and the flags go through map memory across the resolution: the
    // verifier does not track values kept there, so whichever of the flow paths above was
    // taken, it enters the long path walks in one state and verifies them once, not once per
    // path (with the rate limit on, that was past the 1M-instruction limit).
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's scratch value (programs of these hooks do not nest on one CPU).
    unsafe {
        core::ptr::write_volatile(&mut (*scratch).flow_slot, slot.unwrap_or(NO_SLOT));
        core::ptr::write_volatile(&mut (*scratch).flow_throttled, u32::from(throttled));
        core::ptr::write_volatile(&mut (*scratch).flow_flags, f);
    }
    let written = write_entry(task, table, &args, out, pid_tgid, start_ns);
    // SAFETY: as above.
    let (slot, throttled, mut f) = unsafe {
        (
            core::ptr::read_volatile(&(*scratch).flow_slot),
            core::ptr::read_volatile(&(*scratch).flow_throttled) != 0,
            core::ptr::read_volatile(&(*scratch).flow_flags),
        )
    };
    let slot = (slot != NO_SLOT).then_some(slot);
    let flow_key = slot.and_then(|_| flow::current_key());
    if !written {
        f |= flags::ENTRY_LOST;
        if let Some(s) = slot {
            flow::give_back(s);
        }
    } else if let (Some(key), Some(s)) = (flow_key, slot) {
        // The entry record just written describes the flow: announce it and count the call.
        if flow::open(
            key,
            s,
            &args,
            pid_tgid,
            start_ns,
            offset_before,
            f,
            hook,
            throttled,
        ) {
            return;
        }
        f |= flags::FLOW_FALLBACK;
    }
    let entry = InFlight {
        start_ns,
        offset_ptr: args.offset_ptr,
        offset_before,
        count: args.count,
        out_fd: args.out_fd,
        in_fd: args.in_fd,
        // SAFETY: a helper call without preconditions.
        cpu: unsafe { bpf_get_smp_processor_id() },
        flags: f,
        syscall_nr: args.syscall_nr,
        hook,
        flow_slot: 0,
        _pad: 0,
    };
    follow(pid_tgid, &entry);
}

/// Remembers a call until its exit: a single call, or one counted in the flow slot it holds
/// ([`flags::FLOW_CALL`]). One map for both, so that the exit finds either with one lookup.
/// A thread's previous call still remembered (its exit never seen) is counted as a missed exit
/// and releases the slot it held; a full map counts this call lost and releases its hold.
#[inline(always)]
pub(crate) fn follow(pid_tgid: u64, entry: &InFlight) {
    match IN_FLIGHT.insert(&pid_tgid, entry, BPF_NOEXIST.into()) {
        Ok(()) => {}
        Err(e) if e == -EEXIST => {
            if let Some(old) = IN_FLIGHT.get_ptr(&pid_tgid) {
                // SAFETY: a live map value, read before it is replaced below.
                let (old_flags, old_slot) = unsafe { ((*old).flags, (*old).flow_slot) };
                if old_flags & flags::FLOW_CALL != 0 {
                    flow::release(old_slot);
                }
            }
            count_lost(lost::MISSED_EXIT);
            let _ = IN_FLIGHT.insert(&pid_tgid, entry, BPF_ANY.into());
        }
        Err(_) => {
            if entry.flags & flags::FLOW_CALL != 0 {
                flow::release(entry.flow_slot);
            }
            count_lost(lost::IN_FLIGHT_FULL);
        }
    }
}

/// Words in an [`EntryRecord`].
const ENTRY_WORDS: usize = core::mem::size_of::<EntryRecord>() / 8;
const _: () = assert!(core::mem::size_of::<EntryRecord>().is_multiple_of(8));
const _: () = assert!(core::mem::align_of::<EntryRecord>() == 8);

/// Stores zero in `words` u64 words from `p`. Volatile, so that the compiler keeps word stores
/// (fully unrolled for a constant count) instead of turning them into a byte-wise `memset` call.
///
/// # Safety
/// `p` must be 8-byte aligned and valid for `words` u64 writes.
#[inline(always)]
unsafe fn zero_words(p: *mut u64, words: usize) {
    for i in 0..words {
        // SAFETY: `i < words`: within what the caller vouches for.
        unsafe { core::ptr::write_volatile(p.add(i), 0) };
    }
}

/// Resolves both descriptors and the process into this CPU's scratch record and writes it to
/// the ring; false if it could not be written.
#[inline(always)]
fn write_entry(
    task: u64,
    table: (u64, u32),
    args: &Args,
    out: u64,
    pid_tgid: u64,
    start_ns: u64,
) -> bool {
    let Some(s) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's scratch value; BPF programs do not nest on one CPU for these hooks.
    let s = unsafe { &mut *s };
    // Zeroed a word at a time: `s.rec = EntryRecord { .. }` compiles to a call of aya-ebpf's
    // `memset`, one byte per loop turn (224 bytes: about 4% of a traced call, see docs/bench.md).
    // SAFETY: the record is this CPU's, 8-byte aligned, and a whole number of words (checked at
    // compile time below); all-zero bytes are a valid EntryRecord (plain integers).
    unsafe { zero_words(core::ptr::addr_of_mut!(s.rec).cast::<u64>(), ENTRY_WORDS) };
    s.rec.kind = kind::ENTRY;
    s.rec.pid_tgid = pid_tgid;
    s.rec.start_ns = start_ns;
    s.pos = 0;
    // SAFETY: this CPU's scratch value (see above).
    unsafe { core::ptr::write_volatile(&mut s.roots, fd::caller_roots()) };
    let mut t = fd::Tail {
        base: s.tail.as_mut_ptr(),
        pos: &mut s.pos,
        roots: &s.roots,
        window: &mut s.window,
        walk: &mut s.walk,
        flags: core::ptr::null_mut(),
    };
    fd::describe(&mut t, fd::lookup(table, args.in_fd), &mut s.rec.in_fd);
    fd::describe(&mut t, out, &mut s.rec.out_fd);
    let key = task::describe(&mut t, &mut s.rec, task, (pid_tgid >> 32) as u32);
    let used = t.pos();
    let tail_len = if used > TAIL_SIZE as u32 {
        TAIL_SIZE as u32
    } else {
        used
    };
    s.rec.tail_len = tail_len as u16;
    let size = core::mem::size_of::<EntryRecord>() as u64 + tail_len as u64;
    // SAFETY: `size` is within the scratch value (record plus at most TAIL_SIZE bytes).
    let ret = unsafe {
        bpf_ringbuf_output(
            core::ptr::addr_of!(EVENTS).cast_mut().cast(),
            (s as *mut Scratch).cast(),
            size,
            wakeup(size, false),
        )
    };
    if ret != 0 {
        // Not counted as a loss: the call's exit record still comes, and its event says that
        // its descriptors and process context were lost (userspace counts such events).
        return false;
    }
    if let Some(key) = key {
        task::remember((pid_tgid >> 32) as u32, &key);
    }
    true
}

/// Syscall exit: pair with the saved entry and emit one record.
#[inline(always)]
pub fn exit(ret: i64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    // SAFETY: the value is copied out before the entry is removed.
    let Some(entry) = (unsafe { IN_FLIGHT.get(&pid_tgid) }).copied() else {
        // Not followed: started before we attached, filtered out, or its loss is already counted.
        return;
    };
    let _ = IN_FLIGHT.remove(&pid_tgid);
    // SAFETY: a helper call without preconditions.
    let end_ns = unsafe { bpf_ktime_get_boot_ns() };
    if entry.flags & flags::FLOW_CALL != 0 {
        flow::exit(&entry, ret, end_ns);
        return;
    }

    let enabled = global!(FILTERS.enabled);
    let filtered_out = (enabled & filter::ERRORS_ONLY != 0 && ret >= 0)
        || (enabled & filter::MIN_BYTES != 0 && ret < global!(FILTERS.min_bytes) as i64);
    if filtered_out {
        if entry.flags & flags::ENTRY_LOST == 0 {
            let drop = DropRecord {
                kind: kind::DROP,
                _pad: 0,
                pid_tgid,
                start_ns: entry.start_ns,
            };
            if EVENTS
                .output(&drop, wakeup(size_of::<DropRecord>() as u64, false))
                .is_err()
            {
                count_lost(lost::RING_BUFFER_FULL);
            }
        }
        return;
    }

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
        kind: kind::EXIT,
        entry_status: if f & flags::ENTRY_LOST != 0 {
            entry_status::RING_FULL
        } else {
            entry_status::WRITTEN
        },
        start_ns: entry.start_ns,
        end_ns,
        pid_tgid,
        uid_gid: bpf_get_current_uid_gid(),
        // SAFETY: a helper call without preconditions.
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
        comm: crate::kernel::current_comm(),
    });
    slot.submit(wakeup(size_of::<SendfileRecord>() as u64, true));
}
