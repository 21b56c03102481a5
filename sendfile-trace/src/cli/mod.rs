//! Command-line interface (clap derive).

pub mod config;
pub mod generate;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand, ValueEnum};

use crate::{format::Format, output::sink::SinkSpec};

use crate::kernel::filter::{
    self, FilterSet, OutType, parse_comm, parse_min_bytes, parse_pid, parse_uid,
};

/// What `--version` prints after the name: the crate version and the git commit it was built
/// from ("unknown" when built outside a git checkout).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("SENDFILE_TRACE_COMMIT"),
    ")"
);

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

/// Trace every sendfile(2) on this host and write one event per call (JSON Lines, ECS, OCSF or
/// text) to stdout, files or syslog.
///
/// Every option can also be set in a TOML file given with --config, under its long name
/// (`ring-buffer-size = "8M"`, `output = ["-", "syslog:///dev/log"]`); the command line
/// overrides the environment, which overrides the file.
#[derive(Debug, Parser)]
#[command(version = VERSION, about, long_about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// Read options from this TOML file (keys are the long option names).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Kernel hook: auto tries kprobe, then fentry, then tracepoint.
    #[arg(long, value_enum, default_value_t = HookChoice::Auto, env = "SENDFILE_TRACE_HOOK")]
    pub hook: HookChoice,

    /// Where events go, repeatable: `-` (stdout, the default), a FILE (created mode 0600,
    /// appended to, never through a symlink), `syslog:///dev/log`, `syslog+udp://HOST:PORT` or
    /// `syslog+tcp://HOST:PORT` (RFC 5424; RFC 6587 octet counting on TCP).
    #[arg(long, short, value_name = "SINK")]
    pub output: Vec<SinkSpec>,

    /// Event format [default: text when writing only to stdout and it is a terminal, tracee
    /// otherwise].
    #[arg(long, short, value_enum)]
    pub format: Option<Format>,

    /// Rotate file outputs when they would grow past BYTES (K, M, G accepted; 0 never).
    #[arg(long, value_name = "BYTES", default_value = "0", value_parser = parse_size)]
    pub rotate_size: u64,

    /// Rotated files to keep (FILE.1 … FILE.N) with --rotate-size.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub rotate_keep: u32,

    /// Records each output may queue before it drops them (counted, reported as events_lost
    /// with reason "sink").
    #[arg(long, value_name = "RECORDS", default_value_t = 16384,
          value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub queue_size: u32,

    /// Syslog facility of syslog outputs.
    #[arg(long, value_enum, value_name = "FACILITY", default_value_t = Facility::Daemon)]
    pub syslog_facility: Facility,

    /// Serve Prometheus metrics on ADDR (e.g. 127.0.0.1:9469) at /metrics.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Ring buffer size: a power of two from 4096 to 256M (suffixes K, M, G accepted).
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

    /// What to write: one event per call, or one record per flow (a process sending between
    /// two open files), counted in the kernel.
    #[arg(long, value_enum, default_value_t = Mode::Calls, help_heading = FLOWS)]
    pub mode: Mode,

    /// A flow with no call for this long is over: its final record is written (e.g. 1s, 500ms).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration,
          help_heading = FLOWS)]
    pub flow_idle: std::time::Duration,

    /// A long flow gets an interim record (`"final":false`) this often (e.g. 30s, 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration,
          help_heading = FLOWS)]
    pub flow_interval: std::time::Duration,

    /// Calls mode: N events per second and process, in bursts of at most N/10 (`off`: no
    /// limit); calls beyond are counted in flow records (never dropped), announced by one
    /// `throttled` record. The default stays far within what calls mode delivers without loss.
    #[arg(long, value_name = "N|off", default_value = DEFAULT_MAX_EVENTS_PER_PROCESS,
          value_parser = parse_rate_limit, help_heading = FLOWS)]
    pub max_events_per_process: RateLimit,

    /// More logging on stderr (-v debug, -vv trace).
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(long, short)]
    pub quiet: bool,

    /// Helper commands (not tracing).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a shell completion script or the man page to stdout.
    #[command(hide = true)]
    Generate {
        /// What to generate.
        #[command(subcommand)]
        what: Generate,
    },
}

/// What `generate` writes.
#[derive(Debug, Subcommand)]
pub enum Generate {
    /// A completion script for SHELL.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// The man page (roff).
    Man,
}

/// Syslog facilities (RFC 5424 numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[allow(missing_docs)]
pub enum Facility {
    Kern,
    User,
    Mail,
    Daemon,
    Auth,
    Syslog,
    Lpr,
    News,
    Uucp,
    Cron,
    Authpriv,
    Ftp,
    Local0,
    Local1,
    Local2,
    Local3,
    Local4,
    Local5,
    Local6,
    Local7,
}

impl Facility {
    /// The facility's number.
    pub fn number(self) -> u8 {
        match self {
            Facility::Kern => 0,
            Facility::User => 1,
            Facility::Mail => 2,
            Facility::Daemon => 3,
            Facility::Auth => 4,
            Facility::Syslog => 5,
            Facility::Lpr => 6,
            Facility::News => 7,
            Facility::Uucp => 8,
            Facility::Cron => 9,
            Facility::Authpriv => 10,
            Facility::Ftp => 11,
            Facility::Local0 => 16,
            Facility::Local1 => 17,
            Facility::Local2 => 18,
            Facility::Local3 => 19,
            Facility::Local4 => 20,
            Facility::Local5 => 21,
            Facility::Local6 => 22,
            Facility::Local7 => 23,
        }
    }
}

