//! The daemon's errors: each one reads as one line saying what is wrong and what to do.

use std::path::PathBuf;

use sendfile_trace_common::Hook;

/// Errors that stop the tracer (exit status 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Missing privileges to load BPF programs.
    #[error(
        "insufficient privileges to load eBPF programs: run as root, or grant CAP_BPF and \
         CAP_PERFMON (or CAP_SYS_ADMIN)"
    )]
    Privileges,
    /// An explicitly requested hook could not attach.
    #[error("hook {hook} cannot attach on this kernel: {reason}", hook = .hook.name())]
    Attach {
        /// The hook asked for.
        hook: Hook,
        /// The kernel's reason, in one line.
        reason: String,
    },
    /// No hook works on this kernel (with `--hook auto`).
    #[error("no hook can attach on this kernel: {0}")]
    NoHook(String),
    /// Loading the BPF object (maps, relocations) failed.
    #[error("cannot load the eBPF object: {0}")]
    Load(String),
    /// The output file cannot be opened.
    #[error("cannot open output file {path}: {source}")]
    OutputOpen {
        /// The path given with --output.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Writing events failed (other than the reader going away).
    #[error("cannot write events: {0}")]
    Write(std::io::Error),
    /// Anything else from the runtime.
    #[error("{0}")]
    Runtime(String),
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
