//! `cargo xtask bench`: what tracing sendfile costs, side by side with the floor (empty programs
//! on the same hooks) and with peers (bpftrace, strace), plus a burst's loss accounting and the
//! daemon's footprint. Timings never fail the bench; only a tool that cannot start does.

use std::{
    fmt::Write as _,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{compile, run::interrupt, tools, vm::workspace_root};

mod nginx;

/// Options of `cargo xtask bench`.
#[derive(clap::Args)]
pub struct BenchArgs {
    /// Rounds; each round runs every variant once, and the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// sendfile calls per timed run.
    #[arg(long, default_value_t = 200_000)]
    calls: u64,
    /// sendfile calls per run under strace (it is slow).
    #[arg(long, default_value_t = 20_000)]
    strace_calls: u64,
    /// Another sendfile-trace binary (e.g. built from an earlier commit) run through the same
    /// capacity steps, side by side with this tree's.
    #[arg(long, value_name = "BIN")]
    baseline: Option<PathBuf>,
    /// The `pipeline` example of another tree for the userspace rows (default: a `pipeline`
    /// beside `--baseline`, if there is one).
    #[arg(long, value_name = "BIN")]
    baseline_pipeline: Option<PathBuf>,
    /// Builds this commit (its own `cargo xtask build`, in a worktree under target/bench/) and
    /// uses its tracer and `pipeline` as `--baseline`.
    #[arg(long, value_name = "REV", conflicts_with = "baseline")]
    baseline_rev: Option<String>,
    /// Builds this commit's `pipeline` example for the userspace rows' baseline.
    #[arg(long, value_name = "REV", conflicts_with = "baseline_pipeline")]
    baseline_pipeline_rev: Option<String>,
    /// Body bytes the nginx section has nginx serve in each mode.
    #[arg(long, default_value_t = 1 << 30)]
    nginx_bytes: u64,
    /// Sections to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Section>,
}

/// Parts of the bench.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// Timed loops (tight and paced), side by side with the floor and peers.
    Costs,
    /// Per-program BPF statistics.
    Profile,
    /// The userspace pipeline, one core.
    Userspace,
    /// The multi-thread burst at default settings.
    Burst,
    /// The paced capacity steps.
    Capacity,
    /// Records and JSON bytes per GB served by a real nginx, calls mode vs flows mode.
    Nginx,
}

/// Bytes per sendfile call in the timed runs and the burst.
const SIZE: &str = "64";
/// CPU the workload is pinned to; the tracer gets the other one.
const WORKLOAD_CPU: &str = "0";
/// CPU the tracer is pinned to.
const TRACER_CPU: &str = "1";
/// How long a tracer may take to become ready or to stop.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);
/// Our hooks that attach on this host and are benched; kprobe and fentry would go here (each
/// with its own floor programs) on a kernel that has them.
const HOOKS: [&str; 1] = ["tracepoint"];
/// Burst: threads × calls per thread.
const BURST_THREADS: u64 = 4;
/// Burst: calls per thread.
const BURST_CALLS: u64 = 20_000;
/// Rate (calls/s) of the paced cost rows: low enough that nothing is lost, so that the cost
/// they show is the cost of tracing every call.
const PACED_COST_RATE: u64 = 50_000;
/// Calls per paced cost run (2 s at [`PACED_COST_RATE`]).
const PACED_COST_CALLS: u64 = 100_000;
/// Capacity: how long each rate is held.
const CAPACITY_SECONDS: u64 = 5;
/// Capacity: the rates tried, in calls/s, lowest first; the steps stop at the first loss.
const CAPACITY_RATES: [u64; 12] = [
    25_000, 50_000, 75_000, 100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000, 600_000,
    800_000,
];

/// bpftrace recording the fields our events carry, printing one line per call.
const BPFTRACE_SCRIPT: &str = r#"
tracepoint:syscalls:sys_enter_sendfile64 {
  @out[tid] = args->out_fd; @in[tid] = args->in_fd; @optr[tid] = (uint64)args->offset;
  @oval[tid] = args->offset != 0 ? *(int64*)args->offset : -1;
  @cnt[tid] = args->count; @seen[tid] = 1;
}
tracepoint:syscalls:sys_exit_sendfile64 /@seen[tid]/ {
  printf("%d %d %d %s %d %d %lu %ld %lu %ld\n", pid, tid, uid, comm, @out[tid], @in[tid],
         @optr[tid], @oval[tid], @cnt[tid], args->ret);
  delete(@out[tid]); delete(@in[tid]); delete(@optr[tid]); delete(@oval[tid]);
  delete(@cnt[tid]); delete(@seen[tid]);
}
"#;

/// One way of running the timed loop.
#[derive(Clone)]
enum Kind {
    /// No tracer.
    Untraced,
    /// `sendfile-trace-floor`: empty programs on the tracepoint hook's attach set.
    Floor,
    /// `sendfile-trace --hook HOOK`, events to /dev/null or to a file.
    /// With `flows`, in `--mode flows` (the loop's calls are one established flow).
    /// `baseline`: another tree's binary (`--baseline`) instead of this tree's.
    Ours {
        hook: &'static str,
        file: bool,
        flows: bool,
        baseline: Option<PathBuf>,
    },
    /// bpftrace with [`BPFTRACE_SCRIPT`], output to /dev/null.
    Bpftrace,
    /// strace -f on the workload, output to /dev/null.
    Strace,
}

/// A named variant and its measurements.
struct Variant {
    name: String,
    kind: Kind,
    calls: u64,
    /// Paced at this many calls/s (its cost is then read from CPU time, not wall time).
    rate: Option<u64>,
    ns_per_call: Vec<f64>,
    /// CPU ns per sendfile call of the calling thread (user + system), per round.
    cpu_ns: Vec<f64>,
    /// ns per getpid(2) while the variant was attached, per round.
    getpid_ns: Vec<f64>,
    /// Per round: what the tracer delivered and lost of the calls made (ours only).
    delivery: Vec<Delivery>,
}

/// What a tracer made of one run's calls.
#[derive(Clone, Copy, Debug, Default)]
struct Delivery {
    /// sendfile calls the workload made.
    made: u64,
    /// Events delivered: the workload's own when the events went to a file, every event when
    /// they went to /dev/null (other processes' calls included).
    delivered: u64,
    /// Events the tracer counted as lost (ring, sink, ...) plus incomplete ones.
    lost: u64,
    /// Whether `delivered` counts only the workload's events.
    exact: bool,
    /// sendfile events of other processes in the same output (the tracer is host-wide: on a
    /// shared machine their floods fill the same ring).
    others: u64,
}

impl Delivery {
    /// A run that lost nothing: its cost is the cost of tracing every call.
    fn valid(&self) -> bool {
        self.lost == 0
            && if self.exact {
                self.delivered == self.made
            } else {
                self.delivered >= self.made
            }
    }
}

