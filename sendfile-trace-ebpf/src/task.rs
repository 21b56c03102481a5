//! The caller's process context, read from its `task_struct` at syscall entry: ids in its own
//! and the host pid namespace, parent, thread start time, namespaces, executable, cgroup.

use sendfile_trace_common::{EntryRecord, fd_flags};

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

/// Fills the process fields of `rec` for the current `task`.
#[inline(always)]
pub fn describe(t: &mut Tail, rec: &mut EntryRecord, task: u64) {
    rec.thread_start_ns = read::<u64>(task, off!(task_start_boottime)).unwrap_or(0);
    let parent = ptr(task, off!(task_real_parent));
    if let Some(p) = parent {
        rec.host_ppid = read::<u32>(p, off!(task_tgid)).unwrap_or(0);
    }
    if let Some(pid) = ptr(task, off!(task_thread_pid)) {
        // Nesting is at most 32 levels (MAX_PID_NS_LEVEL).
        let level = (read::<u32>(pid, off!(pid_level)).unwrap_or(0) & 31) as u64;
        let upid = pid + off!(pid_numbers) + level * off!(upid_size);
        rec.ns_tid = read::<u32>(upid, off!(upid_nr)).unwrap_or(0);
        if let Some(ns) = ptr(upid, off!(upid_ns)) {
            rec.pid_ns = read::<u32>(ns, off!(pid_ns_inum)).unwrap_or(0);
            rec.ns_tgid = tgid_in(task, level, ns);
            if let Some(p) = parent {
                rec.ns_ppid = tgid_in(p, level, ns);
            }
        }
    }
    rec.mnt_ns = ptr(task, off!(task_nsproxy))
        .and_then(|nsp| ptr(nsp, off!(nsproxy_mnt_ns)))
        .and_then(|mnt_ns| read::<u32>(mnt_ns, off!(mnt_ns_inum)))
        .unwrap_or(0);
    let exe = ptr(task, off!(task_mm)).and_then(|mm| ptr(mm, off!(mm_exe_file)));
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
    let kn = ptr(task, off!(task_cgroups))
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
}
