//! Loading the BPF object and attaching one hook family, with the `auto` fallback order.

pub mod btf;
pub mod filter;
pub mod system;

use std::collections::HashSet;

use aya::maps::HashMap as BpfHashMap;
use aya::{
    Btf, Ebpf, EbpfLoader,
    programs::{FEntry, FExit, KProbe, Program, RawTracePoint, TracePoint},
};
use sendfile_trace_common::{Hook, names};

use crate::{
    cli::HookChoice,
    error::{Error, one_line},
};

use self::filter::FilterSet;

/// The compiled kernel side, embedded at build time.
static BPF_OBJECT: &[u8] = aya::include_bytes_aligned!(env!("SENDFILE_TRACE_BPF_OBJECT"));

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
    /// Our own tgid, whose calls the programs skip.
    pub tracer_tgid: u32,
    /// Kernel filters.
    pub filters: FilterSet,
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
    pub fallbacks: Vec<(Hook, String)>,
}

/// Every entry program of every hook: detached before the exit programs at shutdown.
const ENTRY_PROGRAMS: [&str; 9] = [
    "sendfile_kprobe_native",
    "sendfile_kprobe_compat",
    "sendfile_kprobe_nowrap",
    "sendfile_fentry_native",
    "sendfile_fentry_compat_a",
    "sendfile_fentry_compat_b",
    "sendfile_fentry_compat_c",
    "sendfile_tp_enter",
    "sendfile_raw_enter",
];

