//! Facts about the running system: privileges, kernel symbols, release, host name, clocks.

use crate::error::AttachError;
use std::{collections::HashSet, io::BufRead, path::Path};

/// Path of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const CAP_DAC_OVERRIDE: u32 = 1;
const CAP_DAC_READ_SEARCH: u32 = 2;

/// This process's effective capabilities (`CapEff` of /proc/self/status; 0 if unreadable).
fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0)
}

/// Whether this process may load tracing BPF programs (CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON).
pub fn has_bpf_privileges() -> bool {
    let cap_eff = effective_caps();
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
}

/// Why tracefs at `dir` cannot be searched: its mode and owner, and the capability missing.
fn tracefs_denied(dir: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let caps = effective_caps();
    let (mode, owner) = std::fs::metadata(dir).map_or((0, 0), |m| (m.mode() & 0o7777, m.uid()));
    let uid = nix::unistd::geteuid();
    let has = |c: u32| caps & (1u64 << c) != 0;
    let missing = if has(CAP_DAC_READ_SEARCH) || has(CAP_DAC_OVERRIDE) {
        // Not a capability matter: an LSM or a read-only mount refuses.
        "permission, though this process has CAP_DAC_READ_SEARCH (an LSM policy refuses it)"
    } else {
        "CAP_DAC_READ_SEARCH"
    };
    format!(
        "cannot look up the tracepoints in tracefs: {dir} is mode {mode:04o} owned by uid \
         {owner}, and this process (uid {uid}) lacks {missing}; grant CAP_DAC_READ_SEARCH \
         besides CAP_BPF and CAP_PERFMON, or run as root"
    )
}

/// Kernel symbols whose name contains `sendfile`, from /proc/kallsyms.
pub fn sendfile_symbols() -> std::io::Result<HashSet<String>> {
    let f = std::fs::File::open("/proc/kallsyms")?;
    let mut out = HashSet::new();
    for line in std::io::BufReader::with_capacity(1 << 16, f).lines() {
        let line = line?;
        if !line.contains("sendfile") {
            continue;
        }
        // "ffffffff81234560 T __x64_sys_sendfile64" (a module name may follow).
        if let Some(name) = line.split_whitespace().nth(2) {
            out.insert(name.to_owned());
        }
    }
    Ok(out)
}

/// Inode of the initial pid namespace (`PROC_PID_INIT_INO`), fixed by the kernel.
const INIT_PID_NS_INO: u64 = 0xEFFF_FFFC;

/// How the kernel side recognises the tracer's own calls.
#[derive(Clone, Copy, Debug, Default)]
pub struct TracerSelf {
    /// Our tgid as the kernel reports it, when we run in the initial pid namespace; else 0.
    pub host_tgid: u32,
    /// Our pid namespace and our tgid there.
    pub ns: sendfile_trace_common::TracerNs,
}

impl TracerSelf {
    /// This process. In the initial pid namespace `getpid()` is the kernel's tgid; elsewhere (a
    /// container without the host's pid namespace) it is not, and the kernel side asks
    /// `bpf_get_ns_current_pid_tgid` for the caller's tgid in our namespace instead.
    pub fn current() -> TracerSelf {
        let tgid = std::process::id();
        match nix::sys::stat::stat("/proc/self/ns/pid") {
            Ok(st) => {
                let dev = st.st_dev;
                let ns = sendfile_trace_common::TracerNs {
                    // The helper compares the kernel's dev_t (major << 20 | minor), not the
                    // encoding stat(2) returns.
                    dev: (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev)),
                    ino: st.st_ino,
                    tgid,
                    _pad: 0,
                };
                let host_tgid = if ns.ino == INIT_PID_NS_INO { tgid } else { 0 };
                TracerSelf { host_tgid, ns }
            }
            Err(e) => {
                log::warn!(
                    "cannot read /proc/self/ns/pid ({e}): taking pid {tgid} as the tracer's \
                     tgid, which is right only in the host's pid namespace"
                );
                TracerSelf {
                    host_tgid: tgid,
                    ns: Default::default(),
                }
            }
        }
    }
}

/// `count` of the tracer's own probe call ([`probe_own_call`]), unlikely in any other call.
pub const PROBE_COUNT: u64 = 0x5e1f_7ace;

