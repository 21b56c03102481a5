//! `sendfile-trace-floor`: attaches empty programs to the tracepoint hook's exact attach set
//! (for `cargo xtask bench`), prints `ready`, and waits for SIGINT or SIGTERM.

use std::{io::Write, process::ExitCode};

use aya::{
    Ebpf,
    programs::{RawTracePoint, TracePoint},
};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use sendfile_trace::kernel::{BPF_OBJECT, BPF_OBJECT_MISSING};

fn attach(ebpf: &mut Ebpf) -> Result<(), String> {
    sendfile_trace::kernel::system::ensure_tracefs()?;
    for (name, tp) in [
        ("floor_tp_exit", "sys_exit_sendfile64"),
        ("floor_tp_enter", "sys_enter_sendfile64"),
    ] {
        let p: &mut TracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the BPF object"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        p.load().map_err(|e| format!("loading {name}: {e}"))?;
        p.attach("syscalls", tp)
            .map_err(|e| format!("tracepoint syscalls:{tp}: {e}"))?;
    }
    for (name, tp) in [
        ("floor_raw_exit", "sys_exit"),
        ("floor_raw_enter", "sys_enter"),
    ] {
        let p: &mut RawTracePoint = ebpf
            .program_mut(name)
            .ok_or_else(|| format!("program {name} missing from the BPF object"))?
            .try_into()
            .map_err(|e| format!("{name}: {e}"))?;
        p.load().map_err(|e| format!("loading {name}: {e}"))?;
        p.attach(tp)
            .map_err(|e| format!("raw tracepoint {tp}: {e}"))?;
    }
    Ok(())
}

fn run() -> Result<(), String> {
    // Block the signals first so that one arriving before the wait is not lost.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    if BPF_OBJECT.is_empty() {
        return Err(BPF_OBJECT_MISSING.into());
    }
    sendfile_trace::kernel::system::raise_memlock_rlimit();
    let mut ebpf = Ebpf::load(BPF_OBJECT).map_err(|e| format!("loading the BPF object: {e}"))?;
    attach(&mut ebpf)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")
        .and_then(|()| out.flush())
        .map_err(|e| format!("cannot write to stdout: {e}"))?;
    set.wait()
        .map_err(|e| format!("waiting for a signal: {e}"))?;
    drop(ebpf);
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sendfile-trace-floor: error: {e}");
            ExitCode::FAILURE
        }
    }
}
