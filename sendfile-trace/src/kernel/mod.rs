//! Loading the BPF object and attaching one hook family, with the `auto` fallback order.

pub mod btf;
pub mod filter;
pub mod flows;
pub mod programs;
pub mod system;

use std::collections::HashSet;

use aya::maps::HashMap as BpfHashMap;
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use sendfile_trace_common::{Hook, flow::names as flow_names, names};

use crate::{
    cli::HookChoice,
    error::{AttachError, Error, LoadError, one_line},
};

use self::{filter::FilterSet, programs::TracepointPrograms};

/// The compiled kernel side, embedded at build time (empty when built without it: see build.rs and `LoadError::ObjectMissing`).
pub static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SENDFILE_TRACE_BPF_OBJECT"));

/// The 64-bit syscall function with syscall wrappers (`struct pt_regs *` argument).
#[cfg(target_arch = "x86_64")]
const NATIVE_FN: &str = "__x64_sys_sendfile64";
/// The 32-bit (ia32) entry points that may exist (which one serves 187 and 239 depends on the
/// kernel); at most three, one program pair each under fentry.
#[cfg(target_arch = "x86_64")]
const COMPAT_FNS: [&str; 3] = [
    "__ia32_compat_sys_sendfile",
    "__ia32_sys_sendfile64",
    "__ia32_compat_sys_sendfile64",
];
/// The 64-bit syscall function with syscall wrappers (`struct pt_regs *` argument).
#[cfg(target_arch = "aarch64")]
const NATIVE_FN: &str = "__arm64_sys_sendfile64";
/// The 32-bit (AArch32) entry points: `sendfile` (187) and `sendfile64` (239).
#[cfg(target_arch = "aarch64")]
const COMPAT_FNS: [&str; 2] = [
    "__arm64_compat_sys_sendfile",
    "__arm64_compat_sys_sendfile64",
];
/// The 64-bit syscall function on kernels without syscall wrappers.
const NOWRAP_FN: &str = "sys_sendfile64";

/// Settings for loading the BPF object.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (a power of two ≥ page size).
    pub ring_buffer_size: u32,
    /// Who we are, so that the programs skip our own calls.
    pub tracer: system::TracerSelf,
    /// Kernel filters.
    pub filters: FilterSet,
    /// Level of the kernel side's own log (aya-log; 0 = off, else `aya_log::Level` as u8).
    pub kernel_log_level: u8,
    /// Flow mode bits (`sendfile_trace_common::flow::mode`); 0 in calls mode without a limit.
    pub flow_mode: u32,
    /// `--max-events-per-process` (0: off).
    pub rate_limit: u64,
}

impl LoadOptions {
    /// Bytes waiting in the ring before a write wakes the reader: a quarter of the ring, so a
    /// burst wakes it long before the ring fills, while a steady trickle is read on the
    /// reader's own short timer instead of one wakeup per record.
    pub fn wakeup_bytes(&self) -> u64 {
        u64::from(self.ring_buffer_size / 4)
    }
}

/// A loaded object with one hook family attached.
pub struct Attached {
    /// The loaded object; dropping it detaches everything.
    pub ebpf: Ebpf,
    /// The hook in use.
    pub hook: Hook,
    /// What it attached to (kernel functions or tracepoints).
    pub targets: Vec<String>,
    /// Hooks tried before this one, each with the reason it could not attach.
    pub fallbacks: Vec<(Hook, AttachError)>,
}

impl Attached {
    /// Detaches everything, entry programs first: with an exit program gone and an entry program
    /// still there, a thread's next call would find its last one unfinished and count a false
    /// `missed_exit`. (Attaching does the mirror image: exits first.)
    pub fn detach(mut self) {
        for name in programs::ENTRIES {
            let result = match self.ebpf.program_mut(name) {
                Some(Program::KProbe(p)) => p.unload(),
                Some(Program::FEntry(p)) => p.unload(),
                Some(Program::TracePoint(p)) => p.unload(),
                Some(Program::RawTracePoint(p)) => p.unload(),
                _ => Ok(()),
            };
            if let Err(e) = result {
                log::debug!("detaching {name}: {}", one_line(&e));
            }
        }
        drop(self.ebpf);
    }
}

