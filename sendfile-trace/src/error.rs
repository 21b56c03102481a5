//! The daemon's errors: each one reads as one line saying what is wrong and what to do.

use std::path::PathBuf;

use sendfile_trace_common::Hook;

use crate::kernel::btf::BtfError;

/// Errors that stop the tracer (exit status 1). Each renders, with its sources, as one line
/// through [`one_line`] at the edge (`main`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges to load BPF programs.
    #[error(
        "insufficient privileges to load eBPF programs: run as root, or grant CAP_BPF and \
         CAP_PERFMON (or CAP_SYS_ADMIN)"
    )]
    Privileges,
    /// An explicitly requested hook could not attach.
    #[error("hook {} cannot attach on this kernel: {}", .hook.name(), .source.explained())]
    Attach {
        /// The hook asked for.
        hook: Hook,
        /// Why.
        #[source]
        source: AttachError,
    },
    /// No hook works on this kernel (with `--hook auto`).
    #[error("no hook can attach on this kernel: {}", NoHook(.0))]
    NoHook(Vec<(Hook, AttachError)>),
    /// Loading the BPF object (maps, relocations, globals) failed.
    #[error("cannot load the eBPF object: {0}")]
    Load(#[from] LoadError),
    /// The output file cannot be opened.
    #[error("cannot open output file {path}: {source}")]
    OutputOpen {
        /// The path given with --output.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--rotate-keep` beyond what one rotation may rename.
    #[error("--rotate-keep {given}: at most {max} rotated files can be kept per output")]
    RotateKeep {
        /// The value given.
        given: u64,
        /// The bound.
        max: u64,
    },
    /// Writing events failed (other than the reader going away).
    #[error("cannot write events: {0}")]
    Write(#[source] std::io::Error),
    /// A system call the daemon needs to run failed (runtime, signals, threads, sockets).
    #[error("{what}: {source}")]
    Io {
        /// What the daemon was doing.
        what: String,
        /// The system's reason.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] saying what failed.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}

/// Every hook's reason, `hook: reason; hook: reason`.
struct NoHook<'a>(&'a [(Hook, AttachError)]);

impl std::fmt::Display for NoHook<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, (hook, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", hook.name(), e.explained())?;
        }
        Ok(())
    }
}

/// Why the BPF object could not be loaded or set up.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The binary was built before its BPF object (build.rs embedded a stub).
    #[error(
        "this binary was built without its kernel programs (the BPF object was missing at \
         build time): build it with `cargo xtask build`"
    )]
    ObjectMissing,
    /// The kernel is older than the oldest one the programs load on.
    #[error(
        "kernel {release} is older than 5.13, the oldest this tracer loads on (its path walks \
         are bpf_loop callbacks, which older kernels refuse): run it on 5.13 or later"
    )]
    KernelTooOld {
        /// `uname -r`.
        release: String,
    },
    /// The kernel's struct layouts could not be read from its BTF.
    #[error("kernel struct layouts unknown: {}", layout_hint(.0))]
    Layouts(#[source] BtfError),
    /// The kernel refused the object (maps, programs' relocations).
    #[error("{0}")]
    Object(#[source] aya::EbpfError),
    /// A map the daemon needs is not in the object.
    #[error("map {0} missing from the BPF object")]
    MissingMap(&'static str),
    /// A map could not be used.
    #[error("map {name}: {source}")]
    Map {
        /// The map's name.
        name: &'static str,
        /// Why.
        #[source]
        source: aya::maps::MapError,
    },
    /// A map is not of the kind the daemon reads it as.
    #[error("map {name} is not {expected}")]
    MapKind {
        /// The map's name.
        name: &'static str,
        /// What it should be.
        expected: &'static str,
    },
    /// A map could not be mapped into memory.
    #[error("cannot map {name} into memory: {source}")]
    Mmap {
        /// The map's name.
        name: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel side's log could not be read.
    #[error("the kernel log: {0}")]
    KernelLog(#[source] aya_log::Error),
}

/// What a user can do about a BTF problem: a missing file is a kernel without BTF, a missing
/// member a layout this tracer does not know yet.
fn layout_hint(e: &BtfError) -> String {
    match e {
        BtfError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!("{e}: this kernel needs CONFIG_DEBUG_INFO_BTF")
        }
        BtfError::Missing(_) | BtfError::Bitfield(_) => format!(
            "{e}; this {} build of sendfile-trace does not support this kernel {} (report it \
             with this message)",
            std::env::consts::ARCH,
            crate::kernel::system::kernel_release()
        ),
        _ => e.to_string(),
    }
}

/// Why one hook family could not attach.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// `/proc/kallsyms` could not be read.
    #[error("cannot read /proc/kallsyms: {0}")]
    Kallsyms(#[source] std::io::Error),
    /// None of the syscall functions the hook needs is in the kernel.
    #[error("none of {} is in /proc/kallsyms", .0.join(", "))]
    NoSyscallFunction(Vec<&'static str>),
    /// The hook needs syscall wrappers this kernel does not have.
    #[error("{0} not found; fentry here supports wrapped syscalls only")]
    Unwrapped(&'static str),
    /// The kernel has no BTF, which the hook needs.
    #[error("kernel BTF not found at {0}, which fentry needs")]
    NoBtf(&'static str),
    /// The kernel's BTF could not be read.
    #[error("reading kernel BTF: {0}")]
    Btf(#[source] aya::BtfError),
    /// A program is not in the object.
    #[error("program {0} missing from the BPF object")]
    MissingProgram(String),
    /// Loading or attaching one program failed.
    #[error("{what}: {source}")]
    Program {
        /// Which program, on what.
        what: String,
        /// The kernel's reason.
        #[source]
        source: aya::programs::ProgramError,
    },
    /// The kernel refuses the hook's program type outright (asked with a minimal program
    /// before anything costly is prepared).
    #[error("{what}: the BPF_PROG_LOAD syscall returned {source}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// The kernel's answer.
        #[source]
        source: std::io::Error,
    },
    /// tracefs is there but this process may not look inside (the diagnosis names the missing
    /// capability).
    #[error("{0}")]
    TracefsDenied(String),
    /// tracefs is missing and could not be mounted.
    #[error("tracefs is not mounted and mounting it at {path} failed: {source}")]
    Tracefs {
        /// Where it was mounted.
        path: &'static str,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

impl AttachError {
    /// The reason in one line, with what a user can do about the kernel's most common refusals.
    pub fn explained(&self) -> String {
        let reason = one_line(self);
        let reason = reason
            .trim_end_matches(" Verifier output:")
            .trim_end_matches('.');
        if reason.contains("kprobe/type") {
            format!("{reason} (this kernel has no kprobe PMU: built without CONFIG_KPROBES)")
        } else if reason.contains("os error 524") {
            // ENOTSUPP from the trampoline attach: no ftrace direct calls for this architecture
            // (arm64 has them from Linux 6.4; Debian's arm64 6.1 answers this).
            format!(
                "{reason} (this kernel cannot attach BPF trampolines to kernel functions; on \
                 arm64 fentry needs Linux 6.4 or later)"
            )
        } else if reason.contains("Operation not permitted") {
            format!(
                "{reason} (the kernel refuses this program type: lockdown, an LSM policy or a \
                 sandbox)"
            )
        } else {
            reason.to_owned()
        }
    }
}

/// Renders an error and its sources as one line (`a: b: c`), newlines folded.
pub fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        let t = src.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = src.source();
    }
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    // Long messages (verifier logs) keep their start and their end, where the verifier says
    // why it refused.
    if s.len() > 600 {
        let mut head = 200;
        while !s.is_char_boundary(head) {
            head -= 1;
        }
        let mut tail = s.len() - 400;
        while !s.is_char_boundary(tail) {
            tail += 1;
        }
        format!("{} … {}", &s[..head], &s[tail..])
    } else {
        s
    }
}
