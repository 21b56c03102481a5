//! Flows: the `sendfile_flow` record and the daemon's bookkeeping of the flows the kernel counts.
//!
//! The kernel announces each flow once (its first call's entry record, then a flow open record
//! naming the slot that counts it); [`FlowTable`] keeps what was announced by slot, and on each
//! sweep takes the counters of flows that are due (idle, interval) with atomic exchanges, retiring
//! idle flows in two steps so that no call is lost: forget the key and bump the slot's generation,
//! then, once no call holds the slot any more, take the last counts and free the slot.

use std::{borrow::Cow, collections::BTreeMap, collections::HashMap};

use sendfile_trace_common::{
    Hook, flags,
    flow::{
        ERRNO_BUCKETS, ERRNOS, FlowAbortRecord, FlowOpenRecord, ThrottledRecord, kind, slot_flags,
        word,
    },
    record_kind,
};
use serde::Serialize;

use super::{
    Enricher, Entry, Executable, FdInfo, comm_bytes, decode::fd_info, decode::hex,
    decode::unresolved, errno_name, join::Join,
};
use crate::{SCHEMA_VERSION, kernel::flows::FlowKernel};

/// Why a flow record was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No call for `--flow-idle`: the flow is over.
    Idle,
    /// `--flow-interval` passed with new calls: an interim record (`final: false`).
    Interval,
    /// The tracer stopped.
    Stop,
    /// The flow table was nearly full: the least recently active flows were closed early.
    Evicted,
}

impl Reason {
    /// The reason as written in records.
    pub fn name(self) -> &'static str {
        match self {
            Reason::Idle => "idle",
            Reason::Interval => "interval",
            Reason::Stop => "stop",
            Reason::Evicted => "evicted",
        }
    }
}

/// One flow record: the calls of one process between two open file descriptions, since the
/// flow's previous record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FlowEvent<'a> {
    /// Wall-clock ns of the latest call counted (the record's time).
    pub timestamp: u64,
    /// CPU of the flow's first call.
    pub processor_id: u32,
    /// Thread group id in the caller's own pid namespace.
    pub process_id: Option<u32>,
    /// Thread id (in its own pid namespace) of the flow's first call.
    pub thread_id: Option<u32>,
    /// Parent's thread group id in the caller's own pid namespace.
    pub parent_process_id: Option<u32>,
    /// Thread group id in the host pid namespace.
    pub host_process_id: u32,
    /// Thread id in the host pid namespace of the flow's first call.
    pub host_thread_id: u32,
    /// Parent's thread group id in the host pid namespace.
    pub host_parent_process_id: Option<u32>,
    /// Real uid at the flow's first call.
    pub user_id: u32,
    /// Real gid at the flow's first call.
    pub group_id: u32,
    /// comm of the first call's thread (invalid UTF-8 as U+FFFD; exact bytes in
    /// `processNameHex`).
    pub process_name: Cow<'a, str>,
    /// Hex of the exact comm bytes, present only when they are not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_name_hex: Option<String>,
    /// The program the process runs.
    pub executable: Option<Executable>,
    /// Wall-clock ns when the first call's thread started.
    pub thread_start_time: Option<u64>,
    /// Mount namespace inode.
    pub mount_namespace: Option<u32>,
    /// Pid namespace inode.
    pub pid_namespace: Option<u32>,
    /// Host name.
    pub host_name: &'a str,
    /// cgroup v2 id at the first call.
    pub cgroup_id: u64,
    /// Container id, or null.
    pub container_id: Option<String>,
    /// Always "sendfile_flow".
    pub event_name: &'static str,
    /// Identifies the flow across its records (unique within one run of the tracer).
    pub flow_id: u64,
    /// Why this record was written: `idle`, `interval`, `stop` or `evicted`.
    pub reason: Reason,
    /// False for an interim record (the flow goes on), true for its last record.
    #[serde(rename = "final")]
    pub is_final: bool,
    /// The syscall of the first call ("sendfile64" or, 32-bit, "sendfile").
    pub syscall: &'static str,
    /// in_fd as resolved at the flow's first call.
    pub in_fd: FdInfo,
    /// out_fd as resolved at the flow's first call.
    pub out_fd: FdInfo,
    /// Calls since the previous record of this flow.
    pub calls: u64,
    /// Bytes moved since the previous record (sum of positive returns).
    pub bytes: u64,
    /// Failed calls since the previous record.
    pub failed_calls: u64,
    /// Failed calls since the previous record by errno name (`EOTHER`: errnos not counted one
    /// by one; see `firstErrno`/`lastErrno`).
    pub errnos: BTreeMap<Cow<'static, str>, u64>,
    /// First errno of the flow, or null.
    pub first_errno: Option<Cow<'static, str>>,
    /// Latest errno of the flow, or null.
    pub last_errno: Option<Cow<'static, str>>,
    /// Calls of the flow so far, all records together.
    pub total_calls: u64,
    /// Bytes of the flow so far.
    pub total_bytes: u64,
    /// Failed calls of the flow so far.
    pub total_failed_calls: u64,
    /// Wall-clock ns at the entry of the flow's first call.
    pub first_timestamp: u64,
    /// Wall-clock ns at the exit of its latest call.
    pub last_timestamp: u64,
    /// Value at the offset pointer before the first call; null if NULL or unreadable.
    pub offset_first: Option<i64>,
    /// Value at the offset pointer after the latest call; null if NULL or unreadable.
    pub offset_last: Option<i64>,
    /// Some call of the flow was a 32-bit (ia32) one.
    pub is_compat: bool,
    /// The flow holds calls folded by `--max-events-per-process` (calls mode).
    pub throttled: bool,
    /// (`stop` records) calls that had entered but not returned when the tracer stopped: not
    /// counted above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub calls_in_progress: Option<u64>,
    /// The hook.
    pub hook: &'static str,
    /// Version of this contract.
    pub schema_version: u32,
}

