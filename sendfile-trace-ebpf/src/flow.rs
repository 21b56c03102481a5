//! Flows: sendfile calls counted in the kernel, per process and pair of open file descriptions.
//!
//! `--mode flows` counts every call here; in calls mode, `--max-events-per-process` folds the
//! calls of a process beyond its limit here. The first call of a flow goes through the same
//! resolution as calls mode (its entry record), followed by a [`FlowOpenRecord`] naming the slot
//! that counts the flow; every later call finds the flow by its key and only adds to the slot.
//!
//! # Why no increment is lost
//!
//! The counters live in `FLOW_SLOTS`, an mmapable array the daemon reads and resets with atomic
//! exchanges: an atomic add lands either before an exchange (and is in that record) or after it
//! (and is in the next one). Retiring a flow is the delicate part, because a call may have found
//! the flow's key just before the daemon deleted it. Each call holds the slot from entry to exit
//! with `in_flight`, and checks the slot's `generation` *after* taking that hold:
//!
//! - entry: `in_flight += 1` (atomic, full barrier), then load `generation`; if it is not the
//!   generation the key named, `in_flight -= 1` and the call starts a new flow instead;
//! - daemon: delete the key, `generation += 1` (atomic, full barrier), then wait until it loads
//!   `in_flight == 0`, and only then take the counters and return the slot to `FLOW_FREE`.
//!
//! Both sides write one word and then read the other's (Dekker's pattern, with sequentially
//! consistent atomics): if the daemon read `in_flight == 0` before a call's increment, that call
//! reads the new generation and backs off without touching the counters; otherwise the daemon
//! waits for the call, whose exit adds its result before releasing its hold. So every call adds
//! to exactly one flow, and a slot is reused only when no call can still add to it. Nothing
//! ever *stores* into `in_flight` (only adds), so a backing-off call cannot corrupt a slot's
//! next flow.

use core::intrinsics::{AtomicOrdering::SeqCst, atomic_xadd};

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_NOEXIST},
    helpers::{bpf_get_current_uid_gid, bpf_get_smp_processor_id},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, Queue},
};
use sendfile_trace_common::{
    InFlight, flags,
    flow::{
        FlowAbortRecord, FlowKey, FlowOpenRecord, FlowRef, FlowSlot, RateState, SLOTS,
        ThrottledRecord, errno_bucket, kind, slot_flags,
    },
    lost,
};

use crate::{
    capture::{EVENTS, count_lost, follow, read_offset, wakeup},
    fd,
    kernel::{off, ptr, read},
    regs::Args,
};

/// The flows, by key.
#[map(name = "FLOWS")]
static FLOWS: HashMap<FlowKey, FlowRef> = HashMap::with_max_entries(2 * SLOTS, 0);

/// The counters of each flow; mmapped by the daemon.
#[map(name = "FLOW_SLOTS")]
static FLOW_SLOTS: Array<FlowSlot> = Array::with_max_entries(SLOTS, BPF_F_MMAPABLE);

/// Free slots (the daemon fills it at start and returns retired slots).
#[map(name = "FLOW_FREE")]
static FLOW_FREE: Queue<u32> = Queue::with_max_entries(SLOTS, 0);

/// Rate-limit state by tgid (LRU: a process that stopped calling is forgotten).
#[map(name = "RATE")]
static RATE: LruHashMap<u32, RateState> = LruHashMap::with_max_entries(8192, 0);

/// A new [`RateState`] under construction, per CPU.
#[map(name = "RATE_NEW")]
static RATE_NEW: PerCpuArray<RateState> = PerCpuArray::with_max_entries(1, 0);

/// [`sendfile_trace_common::flow::mode`] bits (set at load).
#[unsafe(no_mangle)]
static FLOW_MODE: u32 = 0;

/// `--max-events-per-process`: calls per second and process (set at load; 0: off).
#[unsafe(no_mangle)]
static RATE_LIMIT: u64 = 0;

const NS_PER_S: u64 = 1_000_000_000;
/// The rate limit's bucket: a tenth of a second of credit.
const BUCKET_NS: u64 = NS_PER_S / 10;