/// Loads the object and attaches the chosen hook; with `auto`, falls back in order.
pub fn attach(choice: HookChoice, opts: LoadOptions) -> Result<Attached, Error> {
    if BPF_OBJECT.is_empty() {
        return Err(LoadError::ObjectMissing.into());
    }
    if !system::has_bpf_privileges() {
        return Err(Error::Privileges);
    }
    system::raise_memlock_rlimit();
    system::boost_priority();
    let order: &[Hook] = match choice {
        HookChoice::Auto => &[Hook::Kprobe, Hook::Fentry, Hook::Tracepoint],
        HookChoice::Kprobe => &[Hook::Kprobe],
        HookChoice::Fentry => &[Hook::Fentry],
        HookChoice::Tracepoint => &[Hook::Tracepoint],
    };
    let release = system::kernel_release();
    if system::release_version(&release).is_some_and(|v| v < (5, 13)) {
        return Err(LoadError::KernelTooOld { release }.into());
    }
    let offsets = kernel_offsets()?;
    let mut fallbacks = Vec::new();
    for &hook in order {
        // A fresh object per attempt: a failed attempt's programs and links go with it.
        let mut ebpf = load(&opts, &offsets)?;
        match attach_hook(&mut ebpf, hook) {
            Ok(targets) => {
                // Loading is the tracer's peak of heap (BTF, the object, verifier logs).
                system::return_freed_heap();
                return Ok(Attached {
                    ebpf,
                    hook,
                    targets,
                    fallbacks,
                });
            }
            Err(reason) if choice == HookChoice::Auto => {
                log::warn!("hook {} unavailable: {}", hook.name(), reason.explained());
                fallbacks.push((hook, reason));
            }
            Err(source) => return Err(Error::Attach { hook, source }),
        }
    }
    Err(Error::NoHook(fallbacks))
}

/// The struct offsets of the running kernel, with an error that says which of the two things
/// went wrong: no BTF at all (a kernel configuration matter), or BTF without a member this build
/// reads (a kernel layout this version does not know); see `LoadError::Layouts`.
fn kernel_offsets() -> Result<sendfile_trace_common::Offsets, LoadError> {
    let mut offsets = btf::Btf::from_sys_fs()
        .and_then(|btf| btf.offsets())
        .map_err(LoadError::Layouts)?;
    // The walk kernels before 5.17 get, on demand: how the tests check it on newer ones.
    if std::env::var_os(NO_BPF_LOOP).is_some() {
        offsets.bpf_loop = 0;
    }
    log::debug!(
        "path walks: {}",
        if offsets.bpf_loop != 0 {
            "bpf_loop"
        } else {
            "unrolled loop (no bpf_loop in this kernel, or SENDFILE_TRACE_NO_BPF_LOOP set)"
        }
    );
    Ok(offsets)
}

/// Set (to anything), the path walks run as the unrolled loop that kernels without `bpf_loop`
/// (before 5.17) get, even where `bpf_loop` exists: for tests and for comparing the two.
pub const NO_BPF_LOOP: &str = "SENDFILE_TRACE_NO_BPF_LOOP";