/// Written when a process goes past `--max-events-per-process`: its calls beyond the limit are
/// folded into flow records (`"throttled": true`).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Throttled<'a> {
    /// Always "throttled".
    pub event_name: &'static str,
    /// Wall-clock ns of the first folded call.
    pub timestamp: u64,
    /// Host name.
    pub host_name: &'a str,
    /// Thread group id in the host pid namespace.
    pub host_process_id: u32,
    /// Thread id of the first folded call.
    pub host_thread_id: u32,
    /// Real uid.
    pub user_id: u32,
    /// comm of the thread (invalid UTF-8 as U+FFFD).
    pub process_name: Cow<'a, str>,
    /// Hex of the exact comm bytes when not valid UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process_name_hex: Option<String>,
    /// The limit, calls per second and process.
    pub limit: u64,
    /// Contract version.
    pub schema_version: u32,
}

impl Enricher {
    /// The throttled record for a kernel record.
    pub fn throttled<'a>(&'a self, r: &'a ThrottledRecord) -> Throttled<'a> {
        let comm = comm_bytes(&r.comm);
        let process_name = String::from_utf8_lossy(comm);
        let process_name_hex = matches!(process_name, Cow::Owned(_)).then(|| hex(comm));
        Throttled {
            event_name: "throttled",
            timestamp: self.clock.wall_ns(r.time_ns),
            host_name: &self.host_name,
            host_process_id: (r.pid_tgid >> 32) as u32,
            host_thread_id: r.pid_tgid as u32,
            user_id: r.uid_gid as u32,
            process_name,
            process_name_hex,
            limit: r.limit,
            schema_version: SCHEMA_VERSION,
        }
    }
}

/// Counts of one flow (since its previous record, or in total).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Calls.
    pub calls: u64,
    /// Bytes (sum of positive returns).
    pub bytes: u64,
    /// Failed calls.
    pub failed: u64,
    /// Failed calls by errno bucket.
    pub errnos: [u64; ERRNO_BUCKETS],
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.calls += o.calls;
        self.bytes += o.bytes;
        self.failed += o.failed;
        for (a, b) in self.errnos.iter_mut().zip(&o.errnos) {
            *a += b;
        }
    }
}