/// A started tracer with everything it wrote on stderr (and stdout when piped).
struct Tracer {
    name: String,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// What tells that a tracer is ready.
enum Ready {
    /// A line on stdout containing this.
    Stdout(&'static str),
    /// This many lines on stderr containing this.
    Stderr(&'static str, usize),
    /// A line in this file containing this.
    File(PathBuf, &'static str),
}

fn bench_dir() -> PathBuf {
    workspace_root().join("target/bench")
}

/// Copies a stream into `log` line by line, counting lines that contain `pattern`.
fn drain(
    stream: impl Read + Send + 'static,
    log: Arc<Mutex<String>>,
    pattern: Option<&'static str>,
    hits: Arc<Mutex<usize>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if pattern.is_some_and(|p| line.contains(p)) {
                *hits.lock().unwrap() += 1;
            }
            let mut log = log.lock().unwrap();
            if log.len() < 1 << 20 {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
}

/// Spawns a tracer pinned to [`TRACER_CPU`] and waits until it is ready.
fn start(name: &str, program: &Path, args: &[&str], ready: Ready) -> Result<Tracer> {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", TRACER_CPU])
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::piped());
    let (stdout_pattern, stderr_pattern, needed) = match &ready {
        Ready::Stdout(p) => {
            cmd.stdout(Stdio::piped());
            (Some(*p), None, 1)
        }
        Ready::Stderr(p, n) => {
            cmd.stdout(Stdio::null());
            (None, Some(*p), *n)
        }
        Ready::File(..) => {
            cmd.stdout(Stdio::null());
            (None, None, 0)
        }
    };
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let log = Arc::new(Mutex::new(String::new()));
    let hits = Arc::new(Mutex::new(0usize));
    if let Some(out) = child.stdout.take() {
        drain(out, log.clone(), stdout_pattern, hits.clone());
    }
    if let Some(err) = child.stderr.take() {
        drain(err, log.clone(), stderr_pattern, hits.clone());
    }
    let mut tracer = Tracer {
        name: name.to_owned(),
        child,
        log,
    };
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        let ok = match &ready {
            Ready::File(path, p) => std::fs::read_to_string(path).is_ok_and(|s| s.contains(p)),
            _ => *hits.lock().unwrap() >= needed,
        };
        if ok {
            break;
        }
        if let Some(status) = tracer.child.try_wait()? {
            bail!(
                "{name} exited before it was ready ({status}); its output:\n{}",
                tracer.log.lock().unwrap()
            );
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            let _ = tracer.child.wait();
            bail!(
                "{name} was not ready after {TOOL_TIMEOUT:?}; its output:\n{}",
                tracer.log.lock().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the attach settle (bpftrace says "Attaching" just before it attaches).
    std::thread::sleep(Duration::from_millis(300));
    Ok(tracer)
}

/// Interrupts a tracer and waits for it; fails if it does not exit cleanly. Returns what it
/// wrote on stderr (and stdout when piped).
fn stop(mut tracer: Tracer) -> Result<String> {
    interrupt(tracer.child.id())?;
    let deadline = Instant::now() + TOOL_TIMEOUT;
    loop {
        if let Some(status) = tracer.child.try_wait()? {
            if !status.success() {
                bail!(
                    "{} exited with {status} after SIGINT; its output:\n{}",
                    tracer.name,
                    tracer.log.lock().unwrap()
                );
            }
            // Let the drain threads read the last lines.
            std::thread::sleep(Duration::from_millis(50));
            return Ok(tracer.log.lock().unwrap().clone());
        }
        if Instant::now() > deadline {
            let _ = tracer.child.kill();
            let _ = tracer.child.wait();
            bail!("{} did not stop within {TOOL_TIMEOUT:?}", tracer.name);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs a command that ends with the workload's loop mode and returns its summary line.
fn run_loop(cmd: &mut Command) -> Result<Value> {
    run_summary(cmd, "loop")
}

/// Runs a command that ends with one of the workload's loop modes and returns the summary line
/// whose `case` is `case`.
fn run_summary(cmd: &mut Command, case: &str) -> Result<Value> {
    let child = cmd
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    // taskset execs the workload: same pid.
    let pid = child.id();
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut v = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["case"] == case)
        .with_context(|| format!("no loop summary in the output of {cmd:?}: {text}"))?;
    v["pid"] = json!(pid);
    Ok(v)
}

/// The workload pinned to [`WORKLOAD_CPU`] with `args`, under `strace -f` (pinned to the
/// tracer's CPU) if `strace`.
fn workload_with(args: &[&str], strace: bool) -> Command {
    let mut c = Command::new("taskset");
    if strace {
        c.args(["-c", TRACER_CPU, "strace", "-f", "-qq"])
            .args(["-e", "trace=sendfile", "-o", "/dev/null"])
            .arg("taskset");
    }
    c.args(["-c", WORKLOAD_CPU])
        .arg(compile::host_bin("sendfile-workload"))
        .args(args);
    c
}

/// The workload pinned to [`WORKLOAD_CPU`] in loop mode, paced at `rate` calls/s if given.
fn workload(calls: u64, rate: Option<u64>) -> Command {
    let calls = calls.to_string();
    let mut args = vec!["--loop", &calls, "--size", SIZE];
    let rate = rate.map(|r| r.to_string());
    if let Some(r) = &rate {
        args.extend(["--rate", r]);
    }
    workload_with(&args, false)
}

/// What the tracer's own accounting says about a run: its stop line on stderr (events, lost,
/// incomplete) and, when it wrote a file, the workload's events in it.
fn delivery(log: &str, file: Option<&Path>, made: u64, workload_pid: u64) -> Result<Delivery> {
    let mut d = Delivery {
        made,
        ..Delivery::default()
    };
    match file {
        Some(path) => {
            let mut stop = None;
            for line in std::fs::read_to_string(path)?.lines() {
                let v: Value = serde_json::from_str(line)
                    .with_context(|| format!("not JSON in the tracer's output: {line}"))?;
                match v["eventName"].as_str() {
                    Some("sendfile") if v["hostProcessId"].as_u64() == Some(workload_pid) => {
                        d.delivered += 1;
                    }
                    // In flows mode a call is delivered as part of its flow's record.
                    Some("sendfile_flow") if v["hostProcessId"].as_u64() == Some(workload_pid) => {
                        d.delivered += v["calls"].as_u64().unwrap_or(0);
                    }
                    Some("sendfile") => d.others += 1,
                    Some("tracer_stop") => stop = Some(v),
                    _ => {}
                }
            }
            let stop = stop.context("no tracer_stop record in the tracer's output")?;
            d.lost = stop["lost"].as_u64().unwrap_or(0) + stop["incomplete"].as_u64().unwrap_or(0);
            d.exact = true;
        }
        None => {
            // "stopped on SIGINT: N events, L lost, I incomplete"
            let line = log
                .lines()
                .find_map(|l| l.split_once("stopped on ").map(|(_, rest)| rest))
                .with_context(|| format!("no stop line from the tracer:\n{log}"))?;
            let nums: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            let [events, lost, incomplete] = nums[..] else {
                bail!("unexpected stop line from the tracer: {line}");
            };
            d.delivered = events;
            d.lost = lost + incomplete;
        }
    }
    Ok(d)
}

/// ns per getpid(2) while a variant is attached.
fn getpid_ns(kind: &Kind, calls: u64) -> Result<f64> {
    let strace = matches!(kind, Kind::Strace);
    let summary = run_summary(
        &mut workload_with(&["--getpid-loop", &calls.to_string()], strace),
        "getpid-loop",
    )?;
    summary["nsPerCall"]
        .as_f64()
        .context("getpid summary without nsPerCall")
}

/// Starts the tracer of a variant that has one attached to the kernel (the floor, ours,
/// bpftrace); `None` for the others.
fn attach(kind: &Kind) -> Result<Option<Tracer>> {
    Ok(Some(match kind {
        Kind::Untraced | Kind::Strace => return Ok(None),
        Kind::Floor => start(
            "sendfile-trace-floor",
            &compile::host_bin("sendfile-trace-floor"),
            &[],
            Ready::Stdout("ready"),
        )?,
        Kind::Ours {
            hook,
            file,
            flows,
            baseline,
        } => {
            let events = bench_dir().join("events.jsonl");
            let _ = std::fs::remove_file(&events);
            let output = events.to_string_lossy().into_owned();
            // To /dev/null: stdout, which start() points there (a file output refuses devices).
            let mut args = vec!["--hook", *hook];
            if *flows {
                args.extend(["--mode", "flows"]);
            } else if baseline.is_none() {
                // Calls mode as such: past the default limit calls would be folded into flows.
                // (A baseline from before the limit knows no `off`, and needs none.)
                args.extend(["--max-events-per-process", "off"]);
            }
            if *file {
                args.extend(["--output", &output]);
            }
            let bin = baseline
                .clone()
                .unwrap_or_else(|| compile::host_bin("sendfile-trace"));
            start(
                "sendfile-trace",
                &bin,
                &args,
                Ready::Stderr("tracing sendfile with hook", 1),
            )?
        }
        Kind::Bpftrace => {
            let script = bench_dir().join("sendfile.bt");
            std::fs::write(&script, BPFTRACE_SCRIPT)?;
            let script = script.to_string_lossy().into_owned();
            // -v names each probe on stderr as it attaches; -o keeps events off the pipe.
            start(
                "bpftrace",
                Path::new("bpftrace"),
                &["-v", "-o", "/dev/null", &script],
                Ready::Stderr("Attaching tracepoint:", 2),
            )?
        }
    }))
}

/// One timed run of a variant.
struct Run {
    /// Wall ns per sendfile call.
    ns: f64,
    /// CPU ns per sendfile call of the calling thread.
    cpu_ns: f64,
    /// ns per getpid call while attached.
    getpid: f64,
    /// What our tracer delivered (ours only).
    delivery: Option<Delivery>,
}

/// One timed run of a variant: ns per sendfile call, and ns per getpid call while attached.
fn measure(kind: &Kind, calls: u64, rate: Option<u64>, getpid_calls: u64) -> Result<Run> {
    let mut getpid = f64::NAN;
    let mut both = |cmd: &mut Command| -> Result<Value> {
        let s = run_loop(cmd)?;
        getpid = getpid_ns(kind, getpid_calls)?;
        Ok(s)
    };
    let mut delivered = None;
    let summary = match kind {
        Kind::Strace => both(&mut workload_with(
            &["--loop", &calls.to_string(), "--size", SIZE],
            true,
        ))?,
        _ => {
            let events = bench_dir().join("events.jsonl");
            let tracer = attach(kind)?;
            let s = both(&mut workload(calls, rate));
            if let Some(t) = tracer {
                let log = stop(t)?;
                if let (Kind::Ours { file, .. }, Ok(s)) = (kind, &s) {
                    let made = s["calls"].as_u64().unwrap_or(0);
                    let pid = s["pid"].as_u64().unwrap_or(0);
                    delivered = Some(delivery(&log, file.then_some(&*events), made, pid)?);
                }
            }
            let _ = std::fs::remove_file(&events);
            s?
        }
    };
    let num = |key: &str| {
        summary[key]
            .as_f64()
            .with_context(|| format!("loop summary without {key}"))
    };
    Ok(Run {
        ns: num("nsPerCall")?,
        cpu_ns: num("cpuNsPerCall")?,
        getpid,
        delivery: delivered,
    })
}

/// One BPF program a process holds open, from its fdinfo: tag, runs, run time, and the
/// instructions the verifier walked.
struct ProgStats {
    tag: String,
    runs: u64,
    run_time_ns: u64,
    verified_insns: Option<u64>,
}

/// The BPF programs a process holds open (deduplicated by tag and run count).
fn programs_of(pid: u32) -> Vec<ProgStats> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return Vec::new();
    };
    let mut progs: Vec<ProgStats> = Vec::new();
    for info in dir.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()) {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
        };
        let (Some(tag), Some(id)) = (field("prog_tag:"), field("prog_id:")) else {
            continue;
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        if progs.iter().any(|p| p.tag == format!("{tag}#{id}")) {
            continue;
        }
        progs.push(ProgStats {
            tag: format!("{tag}#{id}"),
            runs: num("run_cnt:").unwrap_or(0),
            run_time_ns: num("run_time_ns:").unwrap_or(0),
            verified_insns: num("verified_insns:"),
        });
    }
    progs
}

/// A program's name from its tag, through the JIT's kallsyms entry `bpf_prog_<tag>_<name>`.
fn program_name(kallsyms: &str, tag: &str) -> String {
    let tag = tag.split('#').next().unwrap_or(tag);
    let prefix = format!("bpf_prog_{tag}_");
    // Identical programs (the floor's empty ones) share a tag: list every name it has.
    let names: Vec<&str> = kallsyms
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .nth(2)
                .and_then(|sym| sym.strip_prefix(&prefix))
        })
        .collect();
    if names.is_empty() {
        "?".to_owned()
    } else {
        names.join("|")
    }
}

/// Turns the kernel's BPF run-time statistics on for as long as it lives, then restores them.
struct BpfStats(Option<String>);

impl BpfStats {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";

    fn on() -> Result<BpfStats> {
        let before = std::fs::read_to_string(Self::KNOB).ok();
        std::fs::write(Self::KNOB, "1").with_context(|| format!("cannot write {}", Self::KNOB))?;
        Ok(BpfStats(before))
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(
            Self::KNOB,
            self.0.as_deref().map_or("0", |v| v.trim()).as_bytes(),
        );
    }
}

/// Where a variant's time goes: each of its BPF programs' runs and average ns per run, from the
/// kernel's own BPF run-time statistics (on only for this run), plus the instructions the
/// verifier walked to accept it. The statistics add their own clock reads to every run: the
/// floor's empty programs show how much.
fn profile(name: &str, kind: &Kind, calls: u64) -> Result<Vec<Value>> {
    let _stats = BpfStats::on()?;
    let Some(tracer) = attach(kind)? else {
        return Ok(Vec::new());
    };
    // Paced, so that the entry program never takes its ring-full exit: the figures are those of
    // calls traced in full.
    let run = run_loop(&mut workload(calls, Some(PACED_COST_RATE)));
    let progs = programs_of(tracer.child.id());
    let kallsyms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
    let rows = progs
        .iter()
        .filter(|p| p.runs > 0)
        .map(|p| {
            json!({
                "variant": name,
                "program": program_name(&kallsyms, &p.tag),
                "runs": p.runs,
                "nsPerRun": p.run_time_ns as f64 / p.runs as f64,
                "verifiedInsns": p.verified_insns,
            })
        })
        .collect();
    stop(tracer)?;
    let _ = std::fs::remove_file(bench_dir().join("events.jsonl"));
    run?;
    Ok(rows)
}

/// Cargo arguments that build the `pipeline` example (the userspace rows), in any tree.
const PIPELINE_BUILD: [&str; 6] = [
    "build",
    "--release",
    "-p",
    "sendfile-trace",
    "--example",
    "pipeline",
];

/// Builds the `pipeline` example of sendfile-trace and runs it pinned to the tracer's CPU, after
/// `baseline` (a pipeline binary built from another tree) if given: one JSON object per tree and
/// format with events per second.
fn userspace_throughput(baseline: Option<&Path>) -> Result<Vec<Value>> {
    tools::run(
        tools::cargo(tools::HOST_TOOLCHAIN)
            .current_dir(workspace_root())
            .args(PIPELINE_BUILD)
            .env("SENDFILE_TRACE_BPF_OBJECT", compile::bpf_object()),
    )?;
    let ours = workspace_root().join("target/release/examples/pipeline");
    let mut rows = Vec::new();
    for (label, bin) in baseline
        .map(|b| ("baseline", b))
        .into_iter()
        .chain([("this tree", ours.as_path())])
    {
        let out = Command::new("taskset")
            .args(["-c", TRACER_CPU])
            .arg(bin)
            .output()
            .with_context(|| format!("cannot run {}", bin.display()))?;
        if !out.status.success() {
            bail!("{} failed ({})", bin.display(), out.status);
        }
        rows.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .map(|mut v| {
                    v["tracer"] = json!(label);
                    v
                }),
        );
    }
    Ok(rows)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// `ours ÷ reference` for added costs, null when not ours or the reference is not positive.
fn ratio_json(is_ours: bool, added: f64, reference: f64) -> Value {
    if is_ours && reference > 0.0 {
        json!(added / reference)
    } else {
        Value::Null
    }
}

/// Peak resident set (VmHWM) of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// User plus system CPU seconds a process has used (from /proc, in USER_HZ = 100 ticks).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<f64>().ok();
    Some((ticks(14)? + ticks(15)?) / 100.0)
}

/// A burst of [`BURST_THREADS`] × [`BURST_CALLS`] calls under our tracer; loss accounting.
fn burst(
    label: &str,
    bin: &Path,
    ring_buffer_size: Option<&str>,
    mode: BurstMode,
) -> Result<Value> {
    let out = bench_dir().join("burst.jsonl");
    let _ = std::fs::remove_file(&out);
    let mut args = vec!["--hook", HOOKS[0], "--output"];
    match mode {
        BurstMode::Default => {}
        BurstMode::NoLimit => args
            .splice(0..0, ["--max-events-per-process", "off"])
            .for_each(drop),
        BurstMode::Flows => args.splice(0..0, ["--mode", "flows"]).for_each(drop),
    }
    let out_s = out.to_string_lossy().into_owned();
    args.push(&out_s);
    if let Some(size) = ring_buffer_size {
        args.extend(["--ring-buffer-size", size]);
    }
    let spawned_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let t = start(
        "sendfile-trace",
        bin,
        &args,
        Ready::File(out.clone(), "\"tracer_start\""),
    )?;
    let pid = t.child.id();
    let cpu_before = cpu_seconds(pid);
    let wall = Instant::now();
    // The workload is left free on both CPUs so that its threads really overlap.
    let mut child = Command::new(compile::host_bin("sendfile-workload"))
        .args(["--loop", &BURST_CALLS.to_string(), "--size", SIZE])
        .args(["--threads", &BURST_THREADS.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run sendfile-workload")?;
    let workload_pid = child.id();
    let mut text = String::new();
    child
        .stdout
        .take()
        .context("workload stdout")?
        .read_to_string(&mut text)?;
    let status = child.wait()?;
    if !status.success() {
        bail!("the burst workload failed ({status})");
    }
    let summary: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .find(|v: &Value| v["case"] == "loop")
        .context("no loop summary from the burst workload")?;
    // Past the 250 ms loss poll, so that events_lost records are in before the stop.
    std::thread::sleep(Duration::from_millis(600));
    let hwm = vm_hwm_kib(pid);
    let cpu = cpu_seconds(pid)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let wall = wall.elapsed().as_secs_f64();
    stop(t)?;

    let mut delivered = 0u64;
    let mut all_sendfile = 0u64;
    let mut start_ts = None;
    let mut stop_rec = Value::Null;
    let mut lost_records = 0u64;
    let mut flow_records = 0u64;
    // Of `delivered`, those delivered as `sendfile` events (the rest in flow records).
    let mut delivered_events = 0u64;
    for line in std::fs::read_to_string(&out)?.lines() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("not JSON in the tracer's output: {line}"))?;
        match v["eventName"].as_str() {
            Some("sendfile") => {
                all_sendfile += 1;
                // hostProcessId: present even when an entry record was lost (processId is then null).
                if v["hostProcessId"].as_u64() == Some(u64::from(workload_pid)) {
                    delivered += 1;
                    delivered_events += 1;
                }
            }
            // In flows mode a call is delivered as part of its flow's record.
            Some("sendfile_flow")
                if v["hostProcessId"].as_u64() == Some(u64::from(workload_pid)) =>
            {
                delivered += v["calls"].as_u64().unwrap_or(0);
                flow_records += 1;
            }
            Some("tracer_start") => start_ts = v["timestamp"].as_u64(),
            Some("events_lost") => lost_records += v["lost"].as_u64().unwrap_or(0),
            Some("tracer_stop") => stop_rec = v,
            _ => {}
        }
    }
    let _ = std::fs::remove_file(&out);
    if stop_rec.is_null() {
        bail!("no tracer_stop record after the burst");
    }
    let made = summary["calls"].as_u64().unwrap_or(0);
    let lost = stop_rec["lost"].as_u64().unwrap_or(0);
    Ok(json!({
        "tracer": label,
        "mode": match mode {
            BurstMode::Default => "calls",
            BurstMode::NoLimit => "calls, no limit",
            BurstMode::Flows => "flows",
        },
        "deliveredAsEvents": delivered_events,
        "flowRecords": flow_records,
        "ringBufferSize": ring_buffer_size.unwrap_or("default"),
        "made": made,
        "delivered": delivered,
        "lost": lost,
        "exact": delivered + lost == made,
        "otherSendfileEvents": all_sendfile - delivered_events,
        "tracerStopEvents": stop_rec["events"],
        "tracerStopMatchesLines": stop_rec["events"].as_u64() == Some(all_sendfile),
        "lostInEventsLostRecords": lost_records,
        "lostByReason": stop_rec["lostByReason"],
        "incomplete": stop_rec["incomplete"],
        "workloadNsPerCall": summary["nsPerCall"],
        "callsPerSecond": summary["elapsedNs"]
            .as_f64()
            .filter(|&ns| ns > 0.0)
            .map(|ns| made as f64 * 1e9 / ns),
        // The tracer's CPU time from just before the burst to just before its stop (which
        // includes 600 ms of idle), as a share of one CPU over that time.
        "tracerCpuSeconds": cpu,
        "tracerCpuPercentOfOneCpu": cpu.map(|c| 100.0 * c / wall),
        "vmHwmKiB": hwm,
        "spawnToTracerStartMs": start_ts.map(|t| t.saturating_sub(spawned_ns) as f64 / 1e6),
    }))
}

/// How the burst's tracer runs.
#[derive(Clone, Copy)]
enum BurstMode {
    /// Default settings (calls mode, the default per-process limit).
    Default,
    /// Calls mode with `--max-events-per-process off`: every call an event or a loss.
    NoLimit,
    /// `--mode flows`.
    Flows,
}

/// A bar chart of ns per call, one bar per variant.
fn svg(rows: &[(String, f64)]) -> String {
    let max = rows.iter().map(|r| r.1).fold(1.0, f64::max);
    let (left, width, bar, gap) = (190.0, 460.0, 22.0, 10.0);
    let height = 50.0 + rows.len() as f64 * (bar + gap);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"760\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"13\">\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">sendfile 64 B page cache → /dev/null: \
         CPU ns per call of the calling thread (median)</text>\n"
    );
    for (i, (name, ns)) in rows.iter().enumerate() {
        let y = 36.0 + i as f64 * (bar + gap);
        let w = if ns.is_finite() {
            ns / max * width
        } else {
            0.0
        };
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{left}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar}\" fill=\"#4a7ab5\"/>\
             <text x=\"{:.1}\" y=\"{}\">{ns:.0}</text>",
            left - 8.0,
            y + 16.0,
            name.replace('&', "&amp;").replace('<', "&lt;"),
            left + w + 6.0,
            y + 16.0,
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Installs what is missing, builds, runs every variant, writes the table, JSON and SVG.
pub fn bench(mut args: BenchArgs) -> Result<i32> {
    let run = |s: Section| args.only.is_empty() || args.only.contains(&s);
    tools::ensure_all()?;
    tools::apt_install(&["bpftrace", "strace"])?;
    // Builds the daemon, the workload and sendfile-trace-floor (a bin of the same package).
    compile::build_host()?;
    std::fs::create_dir_all(bench_dir())?;
    if let Some(rev) = &args.baseline_rev {
        let bins = build_rev(rev)?;
        args.baseline = Some(bins.join("sendfile-trace"));
        if args.baseline_pipeline.is_none() && args.baseline_pipeline_rev.is_none() {
            args.baseline_pipeline = Some(bins.join("examples/pipeline"));
        }
    }
    if let Some(rev) = &args.baseline_pipeline_rev {
        args.baseline_pipeline = Some(build_rev(rev)?.join("examples/pipeline"));
    }
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        bail!("the bench pins the workload to CPU 0 and the tracer to CPU 1: it needs 2 CPUs");
    }