fn load(opts: &LoadOptions, offsets: &sendfile_trace_common::Offsets) -> Result<Ebpf, Error> {
    let filters = opts.filters.globals();
    let wakeup = opts.wakeup_bytes();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::EVENTS, opts.ring_buffer_size)
        .override_global(names::TRACER_TGID, &opts.tracer.host_tgid, true)
        .override_global(names::TRACER_NS, &opts.tracer.ns, true)
        .override_global(names::OFFSETS, offsets, true)
        .override_global(names::FILTERS, &filters, true)
        .override_global(names::WAKEUP_BYTES, &wakeup, true)
        .override_global(aya_log::LEVEL, &opts.kernel_log_level, true)
        .override_global(flow_names::FLOW_MODE, &opts.flow_mode, true)
        .override_global(flow_names::RATE_LIMIT, &opts.rate_limit, true)
        .load(BPF_OBJECT)
        .map_err(|e| {
            if one_line(&e).contains("Operation not permitted") {
                Error::Privileges
            } else {
                LoadError::Object(e).into()
            }
        })?;
    fill_filter_maps(&mut ebpf, &opts.filters)?;
    if opts.flow_mode != 0 {
        flows::fill_free(&mut ebpf)?;
    }
    Ok(ebpf)
}

/// Puts the `--pid`, `--comm` and `--uid` values in their maps (before anything attaches).
fn fill_filter_maps(ebpf: &mut Ebpf, f: &FilterSet) -> Result<(), LoadError> {
    fn fill<K: aya::Pod>(ebpf: &mut Ebpf, name: &'static str, keys: &[K]) -> Result<(), LoadError> {
        let map_err = |source| LoadError::Map { name, source };
        let map = ebpf.map_mut(name).ok_or(LoadError::MissingMap(name))?;
        let mut map: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(map_err)?;
        for k in keys {
            map.insert(k, &1, 0).map_err(map_err)?;
        }
        Ok(())
    }
    fill(ebpf, names::FILTER_PIDS, &f.pids)?;
    fill(ebpf, names::FILTER_COMMS, &f.comms)?;
    fill(ebpf, names::FILTER_UIDS, &f.uids)
}

fn attach_hook(ebpf: &mut Ebpf, hook: Hook) -> Result<Vec<String>, AttachError> {
    match hook {
        Hook::Kprobe => attach_kprobe(ebpf),
        Hook::Fentry => attach_fentry(ebpf),
        Hook::Tracepoint => attach_tracepoint(ebpf),
    }
}

/// The syscall functions present: the 64-bit one (wrapped or not) and the compat ones.
fn syscall_functions() -> Result<(&'static str, bool, Vec<&'static str>), AttachError> {
    let syms: HashSet<String> = system::sendfile_symbols().map_err(AttachError::Kallsyms)?;
    let (native, wrapped) = if syms.contains(NATIVE_FN) {
        (NATIVE_FN, true)
    } else if syms.contains(NOWRAP_FN) {
        (NOWRAP_FN, false)
    } else {
        return Err(AttachError::NoSyscallFunction(vec![NATIVE_FN, NOWRAP_FN]));
    };
    let compat = COMPAT_FNS
        .into_iter()
        .filter(|f| syms.contains(*f))
        .collect();
    Ok((native, wrapped, compat))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, AttachError>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| AttachError::MissingProgram(name.to_owned()))?;
    prog.try_into().map_err(|source| AttachError::Program {
        what: format!("program {name}"),
        source,
    })
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<Vec<String>, AttachError> {
    let (native, wrapped, compat) = syscall_functions()?;
    let all: Vec<&str> = std::iter::once(native)
        .chain(compat.iter().copied())
        .collect();
    let err = |what: &str, source| AttachError::Program {
        what: what.to_owned(),
        source,
    };

    // Return probes first, so that no entry is saved without its exit being watched.
    let ret: &mut KProbe = program(ebpf, programs::KRETPROBE)?;
    ret.load().map_err(|e| err("loading the kretprobe", e))?;
    for f in &all {
        ret.attach(f, 0)
            .map_err(|e| err(&format!("kretprobe on {f}"), e))?;
    }
    let entry_native = if wrapped {
        programs::KPROBE_NATIVE
    } else {
        programs::KPROBE_NOWRAP
    };
    let p: &mut KProbe = program(ebpf, entry_native)?;
    p.load().map_err(|e| err("loading the kprobe", e))?;
    p.attach(native, 0)
        .map_err(|e| err(&format!("kprobe on {native}"), e))?;
    if !compat.is_empty() {
        let p: &mut KProbe = program(ebpf, programs::KPROBE_COMPAT)?;
        p.load().map_err(|e| err("loading the compat kprobe", e))?;
        for f in &compat {
            p.attach(f, 0)
                .map_err(|e| err(&format!("kprobe on {f}"), e))?;
        }
    }
    Ok(all.into_iter().map(String::from).collect())
}