/// The mode bits.
#[inline(always)]
pub fn mode() -> u32 {
    // SAFETY: a read-only global that userspace sets before load.
    unsafe { core::ptr::read_volatile(&FLOW_MODE) }
}

/// One u64 word of a map value. Counters change only by atomic adds; the other words are
/// plain single-copy-atomic 64-bit loads and stores.
///
/// The object is built for BPF cpu v1 (`--cpu generic`), whose only atomic is `BPF_XADD` (add,
/// no fetched result): the bpf target has no `AtomicU64` read-modify-write methods, so `add` is
/// the compiler's intrinsic with its result unused, which LLVM lowers to `BPF_XADD`. On x86-64
/// the JIT emits `lock add` for it, a full memory barrier, which the hold-then-check order in
/// [`count`] relies on (see the module documentation).
#[derive(Clone, Copy)]
struct Word(*mut u64);

// SAFETY (all methods): the pointer is into a map value (8-byte aligned, alive while the program
// runs), and every concurrent read-modify-write of it, here and in the daemon's mmap, is atomic.
impl Word {
    /// Atomically adds `v` (wrapping; a negative number as its two's complement).
    #[inline(always)]
    fn add(self, v: u64) {
        // SAFETY: see the impl: an aligned, live map word, written only atomically.
        unsafe { atomic_xadd::<u64, u64, { SeqCst }>(self.0, v) };
    }
    /// Atomically subtracts `v`.
    #[inline(always)]
    fn sub(self, v: u64) {
        self.add(v.wrapping_neg());
    }
    /// A plain 64-bit load (single-copy atomic).
    #[inline(always)]
    fn load(self) -> u64 {
        // SAFETY: see the impl: an aligned, live map word.
        unsafe { core::ptr::read_volatile(self.0) }
    }
    /// A plain 64-bit store (single-copy atomic).
    #[inline(always)]
    fn store(self, v: u64) {
        // SAFETY: see the impl: an aligned, live map word.
        unsafe { core::ptr::write_volatile(self.0, v) }
    }
}

/// The word at a field pointer.
#[inline(always)]
fn word<T>(p: *mut T) -> Word {
    Word(p.cast())
}

/// The (super block, inode number) of an open file, or zeros if it is not one.
#[inline(always)]
fn identity(file: u64) -> (u64, u64) {
    if !fd::is_file(file) {
        return (0, 0);
    }
    let Some(inode) = ptr(file, off!(file_inode)) else {
        return (0, 0);
    };
    (
        read::<u64>(inode, off!(inode_sb)).unwrap_or(0),
        read::<u64>(inode, off!(inode_ino)).unwrap_or(0),
    )
}

/// The key being built on this CPU: in map memory, as the BPF stack is already nearly full.
#[map(name = "FLOW_KEY")]
static FLOW_KEY: PerCpuArray<FlowKey> = PerCpuArray::with_max_entries(1, 0);

/// The key [`key`] last built on this CPU (valid until the program ends, see there).
#[inline(always)]
pub fn current_key() -> Option<&'static FlowKey> {
    let k = FLOW_KEY.get_ptr(0)?;
    // SAFETY: this CPU's value, alive while the program runs.
    Some(unsafe { &*k })
}

/// The flow key of a call: the process and both open file descriptions (`out` already looked
/// up), each guarded by its inode's identity. Built in this CPU's `FLOW_KEY` value, which stays
/// valid until the program ends (programs of these hooks do not nest on one CPU).
#[inline(always)]
pub fn key(pid_tgid: u64, table: (u64, u32), args: &Args, out: u64) -> Option<&'static FlowKey> {
    let k = FLOW_KEY.get_ptr_mut(0)?;
    let in_file = fd::lookup(table, args.in_fd);
    let (in_sb, in_ino) = identity(in_file);
    let (out_sb, out_ino) = identity(out);
    // SAFETY: this CPU's value (see above).
    unsafe {
        (*k).tgid = (pid_tgid >> 32) as u32;
        (*k)._pad = 0;
        (*k).in_file = in_file;
        (*k).out_file = out;
        (*k).in_sb = in_sb;
        (*k).out_sb = out_sb;
        (*k).in_ino = in_ino;
        (*k).out_ino = out_ino;
        Some(&*k)
    }
}