    let mut variants = vec![
        Variant::new("untraced", Kind::Untraced, args.calls, None),
        Variant::new("floor (empty tp progs)", Kind::Floor, args.calls, None),
    ];
    for hook in HOOKS {
        variants.push(Variant::new(
            &format!("ours {hook} → /dev/null"),
            Kind::Ours {
                hook,
                file: false,
                flows: false,
                baseline: None,
            },
            args.calls,
            None,
        ));
        variants.push(Variant::new(
            &format!("ours {hook} → file"),
            Kind::Ours {
                hook,
                file: true,
                flows: false,
                baseline: None,
            },
            args.calls,
            None,
        ));
    }
    for hook in HOOKS {
        variants.push(Variant::new(
            // To a file: what it delivered is the calls its flow records count (the stop line
            // counts only `sendfile` events, none in flows mode); the records are few.
            &format!("ours {hook} flows → file"),
            Kind::Ours {
                hook,
                file: true,
                flows: true,
                baseline: None,
            },
            args.calls,
            None,
        ));
    }
    variants.push(Variant::new("bpftrace", Kind::Bpftrace, args.calls, None));
    variants.push(Variant::new(
        "strace",
        Kind::Strace,
        args.strace_calls,
        None,
    ));
    // The same at a rate that loses nothing: cost from the calling thread's CPU time.
    let paced = Some(PACED_COST_RATE);
    let k = PACED_COST_RATE / 1000;
    variants.push(Variant::new(
        &format!("untraced @{k}k/s"),
        Kind::Untraced,
        PACED_COST_CALLS,
        paced,
    ));
    variants.push(Variant::new(
        &format!("floor @{k}k/s"),
        Kind::Floor,
        PACED_COST_CALLS,
        paced,
    ));
    for hook in HOOKS {
        variants.push(Variant::new(
            &format!("ours {hook} → /dev/null @{k}k/s"),
            Kind::Ours {
                hook,
                file: false,
                flows: false,
                baseline: None,
            },
            PACED_COST_CALLS,
            paced,
        ));
        variants.push(Variant::new(
            &format!("ours {hook} → file @{k}k/s"),
            Kind::Ours {
                hook,
                file: true,
                flows: false,
                baseline: None,
            },
            PACED_COST_CALLS,
            paced,
        ));
    }
    // The baseline tree's cost, in the same rounds: the targets' "before" figure.
    let baseline_kind = args.baseline.as_ref().map(|b| Kind::Ours {
        hook: HOOKS[0],
        file: true,
        flows: false,
        baseline: Some(b.clone()),
    });
    if let Some(kind) = &baseline_kind {
        variants.push(Variant::new(
            &format!("baseline {} → file @{k}k/s", HOOKS[0]),
            kind.clone(),
            PACED_COST_CALLS,
            paced,
        ));
    }