fn attach_fentry(ebpf: &mut Ebpf) -> Result<Vec<String>, AttachError> {
    if !system::has_kernel_btf() {
        return Err(AttachError::NoBtf(system::VMLINUX_BTF));
    }
    let (native, wrapped, compat) = syscall_functions()?;
    if !wrapped {
        return Err(AttachError::Unwrapped(NATIVE_FN));
    }
    if let Some(source) = system::tracing_programs_refused() {
        return Err(AttachError::Refused {
            what: "loading a tracing (fentry/fexit) program",
            source,
        });
    }
    let btf = Btf::from_sys_fs().map_err(AttachError::Btf)?;
    let err = |what: &str, source| AttachError::Program {
        what: what.to_owned(),
        source,
    };
    let pairs = std::iter::once((programs::FENTRY_NATIVE, native)).chain(
        programs::FENTRY_COMPAT
            .into_iter()
            .zip(compat.iter().copied()),
    );
    let mut targets = Vec::new();
    for (programs::FentryPair { entry, exit }, f) in pairs {
        let p: &mut FExit = program(ebpf, exit)?;
        p.load(f, &btf)
            .map_err(|e| err(&format!("loading fexit for {f}"), e))?;
        p.attach().map_err(|e| err(&format!("fexit on {f}"), e))?;
        let p: &mut FEntry = program(ebpf, entry)?;
        p.load(f, &btf)
            .map_err(|e| err(&format!("loading fentry for {f}"), e))?;
        p.attach().map_err(|e| err(&format!("fentry on {f}"), e))?;
        targets.push(f.to_owned());
    }
    Ok(targets)
}

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<Vec<String>, AttachError> {
    attach_tracepoints(ebpf, &programs::TRACEPOINT_PROGRAMS)
}

/// Loads and attaches one tracepoint set, exits first (so no entry is saved without its exit
/// being watched); returns what it attached to.
pub fn attach_tracepoints(
    ebpf: &mut Ebpf,
    set: &TracepointPrograms,
) -> Result<Vec<String>, AttachError> {
    system::ensure_tracefs()?;
    let err = |what: &str, source: aya::programs::ProgramError| {
        log::debug!("{what}: {source:?}");
        AttachError::Program {
            what: what.to_owned(),
            source,
        }
    };
    for (name, tp) in [
        (set.exit, "sys_exit_sendfile64"),
        (set.enter, "sys_enter_sendfile64"),
    ] {
        let p: &mut TracePoint = program(ebpf, name)?;
        p.load().map_err(|e| err(&format!("loading {name}"), e))?;
        p.attach("syscalls", tp)
            .map_err(|e| err(&format!("tracepoint syscalls:{tp}"), e))?;
    }
    for (name, tp) in [(set.raw_exit, "sys_exit"), (set.raw_enter, "sys_enter")] {
        let p: &mut RawTracePoint = program(ebpf, name)?;
        p.load().map_err(|e| err(&format!("loading {name}"), e))?;
        p.attach(tp)
            .map_err(|e| err(&format!("raw tracepoint {tp}"), e))?;
    }
    Ok(vec![
        "syscalls:sys_enter_sendfile64".into(),
        "syscalls:sys_exit_sendfile64".into(),
        "raw_syscalls:sys_enter (compat 187, 239)".into(),
        "raw_syscalls:sys_exit (compat 187, 239)".into(),
    ])
}
