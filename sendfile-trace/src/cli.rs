//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::filter::{self, FilterSet, OutType, parse_comm, parse_min_bytes, parse_pid, parse_uid};

/// Which kernel hook to use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookChoice {
    /// Try kprobe, then fentry, then tracepoint.
    Auto,
    /// kprobe + kretprobe on the syscall function (taxes only sendfile).
    Kprobe,
    /// fentry + fexit on the syscall function (needs kernel BTF).
    Fentry,
    /// syscall tracepoints (taxes every syscall while attached).
    Tracepoint,
}

/// Trace every sendfile(2) on this host and write one JSON event per call (JSON Lines).
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
pub struct Cli {
    /// Kernel hook: auto tries kprobe, then fentry, then tracepoint.
    #[arg(long, value_enum, default_value_t = HookChoice::Auto, env = "SENDFILE_TRACE_HOOK")]
    pub hook: HookChoice,

    /// Write events to FILE (created mode 0600, appended to, never through a symlink) instead of
    /// stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Ring buffer size: a power of two, at least 4096 (suffixes K, M, G accepted).
    #[arg(long, value_name = "BYTES", default_value = "4M", value_parser = parse_ring_size)]
    pub ring_buffer_size: u32,

    /// Only calls by this process id (repeatable: any of them).
    #[arg(long = "pid", value_name = "PID", value_parser = parse_pid, help_heading = FILTERS)]
    pub pids: Vec<u32>,

    /// Only calls by threads with this name, as the kernel keeps it (≤ 15 bytes; repeatable).
    #[arg(long = "comm", value_name = "NAME", value_parser = parse_comm, help_heading = FILTERS)]
    pub comms: Vec<[u8; 16]>,

    /// Only calls by this real uid or user name (repeatable).
    #[arg(long = "uid", value_name = "UID", value_parser = parse_uid, help_heading = FILTERS)]
    pub uids: Vec<u32>,

    /// Only calls from this cgroup v2 or below it: a path (absolute or under the cgroup2 mount)
    /// or a cgroup id (repeatable).
    #[arg(long = "cgroup", value_name = "PATH|ID", help_heading = FILTERS)]
    pub cgroups: Vec<String>,

    /// Only calls from this container (docker, containerd, cri-o, podman id or a prefix of at
    /// least 12 hex digits; repeatable). Resolved when the tracer starts.
    #[arg(long = "container", value_name = "ID", help_heading = FILTERS)]
    pub containers: Vec<String>,

    /// Only failed calls.
    #[arg(long, help_heading = FILTERS)]
    pub errors_only: bool,

    /// Only calls that moved at least this many bytes.
    #[arg(long, value_name = "N", value_parser = parse_min_bytes, help_heading = FILTERS)]
    pub min_bytes: Option<u64>,

    /// Only calls whose out_fd is of this type (repeatable).
    #[arg(long = "out-type", value_enum, value_name = "TYPE", help_heading = FILTERS)]
    pub out_types: Vec<OutType>,

    /// More logging on stderr (-v debug, -vv trace).
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Help heading of the filter flags.
const FILTERS: &str = "Filters (applied in the kernel; values of one flag OR, flags AND)";

impl Cli {
    /// The filters, with cgroups and containers resolved; `Err` names the bad value.
    pub fn filters(&self) -> Result<FilterSet, String> {
        let mut cgroups = Vec::new();
        if !self.cgroups.is_empty() || !self.containers.is_empty() {
            let root = filter::cgroup2_root()?;
            for c in &self.cgroups {
                cgroups.push(filter::resolve_cgroup(&root, c)?);
            }
            for c in &self.containers {
                cgroups.extend(filter::resolve_container(&root, c)?);
            }
        }
        cgroups.sort_unstable();
        cgroups.dedup();
        let set = FilterSet {
            pids: self.pids.clone(),
            comms: self.comms.clone(),
            uids: self.uids.clone(),
            cgroups,
            out_types: self.out_types.clone(),
            errors_only: self.errors_only,
            min_bytes: self.min_bytes,
        };
        set.check()?;
        Ok(set)
    }

    /// The stderr log level the flags ask for.
    pub fn log_level(&self) -> log::LevelFilter {
        match (self.quiet, self.verbose) {
            (true, _) => log::LevelFilter::Error,
            (false, 0) => log::LevelFilter::Info,
            (false, 1) => log::LevelFilter::Debug,
            (false, _) => log::LevelFilter::Trace,
        }
    }
}

/// Parses a ring buffer size such as `262144`, `256K` or `4M`.
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("`{s}` is not a size: use bytes, or a number with K, M or G"))?;
    let bytes = n
        .checked_mul(mult)
        .filter(|b| *b <= 1 << 31)
        .ok_or_else(|| format!("`{s}` is too large: the ring buffer is at most 2G"))?;
    if bytes < 4096 || !bytes.is_power_of_two() {
        return Err(format!(
            "`{s}` is not a power of two of at least 4096 bytes, as the kernel requires (try 4M)"
        ));
    }
    Ok(bytes as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes() {
        assert_eq!(parse_ring_size("4096"), Ok(4096));
        assert_eq!(parse_ring_size("256K"), Ok(262144));
        assert_eq!(parse_ring_size("4M"), Ok(4 << 20));
        assert_eq!(parse_ring_size("1G"), Ok(1 << 30));
        assert!(
            parse_ring_size("3000")
                .unwrap_err()
                .contains("power of two")
        );
        assert!(parse_ring_size("12K").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("4X").unwrap_err().contains("not a size"));
        assert!(parse_ring_size("8G").unwrap_err().contains("too large"));
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