/// A flow the kernel announced and the daemon has not finished.
#[derive(Debug)]
struct OpenFlow {
    open: FlowOpenRecord,
    /// The first call's entry record (descriptors, process); `None` if it was not received.
    entry: Option<Entry>,
    id: u64,
    /// Counted but not yet written (records held back by `--min-bytes`/`--errors-only`).
    pending: Counts,
    /// Everything counted so far.
    total: Counts,
    /// Boot-clock ns of the flow's previous record (or of its creation).
    last_record_ns: u64,
    /// Retiring: its key is forgotten and its generation bumped; waiting for its holds to go.
    retiring: Option<Reason>,
}

/// Filters on a flow's totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct TotalsFilter {
    /// `--errors-only`: only flows with a failed call.
    pub errors_only: bool,
    /// `--min-bytes`: only flows that moved at least this many bytes.
    pub min_bytes: Option<u64>,
}

/// The timing of emission.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// `--flow-idle`, ns.
    pub idle_ns: u64,
    /// `--flow-interval`, ns.
    pub interval_ns: u64,
}

/// Everything a flow record is built from (owned, so the table can be borrowed again).
#[derive(Debug)]
pub struct FlowData {
    open: FlowOpenRecord,
    entry: Option<Entry>,
    id: u64,
    reason: Reason,
    delta: Counts,
    total: Counts,
    last_ns: u64,
    offset_last: Option<i64>,
    slot_flags: u64,
    first_errno: u64,
    last_errno: u64,
    in_progress: Option<u64>,
}

impl FlowData {
    /// Calls in this record.
    pub fn calls(&self) -> u64 {
        self.delta.calls
    }

    /// Whether the flow holds calls folded by the rate limit.
    pub fn throttled(&self) -> bool {
        self.slot_flags & slot_flags::THROTTLED != 0
    }

    /// Why it was written.
    pub fn reason(&self) -> Reason {
        self.reason
    }
}

/// Flow counters by the daemon: the flows announced, by slot.
#[derive(Debug)]
pub struct FlowTable {
    open: HashMap<u32, OpenFlow>,
    next_id: u64,
    timing: Timing,
    filter: TotalsFilter,
    /// Open records that named a slot already open (should not happen): counted, reported.
    pub anomalies: u64,
}

/// Below this many free slots, the least recently active flows are evicted.
const EVICT_BELOW: usize = sendfile_trace_common::flow::SLOTS as usize / 16;

impl FlowTable {
    /// An empty table.
    pub fn new(timing: Timing, filter: TotalsFilter) -> FlowTable {
        FlowTable {
            open: HashMap::new(),
            next_id: 1,
            timing,
            filter,
            anomalies: 0,
        }
    }

    /// Flows open now.
    pub fn open_flows(&self) -> usize {
        self.open.len()
    }

