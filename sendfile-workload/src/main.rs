//! sendfile-workload: makes real sendfile(2) calls covering the Linux man page and prints one
//! JSON line per call (arguments, kernel result, expectation), so a test can compare them with
//! the tracer's events field by field. Exits 1 if a call did not do what the man page says.

mod bench;
mod cases;
mod facts;
mod flows;
mod record;
mod sys;

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::{CommandFactory, Parser, error::ErrorKind};

/// Makes real sendfile(2) calls and prints one JSON line per call.
#[derive(Parser, Debug)]
#[command(name = "sendfile-workload", version)]
struct Cli {
    /// Run only this case (repeatable, run in table order; on 32-bit a base name selects _187 and _239).
    #[arg(long = "case", value_name = "NAME")]
    cases: Vec<String>,
    /// Print the case names, one a line, and exit.
    #[arg(long)]
    list: bool,
    /// Directory for the files (default: a fresh directory in the temp dir, removed at exit).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Set the thread name (comm) to these raw bytes; the kernel keeps the first 15.
    #[arg(long, value_name = "NAME")]
    comm: Option<OsString>,
    /// Basename (raw bytes) of the input file the cases read.
    #[arg(long, value_name = "NAME", default_value = "input.bin")]
    file_name: OsString,
    /// Print `{"hold":"ready","pid":N}` and wait for a line on stdin before the calls; after
    /// them print `{"hold":"done",...}` with the process facts and wait for stdin to close (so a
    /// test can gate the calls and read /proc/PID while the workload is alive).
    #[arg(long)]
    hold: bool,
    /// Drop to this uid (and the same gid, no supplementary groups) before anything else.
    #[arg(long, value_name = "UID")]
    uid: Option<u32>,
    /// Run the selected cases N times.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// Bench mode: N sendfile calls (per thread) from a page-cache file to /dev/null.
    #[arg(long = "loop", value_name = "N", conflicts_with_all = ["cases", "list", "repeat"])]
    loop_calls: Option<u64>,
    /// Bytes per call in loop mode.
    #[arg(
        long,
        value_name = "BYTES",
        requires = "loop_calls",
        default_value_t = 4096
    )]
    size: u64,
    /// Bench mode: N getpid(2) calls (raw syscalls), to measure what an attached tracer costs
    /// syscalls other than sendfile.
    #[arg(long = "getpid-loop", value_name = "N",
          conflicts_with_all = ["cases", "list", "repeat", "loop_calls"])]
    getpid_calls: Option<u64>,
    /// Loop mode: all threads use the same two descriptors (one flow) instead of their own.
    #[arg(long, requires = "loop_calls")]
    shared: bool,
    /// Loop mode: every N calls, each thread sleeps 1 to 3 ms, and every tenth time all threads
    /// sleep 60 ms together (so that flows go idle and are retired while other threads call).
    #[arg(long, value_name = "N", requires = "loop_calls")]
    pause_every: Option<u64>,
    /// Run the flow cases (many calls each; one JSON line per case with the flows it made).
    #[arg(long, conflicts_with_all = ["cases", "list", "repeat", "loop_calls", "getpid_calls"])]
    flows: bool,
    /// With --flows: run only this flow case (repeatable): chunks, dup, reopen, errors.
    #[arg(long = "flow-case", value_name = "NAME", requires = "flows")]
    flow_cases: Vec<String>,
    /// Threads in loop mode, each making N calls.
    #[arg(long, value_name = "T", requires = "loop_calls", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    threads: u32,
    /// Loop mode paced at this many calls per second (all threads together) instead of as fast
    /// as possible: calls are made in small batches on a schedule, sleeping in between.
    #[arg(long, value_name = "CALLS_PER_S", requires = "loop_calls",
          value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
}

/// The work directory; removed on drop when the workload created it.
struct WorkDir {
    path: PathBuf,
    remove: bool,
}

impl WorkDir {
    fn new(dir: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(dir) = dir {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            return Ok(WorkDir {
                path: dir.to_owned(),
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("sendfile-workload-{}-{nanos}", std::process::id()));
        fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(WorkDir { path, remove: true })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let usage_error =
        |msg: String| -> ! { Cli::command().error(ErrorKind::InvalidValue, msg).exit() };
    let selected = cases::select(&cli.cases).unwrap_or_else(|msg| usage_error(msg));
    let name = cli.file_name.as_bytes();
    if name.is_empty() || name.contains(&b'/') || name == b"." || name == b".." {
        usage_error(format!(
            "--file-name must be a plain file name, not {:?}",
            cli.file_name
        ));
    }
    if cli.list {
        for v in cases::variants() {
            println!("{}", v.name());
        }
        return ExitCode::SUCCESS;
    }
    match run(&cli, &selected) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("sendfile-workload: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Sets the comm, drops privileges, prepares the directory and runs the cases or the loop.
fn run(cli: &Cli, selected: &[cases::Variant]) -> anyhow::Result<bool> {
    if let Some(comm) = &cli.comm {
        // Before any thread exists, so loop threads inherit it.
        sys::set_comm(comm.as_bytes()).context("prctl(PR_SET_NAME)")?;
    }
    if let Some(uid) = cli.uid {
        sys::drop_to(uid).with_context(|| format!("dropping to uid {uid}"))?;
    }
    let dir = WorkDir::new(cli.dir.as_deref())?;
    if cli.hold {
        record::emit(&record::HoldLine {
            hold: "ready",
            pid: sys::getpid(),
            process: None,
        })?;
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
    }
    let ok = match (cli.loop_calls, cli.getpid_calls) {
        _ if cli.flows => flows::run(&dir.path, &cli.flow_cases)?,
        (Some(calls), _) => bench::run(
            &dir.path,
            calls,
            cli.size,
            cli.threads,
            cli.rate,
            bench::Sharing {
                shared: cli.shared,
                pause_every: cli.pause_every,
            },
        )?,
        (None, Some(calls)) => bench::getpid_loop(calls)?,
        (None, None) => {
            let ctx = cases::Ctx::new(&dir.path, &cli.file_name)?;
            cases::run_all(&ctx, selected, cli.repeat)?
        }
    };
    if cli.hold {
        record::emit(&record::HoldLine {
            hold: "done",
            pid: sys::getpid(),
            process: Some(facts::ProcessFacts::now()?),
        })?;
        std::io::copy(&mut std::io::stdin(), &mut std::io::sink())?;
    }
    Ok(ok)
}
