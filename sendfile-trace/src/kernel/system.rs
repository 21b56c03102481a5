//! Facts about the running system: privileges, kernel symbols, release, host name, clocks.

use crate::error::AttachError;
use std::{collections::HashSet, io::BufRead, path::Path};

/// Path of the running kernel's BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Whether this process may load tracing BPF programs (CAP_SYS_ADMIN, or CAP_BPF + CAP_PERFMON).
pub fn has_bpf_privileges() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |c: u32| cap_eff & (1u64 << c) != 0;
    has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))
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

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
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
        }
    }
}

/// Where tracefs is expected.
pub const TRACEFS: &str = "/sys/kernel/tracing";

/// Makes sure tracefs is mounted (tracepoints are attached through it); mounts it at
/// /sys/kernel/tracing when neither it nor debugfs's copy is there.
pub fn ensure_tracefs() -> Result<(), AttachError> {
    if Path::new(TRACEFS).join("events").is_dir()
        || Path::new("/sys/kernel/debug/tracing/events").is_dir()
    {
        return Ok(());
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