    let mut table = String::new();
    let mut rows = Vec::new();
    let mut json_variants = Vec::new();
    if run(Section::Costs) {
        for round in 1..=args.rounds {
            for v in &mut variants {
                // getpid is ~10× cheaper than sendfile: 5× the calls for a comparable run time.
                let getpid_calls = v.calls * 5;
                let r = measure(&v.kind, v.calls, v.rate, getpid_calls)
                    .with_context(|| format!("variant {} in round {round}", v.name))?;
                let d = r.delivery.map_or(String::new(), |d| {
                    format!(" {}/{} delivered, {} lost", d.delivered, d.made, d.lost)
                });
                eprintln!(
                    "xtask: bench round {round}: {:<36} {:>9.1} ns/sendfile {:>8.1} cpu ns {:>8.1} ns/getpid{d}",
                    v.name, r.ns, r.cpu_ns, r.getpid
                );
                v.ns_per_call.push(r.ns);
                v.cpu_ns.push(r.cpu_ns);
                v.getpid_ns.push(r.getpid);
                v.delivery.extend(r.delivery);
            }
        }
        cost_table(&variants, &mut table, &mut rows, &mut json_variants);
    }

    let mut programs = Vec::new();
    if run(Section::Profile) {
        eprintln!("xtask: bench per-program profile (BPF run-time statistics)");
        for v in variants.iter().filter(|v| {
            v.rate.is_none()
                && matches!(
                    v.kind,
                    Kind::Floor
                        | Kind::Bpftrace
                        | Kind::Ours { file: false, .. }
                        | Kind::Ours { flows: true, .. }
                )
        }) {
            programs.extend(profile(&v.name, &v.kind, PACED_COST_CALLS)?);
        }
        if let Some(kind) = &baseline_kind {
            programs.extend(profile(
                &format!("baseline {}", HOOKS[0]),
                kind,
                PACED_COST_CALLS,
            )?);
        }
        let _ = writeln!(
            table,
            "\nper BPF program during {PACED_COST_CALLS} calls at {PACED_COST_RATE}/s (kernel BPF \
             stats; each run includes the stats' own cost):"
        );
        let _ = writeln!(
            table,
            "{:<28} {:<18} {:>10} {:>10} {:>14}",
            "variant", "program", "runs", "ns/run", "verified insns"
        );
        for p in &programs {
            let _ = writeln!(
                table,
                "{:<28} {:<18} {:>10} {:>10.1} {:>14}",
                p["variant"].as_str().unwrap_or(""),
                p["program"].as_str().unwrap_or(""),
                p["runs"].to_string(),
                p["nsPerRun"].as_f64().unwrap_or(f64::NAN),
                p["verifiedInsns"].to_string(),
            );
        }
    }