/// Makes one sendfile(2) of the tracer's own once attached (one byte from a memfd to
/// /dev/null, `count` [`PROBE_COUNT`]), which the kernel side must skip as the tracer's: should
/// its event come through, the daemon says that the tracer does not recognise itself (which
/// would also mean that it excludes another process).
pub fn probe_own_call() -> std::io::Result<()> {
    use std::{
        io::{Seek, Write},
        os::fd::{AsRawFd, FromRawFd, OwnedFd},
    };
    // SAFETY: a NUL-terminated name and valid flags; the fd is owned right below.
    let fd = unsafe { libc::memfd_create(c"sendfile-trace-probe".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let mut input = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    input.write_all(b"x")?;
    input.rewind()?;
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    // SAFETY: two open descriptors, a null offset pointer (the file position is used).
    let n = unsafe {
        libc::sendfile(
            null.as_raw_fd(),
            input.as_raw_fd(),
            std::ptr::null_mut(),
            PROBE_COUNT as usize,
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

/// The (major, minor) version at the start of a kernel release string (`5.10.0-28-amd64` →
/// (5, 10)); `None` if it does not start that way.
pub fn release_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// This host's name.
pub fn host_name() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether the kernel exposes its BTF.
pub fn has_kernel_btf() -> bool {
    Path::new(VMLINUX_BTF).is_file()
}

/// The first fields of `union bpf_attr` for `BPF_PROG_LOAD` (include/uapi/linux/bpf.h); the
/// kernel zeroes the fields a shorter attribute leaves out.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// Why the kernel refuses tracing (fentry/fexit) programs outright, if it does: `EPERM` for a
/// 2-instruction `BPF_PROG_TYPE_TRACING` program loaded without a target. A kernel that allows
/// them rejects that program in the verifier instead (`EINVAL`: "Tracing programs must provide
/// btf_id"); one that refuses them (lockdown, an LSM policy, a sandbox, missing CAP_PERFMON)
/// says `EPERM` before looking. Asked before the fentry hook has aya parse the kernel's BTF,
/// which takes about 15 MiB at its peak only to be refused.
pub fn tracing_programs_refused() -> Option<std::io::Error> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_TRACING: u32 = 26;
    const BPF_TRACE_FENTRY: u32 = 24;
    // r0 = 0; exit
    let insns: [u64; 2] = [0xb7, 0x95];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_TRACING,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: c"GPL".as_ptr() as u64,
        expected_attach_type: BPF_TRACE_FENTRY,
        ..Default::default()
    };
    // SAFETY: `attr` is a valid prefix of `union bpf_attr` for BPF_PROG_LOAD, its size is passed,
    // and the instructions and license it points to outlive the call; no log buffer is given.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd >= 0 {
        // Not expected (no target), but then nothing was refused: close what was loaded.
        // SAFETY: a file descriptor the kernel just returned, owned by nothing else.
        drop(unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) });
        return None;
    }
    let err = std::io::Error::last_os_error();
    (err.raw_os_error() == Some(libc::EPERM)).then_some(err)
}

fn clock_ns(clock: nix::time::ClockId) -> i128 {
    nix::time::clock_gettime(clock)
        .map(|t| t.tv_sec() as i128 * 1_000_000_000 + t.tv_nsec() as i128)
        .unwrap_or(0)
}

/// Converts `bpf_ktime_get_boot_ns()` values to wall-clock ns since the epoch.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

impl WallClock {
    /// Samples CLOCK_REALTIME − CLOCK_BOOTTIME now: the tightest of a few
    /// boot/real/boot brackets, so that a preemption between two clock reads (common in a busy
    /// VM) does not skew every timestamp until the next sample.
    pub fn now() -> WallClock {
        let mut best = (i128::MAX, 0);
        for _ in 0..5 {
            let boot = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
            let real = clock_ns(nix::time::ClockId::CLOCK_REALTIME);
            let boot2 = clock_ns(nix::time::ClockId::CLOCK_BOOTTIME);
            if boot2 - boot < best.0 {
                best = (boot2 - boot, real - (boot + boot2) / 2);
            }
        }
        WallClock { offset_ns: best.1 }
    }

    /// Wall-clock ns for a boot-time ns value.
    pub fn wall_ns(&self, boot_ns: u64) -> u64 {
        (boot_ns as i128 + self.offset_ns).clamp(0, u64::MAX as i128) as u64
    }

    /// Wall-clock ns now.
    pub fn now_ns() -> u64 {
        clock_ns(nix::time::ClockId::CLOCK_REALTIME) as u64
    }
}

