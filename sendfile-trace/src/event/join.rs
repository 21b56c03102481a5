//! The entry/exit join: pure bookkeeping over ring-buffer bytes, no kernel handles, so the daemon
//! and the userspace bench run the same code.
//!
//! An entry record waits, by thread, for its exit record; an exit record becomes one call with
//! the entry it matches (same thread and start time), or without one (counted as incomplete). A
//! drop record withdraws an entry filtered out at exit. The per-process part of a full entry
//! record is kept by tgid for the records that leave it out.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

/// foldhash's seeded hasher: several times cheaper than SipHash for the two lookups every call
/// makes, and still randomly seeded (keys are pids, which the kernel picks).
type FastHash = foldhash::fast::RandomState;

use sendfile_trace_common::{DropRecord, EntryRecord, SendfileRecord, kind, record_kind};

use super::{Entry, ProcCtx};

/// What one ring-buffer record completed.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "returned by value and matched at once, never stored; boxing would allocate per call"
)]
pub enum Joined {
    /// Nothing to write yet (an entry waiting for its exit, or a withdrawn entry).
    Waiting,
    /// A finished call and the entry record it matched, if any.
    Call(SendfileRecord, Option<Entry>),
    /// A record the daemon cannot decode (BPF object and daemon disagree): which kind.
    Malformed(&'static str),
}

/// Entry records waiting for their exit and the kept process parts.
#[derive(Debug, Default)]
pub struct Join {
    /// Entry records waiting for their exit record, by thread.
    pending: HashMap<u64, Entry, FastHash>,
    /// The process part of each process's last full entry record, and when it was last used.
    procs: HashMap<u32, (Arc<ProcCtx>, Instant), FastHash>,
    /// Calls completed without their entry record.
    pub incomplete: u64,
    /// Records that could not be decoded (each [`Joined::Malformed`]).
    pub malformed: u64,
}

impl Join {
    /// Takes one ring-buffer record; `now` stamps the use of a kept process part.
    pub fn push(&mut self, item: &[u8], now: Instant) -> Joined {
        let joined = self.join(item, now);
        if let Joined::Malformed(_) = joined {
            self.malformed += 1;
        }
        joined
    }

    fn join(&mut self, item: &[u8], now: Instant) -> Joined {
        match record_kind(item) {
            Some(kind::ENTRY) => match EntryRecord::from_bytes(item) {
                Some((rec, tail)) => {
                    let mut entry = Entry::new(rec, tail.to_vec());
                    let tgid = (rec.pid_tgid >> 32) as u32;
                    if entry.proc_cached() {
                        entry.proc = self.procs.get_mut(&tgid).map(|(p, seen)| {
                            *seen = now;
                            p.clone()
                        });
                    } else if let Some(p) = &entry.proc {
                        self.procs.insert(tgid, (p.clone(), now));
                    }
                    // A thread makes one call at a time: an older entry of it never got an exit.
                    self.pending.insert(rec.pid_tgid, entry);
                    Joined::Waiting
                }
                None => Joined::Malformed("entry"),
            },
            Some(kind::EXIT) => match SendfileRecord::from_bytes(item) {
                Some(r) => {
                    let entry = self
                        .pending
                        .remove(&r.pid_tgid)
                        .filter(|e| e.rec.start_ns == r.start_ns);
                    if entry.is_none() {
                        self.incomplete += 1;
                    }
                    Joined::Call(r, entry)
                }
                None => Joined::Malformed("exit"),
            },
            Some(kind::DROP) => match DropRecord::from_bytes(item) {
                Some(d) => {
                    if self
                        .pending
                        .get(&d.pid_tgid)
                        .is_some_and(|e| e.rec.start_ns == d.start_ns)
                    {
                        self.pending.remove(&d.pid_tgid);
                    }
                    Joined::Waiting
                }
                None => Joined::Malformed("drop"),
            },
            _ => Joined::Malformed("unknown"),
        }
    }

    /// Takes the entry record a thread wrote at `start_ns`, if it is the one waiting (a flow's
    /// first call: its entry record describes the flow, and no exit record follows).
    pub fn take_entry(&mut self, pid_tgid: u64, start_ns: u64) -> Option<Entry> {
        if self
            .pending
            .get(&pid_tgid)
            .is_some_and(|e| e.rec.start_ns == start_ns)
        {
            return self.pending.remove(&pid_tgid);
        }
        None
    }

    /// Bounds the kept process parts: past `keep` processes, forgets those unused for `idle`.
    /// Returns the tgids forgotten, which the kernel side must forget too (so that it sends their
    /// next record in full).
    pub fn trim_procs(&mut self, keep: usize, idle: Duration, now: Instant) -> Vec<u32> {
        if self.procs.len() <= keep {
            return Vec::new();
        }
        let idle: Vec<u32> = self
            .procs
            .iter()
            .filter(|(_, (_, seen))| now.duration_since(*seen) > idle)
            .map(|(tgid, _)| *tgid)
            .collect();
        for tgid in &idle {
            self.procs.remove(tgid);
        }
        idle
    }
}
