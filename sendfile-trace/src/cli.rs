//! Command-line interface (clap derive).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

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

    /// More logging on stderr (-v debug, -vv trace).
    #[arg(long, short, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(long, short)]
    pub quiet: bool,
}

impl Cli {
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