/// Counts the call in the existing flow of `key`, if there is one: takes a hold on its slot and
/// remembers the call for its exit. True if the call is handled (counted, or its loss counted).
#[inline(always)]
pub fn count(key: &FlowKey, pid_tgid: u64, args: &Args) -> bool {
    // SAFETY: the value is copied out at once.
    let Some(r) = (unsafe { FLOWS.get(key) }).copied() else {
        return false;
    };
    let Some(s) = FLOW_SLOTS.get_ptr_mut(r.slot) else {
        return false;
    };
    // SAFETY: field pointers into the slot (no reference to the shared value is formed).
    let (held, generation) = unsafe {
        (
            word(core::ptr::addr_of_mut!((*s).in_flight)),
            word(core::ptr::addr_of_mut!((*s).generation)),
        )
    };
    // Hold first, then check the generation: see the module documentation.
    held.add(1);
    if generation.load() != r.generation {
        held.sub(1);
        return false;
    }
    hold(pid_tgid, r.slot, args);
    true
}

/// Remembers a call holding `slot` until its exit (in the in-flight map of single calls,
/// marked [`flags::FLOW_CALL`]: see [`follow`]).
#[inline(always)]
fn hold(pid_tgid: u64, slot: u32, args: &Args) {
    let call = InFlight {
        start_ns: 0,
        offset_ptr: args.offset_ptr,
        offset_before: 0,
        count: 0,
        out_fd: 0,
        in_fd: 0,
        cpu: 0,
        flags: args.flags | flags::FLOW_CALL,
        syscall_nr: 0,
        hook: 0,
        flow_slot: slot,
        _pad: 0,
    };
    follow(pid_tgid, &call);
}

/// Releases one hold on `slot`.
#[inline(always)]
pub(crate) fn release(slot: u32) {
    if let Some(s) = FLOW_SLOTS.get_ptr_mut(slot) {
        // SAFETY: a field pointer into the slot.
        word(unsafe { core::ptr::addr_of_mut!((*s).in_flight) }).sub(1);
    }
}

/// A free slot for a new flow; `None` when the table is full.
#[inline(always)]
pub fn take_slot() -> Option<u32> {
    FLOW_FREE.pop().ok().flatten()
}

/// Returns a slot nobody was told about to the free queue.
#[inline(always)]
pub fn give_back(slot: u32) {
    let _ = FLOW_FREE.push(&slot, 0);
}