/// Raises RLIMIT_MEMLOCK for kernels that charge BPF maps to it (before 5.11). Newer kernels
/// account BPF memory to the memory cgroup, so a refusal there is harmless.
pub fn raise_memlock_rlimit() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: setrlimit with a valid pointer to a local struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK ({}); fine on kernels that account BPF memory to cgroups",
            std::io::Error::last_os_error()
        );
    }
}

/// The nice value the daemon takes when nobody chose one for it.
pub const BOOSTED_NICE: i32 = -10;

/// Raises the daemon's CPU priority to [`BOOSTED_NICE`] if it runs at the default nice 0, as
/// auditd does (`priority_boost`): a reader that gets only its fair share of a CPU beside
/// busy traced threads falls behind a burst and the ring overflows. It only uses CPU when events
/// come. A nice value chosen by whoever started it (systemd `Nice=`, `nice`) is kept. Refusal
/// (no CAP_SYS_NICE) is one debug line.
pub fn boost_priority() {
    // SAFETY: plain syscalls on the calling process. getpriority can return -1 legitimately,
    // so errno is cleared first and checked after.
    unsafe {
        *libc::__errno_location() = 0;
        let current = libc::getpriority(libc::PRIO_PROCESS, 0);
        if current != 0 || *libc::__errno_location() != 0 {
            return;
        }
        if libc::setpriority(libc::PRIO_PROCESS, 0, BOOSTED_NICE) != 0 {
            log::debug!(
                "could not raise the daemon's priority to nice {BOOSTED_NICE} ({})",
                std::io::Error::last_os_error()
            );
            return;
        }
    }
    // Linux keeps a nice value per thread: the sink threads, started before, would stay at 0
    // and, under CPU pressure, fall behind the reader that feeds their queues. Boosted too
    // (those still at the default).
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return;
    };
    for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<libc::id_t>().ok()) {
        // SAFETY: plain syscalls on a thread of this process, as above.
        unsafe {
            *libc::__errno_location() = 0;
            if libc::getpriority(libc::PRIO_PROCESS, tid) == 0 && *libc::__errno_location() == 0 {
                libc::setpriority(libc::PRIO_PROCESS, tid, BOOSTED_NICE);
            }
        }
    }
}

/// Where tracefs is expected.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted (tracepoints are attached through it); mounts it at
/// /sys/kernel/tracing when neither it nor debugfs's copy is there.
///
/// tracefs is mode 0700, owned by root: a process with CAP_BPF and CAP_PERFMON but another uid
/// cannot look up the tracepoints' ids in it without CAP_DAC_READ_SEARCH, and that is said as
/// such (the mount attempt that would follow fails with EPERM, which reads like lockdown).
pub fn ensure_tracefs() -> Result<(), AttachError> {
    let mut denied = None;
    for dir in [TRACEFS, "/sys/kernel/debug/tracing"] {
        match std::fs::metadata(Path::new(dir).join("events")) {
            Ok(m) if m.is_dir() => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                denied.get_or_insert(dir);
            }
            _ => {}
        }
    }
    if let Some(dir) = denied {
        return Err(AttachError::TracefsDenied(tracefs_denied(dir)));
    }
    nix::mount::mount(
        Some("tracefs"),
        TRACEFS,
        Some("tracefs"),
        nix::mount::MsFlags::MS_NOSUID
            | nix::mount::MsFlags::MS_NODEV
            | nix::mount::MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| AttachError::Tracefs {
        path: TRACEFS,
        source,
    })?;
    log::info!("mounted tracefs at {TRACEFS}");
    Ok(())
}

/// Gives the heap that loading freed back to the kernel. Loading parses the kernel's BTF (the
/// fentry attempt with aya's parser: about 10 MiB of heap on 6.18) and the object; glibc kept
/// those pages, so the tracer ran at 35.7 MiB RSS with `--hook auto` where fentry is refused
/// (25.4 MiB with `--hook tracepoint`); trimmed, 19 MiB. (musl's allocator returns large frees
/// by itself.)
pub fn return_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_versions_are_read_from_the_start() {
        assert_eq!(release_version("5.10.0-28-amd64"), Some((5, 10)));
        assert_eq!(release_version("6.18.44-fc-v669"), Some((6, 18)));
        assert_eq!(release_version("5.14.0-427.el9.x86_64"), Some((5, 14)));
        assert_eq!(release_version("6.1"), Some((6, 1)));
        assert!(release_version("5.12.19").is_some_and(|v| v < (5, 13)));
        assert!(release_version("5.13.0").is_some_and(|v| v >= (5, 13)));
        assert_eq!(release_version("unknown"), None);
    }
}
