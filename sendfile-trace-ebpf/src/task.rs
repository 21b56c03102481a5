//! The caller's process context, read from its `task_struct` at syscall entry: ids in its own
//! and the host pid namespace, parent, thread start time, namespaces, executable, cgroup.

use aya_ebpf::{macros::map, maps::LruHashMap};
use sendfile_trace_common::{EntryRecord, PROC_CACHE_SIZE, fd_flags};

use crate::{
    fd::{Tail, walk_path},
    kernel::{off, ptr, read},
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
    rec.thread_start_ns = read::<u64>(task, off!(task_start_boottime)).unwrap_or(0);
    let parent = ptr(task, off!(task_real_parent));
    let mm = ptr(task, off!(task_mm));
    let exe = mm.and_then(|mm| ptr(mm, off!(mm_exe_file)));
    let cgroups = ptr(task, off!(task_cgroups));
    let nsproxy = ptr(task, off!(task_nsproxy));
    let key = ProcKey {
        mm: mm.unwrap_or(0),
        exe_file: exe.unwrap_or(0),
        cgroups: cgroups.unwrap_or(0),
        nsproxy: nsproxy.unwrap_or(0),
        real_parent: parent.unwrap_or(0),
        leader_pid: ptr(task, off!(task_group_leader))
            .and_then(|l| ptr(l, off!(task_thread_pid)))
            .unwrap_or(0),
    };
    // SAFETY: the value is only compared.
    let cached = unsafe { PROC_CACHE.get(&tgid) }.is_some_and(|k| *k == key);
    let pid = ptr(task, off!(task_thread_pid))?;
    // Nesting is at most 32 levels (MAX_PID_NS_LEVEL).
    let level = (read::<u32>(pid, off!(pid_level)).unwrap_or(0) & 31) as u64;
    let upid = pid + off!(pid_numbers) + level * off!(upid_size);
    rec.ns_tid = read::<u32>(upid, off!(upid_nr)).unwrap_or(0);
    if cached {
        rec.flags |= fd_flags::PROC_CACHED;
        return None;
    }
    if let Some(p) = parent {
        rec.host_ppid = read::<u32>(p, off!(task_tgid)).unwrap_or(0);
    }
    if let Some(ns) = ptr(upid, off!(upid_ns)) {
        rec.pid_ns = read::<u32>(ns, off!(pid_ns_inum)).unwrap_or(0);
        rec.ns_tgid = tgid_in(task, level, ns);
        if let Some(p) = parent {
            rec.ns_ppid = tgid_in(p, level, ns);
        }
    }
    rec.mnt_ns = nsproxy
        .and_then(|nsp| ptr(nsp, off!(nsproxy_mnt_ns)))
        .and_then(|mnt_ns| read::<u32>(mnt_ns, off!(mnt_ns_inum)))
        .unwrap_or(0);
    match exe.and_then(|f| {
        Some((
            ptr(f, off!(file_path_dentry))?,
            ptr(f, off!(file_path_mnt))?,
        ))
    }) {
        Some((dentry, mnt)) => walk_path(
            t,
            dentry,
            mnt,
            &mut rec.exe,
            &mut rec.flags,
            fd_flags::EXE_TRUNCATED,
        ),
        None => rec.flags |= fd_flags::NO_EXE,
    }
    let kn = cgroups
        .and_then(|cset| ptr(cset, off!(css_set_dfl_cgrp)))
        .and_then(|cgrp| ptr(cgrp, off!(cgroup_kn)));
    if let Some(kn) = kn {
        if let Some(name) = ptr(kn, off!(kn_name)) {
            t.push_str(name, &mut rec.cgroup_name);
        }
        if let Some(name) = ptr(kn, off!(kn_parent)).and_then(|p| ptr(p, off!(kn_name))) {
            t.push_str(name, &mut rec.cgroup_parent);
        }
    }
    Some(key)
}