/// Creates the flow of `key` in `slot` for the call whose entry record was just written: the
/// open record, then the key. False if the call must be traced as a single call instead (the
/// ring was full, or the flow vanished while another CPU was creating it).
///
/// The creating call is described by its arguments, thread, entry time, offset value before the
/// call, [`flags`], hook, and whether the rate limit folded it. (Passed one by one rather than
/// as a struct: the BPF stack of the entry programs has no room for a copy.)
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn open(
    key: &FlowKey,
    slot: u32,
    args: &Args,
    pid_tgid: u64,
    start_ns: u64,
    offset_before: i64,
    f: u32,
    hook: u32,
    throttled: bool,
) -> bool {
    let Some(s) = FLOW_SLOTS.get_ptr_mut(slot) else {
        give_back(slot);
        return false;
    };
    // SAFETY: field pointers into the slot. Nobody else adds to it yet (a call holding a stale
    // reference to its previous flow only adds and removes one hold, see the module docs).
    let (held, generation, last_ns, sflags) = unsafe {
        (
            word(core::ptr::addr_of_mut!((*s).in_flight)),
            word(core::ptr::addr_of_mut!((*s).generation)),
            word(core::ptr::addr_of_mut!((*s).last_ns)),
            word(core::ptr::addr_of_mut!((*s).flags)),
        )
    };
    held.add(1);
    last_ns.store(start_ns);
    let mut sf = 0;
    if f & flags::COMPAT != 0 {
        sf |= slot_flags::COMPAT;
    }
    if throttled {
        sf |= slot_flags::THROTTLED;
    }
    // Set before the flow is published: nobody else writes the slot's flags yet.
    sflags.store(sf);
    let generation = generation.load();
    let Some(mut rec) = EVENTS.reserve::<FlowOpenRecord>(0) else {
        held.sub(1);
        give_back(slot);
        count_lost(lost::RING_BUFFER_FULL);
        return false;
    };
    let p = rec.as_mut_ptr();
    // SAFETY: `p` is the reserved record; every field is written before it is submitted, one by
    // one, so that the record is never built on the (small) BPF stack.
    unsafe {
        (*p).kind = kind::OPEN;
        (*p).slot = slot;
        (*p).generation = generation;
        (*p).key = *key;
        (*p).pid_tgid = pid_tgid;
        (*p).start_ns = start_ns;
        (*p).uid_gid = bpf_get_current_uid_gid();
        (*p).cgroup_id = aya_ebpf::helpers::bpf_get_current_cgroup_id();
        (*p).offset_ptr = args.offset_ptr;
        (*p).offset_before = offset_before;
        (*p).out_fd = args.out_fd;
        (*p).in_fd = args.in_fd;
        (*p).cpu = bpf_get_smp_processor_id();
        (*p).flags = f;
        (*p).syscall_nr = args.syscall_nr;
        (*p).hook = hook;
        (*p).slot_flags = sf as u32;
        (*p)._pad = 0;
        (*p).comm = crate::kernel::current_comm();
    }
    rec.submit(wakeup(size_of::<FlowOpenRecord>() as u64, true));
    let r = FlowRef {
        slot,
        _pad: 0,
        generation,
    };
    if FLOWS.insert(key, &r, BPF_NOEXIST.into()).is_ok() {
        hold(pid_tgid, slot, args);
        return true;
    }
    // Another CPU created the same flow first (or the map is full): the daemon frees this slot
    // on the abort record (or, if that record is lost, retires it as an empty flow).
    held.sub(1);
    // If the ring is full, the abort record is not a loss: no call is in this slot, and the
    // daemon retires an announced flow that never counted a call without writing it. (Counting
    // it lost would count this call twice: it is counted in the other CPU's flow just below.)
    if let Some(mut a) = EVENTS.reserve::<FlowAbortRecord>(0) {
        a.write(FlowAbortRecord {
            kind: kind::ABORT,
            slot,
            generation,
        });
        a.submit(wakeup(size_of::<FlowAbortRecord>() as u64, true));
    }
    count(key, pid_tgid, args)
}

/// Syscall exit of a flow call (`c`, its in-flight entry, already removed): adds its result
/// to its slot and releases its hold.
#[inline(always)]
pub fn exit(c: &InFlight, ret: i64, now: u64) {
    let Some(s) = FLOW_SLOTS.get_ptr_mut(c.flow_slot) else {
        return;
    };
    // SAFETY: field pointers into the slot, which this call holds.
    unsafe {
        if ret >= 0 {
            word(core::ptr::addr_of_mut!((*s).bytes)).add(ret as u64);
        } else {
            let errno = (-ret) as u64;
            word(core::ptr::addr_of_mut!((*s).failed)).add(1);
            let b = errno_bucket(errno as u32);
            if let Some(e) = (*s).errnos.get_mut(b) {
                word(e).add(1);
            }
            word(core::ptr::addr_of_mut!((*s).last_errno)).store(errno);
            // First and last are approximate when calls of one flow fail concurrently.
            let first = word(core::ptr::addr_of_mut!((*s).first_errno));
            if first.load() == 0 {
                first.store(errno);
            }
        }
        word(core::ptr::addr_of_mut!((*s).calls)).add(1);
        let valid = if c.offset_ptr != 0
            && let Some(v) = read_offset(c.offset_ptr, c.flags)
        {
            word(core::ptr::addr_of_mut!((*s).offset_last)).store(v as u64);
            1
        } else {
            0
        };
        word(core::ptr::addr_of_mut!((*s).offset_last_valid)).store(valid);
        word(core::ptr::addr_of_mut!((*s).last_ns)).store(now);
        if c.flags & flags::COMPAT != 0 {
            // Only this bit is ever set after creation, so a plain read-modify-write is enough.
            let f = word(core::ptr::addr_of_mut!((*s).flags));
            f.store(f.load() | slot_flags::COMPAT);
        }
        // Last: the result is in the slot before the hold is released.
        word(core::ptr::addr_of_mut!((*s).in_flight)).sub(1);
    }
}