    let mut pipeline = Vec::new();
    if run(Section::Userspace) {
        eprintln!("xtask: bench userspace throughput (the daemon's pipeline, one core)");
        // A `pipeline` binary beside the baseline tracer is that tree's pipeline.
        let base_pipeline = args.baseline_pipeline.clone().or_else(|| {
            args.baseline
                .as_ref()
                .and_then(|b| b.parent())
                .map(|d| d.join("pipeline"))
                .filter(|p| p.exists())
        });
        pipeline = userspace_throughput(base_pipeline.as_deref())?;
        let _ = writeln!(
            table,
            "\nuserspace, one core (the daemon's decode + join + enrich + encode + output + file \
             sink on recorded nginx-like records, all threads pinned to one CPU; events per second \
             of process CPU time, best of 3):"
        );
        let _ = writeln!(
            table,
            "{:<10} {:<10} {:>14} {:>12} {:>14} {:>14}",
            "tree", "format", "events/s", "ns/event", "bytes/event", "sink dropped"
        );
        for p in &pipeline {
            let _ = writeln!(
                table,
                "{:<10} {:<10} {:>14} {:>12} {:>14} {:>14}",
                p["tracer"].as_str().unwrap_or(""),
                p["format"].as_str().unwrap_or(""),
                p["eventsPerSecond"].to_string(),
                p["nsPerEvent"].to_string(),
                p["bytesPerEvent"].to_string(),
                p["sinkDropped"].to_string(),
            );
        }
    }

