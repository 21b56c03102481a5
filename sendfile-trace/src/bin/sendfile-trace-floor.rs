//! `sendfile-trace-floor`: attaches empty programs to the tracepoint hook's exact attach set
//! (for `cargo xtask bench`), prints `ready`, and waits for SIGINT or SIGTERM.

use std::{io::Write, process::ExitCode};

use aya::Ebpf;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

use sendfile_trace::{
    error::LoadError,
    kernel::{self, BPF_OBJECT},
};

fn run() -> Result<(), String> {
    // Block the signals first so that one arriving before the wait is not lost.
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None)
        .map_err(|e| format!("cannot block signals: {e}"))?;
    if BPF_OBJECT.is_empty() {
        return Err(LoadError::ObjectMissing.to_string());
    }
    sendfile_trace::kernel::system::raise_memlock_rlimit();
    let mut ebpf = Ebpf::load(BPF_OBJECT).map_err(|e| format!("loading the BPF object: {e}"))?;
    kernel::attach_tracepoints(&mut ebpf, &kernel::programs::FLOOR_PROGRAMS)
        .map_err(|e| e.explained())?;
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
