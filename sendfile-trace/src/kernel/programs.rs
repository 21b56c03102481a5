//! The kernel side's program names, by hook family and role: the one place userspace spells
//! them. (The eBPF crate names each program by its function, in `kprobe.rs`, `fentry.rs`,
//! `tracepoint.rs` and `floor.rs`; the VM matrix attaches every hook, so a name that drifts
//! fails there.)

/// The kretprobe on every syscall function the kprobe hook watches.
pub const KRETPROBE: &str = "sendfile_kretprobe";
/// The kprobe on the native syscall wrapper (`__x64_sys_sendfile64`, `__arm64_sys_sendfile64`).
pub const KPROBE_NATIVE: &str = "sendfile_kprobe_native";
/// The kprobe on `sys_sendfile64` of kernels without syscall wrappers.
pub const KPROBE_NOWRAP: &str = "sendfile_kprobe_nowrap";
/// The kprobe on the 32-bit entry points.
pub const KPROBE_COMPAT: &str = "sendfile_kprobe_compat";

/// One fentry/fexit pair, on one kernel function.
#[derive(Clone, Copy, Debug)]
pub struct FentryPair {
    /// The fentry program.
    pub entry: &'static str,
    /// The fexit program.
    pub exit: &'static str,
}

/// The pair on the native syscall wrapper.
pub const FENTRY_NATIVE: FentryPair = FentryPair {
    entry: "sendfile_fentry_native",
    exit: "sendfile_fexit_native",
};

/// One pair per 32-bit entry point (an fentry program is loaded for one function).
pub const FENTRY_COMPAT: [FentryPair; 3] = [
    FentryPair {
        entry: "sendfile_fentry_compat_a",
        exit: "sendfile_fexit_compat_a",
    },
    FentryPair {
        entry: "sendfile_fentry_compat_b",
        exit: "sendfile_fexit_compat_b",
    },
    FentryPair {
        entry: "sendfile_fentry_compat_c",
        exit: "sendfile_fexit_compat_c",
    },
];

/// The programs of one tracepoint attach set, by role: the tracer's, or the bench's empty ones.
#[derive(Clone, Copy, Debug)]
pub struct TracepointPrograms {
    /// On `syscalls:sys_enter_sendfile64`.
    pub enter: &'static str,
    /// On `syscalls:sys_exit_sendfile64`.
    pub exit: &'static str,
    /// On raw `sys_enter` (32-bit callers, which the per-syscall tracepoints miss on x86).
    pub raw_enter: &'static str,
    /// On raw `sys_exit`.
    pub raw_exit: &'static str,
}

/// The tracer's tracepoint programs.
pub const TRACEPOINT_PROGRAMS: TracepointPrograms = TracepointPrograms {
    enter: "sendfile_tp_enter",
    exit: "sendfile_tp_exit",
    raw_enter: "sendfile_raw_enter",
    raw_exit: "sendfile_raw_exit",
};

/// The empty programs on the same attach set (`sendfile-trace-floor`, for the bench).
pub const FLOOR_PROGRAMS: TracepointPrograms = TracepointPrograms {
    enter: "floor_tp_enter",
    exit: "floor_tp_exit",
    raw_enter: "floor_raw_enter",
    raw_exit: "floor_raw_exit",
};

/// Every entry program of every hook: detached before the exit programs at shutdown.
pub const ENTRIES: [&str; 9] = [
    KPROBE_NATIVE,
    KPROBE_COMPAT,
    KPROBE_NOWRAP,
    FENTRY_NATIVE.entry,
    FENTRY_COMPAT[0].entry,
    FENTRY_COMPAT[1].entry,
    FENTRY_COMPAT[2].entry,
    TRACEPOINT_PROGRAMS.enter,
    TRACEPOINT_PROGRAMS.raw_enter,
];