    let mut bursts = Vec::new();
    if run(Section::Burst) {
        eprintln!("xtask: bench burst ({BURST_THREADS} threads × {BURST_CALLS} calls)");
        if let Some(b) = &args.baseline {
            bursts.push(burst("baseline", b, None, BurstMode::Default)?);
        }
        let ours = compile::host_bin("sendfile-trace");
        bursts.push(burst("this tree", &ours, None, BurstMode::Default)?);
        bursts.push(burst("this tree", &ours, None, BurstMode::NoLimit)?);
        bursts.push(burst("this tree", &ours, Some("4096"), BurstMode::NoLimit)?);
        bursts.push(burst("this tree", &ours, None, BurstMode::Flows)?);
        bursts.push(burst("this tree", &ours, Some("4096"), BurstMode::Flows)?);
        burst_table(&bursts, &mut table);
    }

    let mut capacity_runs = Vec::new();
    if run(Section::Capacity) {
        let mut bins = Vec::new();
        if let Some(b) = &args.baseline {
            // Trees before the default limit know no `off`, and need none.
            bins.push(("baseline".to_owned(), b.clone(), &[][..]));
        }
        // Calls mode as such: past the default limit, calls would be folded, not lost.
        let off = &["--max-events-per-process", "off"][..];
        bins.push((
            "this tree".to_owned(),
            compile::host_bin("sendfile-trace"),
            off,
        ));
        for (label, bin, extra) in &bins {
            eprintln!("xtask: bench capacity of {label} ({})", bin.display());
            capacity_runs.push(capacity(label, bin, extra)?);
        }
        capacity_table(&capacity_runs, &mut table);
    }

    let mut nginx_row = Value::Null;
    if run(Section::Nginx) {
        nginx_row = nginx::nginx(args.nginx_bytes)?;
        nginx::table(&nginx_row, &mut table);
    }
    let targets = targets(
        &json_variants,
        &programs,
        &pipeline,
        &bursts,
        &capacity_runs,
    );
    targets_table(&targets, &mut table);
    print!("{table}");