/// Parses a byte size such as `1048576`, `512K`, `100M` or `2G`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, mult) = match s.as_bytes().last() {
        Some(b'k' | b'K') => (&s[..s.len() - 1], 1u64 << 10),
        Some(b'm' | b'M') => (&s[..s.len() - 1], 1 << 20),
        Some(b'g' | b'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("`{s}` is not a size: use bytes, or a number with K, M or G"))
}

/// Help heading of the flow flags.
const FLOWS: &str = "Flows";

/// `--mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// One `sendfile` event per call (exact, per call).
    Calls,
    /// One `sendfile_flow` record per flow, counted in the kernel (idle, interval and stop).
    Flows,
}

/// The default `--max-events-per-process`. Measured with `cargo xtask bench` (docs/bench.md),
/// calls mode at default settings holds about 300,000 calls/s paced and absorbs a tight-loop
/// burst of about 9,000 to 24,000 calls (less while other work shares the CPUs): 10,000 a
/// second in bursts of at most 1,000 leaves room for many processes at their limit at once.
pub const DEFAULT_MAX_EVENTS_PER_PROCESS: &str = "10000";

/// `--max-events-per-process`: events per second and process, or none (`off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit(pub Option<u64>);

/// Parses `--max-events-per-process`: a number of at least 1, or `off`.
pub fn parse_rate_limit(s: &str) -> Result<RateLimit, String> {
    if s.trim() == "off" {
        return Ok(RateLimit(None));
    }
    match s.trim().parse::<u64>() {
        Ok(0) => Err(
            "`0` would fold every call into flows: use --mode flows for that, or `off` for no limit"
                .to_owned(),
        ),
        Ok(n) => Ok(RateLimit(Some(n))),
        Err(_) => Err(format!(
            "`{s}` is not a limit: use a number of events per second (e.g. 10000) or `off`"
        )),
    }
}

/// Parses a duration such as `1s`, `500ms`, `30s` or `2m` (more than zero).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is not a duration: use a number and a unit, e.g. 1s, 500ms, 2m");
    let d: jiff::SignedDuration = s.trim().parse().map_err(|_| bad())?;
    let d = std::time::Duration::try_from(d).map_err(|_| bad())?;
    if d.is_zero() {
        return Err(format!(
            "`{s}` is zero: a flow duration must be more than that"
        ));
    }
    Ok(d)
}

impl Cli {
    /// Flow mode bits for the kernel side (`sendfile_trace_common::flow::mode`).
    pub fn flow_mode(&self) -> u32 {
        use sendfile_trace_common::flow::mode;
        match (self.mode, self.max_events_per_process) {
            (Mode::Flows, _) => mode::FLOWS,
            (Mode::Calls, RateLimit(Some(_))) => mode::RATE_LIMIT,
            (Mode::Calls, RateLimit(None)) => 0,
        }
    }
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

/// The largest `--ring-buffer-size`: the ring is kernel memory charged to the tracer and mapped
/// twice into its address space (the reader sees the data pages twice so that a record never
/// wraps), so its resident size grows to twice this; 256M holds about 200 000 calls (1.2 KB
/// each), minutes of a busy host's backlog, and more only hides a reader that cannot keep up.
pub const MAX_RING_SIZE: u64 = 256 << 20;

/// Parses a ring buffer size such as `262144`, `256K` or `4M` ([`parse_size`], then the
/// kernel's rules for a ring buffer and [`MAX_RING_SIZE`]).
pub fn parse_ring_size(s: &str) -> Result<u32, String> {
    let bytes = parse_size(s)?;
    if bytes > MAX_RING_SIZE {
        return Err(format!(
            "`{s}` is too large: the ring buffer is at most 256M, because the tracer keeps \
             twice its size resident (the kernel maps it twice) and 256M already holds about \
             200000 calls; a reader that falls further behind loses events however large the \
             ring is"
        ));
    }
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
        assert_eq!(parse_ring_size("256M"), Ok(256 << 20));
        assert!(
            parse_ring_size("512M")
                .unwrap_err()
                .contains("at most 256M")
        );
        assert!(parse_ring_size("2G").unwrap_err().contains("at most 256M"));
        assert!(
            parse_ring_size("3000")
                .unwrap_err()
                .contains("power of two")
        );
        assert!(parse_ring_size("12K").unwrap_err().contains("power of two"));
        assert!(parse_ring_size("4X").unwrap_err().contains("not a size"));
        assert!(parse_ring_size("8G").unwrap_err().contains("too large"));
        assert_eq!(parse_size("100M"), Ok(100 << 20));
        assert_eq!(parse_size("0"), Ok(0));
        assert!(parse_size("1T").unwrap_err().contains("not a size"));
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(
            parse_duration("soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(
            parse_duration("-1s")
                .unwrap_err()
                .contains("not a duration")
        );
    }

    #[test]
    fn rate_limits() {
        assert_eq!(parse_rate_limit("500"), Ok(RateLimit(Some(500))));
        assert_eq!(parse_rate_limit("off"), Ok(RateLimit(None)));
        assert!(parse_rate_limit("0").unwrap_err().contains("--mode flows"));
        assert!(
            parse_rate_limit("lots")
                .unwrap_err()
                .contains("not a limit")
        );
        assert!(parse_rate_limit("-5").unwrap_err().contains("not a limit"));
        use clap::Parser;
        let default = Cli::parse_from(["sendfile-trace"]);
        assert_eq!(default.max_events_per_process, RateLimit(Some(10_000)));
        assert_eq!(
            default.flow_mode(),
            sendfile_trace_common::flow::mode::RATE_LIMIT,
            "calls mode folds past the default limit"
        );
        let off = Cli::parse_from(["sendfile-trace", "--max-events-per-process", "off"]);
        assert_eq!(off.flow_mode(), 0);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
