//! The caller's process context, read from its `task_struct` at syscall entry: ids in its own
//! and the host pid namespace, parent, thread start time, namespaces, executable, cgroup.

use aya_ebpf::{macros::map, maps::LruHashMap};
use sendfile_trace_common::{EntryRecord, PROC_CACHE_SIZE, fd_flags};

use crate::{
    fd::{PathBits, Tail, walk_path},
    kernel::{load, off, ptr, read},
};

/// The id of `task`'s thread group leader in pid namespace `ns` at `level`, or 0 if the task is
/// not visible there.
#[inline(always)]
fn tgid_in(task: u64, level: u64, ns: u64) -> u32 {
    let Some(pid) = ptr(task, off!(task_group_leader)).and_then(|l| ptr(l, off!(task_thread_pid)))
    else {
        return 0;
    };
    if (read::<u32>(pid, off!(pid_level)).unwrap_or(0) as u64) < level {
        return 0;
    }
    let upid = pid + off!(pid_numbers) + level * off!(upid_size);
    if ptr(upid, off!(upid_ns)) != Some(ns) {
        return 0;
    }
    read::<u32>(upid, off!(upid_nr)).unwrap_or(0)
}

/// What the per-process part of an entry record is derived from: if none of these pointers
/// changed since the process's last full record, neither did that part (exec changes `mm` and
/// `exe_file`, a cgroup move `cgroups`, setns/unshare `nsproxy`, reparenting `real_parent`).
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ProcKey {
    mm: u64,
    exe_file: u64,
    cgroups: u64,
    nsproxy: u64,
    real_parent: u64,
    leader_pid: u64,
}

/// The key each process had when its last full record was written, by tgid.
#[map(name = "PROC_CACHE")]
static PROC_CACHE: LruHashMap<u32, ProcKey> = LruHashMap::with_max_entries(PROC_CACHE_SIZE, 0);

/// Remembers that `tgid`'s full record with `key` is in the ring.
#[inline(always)]
pub fn remember(tgid: u32, key: &ProcKey) {
    let _ = PROC_CACHE.insert(&tgid, key, 0);
}

/// Fills the process fields of `rec` for the current `task`. Returns the key to [`remember`]
/// once the record is written, or `None` when the process part was left out because userspace
/// already has it (`PROC_CACHED`).
#[inline(always)]
pub fn describe(t: &mut Tail, rec: &mut EntryRecord, task: u64, tgid: u32) -> Option<ProcKey> {
    // `task` is BTF-typed: everything reached from it by `load` is a plain guarded load, and a
    // NULL anywhere on a chain reads as 0.
    rec.thread_start_ns = load(task, off!(task_start_boottime));
    let parent: u64 = load(task, off!(task_real_parent));
    let mm: u64 = load(task, off!(task_mm));
    let exe: u64 = load(mm, off!(mm_exe_file));
    let cgroups: u64 = load(task, off!(task_cgroups));
    let nsproxy: u64 = load(task, off!(task_nsproxy));
    let leader: u64 = load(task, off!(task_group_leader));
    let key = ProcKey {
        mm,
        exe_file: exe,
        cgroups,
        nsproxy,
        real_parent: parent,
        leader_pid: load(leader, off!(task_thread_pid)),
    };
    // SAFETY: the value is only compared.
    let cached = unsafe { PROC_CACHE.get(&tgid) }.is_some_and(|k| *k == key);
    // Read, not loaded: `upid` below is computed from it, and older verifiers refuse variable
    // arithmetic on a BTF-typed pointer.
    let pid = ptr(task, off!(task_thread_pid))?;
    // Nesting is at most 32 levels (MAX_PID_NS_LEVEL).
    let level = (read::<u32>(pid, off!(pid_level)).unwrap_or(0) & 31) as u64;
    let upid = pid + off!(pid_numbers) + level * off!(upid_size);
    rec.ns_tid = read::<u32>(upid, off!(upid_nr)).unwrap_or(0);
    if cached {
        rec.flags |= fd_flags::PROC_CACHED;
        return None;
    }
    rec.host_ppid = load(parent, off!(task_tgid));
    if let Some(ns) = ptr(upid, off!(upid_ns)) {
        rec.pid_ns = read::<u32>(ns, off!(pid_ns_inum)).unwrap_or(0);
        rec.ns_tgid = tgid_in(task, level, ns);
        if parent != 0 {
            rec.ns_ppid = tgid_in(parent, level, ns);
        }
    }
    rec.mnt_ns = load(
        load::<u64>(nsproxy, off!(nsproxy_mnt_ns)),
        off!(mnt_ns_inum),
    );
    let dentry: u64 = load(exe, off!(file_path_dentry));
    let mnt: u64 = load(exe, off!(file_path_mnt));
    match (dentry, mnt) {
        (0, _) | (_, 0) => rec.flags |= fd_flags::NO_EXE,
        (dentry, mnt) => walk_path(t, dentry, mnt, &mut rec.exe, &mut rec.flags, PathBits::EXE),
    }
    let kn: u64 = load(
        load::<u64>(cgroups, off!(css_set_dfl_cgrp)),
        off!(cgroup_kn),
    );
    let name: u64 = load(kn, off!(kn_name));
    if name != 0 {
        t.push_str(name, &mut rec.cgroup_name);
    }
    let name: u64 = load(load::<u64>(kn, off!(kn_parent)), off!(kn_name));
    if name != 0 {
        t.push_str(name, &mut rec.cgroup_parent);
    }
    Some(key)
}