    let results = json!({
        "targets": targets,
        "workload": {"size": 64, "workloadCpu": 0, "tracerCpu": 1, "rounds": args.rounds},
        "variants": json_variants,
        "bursts": bursts,
        "userspace": pipeline,
        "programs": programs,
        "capacity": capacity_runs,
        "nginx": nginx_row,
    });
    let json_path = bench_dir().join("results.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    let svg_path = bench_dir().join("cost.svg");
    if !rows.is_empty() {
        std::fs::write(&svg_path, svg(&rows))?;
    }
    let _ = std::fs::remove_file(bench_dir().join("sendfile.bt"));
    eprintln!(
        "xtask: bench results in {} and {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(0)
}

/// The cost rows: tight loops by wall time, paced loops by the calling thread's CPU time, each
/// against the untraced run of its own kind. A run of ours that lost events is not a cost: its
/// ratios say `INVALID`.
fn cost_table(
    variants: &[Variant],
    table: &mut String,
    rows: &mut Vec<(String, f64)>,
    json_variants: &mut Vec<Value>,
) {
    // The measure of a variant: the calling thread's CPU ns per call (what the probes add to
    // the syscall, unblurred by other processes taking the CPU away, as they do on a shared
    // machine); the wall time per call is beside it.
    let measure_of = |v: &Variant| median(&v.cpu_ns);
    let find = |paced: bool, pick: &dyn Fn(&Kind) -> bool| {
        variants
            .iter()
            .find(|v| v.rate.is_some() == paced && pick(&v.kind))
            .map(measure_of)
    };
    let base_of = |paced: bool| find(paced, &|k| matches!(k, Kind::Untraced)).unwrap_or(f64::NAN);
    let floor_of = |paced: bool| {
        find(paced, &|k| matches!(k, Kind::Floor)).map_or(f64::NAN, |f| f - base_of(paced))
    };
    let bpftrace_added =
        find(false, &|k| matches!(k, Kind::Bpftrace)).map_or(f64::NAN, |b| b - base_of(false));
    let getpid_base = median(&variants[0].getpid_ns);
    let _ = writeln!(
        table,
        "cost per sendfile call: cpu ns = the calling thread's CPU time (user + system, the \
         probes included) per call, median of rounds; tight loops and paced (@) loops; \
         delivered/made is the worst round's; a row of ours that lost events is INVALID as a cost"
    );
    let _ = writeln!(
        table,
        "{:<36} {:>8} {:>10} {:>10} {:>10} {:>9} {:>10} {:>17} {:>10} {:>10}",
        "variant",
        "calls",
        "wall ns",
        "cpu ns",
        "added ns",
        "÷floor",
        "÷bpftrace",
        "delivered/made",
        "getpid ns",
        "added ns"
    );
    for v in variants {
        let paced = v.rate.is_some();
        let med = measure_of(v);
        let add = med - base_of(paced);
        let is_ours = matches!(v.kind, Kind::Ours { .. });
        let worst = v
            .delivery
            .iter()
            .copied()
            .min_by_key(|d| (d.valid(), d.delivered));
        let valid = v.delivery.iter().all(Delivery::valid);
        // A ratio to an added cost that noise made zero or negative means nothing.
        let ratio = |d: f64| match (is_ours, valid, d > 0.0) {
            (true, false, _) => "INVALID".into(),
            (true, true, true) => format!("{:.2}", add / d),
            (true, true, false) => "n/a".into(),
            (false, ..) => String::new(),
        };
        let bpftrace_ratio = if paced {
            String::new()
        } else {
            ratio(bpftrace_added)
        };
        let getpid = median(&v.getpid_ns);
        let _ = writeln!(
            table,
            "{:<36} {:>8} {:>10.1} {:>10.1} {:>10.1} {:>9} {:>10} {:>17} {:>10.1} {:>10.1}",
            v.name,
            v.calls,
            if paced {
                f64::NAN
            } else {
                median(&v.ns_per_call)
            },
            med,
            add,
            ratio(floor_of(paced)),
            bpftrace_ratio,
            worst.map_or(String::new(), |d| format!(
                "{}/{}{}",
                d.delivered,
                d.made,
                if d.lost > 0 { " LOSS" } else { "" }
            )),
            getpid,
            getpid - getpid_base
        );
        if !paced {
            rows.push((v.name.clone(), med));
        }
        json_variants.push(json!({
            "name": v.name,
            "calls": v.calls,
            "rate": v.rate,
            "nsPerCallRounds": v.ns_per_call,
            "nsPerCallMedian": median(&v.ns_per_call),
            "cpuNsPerCallRounds": v.cpu_ns,
            "cpuNsPerCallMedian": median(&v.cpu_ns),
            "measure": "cpuNsPerCall",
            "addedNs": add,
            "valid": !is_ours || valid,
            "delivery": v.delivery.iter().map(|d| json!({
                "made": d.made, "delivered": d.delivered, "lost": d.lost,
                "workloadOnly": d.exact, "valid": d.valid(),
            })).collect::<Vec<_>>(),
            "addedOverFloor": if valid { ratio_json(is_ours, add, floor_of(paced)) } else { Value::Null },
            "addedOverBpftrace": if valid && !paced { ratio_json(is_ours, add, bpftrace_added) } else { Value::Null },
            "getpidNsRounds": v.getpid_ns,
            "getpidNsMedian": getpid,
            "getpidAddedNs": getpid - getpid_base,
        }));
    }
    let _ = writeln!(
        table,
        "(/dev/null rows count every event the tracer wrote, other processes' too; file rows \
         only the workload's)"
    );
    for paced in [false, true] {
        let floor = floor_of(paced);
        if floor.is_nan() || floor <= 0.0 {
            let _ = writeln!(
                table,
                "note: the floor's added cost is {floor:.1} ns, within noise: ratios to it are n/a"
            );
        }
    }
}

/// The burst rows.
fn burst_table(bursts: &[Value], table: &mut String) {
    let _ = writeln!(
        table,
        "\nburst {BURST_THREADS}×{BURST_CALLS} under ours ({}):",
        HOOKS[0]
    );
    let _ = writeln!(
        table,
        "{:<10} {:<15} {:<12} {:>8} {:>10} {:>8} {:>9} {:>7} {:>10} {:>10} {:>10} {:>14}",
        "tree",
        "mode",
        "ring buffer",
        "made",
        "calls/s",
        "delivered",
        "as events",
        "lost",
        "exact",
        "VmHWM KiB",
        "tracer CPU",
        "spawn→start ms"
    );
    // "incomplete": delivered without descriptors and process context (the ring was full at
    // syscall entry but not at exit); they are in "delivered".
    for b in bursts {
        let _ = writeln!(
            table,
            "{:<10} {:<15} {:<12} {:>8} {:>10} {:>10} {:>9} {:>8} {:>7} {:>10} {:>10} {:>14}",
            b["tracer"].as_str().unwrap_or(""),
            b["mode"].as_str().unwrap_or("calls"),
            b["ringBufferSize"].as_str().unwrap_or(""),
            b["made"].to_string(),
            b["callsPerSecond"]
                .as_f64()
                .map_or("?".into(), |r| format!("{r:.0}")),
            b["delivered"].to_string(),
            b["deliveredAsEvents"].to_string(),
            b["lost"].to_string(),
            b["exact"].to_string(),
            b["vmHwmKiB"].to_string(),
            b["tracerCpuPercentOfOneCpu"]
                .as_f64()
                .map_or("?".into(), |c| format!("{c:.0}%")),
            b["spawnToTracerStartMs"]
                .as_f64()
                .map_or("?".into(), |m| format!("{m:.1}")),
        );
    }
}

/// One capacity step: the tracer at default settings writing tracee JSON to a file, the
/// workload paced at `rate` calls/s for [`CAPACITY_SECONDS`] on the other CPU.
fn capacity_step(bin: &Path, rate: u64, extra: &[&str]) -> Result<Value> {
    let out = bench_dir().join("capacity.jsonl");
    let _ = std::fs::remove_file(&out);
    let out_s = out.to_string_lossy().into_owned();
    let mut args = vec!["--hook", HOOKS[0], "--format", "tracee", "--output", &out_s];
    args.extend_from_slice(extra);
    let t = start(
        "sendfile-trace",
        bin,
        &args,
        Ready::File(out.clone(), "\"tracer_start\""),
    )?;
    let pid = t.child.id();
    let run = run_loop(&mut workload(rate * CAPACITY_SECONDS, Some(rate)));
    // Past the 250 ms loss poll, so that events_lost records are in before the stop.
    std::thread::sleep(Duration::from_millis(300));
    let hwm = vm_hwm_kib(pid);
    let log = stop(t)?;
    let summary = run?;
    let made = summary["calls"].as_u64().unwrap_or(0);
    let d = delivery(&log, Some(&out), made, summary["pid"].as_u64().unwrap_or(0))?;
    let _ = std::fs::remove_file(&out);
    let achieved = summary["elapsedNs"]
        .as_f64()
        .filter(|&ns| ns > 0.0)
        .map_or(0.0, |ns| made as f64 * 1e9 / ns);
    Ok(json!({
        "rate": rate,
        "achievedRate": achieved,
        "made": made,
        "delivered": d.delivered,
        "lost": d.lost,
        "lossless": d.valid(),
        "otherProcessesEvents": d.others,
        // The workload fell more than 5% short of the rate (the CPU was busy elsewhere).
        "rateHeld": achieved >= 0.95 * rate as f64,
        "vmHwmKiB": hwm,
    }))
}

/// The capacity steps of one tracer binary: rates stepped up until one loses events, or until
/// the workload cannot go faster here (on a busy machine it may not hold a rate: what it
/// achieved is what counts). The highest rate achieved with delivered == made is the tracer's
/// lossless capacity on this machine; `held` says whether that step also held its target.
fn capacity(label: &str, bin: &Path, extra: &[&str]) -> Result<Value> {
    let mut steps = Vec::new();
    let mut best: Option<(f64, bool)> = None;
    let mut last_achieved = 0.0;
    for rate in CAPACITY_RATES {
        let step = capacity_step(bin, rate, extra)?;
        eprintln!("xtask: bench capacity {label} {rate}/s: {step}");
        let ok = step["lossless"] == true;
        let held = step["rateHeld"] == true;
        let achieved = step["achievedRate"].as_f64().unwrap_or(0.0);
        steps.push(step);
        if !ok {
            break;
        }
        if best.is_none_or(|(b, _)| achieved > b) {
            best = Some((achieved, held));
        }
        // Not held and no faster than the step before: higher targets would not be higher rates.
        if !held && achieved < 1.1 * last_achieved {
            break;
        }
        last_achieved = achieved;
    }
    Ok(json!({
        "tracer": label,
        "binary": bin.display().to_string(),
        "highestLosslessRate": best.map(|(r, _)| r.round()),
        "highestLosslessRateHeldTarget": best.map(|(_, h)| h),
        "steps": steps,
    }))
}

/// The capacity rows, one per binary and step.
fn capacity_table(runs: &[Value], table: &mut String) {
    let _ = writeln!(
        table,
        "\ncapacity: workload paced for {CAPACITY_SECONDS} s per rate (64 B calls to /dev/null), \
         tracer at default settings writing tracee JSON to a file on the other CPU (lost: the \
         tracer's count, every process's; others' events: other processes' calls it wrote):"
    );
    let _ = writeln!(
        table,
        "{:<12} {:>9} {:>12} {:>9} {:>10} {:>8} {:>9} {:>10} {:>13}",
        "tracer",
        "rate",
        "achieved/s",
        "made",
        "delivered",
        "lost",
        "lossless",
        "VmHWM KiB",
        "others' events"
    );
    for r in runs {
        for s in r["steps"].as_array().into_iter().flatten() {
            let _ = writeln!(
                table,
                "{:<12} {:>9} {:>12.0} {:>9} {:>10} {:>8} {:>9} {:>10} {:>13}",
                r["tracer"].as_str().unwrap_or(""),
                s["rate"].to_string(),
                s["achievedRate"].as_f64().unwrap_or(f64::NAN),
                s["made"].to_string(),
                s["delivered"].to_string(),
                s["lost"].to_string(),
                s["lossless"].to_string(),
                s["vmHwmKiB"].to_string(),
                s["otherProcessesEvents"].to_string(),
            );
        }
    }
    for r in runs {
        let _ = writeln!(
            table,
            "{}: highest rate achieved with delivered == made: {}",
            r["tracer"].as_str().unwrap_or(""),
            r["highestLosslessRate"]
                .as_f64()
                .map_or("none of the steps".into(), |rate| format!(
                    "{rate:.0} calls/s{}",
                    if r["highestLosslessRateHeldTarget"] == true {
                        ""
                    } else {
                        " (below its step's target: the workload got no more CPU)"
                    }
                ))
        );
    }
}

impl Variant {
    fn new(name: &str, kind: Kind, calls: u64, rate: Option<u64>) -> Variant {
        Variant {
            name: name.to_owned(),
            kind,
            calls,
            rate,
            ns_per_call: Vec::new(),
            cpu_ns: Vec::new(),
            getpid_ns: Vec::new(),
            delivery: Vec::new(),
        }
    }
}

/// Builds the tracer and the `pipeline` example of commit `rev` in a detached worktree under
/// target/bench/ (with that commit's own `cargo xtask build`); returns its `target/release`.
fn build_rev(rev: &str) -> Result<PathBuf> {
    let root = workspace_root();
    let full = String::from_utf8(
        Command::new("git")
            .current_dir(&root)
            .args(["rev-parse", "--verify", &format!("{rev}^{{commit}}")])
            .output()
            .context("cannot run git")?
            .stdout,
    )?;
    let full = full.trim();
    if full.is_empty() {
        bail!("--baseline-rev {rev}: not a commit of this repository (a shallow clone lacks it)");
    }
    let dir = bench_dir().join(format!("baseline-{}", &full[..12]));
    if !dir.join("Cargo.toml").exists() {
        let _ = std::fs::remove_dir_all(&dir);
        tools::run(
            Command::new("git")
                .current_dir(&root)
                .args(["worktree", "add", "--force", "--detach"])
                .arg(&dir)
                .arg(full),
        )?;
    }
    eprintln!(
        "xtask: bench building the baseline {rev} in {}",
        dir.display()
    );
    tools::run(
        tools::cargo_unpinned()
            .current_dir(&dir)
            .args(["xtask", "build"]),
    )?;
    tools::run(
        tools::cargo(tools::HOST_TOOLCHAIN)
            .current_dir(&dir)
            .args(PIPELINE_BUILD),
    )?;
    Ok(dir.join("target/release"))
}

/// The capacity targets, each with the baseline tree's figure (`--baseline`) and this tree's,
/// from this run's sections; a section not run leaves its targets without figures.
fn targets(
    variants: &[Value],
    programs: &[Value],
    pipeline: &[Value],
    bursts: &[Value],
    capacity: &[Value],
) -> Vec<Value> {
    let k = PACED_COST_RATE / 1000;
    let hook = HOOKS[0];
    let variant = |name: String| variants.iter().find(|v| v["name"] == name.as_str());
    let ours_paced = variant(format!("ours {hook} → file @{k}k/s"));
    let base_paced = variant(format!("baseline {hook} → file @{k}k/s"));
    let floor_paced = variant(format!("floor @{k}k/s"));
    let num = |v: Option<&Value>, key: &str| v.and_then(|v| v[key].as_f64());
    let mut out = Vec::new();
    let mut target = |name: &str,
                      goal: &str,
                      before: Option<f64>,
                      after: Option<f64>,
                      met: Option<bool>,
                      unit: &str| {
        out.push(json!({
            "target": name, "goal": goal, "baseline": before, "thisTree": after,
            "met": met, "unit": unit,
        }));
    };

    // 1. Userspace events/s on one core, per format.
    for format in ["tracee", "ecs", "ocsf", "text"] {
        let of = |tree: &str| {
            pipeline
                .iter()
                .find(|p| p["tracer"] == tree && p["format"] == format)
                .and_then(|p| p["eventsPerSecond"].as_f64())
        };
        let after = of("this tree");
        target(
            &format!("userspace {format}"),
            "≥ 1,000,000 events/s on one core",
            of("baseline"),
            after,
            after.map(|a| a >= 1e6),
            "events/s",
        );
    }

    // 2. The highest lossless paced rate, calls mode.
    let rate = |tree: &str| {
        capacity
            .iter()
            .find(|c| c["tracer"] == tree)
            .and_then(|c| c["highestLosslessRate"].as_f64())
    };
    let (before, after) = (rate("baseline"), rate("this tree"));
    target(
        "lossless rate (calls mode, tracee JSON to a file)",
        "≥ 3× the baseline's",
        before,
        after,
        before.zip(after).map(|(b, a)| a >= 3.0 * b),
        "calls/s",
    );

    // 3. Kernel cost per call: added ÷ the floor's added, paced so that nothing is lost.
    let (before, after) = (
        num(base_paced, "addedOverFloor"),
        num(ours_paced, "addedOverFloor"),
    );
    target(
        &format!("kernel cost per call, calls mode @{k}k/s (added ÷ floor's added)"),
        "≤ 3.5",
        before,
        after,
        after.map(|a| a <= 3.5),
        "×",
    );
    for (prog, label) in [("enter", "entry"), ("exit", "exit")] {
        let of = |variant: &str| {
            programs
                .iter()
                .find(|p| {
                    p["variant"] == variant
                        && p["program"]
                            .as_str()
                            .is_some_and(|n| n.ends_with(&format!("_tp_{prog}")))
                })
                .and_then(|p| p["nsPerRun"].as_f64())
        };
        target(
            &format!("calls-mode {label} program, ns per run (BPF stats)"),
            "(shown beside the floor's programs)",
            of(&format!("baseline {hook}")),
            of(&format!("ours {hook} → /dev/null")),
            None,
            "ns",
        );
    }

    // 4. Peak RSS of the default-settings burst.
    let burst = |tree: &str| {
        bursts.iter().find(|b| {
            b["tracer"] == tree && b["mode"] == "calls" && b["ringBufferSize"] == "default"
        })
    };
    let hwm = |tree: &str| {
        burst(tree)
            .and_then(|b| b["vmHwmKiB"].as_f64())
            .map(|k| k / 1024.0)
    };
    let after = hwm("this tree");
    target(
        "peak RSS, default-settings burst",
        "≤ 24 MiB",
        hwm("baseline"),
        after,
        after.map(|a| a <= 24.0),
        "MiB",
    );

    // 5. What the tracer adds to every other syscall, against the floor's.
    let (ours, floor) = (
        num(ours_paced, "getpidAddedNs"),
        num(floor_paced, "getpidAddedNs"),
    );
    target(
        "getpid: ns added to every other syscall while attached",
        &format!(
            "≤ the floor's ({}; 5 ns of noise allowed)",
            floor.map_or("?".into(), |f| format!("{f:.1} ns"))
        ),
        num(base_paced, "getpidAddedNs"),
        ours,
        ours.zip(floor).map(|(o, f)| o <= f + 5.0),
        "ns",
    );

    // 6. The tight-loop burst at default settings: every call accounted for.
    let share = |tree: &str| {
        burst(tree).and_then(|b| {
            let made = b["made"].as_f64()?;
            Some(b["delivered"].as_f64()? / made)
        })
    };
    let after = share("this tree");
    let none_lost = burst("this tree").map(|b| b["lost"] == 0);
    target(
        "tight-loop burst at default settings, share of calls accounted for",
        "1 (every call an event or in a flow record, none lost)",
        share("baseline"),
        after,
        after.zip(none_lost).map(|(a, n)| a == 1.0 && n),
        "of made",
    );
    out
}

/// The targets, one line each.
fn targets_table(targets: &[Value], table: &mut String) {
    let _ = writeln!(
        table,
        "\ntargets (baseline: the --baseline tree, measured in this run):"
    );
    let _ = writeln!(
        table,
        "{:<66} {:>12} {:>12} {:>9}  goal",
        "target", "baseline", "this tree", "met"
    );
    let fmt = |v: &Value| {
        v.as_f64().map_or("—".to_owned(), |f| {
            if f >= 1000.0 {
                format!("{f:.0}")
            } else if f >= 10.0 {
                format!("{f:.1}")
            } else {
                format!("{f:.3}")
            }
        })
    };
    for t in targets {
        let _ = writeln!(
            table,
            "{:<66} {:>12} {:>12} {:>9}  {} ({})",
            t["target"].as_str().unwrap_or(""),
            fmt(&t["baseline"]),
            fmt(&t["thisTree"]),
            match t["met"].as_bool() {
                Some(true) => "yes",
                Some(false) => "NO",
                None => "",
            },
            t["goal"].as_str().unwrap_or(""),
            t["unit"].as_str().unwrap_or(""),
        );
    }
}