    /// Takes one of this module's ring-buffer records; the entry record of a new flow's first
    /// call is taken from `join`. Returns a throttled record to write, if that is what it was,
    /// or the kind of record that could not be decoded.
    pub fn push(
        &mut self,
        item: &[u8],
        join: &mut Join,
        k: &mut impl FlowKernel,
        now_ns: u64,
    ) -> Result<Option<ThrottledRecord>, &'static str> {
        match record_kind(item) {
            Some(kind::OPEN) => {
                let open = FlowOpenRecord::from_bytes(item).ok_or("flow open")?;
                let entry = join.take_entry(open.pid_tgid, open.start_ns);
                let id = self.next_id;
                self.next_id += 1;
                let old = self.open.insert(
                    open.slot,
                    OpenFlow {
                        open,
                        entry,
                        id,
                        pending: Counts::default(),
                        total: Counts::default(),
                        last_record_ns: now_ns,
                        retiring: None,
                    },
                );
                if old.is_some() {
                    self.anomalies += 1;
                    log::error!("flow slot {} announced while still open", open.slot);
                }
                Ok(None)
            }
            Some(kind::ABORT) => {
                let a = FlowAbortRecord::from_bytes(item).ok_or("flow abort")?;
                // The key was never published, so no call counts into the slot: free it now.
                if self
                    .open
                    .get(&a.slot)
                    .is_some_and(|f| f.open.generation == a.generation)
                {
                    self.open.remove(&a.slot);
                    k.free(a.slot);
                }
                Ok(None)
            }
            Some(kind::THROTTLED) => ThrottledRecord::from_bytes(item)
                .map(Some)
                .ok_or("throttled"),
            _ => Err("unknown flow"),
        }
    }

    /// Writes what is due at boot-clock time `now_ns`: interim records of flows whose interval
    /// passed, final records of idle flows (retired in two steps, see the module documentation)
    /// and, when the table is nearly full, of the least recently active flows (`evicted`).
    pub fn sweep(&mut self, now_ns: u64, k: &mut impl FlowKernel) -> Vec<FlowData> {
        let mut out = Vec::new();
        let slots: Vec<u32> = self.open.keys().copied().collect();
        for slot in slots {
            let (in_flight, last_ns) = {
                let s = k.slots();
                (s.load(slot, word::IN_FLIGHT), s.load(slot, word::LAST_NS))
            };
            let f = &self.open[&slot];
            if let Some(reason) = f.retiring {
                if in_flight == 0 {
                    out.extend(self.finish(slot, reason, None, k));
                }
                continue;
            }
            if in_flight == 0 && now_ns.saturating_sub(last_ns) >= self.timing.idle_ns {
                self.retire(slot, Reason::Idle, k, &mut out);
            } else if now_ns.saturating_sub(f.last_record_ns) >= self.timing.interval_ns {
                out.extend(self.interim(slot, now_ns, k));
            }
        }
        let free = sendfile_trace_common::flow::SLOTS as usize - self.open.len();
        if free < EVICT_BELOW {
            let mut by_age: Vec<(u64, u32)> = self
                .open
                .iter()
                .filter(|(_, f)| f.retiring.is_none())
                .map(|(&slot, _)| (k.slots().load(slot, word::LAST_NS), slot))
                .collect();
            by_age.sort_unstable();
            for (_, slot) in by_age.into_iter().take(2 * EVICT_BELOW - free) {
                self.retire(slot, Reason::Evicted, k, &mut out);
            }
        }
        out
    }

    /// Final records of every open flow (the programs are detached): what each slot holds now.
    pub fn stop(&mut self, k: &mut impl FlowKernel) -> Vec<FlowData> {
        let mut out = Vec::new();
        let mut slots: Vec<u32> = self.open.keys().copied().collect();
        slots.sort_unstable_by_key(|s| self.open[s].id);
        for slot in slots {
            // Calls still inside sendfile when the programs were detached will never add
            // their result: reported, not counted.
            let held = k.slots().load(slot, word::IN_FLIGHT);
            let reason = self.open[&slot].retiring.unwrap_or(Reason::Stop);
            out.extend(self.finish(slot, reason, Some(held), k));
        }
        out
    }

    /// First step of retiring: no new call finds the flow, and a call that found it just before
    /// sees the new generation and backs off. Finishes at once if no call holds the slot.
    fn retire(
        &mut self,
        slot: u32,
        reason: Reason,
        k: &mut impl FlowKernel,
        out: &mut Vec<FlowData>,
    ) {
        let Some(f) = self.open.get_mut(&slot) else {
            return;
        };
        k.forget(&f.open.key);
        k.slots()
            .word(slot, word::GENERATION)
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        f.retiring = Some(reason);
        // Read after the generation bump (sequentially consistent): see flow.rs in the kernel side.
        if k.slots().load(slot, word::IN_FLIGHT) == 0 {
            out.extend(self.finish(slot, reason, None, k));
        }
    }

    /// The calls since the previous record, leaving the flow open.
    fn interim(&mut self, slot: u32, now_ns: u64, k: &mut impl FlowKernel) -> Option<FlowData> {
        let s = k.slots();
        let delta = take_counts(s, slot);
        let f = self.open.get_mut(&slot)?;
        f.pending.add(&delta);
        f.total.add(&delta);
        if f.pending.calls == 0 || !passes(&self.filter, &f.total) {
            return None;
        }
        f.last_record_ns = now_ns;
        Some(FlowData {
            open: f.open,
            entry: f.entry.clone(),
            id: f.id,
            reason: Reason::Interval,
            delta: std::mem::take(&mut f.pending),
            total: f.total.clone(),
            last_ns: s.load(slot, word::LAST_NS),
            offset_last: (s.load(slot, word::OFFSET_LAST_VALID) == 1)
                .then(|| s.load(slot, word::OFFSET_LAST) as i64),
            slot_flags: s.load(slot, word::FLAGS),
            first_errno: s.load(slot, word::FIRST_ERRNO),
            last_errno: s.load(slot, word::LAST_ERRNO),
            in_progress: None,
        })
    }

    /// Last step: no call holds the slot (or the programs are gone): takes everything it holds,
    /// resets it (but `generation` and `in_flight`) and frees it.
    fn finish(
        &mut self,
        slot: u32,
        reason: Reason,
        in_progress: Option<u64>,
        k: &mut impl FlowKernel,
    ) -> Option<FlowData> {
        let mut f = self.open.remove(&slot)?;
        let s = k.slots();
        let delta = take_counts(s, slot);
        let last_ns = s.take(slot, word::LAST_NS);
        let offset_last = s.take(slot, word::OFFSET_LAST);
        let offset_valid = s.take(slot, word::OFFSET_LAST_VALID) == 1;
        let slot_flags = s.take(slot, word::FLAGS);
        let first_errno = s.take(slot, word::FIRST_ERRNO);
        let last_errno = s.take(slot, word::LAST_ERRNO);
        if in_progress.is_none() {
            k.free(slot);
        }
        f.pending.add(&delta);
        f.total.add(&delta);
        // A flow with no call at all was announced but never used (its abort record was lost).
        if f.total.calls == 0 || !passes(&self.filter, &f.total) {
            return None;
        }
        Some(FlowData {
            open: f.open,
            entry: f.entry,
            id: f.id,
            reason,
            delta: f.pending,
            total: f.total,
            last_ns,
            offset_last: offset_valid.then_some(offset_last as i64),
            slot_flags,
            first_errno,
            last_errno,
            in_progress,
        })
    }
}