/// The per-process rate limit, a token bucket: true if this call is beyond the process's limit
/// (it is then folded into a flow). An event costs 10⁹ / limit ns of credit; credit accrues with
/// time and the bucket holds a tenth of a second of it, so a process gets `limit` events a second
/// in bursts of at most a tenth of that: a burst stays far within what the ring absorbs. The
/// first folded call of an episode writes a throttled record; the episode ends when the bucket
/// has filled up again.
#[inline(always)]
pub fn over_limit(pid_tgid: u64, now: u64) -> bool {
    // SAFETY: a read-only global that userspace sets before load (more than 0 in this mode).
    let limit = unsafe { core::ptr::read_volatile(&RATE_LIMIT) };
    let cost = NS_PER_S / limit.max(1);
    let cap = cost.max(BUCKET_NS);
    let tgid = (pid_tgid >> 32) as u32;
    let Some(p) = RATE.get_ptr_mut(&tgid) else {
        // The new value is built in map memory: the stack has no room for it.
        if let Some(fresh) = RATE_NEW.get_ptr_mut(0) {
            // SAFETY: this CPU's scratch value.
            unsafe {
                (*fresh).last_ns = now;
                (*fresh).credit_ns = cap - cost;
                (*fresh).throttled = 0;
                let _ = RATE.insert(&tgid, &*fresh, BPF_NOEXIST.into());
            }
        }
        return false;
    };
    // SAFETY: field pointers into the map value. Threads of one process race on these plain
    // loads and stores: a lost update gives or takes an event's credit, which blurs the limit by
    // a few calls, never the accounting (each call still goes one way, and the credit is only
    // ever stored as a value computed from one load, so it cannot wrap).
    let (last, credit, throttled) = unsafe {
        (
            word(core::ptr::addr_of_mut!((*p).last_ns)),
            word(core::ptr::addr_of_mut!((*p).credit_ns)),
            word(core::ptr::addr_of_mut!((*p).throttled)),
        )
    };
    let gap = now.saturating_sub(last.load());
    last.store(now);
    let c = credit.load().saturating_add(gap).min(cap);
    if c == cap && throttled.load() != 0 {
        // The process stayed within its limit long enough to fill the bucket: a later episode
        // is announced again. (Stored only when set: a process within its limit does not
        // write the word on every call.)
        throttled.store(0);
    }
    if c >= cost {
        credit.store(c - cost);
        return false;
    }
    credit.store(c);
    if throttled.load() == 0 {
        // Two threads racing here may both write a throttled record; never none.
        throttled.store(1);
        match EVENTS.reserve::<ThrottledRecord>(0) {
            Some(mut r) => {
                let p = r.as_mut_ptr();
                // SAFETY: the reserved record, written field by field (not built on the stack).
                unsafe {
                    (*p).kind = kind::THROTTLED;
                    (*p)._pad = 0;
                    (*p).pid_tgid = pid_tgid;
                    (*p).time_ns = now;
                    (*p).uid_gid = bpf_get_current_uid_gid();
                    (*p).limit = limit;
                    (*p).comm = crate::kernel::current_comm();
                }
                r.submit(wakeup(size_of::<ThrottledRecord>() as u64, true));
            }
            // The ring is full: the next folded call of the episode tries again. Not a loss:
            // this call is folded (counted in its flow, whose records say `throttled`), and a
            // loss counted here would count it twice.
            None => throttled.store(0),
        }
    }
    true
}