impl Attached {
    /// Detaches everything, entry programs first: with an exit program gone and an entry program
    /// still there, a thread's next call would find its last one unfinished and count a false
    /// `missed_exit`. (Attaching does the mirror image: exits first.)
    pub fn detach(mut self) {
        for name in ENTRY_PROGRAMS {
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
    let offsets = kernel_offsets()?;
    let mut fallbacks = Vec::new();
    for &hook in order {
        // A fresh object per attempt: a failed attempt's programs and links go with it.
        let mut ebpf = load(&opts, &offsets)?;
        match attach_hook(&mut ebpf, hook) {
            Ok(targets) => {
                return Ok(Attached {
                    ebpf,
                    hook,
                    targets,
                    fallbacks,
                });
            }
            Err(reason) if choice == HookChoice::Auto => {
                log::warn!("hook {} unavailable: {reason}", hook.name());
                fallbacks.push((hook, reason));
            }
            Err(reason) => return Err(Error::Attach { hook, reason }),
        }
    }
    let all = fallbacks
        .iter()
        .map(|(h, r)| format!("{}: {r}", h.name()))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::NoHook(all))
}

/// The struct offsets of the running kernel, with an error that says which of the two things
/// went wrong: no BTF at all (a kernel configuration matter), or BTF without a member this build
/// reads (a kernel layout this version does not know).
fn kernel_offsets() -> Result<sendfile_trace_common::Offsets, Error> {
    let btf = btf::Btf::from_sys_fs().map_err(|e| {
        Error::Load(format!(
            "kernel BTF unavailable ({e}): this kernel needs CONFIG_DEBUG_INFO_BTF"
        ))
    })?;
    btf.offsets().map_err(|e| {
        Error::Load(format!(
            "kernel struct layouts unknown: {e}; this {} build of sendfile-trace does not \
             support this kernel {} (report it with this message)",
            std::env::consts::ARCH,
            system::kernel_release()
        ))
    })
}

fn load(opts: &LoadOptions, offsets: &sendfile_trace_common::Offsets) -> Result<Ebpf, Error> {
    let filters = opts.filters.globals();
    let wakeup = opts.wakeup_bytes();
    let mut ebpf = EbpfLoader::new()
        .map_max_entries(names::EVENTS, opts.ring_buffer_size)
        .override_global(names::TRACER_TGID, &opts.tracer_tgid, true)
        .override_global(names::OFFSETS, offsets, true)
        .override_global(names::FILTERS, &filters, true)
        .override_global(names::WAKEUP_BYTES, &wakeup, true)
        .load(BPF_OBJECT)
        .map_err(|e| {
            let msg = one_line(&e);
            if msg.contains("Operation not permitted") {
                Error::Privileges
            } else {
                Error::Load(msg)
            }
        })?;
    fill_filter_maps(&mut ebpf, &opts.filters)
        .map_err(|e| Error::Load(format!("setting the filters: {e}")))?;
    Ok(ebpf)
}

/// Puts the `--pid`, `--comm` and `--uid` values in their maps (before anything attaches).
fn fill_filter_maps(ebpf: &mut Ebpf, f: &FilterSet) -> Result<(), String> {
    fn fill<K: aya::Pod>(ebpf: &mut Ebpf, name: &str, keys: &[K]) -> Result<(), String> {
        let map = ebpf
            .map_mut(name)
            .ok_or_else(|| format!("map {name} missing from the BPF object"))?;
        let mut map: BpfHashMap<_, K, u8> = BpfHashMap::try_from(map).map_err(|e| one_line(&e))?;
        for k in keys {
            map.insert(k, &1, 0).map_err(|e| one_line(&e))?;
        }
        Ok(())
    }
    fill(ebpf, names::FILTER_PIDS, &f.pids)?;
    fill(ebpf, names::FILTER_COMMS, &f.comms)?;
    fill(ebpf, names::FILTER_UIDS, &f.uids)
}

fn attach_hook(ebpf: &mut Ebpf, hook: Hook) -> Result<Vec<String>, String> {
    let result = match hook {
        Hook::Kprobe => attach_kprobe(ebpf),
        Hook::Fentry => attach_fentry(ebpf),
        Hook::Tracepoint => attach_tracepoint(ebpf),
    };
    result.map_err(|r| explain(&r))
}

/// Adds what a user can do about the kernel's most common refusals.
fn explain(reason: &str) -> String {
    let reason = reason
        .trim_end_matches(" Verifier output:")
        .trim_end_matches('.');
    if reason.contains("kprobe/type") {
        format!("{reason} (this kernel has no kprobe PMU: built without CONFIG_KPROBES)")
    } else if reason.contains("os error 524") {
        // ENOTSUPP from the trampoline attach: no ftrace direct calls for this architecture
        // (arm64 has them from Linux 6.4; Debian's arm64 6.1 answers this).
        format!(
            "{reason} (this kernel cannot attach BPF trampolines to kernel functions; on arm64 \
             fentry needs Linux 6.4 or later)"
        )
    } else if reason.contains("Operation not permitted") {
        format!(
            "{reason} (the kernel refuses this program type: lockdown, an LSM policy or a sandbox)"
        )
    } else {
        reason.to_owned()
    }
}

/// The syscall functions present: the 64-bit one (wrapped or not) and the compat ones.
fn syscall_functions() -> Result<(&'static str, bool, Vec<&'static str>), String> {
    let syms: HashSet<String> =
        system::sendfile_symbols().map_err(|e| format!("cannot read /proc/kallsyms: {e}"))?;
    let (native, wrapped) = if syms.contains(NATIVE_FN) {
        (NATIVE_FN, true)
    } else if syms.contains(NOWRAP_FN) {
        (NOWRAP_FN, false)
    } else {
        return Err(format!(
            "neither {NATIVE_FN} nor {NOWRAP_FN} is in /proc/kallsyms"
        ));
    };
    let compat = COMPAT_FNS
        .into_iter()
        .filter(|f| syms.contains(*f))
        .collect();
    Ok((native, wrapped, compat))
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, String>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    let prog = ebpf
        .program_mut(name)
        .ok_or_else(|| format!("program {name} missing from the BPF object"))?;
    prog.try_into().map_err(|e| one_line(&e))
}

fn attach_kprobe(ebpf: &mut Ebpf) -> Result<Vec<String>, String> {
    let (native, wrapped, compat) = syscall_functions()?;
    let all: Vec<&str> = std::iter::once(native)
        .chain(compat.iter().copied())
        .collect();
    let err = |what: &str, e: aya::programs::ProgramError| format!("{what}: {}", one_line(&e));

    // Return probes first, so that no entry is saved without its exit being watched.
    let ret: &mut KProbe = program(ebpf, "sendfile_kretprobe")?;
    ret.load().map_err(|e| err("loading the kretprobe", e))?;
    for f in &all {
        ret.attach(f, 0)
            .map_err(|e| err(&format!("kretprobe on {f}"), e))?;
    }
    let entry_native = if wrapped {
        "sendfile_kprobe_native"
    } else {
        "sendfile_kprobe_nowrap"
    };
    let p: &mut KProbe = program(ebpf, entry_native)?;
    p.load().map_err(|e| err("loading the kprobe", e))?;
    p.attach(native, 0)
        .map_err(|e| err(&format!("kprobe on {native}"), e))?;
    if !compat.is_empty() {
        let p: &mut KProbe = program(ebpf, "sendfile_kprobe_compat")?;
        p.load().map_err(|e| err("loading the compat kprobe", e))?;
        for f in &compat {
            p.attach(f, 0)
                .map_err(|e| err(&format!("kprobe on {f}"), e))?;
        }
    }
    Ok(all.into_iter().map(String::from).collect())
}

fn attach_fentry(ebpf: &mut Ebpf) -> Result<Vec<String>, String> {
    if !system::has_kernel_btf() {
        return Err(format!(
            "kernel BTF not found at {}, which fentry needs",
            system::VMLINUX_BTF
        ));
    }
    let (native, wrapped, compat) = syscall_functions()?;
    if !wrapped {
        return Err(format!(
            "{NATIVE_FN} not found; fentry here supports wrapped syscalls only"
        ));
    }
    let btf = Btf::from_sys_fs().map_err(|e| format!("reading kernel BTF: {}", one_line(&e)))?;
    let err = |what: &str, e: aya::programs::ProgramError| format!("{what}: {}", one_line(&e));
    let compat_pairs = [
        ("sendfile_fentry_compat_a", "sendfile_fexit_compat_a"),
        ("sendfile_fentry_compat_b", "sendfile_fexit_compat_b"),
        ("sendfile_fentry_compat_c", "sendfile_fexit_compat_c"),
    ];
    let pairs = std::iter::once((("sendfile_fentry_native", "sendfile_fexit_native"), native))
        .chain(compat_pairs.into_iter().zip(compat.iter().copied()));
    let mut targets = Vec::new();
    for ((entry, exit), f) in pairs {
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

fn attach_tracepoint(ebpf: &mut Ebpf) -> Result<Vec<String>, String> {
    system::ensure_tracefs()?;
    let err = |what: &str, e: aya::programs::ProgramError| {
        log::debug!("{what}: {e:?}");
        format!("{what}: {}", one_line(&e))
    };
    for (name, tp) in [
        ("sendfile_tp_exit", "sys_exit_sendfile64"),
        ("sendfile_tp_enter", "sys_enter_sendfile64"),
    ] {
        let p: &mut TracePoint = program(ebpf, name)?;
        p.load().map_err(|e| err(&format!("loading {name}"), e))?;
        p.attach("syscalls", tp)
            .map_err(|e| err(&format!("tracepoint syscalls:{tp}"), e))?;
    }
    for (name, tp) in [
        ("sendfile_raw_exit", "sys_exit"),
        ("sendfile_raw_enter", "sys_enter"),
    ] {
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