/// Takes (reads and resets) the counters of a slot.
fn take_counts(s: &crate::kernel::flows::Slots, slot: u32) -> Counts {
    let mut c = Counts {
        calls: s.take(slot, word::CALLS),
        bytes: s.take(slot, word::BYTES),
        failed: s.take(slot, word::FAILED),
        errnos: [0; ERRNO_BUCKETS],
    };
    for (i, e) in c.errnos.iter_mut().enumerate() {
        *e = s.take(slot, word::ERRNOS + i);
    }
    c
}

/// Whether a flow's totals pass `--errors-only` and `--min-bytes`.
fn passes(filter: &TotalsFilter, total: &Counts) -> bool {
    (!filter.errors_only || total.failed > 0) && filter.min_bytes.is_none_or(|m| total.bytes >= m)
}

/// The name of an errno number.
fn errno_text(errno: u64) -> Option<Cow<'static, str>> {
    (errno != 0).then(|| errno_name(-(errno as i64)).unwrap_or(Cow::Borrowed("EOTHER")))
}

impl Enricher {
    /// The `sendfile_flow` record of flow data.
    pub fn flow_event<'a>(&'a self, d: &'a FlowData) -> FlowEvent<'a> {
        let o = &d.open;
        let comm = comm_bytes(&o.comm);
        let process_name = String::from_utf8_lossy(comm);
        let process_name_hex = matches!(process_name, Cow::Owned(_)).then(|| hex(comm));
        let compat = o.flags & flags::COMPAT != 0;
        let syscall = super::syscall_name(compat, o.syscall_nr);
        let entry = d.entry.as_ref();
        let (in_fd, out_fd) = match entry {
            Some(e) => (
                fd_info(o.in_fd, e, &e.rec.in_fd),
                fd_info(o.out_fd, e, &e.rec.out_fd),
            ),
            None => (
                unresolved(o.in_fd, "entry record missing"),
                unresolved(o.out_fd, "entry record missing"),
            ),
        };
        let proc = entry.and_then(|e| e.proc.as_deref());
        let mut errnos = BTreeMap::new();
        for (i, &n) in d.delta.errnos.iter().enumerate() {
            if n > 0 {
                let name = match ERRNOS.get(i) {
                    Some(&e) => errno_name(-i64::from(e)).unwrap_or(Cow::Borrowed("EOTHER")),
                    None => Cow::Borrowed("EOTHER"),
                };
                errnos.insert(name, n);
            }
        }
        let last_ns = if d.last_ns == 0 {
            o.start_ns
        } else {
            d.last_ns
        };
        FlowEvent {
            timestamp: self.clock.wall_ns(last_ns),
            processor_id: o.cpu,
            process_id: proc.map(|p| p.ns_tgid),
            thread_id: entry.map(|e| e.rec.ns_tid),
            parent_process_id: proc.map(|p| p.ns_ppid),
            host_process_id: (o.pid_tgid >> 32) as u32,
            host_thread_id: o.pid_tgid as u32,
            host_parent_process_id: proc.map(|p| p.host_ppid),
            user_id: o.uid_gid as u32,
            group_id: (o.uid_gid >> 32) as u32,
            process_name,
            process_name_hex,
            executable: proc.and_then(|p| p.executable.clone()),
            thread_start_time: entry.map(|e| self.clock.wall_ns(e.rec.thread_start_ns)),
            mount_namespace: proc.map(|p| p.mnt_ns),
            pid_namespace: proc.map(|p| p.pid_ns),
            host_name: &self.host_name,
            cgroup_id: o.cgroup_id,
            container_id: self.containers.id_of(o.cgroup_id),
            event_name: "sendfile_flow",
            flow_id: d.id,
            reason: d.reason,
            is_final: d.reason != Reason::Interval,
            syscall,
            in_fd,
            out_fd,
            calls: d.delta.calls,
            bytes: d.delta.bytes,
            failed_calls: d.delta.failed,
            errnos,
            first_errno: errno_text(d.first_errno),
            last_errno: errno_text(d.last_errno),
            total_calls: d.total.calls,
            total_bytes: d.total.bytes,
            total_failed_calls: d.total.failed,
            first_timestamp: self.clock.wall_ns(o.start_ns),
            last_timestamp: self.clock.wall_ns(last_ns),
            offset_first: (o.flags & flags::OFFSET_BEFORE_VALID != 0).then_some(o.offset_before),
            offset_last: d.offset_last,
            is_compat: compat || d.slot_flags & slot_flags::COMPAT != 0,
            throttled: d.throttled(),
            calls_in_progress: d.in_progress,
            hook: Hook::from_u32(o.hook).map_or("unknown", Hook::name),
            schema_version: SCHEMA_VERSION,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use sendfile_trace_common::flow::{FlowKey, FlowOpenRecord, kind, word};

    use super::*;
    use crate::kernel::flows::Slots;

    /// The kernel side as the table sees it: counters in plain memory, keys and free slots
    /// recorded.
    struct Fake {
        slots: Slots,
        forgotten: Vec<FlowKey>,
        freed: Vec<u32>,
    }

    impl FlowKernel for Fake {
        fn slots(&self) -> &Slots {
            &self.slots
        }
        fn forget(&mut self, key: &FlowKey) {
            self.forgotten.push(*key);
        }
        fn free(&mut self, slot: u32) {
            self.freed.push(slot);
        }
    }

    fn fake() -> Fake {
        Fake {
            slots: Slots::anonymous().unwrap(),
            forgotten: Vec::new(),
            freed: Vec::new(),
        }
    }

    fn bytes_of<T>(v: &T) -> Vec<u8> {
        // SAFETY: plain repr(C) records without implicit padding.
        unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
    }

    fn open(t: &mut FlowTable, k: &mut Fake, slot: u32, tgid: u32) {
        let rec = FlowOpenRecord {
            kind: kind::OPEN,
            slot,
            pid_tgid: u64::from(tgid) << 32 | u64::from(tgid),
            start_ns: 1_000,
            key: FlowKey {
                tgid,
                in_file: 0xffff_8880_0000_1000,
                ..FlowKey::default()
            },
            ..FlowOpenRecord::default()
        };
        let mut join = Join::default();
        assert!(
            t.push(&bytes_of(&rec), &mut join, k, 1_000)
                .unwrap()
                .is_none()
        );
    }

    /// What the kernel side does for one call: hold, add, release.
    fn call(k: &Fake, slot: u32, ret: i64, now: u64) {
        let s = &k.slots;
        s.word(slot, word::IN_FLIGHT).fetch_add(1, SeqCst);
        if ret >= 0 {
            s.word(slot, word::BYTES).fetch_add(ret as u64, SeqCst);
        } else {
            s.word(slot, word::FAILED).fetch_add(1, SeqCst);
            let b = sendfile_trace_common::flow::errno_bucket((-ret) as u32);
            s.word(slot, word::ERRNOS + b).fetch_add(1, SeqCst);
        }
        s.word(slot, word::CALLS).fetch_add(1, SeqCst);
        s.word(slot, word::LAST_NS).store(now, SeqCst);
        s.word(slot, word::IN_FLIGHT).fetch_sub(1, SeqCst);
    }

    const MS: u64 = 1_000_000;

    fn table(filter: TotalsFilter) -> FlowTable {
        table_idle(filter, 10)
    }

    fn table_idle(filter: TotalsFilter, idle_ms: u64) -> FlowTable {
        FlowTable::new(
            Timing {
                idle_ns: idle_ms * MS,
                interval_ns: 100 * MS,
            },
            filter,
        )
    }

    #[test]
    fn interim_records_chain_to_a_final_one_and_the_slot_is_freed() {
        let (mut t, mut k) = (table(TotalsFilter::default()), fake());
        open(&mut t, &mut k, 7, 42);
        for i in 0..5 {
            call(&k, 7, 100, 2 * MS + i);
        }
        // Not idle, not due: nothing.
        assert!(t.sweep(5 * MS, &mut k).is_empty());
        call(&k, 7, -11, 95 * MS);
        // The interval passed (since creation at 1000 ns): an interim record.
        let r = t.sweep(100 * MS + 1_000, &mut k);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].reason(), r[0].calls()), (Reason::Interval, 6));
        assert_eq!((r[0].delta.bytes, r[0].delta.failed), (500, 1));
        assert!(k.freed.is_empty() && k.forgotten.is_empty());
        call(&k, 7, 200, 101 * MS);
        // Idle: final record with the calls since the interim one and the running totals.
        let r = t.sweep(120 * MS, &mut k);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].reason(), r[0].calls()), (Reason::Idle, 1));
        assert_eq!((r[0].total.calls, r[0].total.bytes), (7, 700));
        assert_eq!((k.freed.clone(), k.forgotten.len()), (vec![7], 1));
        assert_eq!(k.slots.load(7, word::GENERATION), 1);
        for w in [word::CALLS, word::BYTES, word::FAILED, word::LAST_NS] {
            assert_eq!(k.slots.load(7, w), 0, "word {w} reset");
        }
        assert_eq!(t.open_flows(), 0);
    }

    #[test]
    fn a_call_in_flight_delays_retirement_until_it_adds_its_result() {
        let (mut t, mut k) = (table(TotalsFilter::default()), fake());
        open(&mut t, &mut k, 3, 42);
        call(&k, 3, 64, 2 * MS);
        // A call entered before the key was forgotten and has not returned yet.
        k.slots.word(3, word::IN_FLIGHT).fetch_add(1, SeqCst);
        k.slots.word(3, word::LAST_NS).store(0, SeqCst);
        // Held: not idle at all.
        assert!(t.sweep(50 * MS, &mut k).is_empty());
        assert!(k.forgotten.is_empty());
        // Force the retirement path with the hold still taken: the table waits.
        t.retire(3, Reason::Idle, &mut k, &mut Vec::new());
        assert_eq!(k.forgotten.len(), 1);
        assert!(t.sweep(60 * MS, &mut k).is_empty(), "waits for the hold");
        assert!(k.freed.is_empty());
        // The call returns: its result is added before its hold is released.
        k.slots.word(3, word::BYTES).fetch_add(64, SeqCst);
        k.slots.word(3, word::CALLS).fetch_add(1, SeqCst);
        k.slots.word(3, word::IN_FLIGHT).fetch_sub(1, SeqCst);
        let r = t.sweep(70 * MS, &mut k);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].total.calls, r[0].total.bytes), (2, 128));
        assert_eq!(k.freed, vec![3]);
    }

    #[test]
    fn totals_filters_hold_records_back_and_carry_their_counts() {
        let filter = TotalsFilter {
            errors_only: false,
            min_bytes: Some(1_000),
        };
        let (mut t, mut k) = (table_idle(filter, 1_000), fake());
        open(&mut t, &mut k, 1, 42);
        call(&k, 1, 600, 2 * MS);
        assert!(t.sweep(100 * MS + 1_000, &mut k).is_empty(), "600 < 1000");
        call(&k, 1, 600, 150 * MS);
        let r = t.sweep(210 * MS, &mut k);
        assert_eq!(
            r.len(),
            1,
            "carried counts are written once the totals pass"
        );
        assert_eq!(r[0].reason(), Reason::Interval);
        assert_eq!((r[0].delta.calls, r[0].delta.bytes), (2, 1_200));
        // A flow that never passes writes nothing, and its slot is still freed.
        open(&mut t, &mut k, 2, 43);
        call(&k, 2, 10, 300 * MS);
        assert!(t.sweep(1_400 * MS, &mut k).iter().all(|r| r.open.slot != 2));
        assert!(k.freed.contains(&2));
    }

    #[test]
    fn stop_writes_every_open_flow_with_calls_in_progress() {
        let (mut t, mut k) = (table(TotalsFilter::default()), fake());
        open(&mut t, &mut k, 5, 42);
        call(&k, 5, 64, 2 * MS);
        k.slots.word(5, word::IN_FLIGHT).fetch_add(1, SeqCst);
        let r = t.stop(&mut k);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].reason(), Reason::Stop);
        assert_eq!(r[0].in_progress, Some(1));
        assert_eq!(r[0].total.calls, 1);
    }

    #[test]
    fn an_aborted_flow_frees_its_slot_and_writes_nothing() {
        let (mut t, mut k) = (table(TotalsFilter::default()), fake());
        open(&mut t, &mut k, 9, 42);
        let a = sendfile_trace_common::flow::FlowAbortRecord {
            kind: kind::ABORT,
            slot: 9,
            generation: 0,
        };
        let mut join = Join::default();
        t.push(&bytes_of(&a), &mut join, &mut k, 2_000).unwrap();
        assert_eq!((t.open_flows(), k.freed.clone()), (0, vec![9]));
        assert!(
            k.forgotten.is_empty(),
            "the key belongs to the winning flow"
        );
    }
}
